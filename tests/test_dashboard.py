"""The dashboard: its read API over a real server, and the page itself in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.http.app import create_app
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.i18n import _, use_language
from core.raids.model import END_CAUSES, RaidSpec
from core.services import Services
from tests.conftest import IN_CI
from tests.test_realtime import read_json_line, running

ADMIN_KEY = "admin-key-for-dashboard-1"
TEAM_KEY = "team-key-for-dashboard-2"
ALPHA = ChatRef("telegram", "-1002", "Alpha Squad")
LIVE = ChatRef("discord", "9001", "nubi raiders", channel="90010")
TEAM = ChatRef("web", "team", "Team web")
URL = "https://x.com/nubi/status/4242"
JS_DIR = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    if getattr(request, "param", "open") == "keys":
        return Settings(http={"api_keys": [{"key": ADMIN_KEY}, {"key": TEAM_KEY, "community": "web:team"}]})
    return Settings()


def raider(i: int, platform: str = "telegram") -> MemberRef:
    names = ["Ada", "Bashir", "Chen", "Dana", "Eko", "Farah", "Goran", "Hana", "Ivo", "Juno"]
    return MemberRef(platform, str(700 + i), names[i % len(names)], names[i % len(names)].lower())


async def ended_raid(services: Services, clock) -> int:
    """A finished raid with members, claims and metrics snapshots, as the page shows under 'Ended'."""
    raid = await services.raids.start(ALPHA, RaidSpec(URL, {"like": 4, "repost": 3}), by=raider(0))
    for i in range(4):
        clock.advance(seconds=60)
        await services.raids.join(raid.id, raider(i))
        await services.raids.claim(raid.id, raider(i), "like")
        await services.raids.snapshot(raid.id)
    await services.raids.end(raid.id, reason="time is up")
    return raid.id


async def test_read_api_and_static_files(services: Services, clock) -> None:
    old = await ended_raid(services, clock)
    live = await services.raids.start(LIVE, RaidSpec(URL, {"like": 5}), by=raider(0, "discord"))
    await services.raids.join(live.id, raider(1, "discord"))
    await services.raids.claim(live.id, raider(1, "discord"), "like")
    await services.raids.snapshot(live.id)
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        active = (await http.get("/api/dashboard/raids")).json()["raids"]
        assert [(r["id"], r["participants"], r["actions"]) for r in active] == [(live.id, 1, 1)]
        ended = (await http.get("/api/dashboard/raids", params={"status": "ended"})).json()["raids"]
        assert [r["id"] for r in ended] == [old] and ended[0]["report"]["participants"] == 4
        assert ended[0]["report"]["objectives"][0] == {"action": "like", "target": 4, "count": 4, "met": True}
        detail = (await http.get(f"/api/dashboard/raids/{live.id}")).json()
        assert detail["raid"]["top"][0]["name"] == "Bashir" and detail["report"] is None
        assert [m["actions"] for m in detail["metrics"]] == [1]
        assert len((await http.get(f"/api/dashboard/raids/{old}")).json()["metrics"]) == 4
        board = (await http.get(f"/api/dashboard/communities/{ended[0]['communityId']}/leaderboard",
                                params={"window": "all"})).json()
        assert [e["name"] for e in board["entries"]][:1] and len(board["entries"]) == 4
        assert (await http.get("/api/dashboard/communities/1/leaderboard", params={"window": "year"})).status_code == 400
        shown = (await http.get(f"/api/dashboard/communities/{ended[0]['communityId']}/settings")).json()
        assert shown["settings"] == {} and shown["effective"]["verification"] == "honor"
        missing = await http.get("/api/dashboard/raids/424242")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "RAID_NOT_FOUND"
        me = (await http.get("/api/dashboard/me")).json()
        assert me == {"keysRequired": False, "scope": "all", "community": None, "communityId": None}
        page = await http.get("/")
        assert page.status_code == 200 and '<script src="/static/socket.io.min.js?v=' in page.text
        client_js = await http.get("/static/socket.io.min.js")
        assert client_js.status_code == 200 and "Socket.IO v4" in client_js.text[:200]
        assert (await http.get("/static/dashboard.js")).status_code == 200
        assert (await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).status_code == 200


async def linked_member(services: Services, raid_id: int, community_id: int) -> tuple[int, int]:
    """One person on Telegram and Discord, both accounts in the raid with points, merged by a moderator."""
    tg, dc = MemberRef("telegram", "801", "Kai", "kai"), MemberRef("discord", "9801", "Kai on Discord", "kaid")
    for account, action in ((tg, "like"), (dc, "repost")):
        await services.raids.join(raid_id, account)
        await services.raids.claim(raid_id, account, action)
    refused = await services.member_links.redeem(dc, (await services.member_links.issue(tg)).code)
    assert not refused.linked  # both hold points here: a moderator merges them
    before = [(await services.boards.rank(community_id, m))[1] for m in refused.members]
    assert all(before)
    kept = (await services.member_links.merge(community_id, *refused.members, actor=None)).member_id
    return kept, sum(before)


async def test_boards_show_a_linked_member_once_with_platforms_badges_and_the_community_language(
    services: Services,
) -> None:
    raid = await services.raids.start(ALPHA, RaidSpec(URL, {"like": 5, "repost": 5}), by=raider(0))
    cid = raid.community_id
    await services.community_settings.change(cid, {"language": "es", "badges": "5:Raider, 100000:Legend"}, actor=None)
    await services.raids.join(raid.id, raider(1))
    kai, kai_points = await linked_member(services, raid.id, cid)
    with use_language("es"):
        spanish = {"raid": _("Raid leaderboard"), "all": _("All-time leaderboard"), "empty": _("No points in this window.")}
    assert spanish["raid"] != "Raid leaderboard" and spanish["all"] != "All-time leaderboard"  # the catalog has them
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        detail = (await http.get(f"/api/dashboard/raids/{raid.id}")).json()["raid"]
        marks = {e["member_id"]: (e["name"], e["platforms"], e["badge"]) for e in detail["top"]}
        assert len(detail["top"]) == 2 and marks[kai] == ("Kai", ["telegram", "discord"], "Raider")
        assert detail["participants"] == 2  # one seat for the merged member
        assert detail["language"] == "es" and detail["labels"]["board"] == spanish["raid"]
        rest = (await http.get(f"/api/raids/{raid.id}")).json()  # the REST API says the same
        assert rest["language"] == "es"
        assert [(e["memberId"], e["platforms"], e["badge"]) for e in rest["top"]] == \
            [(e["member_id"], e["platforms"], e["badge"]) for e in detail["top"]]

        board = (await http.get(f"/api/dashboard/communities/{cid}/leaderboard", params={"window": "all"})).json()
        assert [e["member_id"] for e in board["entries"]].count(kai) == 1 and len(board["entries"]) == 2
        mine = next(e for e in board["entries"] if e["member_id"] == kai)
        assert mine["platforms"] == ["telegram", "discord"] and mine["badge"] == "Raider"
        assert mine["points"] == kai_points  # both accounts' points, on one line
        assert (board["language"], board["languageName"]) == ("es", "Español")
        assert board["labels"] == {"title": spanish["all"], "empty": spanish["empty"]}
        shown = (await http.get(f"/api/dashboard/communities/{cid}/settings")).json()
        assert shown["language"] == {"code": "es", "name": "Español"} and shown["settings"]["language"] == "es"

        await services.raids.end(raid.id, reason="done")
        ended = (await http.get("/api/dashboard/raids", params={"status": "ended"})).json()["raids"][0]
        top = {e["memberId"]: e for e in ended["report"]["topRaiders"]}
        assert (top[kai]["platforms"], top[kai]["badge"]) == (["telegram", "discord"], "Raider")
        with use_language("es"):
            assert ended["labels"]["endedBecause"] == _(END_CAUSES[ended["endCause"]]) != END_CAUSES[ended["endCause"]]

        english = await services.raids.start(LIVE, RaidSpec(URL), by=raider(0, "discord"))  # no language set
        assert (await http.get(f"/api/dashboard/raids/{english.id}")).json()["raid"]["labels"]["board"] == \
            "Raid leaderboard"


@pytest.mark.parametrize("settings", ["keys"], indirect=True)
async def test_read_api_needs_a_key_and_respects_its_scope(services: Services) -> None:
    await services.raids.start(LIVE, RaidSpec(URL), by=raider(0, "discord"))
    team = await services.raids.start(TEAM, RaidSpec(URL), by=raider(0, "web"))
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/")).status_code == 200  # the page itself is open; it asks for a key
        assert (await http.get("/api/dashboard/raids")).status_code == 401
        admin = await http.get("/api/dashboard/raids", headers={"X-API-KEY": ADMIN_KEY})
        assert len(admin.json()["raids"]) == 2
        scoped = await http.get("/api/dashboard/raids", headers={"X-API-KEY": TEAM_KEY})
        assert [r["id"] for r in scoped.json()["raids"]] == [team.id]
        assert (await http.get("/api/dashboard/me")).status_code == 401
        me = (await http.get("/api/dashboard/me", headers={"X-API-KEY": TEAM_KEY})).json()
        assert me == {"keysRequired": True, "scope": "community", "community": "web:team", "communityId": team.community_id}
        me = (await http.get("/api/dashboard/me", headers={"X-API-KEY": ADMIN_KEY})).json()
        assert me == {"keysRequired": True, "scope": "all", "community": None, "communityId": None}
        other = admin.json()["raids"][0]["id"] if admin.json()["raids"][0]["id"] != team.id else admin.json()["raids"][1]["id"]
        assert (await http.get(f"/api/dashboard/raids/{other}", headers={"X-API-KEY": TEAM_KEY})).status_code == 403


def browser_or_skip() -> str:
    node = shutil.which("node")
    reason = None
    if not CHROMIUM.exists():
        reason = "Chromium is not installed (apt-get install chromium)"
    elif node is None:
        reason = "node is not installed"
    elif not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        reason = "tests/js/node_modules is missing (run npm install in tests/js)"
    if reason:
        if IN_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)
    return node  # type: ignore[return-value]


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await read_json_line(self.proc.stdout)
        assert reply["step"] != "error", reply
        return reply


async def start_browser(node: str, url: str, tmp_path: Path, *extra: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "dashboard_browser.mjs"), url, str(tmp_path / "profile"), *extra,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        loaded = await read_json_line(proc.stdout, within=30)
        assert loaded == {"step": "loaded"}, loaded
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


@pytest.mark.parametrize("settings", ["keys"], indirect=True)
async def test_dashboard_asks_for_a_key_and_shows_only_its_community(services: Services, tmp_path: Path) -> None:
    node = browser_or_skip()
    team = await services.raids.start(TEAM, RaidSpec(URL), by=raider(0, "web"))
    other = await services.raids.start(LIVE, RaidSpec(URL), by=raider(0, "discord"))
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path, TEAM_KEY)
        try:
            browser = Browser(proc)
            assert (await browser.ask(do="card", raidId=team.id))["participants"] == "0"
            await services.raids.join(other.id, raider(1, "discord"))
            await services.raids.join(team.id, raider(1, "web"))
            await browser.ask(do="counter", raidId=team.id, expect="1", within=2000)
            shown = await browser.ask(do="text", selector="#active", expect="Team web", within=1000)
            assert "nubi raiders" not in shown["text"]  # another community's raid stays out of sight
            assert (await browser.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_dashboard_follows_raids_live(services: Services, clock, tmp_path: Path) -> None:
    node = browser_or_skip()
    await ended_raid(services, clock)
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path)
        try:
            browser = Browser(proc)

            live = await services.raids.start(LIVE, RaidSpec(URL, {"like": 8, "repost": 5, "reply": 3}),
                                              by=raider(0, "discord"))
            await services.community_settings.change(live.community_id, {"timezone": "Europe/Berlin"}, actor=None)
            assert (await browser.ask(do="card", raidId=live.id))["participants"] == "0"
            await services.raids.join(live.id, raider(0, "discord"))
            moved = await browser.ask(do="counter", raidId=live.id, expect="1", within=2000)
            assert moved["ms"] <= 2000

            for i in range(1, 7):  # a few minutes of raid, with the snapshots the chart draws
                clock.advance(seconds=60)
                await services.raids.join(live.id, raider(i, "discord"))
                for action in ("like", "repost", "reply")[: 1 + i % 3]:
                    await services.raids.claim(live.id, raider(i, "discord"), action)
                await services.raids.snapshot(live.id)
            await browser.ask(do="counter", raidId=live.id, expect="7", within=3000)
            await browser.ask(do="text", selector="#community-board", expect="pt", within=3000)
            await browser.ask(do="text", selector="#community-settings", expect="Europe/Berlin", within=3000)
            await browser.ask(do="text", selector="#ended", expect="Alpha Squad", within=3000)
            note = await browser.ask(do="text", selector="#chart-note", expect="6 metrics snapshots", within=7000)
            assert "plus live updates" in note["text"]

            shot = tmp_path / "dashboard.png"
            await browser.ask(do="screenshot", path=str(shot), width=1280, height=900)
            narrow = tmp_path / "dashboard-narrow.png"
            await browser.ask(do="screenshot", path=str(narrow), width=390, height=844)
            await services.raids.end(live.id, status="cancelled")  # the card moves to the ended raids
            await browser.ask(do="text", selector="#active-count", expect="0", within=3000)
            await browser.ask(do="text", selector="#ended", expect="nubi raiders", within=3000)
            done = await browser.ask(do="quit")
            assert done["problems"] == []
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    for png in (shot, narrow):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
