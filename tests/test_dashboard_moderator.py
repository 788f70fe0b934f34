"""The dashboard as a moderator uses it, end to end in headless Chromium against a real server.

The page signs in with a community key, starts a raid, a member joins over the REST API, the page
follows over Socket.IO, the moderator ends the raid and reads its report; the review queue,
schedules and settings are worked from the page too. Controls are pressed with the keyboard where a
keyboard user would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.http.app import create_app
from core.services import Services
from tests.test_dashboard import ADMIN_KEY, TEAM_KEY, URL, Browser, browser_or_skip, settings, start_browser
from tests.test_realtime import running

pytestmark = pytest.mark.parametrize("settings", ["keys"], indirect=True)
TEAM = {"X-API-KEY": TEAM_KEY}
__all__ = ["settings"]  # the fixture: "keys" configures an admin key and a web:team key


async def member_joins_and_claims(http: httpx.AsyncClient, raid_id: int, who: str, action: str | None) -> dict[str, Any]:
    member = {"platform": "web", "id": who, "name": who.title()}
    joined = await http.post(f"/api/raids/{raid_id}/join", json={"member": member}, headers=TEAM)
    assert joined.status_code == 200, joined.text
    if action is None:
        return joined.json()
    claimed = await http.post(f"/api/raids/{raid_id}/claims", json={"member": member, "action": action}, headers=TEAM)
    assert claimed.status_code == 200, claimed.text
    return claimed.json()


async def newest_raid(http: httpx.AsyncClient) -> dict[str, Any]:
    raids = (await http.get("/api/raids", headers=TEAM)).json()["raids"]
    return raids[0]


async def test_moderator_starts_a_raid_follows_it_and_ends_it(services: Services, tmp_path: Path) -> None:
    node = browser_or_skip()
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        proc = await start_browser(node, url, tmp_path, TEAM_KEY)
        try:
            b = Browser(proc)
            stored = await b.ask(do="storage")
            assert stored["session"] == TEAM_KEY and stored["local"] is None  # kept for this tab only
            await b.ask(do="text", selector="#signed-in", expect="web:team", within=3000)
            # the scoped key's community has no raid yet: the page offers it by its platform id
            await b.ask(do="text", selector="#mod-community", expect="web:team (no raid yet)", within=3000)
            assert "Start a first raid" in (await b.ask(do="text", selector="#settings-note", expect="", within=1000))["text"]

            await b.ask(do="fill", selector="#start-url", value="https://x.com/nubi/status/notanumber")
            await b.ask(do="click", selector="#start-form button[type=submit]")
            refused = await b.ask(do="text", selector="#mod-error", expect="targetUrl", within=3000)
            assert "status" in refused["text"]  # the server's own words, shown as they are
            assert (await http.get("/api/raids", headers=TEAM)).json()["raids"] == []  # nothing was written

            await b.ask(do="fill", selector="#start-url", value=URL)
            await b.ask(do="fill", selector="#start-like", value="2")
            await b.ask(do="fill", selector="#start-repost", value="0")
            await b.ask(do="fill", selector="#start-reply", value="0")
            await b.ask(do="fill", selector="#start-minutes", value="5")
            await b.ask(do="key", selector="#start-form button[type=submit]", key="Enter")
            started = await b.ask(do="text", selector="#mod-status", expect="started", within=3000)
            raid = await newest_raid(http)
            assert f"Raid #{raid['id']} started in web team." in started["text"]
            assert raid["objectives"] == [{"action": "like", "target": 2, "points": raid["objectives"][0]["points"],
                                           "count": 0, "met": False}]
            assert (await b.ask(do="card", raidId=raid["id"]))["participants"] == "0"
            # a second start is refused while one runs; ticking "replace" cancels the first
            await b.ask(do="click", selector="#start-form button[type=submit]")
            await b.ask(do="text", selector="#mod-error", expect="still running", within=3000)
            await b.ask(do="key", selector="#start-replace", key=" ")
            await b.ask(do="click", selector="#start-form button[type=submit]")
            replaced = await b.ask(do="text", selector="#mod-status", expect="started", within=3000)  # emptied by the refusal
            first, raid = raid, await newest_raid(http)
            assert raid["id"] != first["id"] and f"Raid #{raid['id']} started" in replaced["text"]
            assert (await http.get(f"/api/raids/{first['id']}", headers=TEAM)).json()["status"] == "cancelled"
            assert (await b.ask(do="card", raidId=raid["id"]))["participants"] == "0"
            # the community now exists: the selector names it by id and its tools load
            await b.ask(do="text", selector="#review-empty", expect="No claim is waiting", within=3000)

            await member_joins_and_claims(http, raid["id"], "ada", "like")
            await b.ask(do="counter", raidId=raid["id"], expect="1", within=3000)
            await b.ask(do="text", selector="#raid-board", expect="Ada", within=3000)

            await b.ask(do="visible", selector="#end-raid")
            pressed = await b.ask(do="key", selector="#end-raid", key="Enter")
            assert pressed["focusVisible"] and not pressed["outline"].startswith("none")
            ended = await b.ask(do="text", selector="#mod-status", expect="ended", within=3000)
            assert f"Raid #{raid['id']} ended: " in ended["text"]
            await b.ask(do="text", selector="#active-count", expect="0", within=3000)
            await b.ask(do="text", selector="#ended", expect="web team", within=3000)
            await b.ask(do="visible", selector="#detail-report")
            report = await b.ask(do="text", selector="#detail-report", expect="Raiders1", within=3000)
            assert "Objectives0/1" in report["text"] and "Done50%" in report["text"]
            note = await b.ask(do="text", selector="#chart-note", expect="Final figures", within=3000)
            assert "50% done, 1 raiders, 1 actions" in note["text"]
            await b.ask(do="visible", selector="#end-raid", hidden=True)  # nothing left to end
            final = (await http.get(f"/api/raids/{raid['id']}", headers=TEAM)).json()
            assert final["status"] != "active" and final["participants"] == 1
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_moderator_works_the_review_queue_schedules_and_cancels(services: Services, tmp_path: Path) -> None:
    node = browser_or_skip()
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        made = await http.post("/api/raids", headers=TEAM, json={
            "community": {"platform": "web", "id": "team", "title": "Team web"}, "targetUrl": URL,
            "objectives": {"like": 3, "repost": 2}, "verification": "review"})
        assert made.status_code == 201, made.text
        raid = made.json()
        bo = await member_joins_and_claims(http, raid["id"], "bo", "like")
        cy = await member_joins_and_claims(http, raid["id"], "cy", "repost")
        assert bo["verification"] == cy["verification"] == "pending"
        proc = await start_browser(node, url, tmp_path, TEAM_KEY)
        try:
            b = Browser(proc)
            await b.ask(do="text", selector="#review-count", expect="2", within=3000)
            queue = await b.ask(do="texts", selector="#review-list li .what")
            assert sorted(queue["texts"]) == [f"Bo: like on raid #{raid['id']}", f"Cy: repost on raid #{raid['id']}"]
            accept = f'#review-list li[data-claim-id="{bo["claimId"]}"] button:not(.danger)'
            await b.ask(do="key", selector=accept, key=" ")  # Space presses a button too
            await b.ask(do="text", selector="#mod-status", expect="Accepted Bo: like", within=3000)
            await b.ask(do="text", selector="#review-count", expect="1", within=3000)
            focused = await b.ask(do="focused")  # the keyboard moves on to the next claim, not to the page's top
            assert focused["label"] == f"Accept Cy: repost on raid #{raid['id']}", focused
            reject = f'#review-list li[data-claim-id="{cy["claimId"]}"] button.danger'
            await b.ask(do="click", selector=reject)
            await b.ask(do="text", selector="#review-count", expect="0", within=3000)
            board = {e["name"]: e for e in (await http.get(f"/api/raids/{raid['id']}/leaderboard", headers=TEAM)).json()["entries"]}
            assert board["Bo"]["claims"] == 1 and board["Cy"]["claims"] == 0  # accepted counts, rejected does not
            assert board["Bo"]["points"] > board["Cy"]["points"]

            new_claim = await member_joins_and_claims(http, raid["id"], "di", "like")
            await b.ask(do="text", selector="#review-list", expect="Di: like", within=4000)  # follows live
            assert new_claim["verification"] == "pending"

            await b.ask(do="fill", selector="#schedule-cron", value="not a cron")
            await b.ask(do="click", selector="#schedule-form button[type=submit]")
            await b.ask(do="text", selector="#mod-error", expect="cron", within=3000)
            await b.ask(do="fill", selector="#schedule-cron", value="0 18 * * fri")
            await b.ask(do="select", selector="#schedule-window", value="month")
            await b.ask(do="fill", selector="#schedule-tz", value="Europe/Paris")
            await b.ask(do="click", selector="#schedule-form button[type=submit]")
            await b.ask(do="text", selector="#schedule-list", expect='month leaderboard, top 10, at "0 18 * * fri" Europe/Paris',
                        within=3000)
            cid = raid["communityId"]
            listed = (await http.get(f"/api/communities/{cid}/schedules", headers=TEAM)).json()["schedules"]
            assert [(s["cron"], s["window"], s["tz"]) for s in listed] == [("0 18 * * fri", "month", "Europe/Paris")]
            await b.ask(do="key", selector="#schedule-list button.danger", key="Enter")
            await b.ask(do="text", selector="#mod-status", expect="Removed the month leaderboard", within=3000)
            await b.ask(do="visible", selector="#schedule-empty")
            assert (await b.ask(do="focused"))["id"] == "schedules-title"
            assert (await http.get(f"/api/communities/{cid}/schedules", headers=TEAM)).json()["schedules"] == []

            await b.ask(do="visible", selector="#settings-form")  # the community's settings, from core's route
            await b.ask(do="text", selector="#review-list", expect="Di: like", within=1000)
            await assert_axe_clean(b, "moderator tools with a review queue")

            await b.ask(do="click", selector=f'#active [data-raid-id="{raid["id"]}"] .select')
            await b.ask(do="key", selector="#cancel-raid", key=" ")
            await b.ask(do="text", selector="#mod-status", expect=f"Raid #{raid['id']} cancelled", within=3000)
            await b.ask(do="text", selector="#ended", expect="cancelled", within=3000)
            assert (await http.get(f"/api/raids/{raid['id']}", headers=TEAM)).json()["status"] == "cancelled"
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_signing_out_and_in_with_a_scoped_key_narrows_the_page(services: Services, tmp_path: Path) -> None:
    """An admin signs out; the page forgets the key and asks again; a team key sees only its community."""
    node = browser_or_skip()
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        other = (await http.post("/api/raids", headers={"X-API-KEY": ADMIN_KEY}, json={
            "community": {"platform": "discord", "id": "9001", "title": "nubi raiders", "channel": "90010"}, "targetUrl": URL})).json()
        proc = await start_browser(node, url, tmp_path, ADMIN_KEY)
        try:
            b = Browser(proc)
            await b.ask(do="text", selector="#signed-in", expect="all communities", within=3000)
            await b.ask(do="card", raidId=other["id"])
            await b.ask(do="visible", selector="#end-raid")
            # the admin signs out; a team moderator signs in on the same page
            await b.ask(do="click", selector="#signout")
            await b.ask(do="visible", selector="#keyform")
            await b.ask(do="text", selector="#no-active", expect="Sign in with an API key", within=3000)
            await b.ask(do="fill", selector="#apikey", value=TEAM_KEY)
            await b.ask(do="click", selector="#keyform button[type=submit]")
            await b.ask(do="text", selector="#signed-in", expect="web:team", within=3000)
            assert (await b.ask(do="count", selector="#active .card"))["count"] == 0
            assert (await http.get(f"/api/raids/{other['id']}", headers={"X-API-KEY": ADMIN_KEY})).json()["status"] == "active"
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_moderator_edits_settings_over_the_documented_route(services: Services, tmp_path: Path) -> None:
    """The settings form works against core's own route: every effective key shown, only what changed sent."""
    node = browser_or_skip()
    app = create_app(services)
    async with running(app) as url, httpx.AsyncClient(base_url=url) as http:
        made = await http.post("/api/raids", headers=TEAM, json={
            "community": {"platform": "web", "id": "team", "title": "Team web"}, "targetUrl": URL})
        assert made.status_code == 201, made.text
        cid = made.json()["communityId"]
        shown = (await http.get(f"/api/communities/{cid}/settings", headers=TEAM)).json()["effective"]
        keys = list(shown)
        proc = await start_browser(node, url, tmp_path, TEAM_KEY)
        try:
            b = Browser(proc)
            await b.ask(do="visible", selector="#settings-form")
            labels = (await b.ask(do="texts", selector="#settings-fields label"))["texts"]
            assert labels == keys  # every key as the community's raids use it, in the server's order
            await b.ask(do="click", selector="#settings-form button[type=submit]")
            await b.ask(do="text", selector="#mod-status", expect="Nothing changed", within=2000)
            early, multiple = keys.index("bonuses.early_joiners"), keys.index("allow_multiple_active")
            await b.ask(do="fill", selector=f"#setting-{early}", value="4")
            await b.ask(do="key", selector=f"#setting-{multiple}", key=" ")  # a checkbox, ticked from the keyboard
            await b.ask(do="key", selector="#settings-form button[type=submit]", key="Enter")
            await b.ask(do="text", selector="#mod-status", expect="Saved allow_multiple_active, bonuses.early_joiners",
                        within=3000)
            own = (await http.get(f"/api/communities/{cid}/settings", headers=TEAM)).json()["settings"]
            assert own == {"allow_multiple_active": True, "bonuses.early_joiners": 4}  # only what changed
            await b.ask(do="fill", selector=f"#setting-{keys.index('max_participants')}", value="-5")
            await b.ask(do="click", selector="#settings-form button[type=submit]")
            await b.ask(do="text", selector="#mod-error", expect="max_participants:", within=3000)
            after = (await http.get(f"/api/communities/{cid}/settings", headers=TEAM)).json()
            assert after["effective"]["max_participants"] == 500 and after["settings"] == own  # refused: nothing written
            await assert_axe_clean(b, "settings shown")
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def assert_axe_clean(b: Browser, state: str) -> None:
    found = (await b.ask(do="axe"))["violations"]
    assert found == [], f"{state}: {found}"
