"""Moderators own their community's settings: from chat, over REST and over MCP, validated like the
config file, audited, and used by the raids and boards of that community only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.http.app import create_app
from adapters.telegram import TelegramAdapter
from core.services import Services
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.test_http_raids import assert_error
from tests.test_mcp import http_session, ok, refused, serve
from tests.test_targets import say
from tests.test_telegram_adapter import ORIGINAL, config_for, running

GROUP = -100555
MOD, MEMBER = 7, 300
URL = "https://x.com/nubi/status/42"


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as server:
        server.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        server.set_member(GROUP, MOD, "administrator", first_name="Mod")
        yield server


@pytest.fixture
async def adapter(services: Services, fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    async with running(services, config_for(fake)) as started:
        yield started


async def community(services: Services) -> int:
    from core import catalog

    found = await catalog.community_id_of(services.db, "telegram", str(GROUP))
    assert found is not None
    return found


async def test_moderators_change_settings_from_chat_and_raids_use_them(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    refused_member = await say(fake, GROUP, MEMBER, "/settings set verification review", username="raider_one")
    assert refused_member.text == "Sorry, only moderators can do that here."

    bad = await say(fake, GROUP, MOD, "/settings set objectives.like.points lots")
    assert bad.text.startswith("objectives.like.points:")
    bad = await say(fake, GROUP, MOD, "/settings set verification maybe")
    assert bad.text.startswith("verification: Input should be 'honor'")
    cid = await community(services)
    assert (await services.community_settings.show(cid))["settings"] == {}  # refused values wrote nothing

    assert (await say(fake, GROUP, MOD, "/settings set objectives.like.points 4")).text == \
        "objectives.like.points is now 4 here."
    assert (await say(fake, GROUP, MOD, "/settings set bonuses.completion_points 25")).text == \
        "bonuses.completion_points is now 25 here."
    shown = await say(fake, GROUP, MEMBER, "/settings", username="raider_one")  # anyone may read them
    assert "objectives.like.points = 4 (set here)" in shown.text
    assert "bonuses.early_joiner_points = 5\n" in shown.text  # the other bonuses keep the global values

    post = await say(fake, GROUP, MOD, f"/raid start {URL} likes=5")
    assert "Likes: ░░░░░░░░░░ 0/5 (4 pt each)" in post.text

    assert (await say(fake, GROUP, MOD, "/settings reset objectives.like.points")).text == \
        "objectives.like.points is back to the default: 1."
    audit = await services.moderation.audit_log(cid)
    assert [(a["action"], a["data"]["key"], a["data"]["value"]) for a in audit] == [
        ("settings_reset", "objectives.like.points", None),
        ("settings_set", "bonuses.completion_points", "25"),
        ("settings_set", "objectives.like.points", "4"),
    ]


async def test_the_community_time_zone_is_the_schedules_default(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    assert (await say(fake, GROUP, MOD, "/settings set timezone Mars/Olympus")).text.startswith("timezone: unknown time zone")
    await say(fake, GROUP, MOD, "/settings set timezone Europe/Berlin")
    added = await say(fake, GROUP, MOD, "/schedule leaderboard 0 12 * * mon week")
    assert added.text == "Schedule #1: the week top 10 at '0 12 * * mon' (Europe/Berlin)."


async def test_exclusions_leave_members_off_the_board(services: Services, client: httpx.AsyncClient) -> None:
    raid = (await client.post("/api/raids", json={"community": {"platform": "telegram", "id": str(GROUP)},
                                                  "targetUrl": URL, "objectives": {"like": 5}})).json()
    for i in (1, 2):
        r = await client.post(f"/api/raids/{raid['id']}/join",
                              json={"member": {"platform": "telegram", "id": str(900 + i), "name": f"m{i}"}})
        assert r.status_code == 200
    cid = raid["communityId"]

    def names() -> Any:
        return client.get(f"/api/communities/{cid}/leaderboard", params={"window": "all"})

    assert [e["name"] for e in (await names()).json()["entries"]] == ["m1", "m2"]
    assert_error(await client.patch(f"/api/communities/{cid}/settings",
                                    json={"settings": {"exclude_members": ["myspace:901"]}}),
                 400, "VALIDATION_ERROR", "exclude_members")
    r = await client.patch(f"/api/communities/{cid}/settings", json={"settings": {"exclude_members": ["telegram:901"]}})
    assert r.status_code == 200 and r.json()["settings"] == {"exclude_members": ["telegram:901"]}
    assert [e["name"] for e in (await names()).json()["entries"]] == ["m2"]
    await client.patch(f"/api/communities/{cid}/settings", json={"settings": {"exclude_members": None}})
    assert [e["name"] for e in (await names()).json()["entries"]] == ["m1", "m2"]


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def test_rest_reads_and_patches_settings_all_or_nothing(services: Services, client: httpx.AsyncClient) -> None:
    raid = (await client.post("/api/raids", json={"community": {"platform": "telegram", "id": "-1"},
                                                  "targetUrl": URL, "objectives": {"like": 5}})).json()
    cid = raid["communityId"]
    got = await client.get(f"/api/communities/{cid}/settings")
    assert got.status_code == 200 and got.json()["settings"] == {}
    assert got.json()["effective"]["verification"] == "honor"

    before = (await client.get(f"/api/communities/{cid}/audit")).json()["entries"]
    r = await client.patch(f"/api/communities/{cid}/settings",
                           json={"settings": {"verification": "review", "max_participants": 0}})
    assert_error(r, 400, "VALIDATION_ERROR", "max_participants")
    assert_error(await client.patch(f"/api/communities/{cid}/settings", json={"settings": {"colour": "red"}}),
                 400, "VALIDATION_ERROR", "key")
    assert_error(await client.patch(f"/api/communities/{cid}/settings", json={"settings": {}}), 400, "VALIDATION_ERROR",
                 "settings")
    assert_error(await client.get("/api/communities/999999/settings"), 404, "NOT_FOUND")
    assert (await client.get(f"/api/communities/{cid}/settings")).json()["settings"] == {}
    assert (await client.get(f"/api/communities/{cid}/audit")).json()["entries"] == before

    r = await client.patch(f"/api/communities/{cid}/settings",
                           json={"settings": {"verification": "review", "objectives.repost.target": 7}})
    assert r.status_code == 200
    assert r.json()["settings"] == {"verification": "review", "objectives.repost.target": 7}
    assert r.json()["effective"]["objectives.repost.points"] == 2

    spec = (await client.get("/openapi.json")).json()
    path = spec["paths"]["/api/communities/{community_id}/settings"]
    assert path["get"]["summary"] and path["patch"]["summary"]
    assert {"SettingsOut", "SettingsPatch"} <= set(spec["components"]["schemas"])


async def test_mcp_tools_read_and_change_settings(services: Services) -> None:
    async with serve(services) as base, http_session(f"{base}/mcp/") as s:
        raid = await ok(s, "start_raid", chat_platform="telegram", chat_id="-77", url=URL)
        cid = raid["communityId"]
        changed = await ok(s, "update_community_settings", community_id=cid,
                           settings={"bonuses.completion_points": 40, "timezone": "Asia/Kolkata"})
        assert changed["settings"] == {"bonuses.completion_points": 40, "timezone": "Asia/Kolkata"}
        shown = await ok(s, "get_community_settings", community_id=cid)
        assert shown["effective"]["bonuses.completion_points"] == 40
        no = await refused(s, "update_community_settings", community_id=cid, settings={"timezone": "Nowhere/Else"})
        assert no.structured_content is not None and no.structured_content["error"]["details"]["field"] == "timezone"


async def test_raid_start_verify_resolves_the_community_setting_over_the_global_default(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    await say(fake, GROUP, MOD, "/settings set verification review")
    await say(fake, GROUP, MOD, f"/raid start {URL} likes=5")
    [first] = await services.raids.list(status="active")
    assert first.verification == "review"  # no verify= given: the community's tier
    await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 replace verify=honor")
    [second] = await services.raids.list(status="active")
    assert second.id != first.id and second.verification == "honor"  # the command's word wins
    await adapter.drain()  # the posts of the replaced and the new raid are out
    refused = await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 replace verify=trust")
    assert refused.text.startswith("verify must be honor, proof_link, x_api or review")



async def test_the_language_is_a_setting_over_rest_and_mcp_and_rest_stays_english(
    services: Services, client: httpx.AsyncClient
) -> None:
    raid = (await client.post("/api/raids", json={"community": {"platform": "telegram", "id": "-5"},
                                                  "targetUrl": URL, "objectives": {"like": 5}})).json()
    cid = raid["communityId"]
    assert (await client.get(f"/api/communities/{cid}/settings")).json()["effective"]["language"] == "en"
    r = await client.patch(f"/api/communities/{cid}/settings", json={"settings": {"language": "ES"}})
    assert r.status_code == 200 and r.json()["settings"] == {"language": "es"}
    assert r.json()["effective"]["language"] == "es"
    refused_fr = await client.patch(f"/api/communities/{cid}/settings", json={"settings": {"language": "fr"}})
    assert_error(refused_fr, 400, "VALIDATION_ERROR", "language")
    assert refused_fr.json()["error"]["message"] == "language: 'fr' is not one of en, es, ru"  # an API client's words
    ended = await client.post(f"/api/raids/{raid['id']}/end", json={})
    assert ended.status_code == 200
    again = await client.post(f"/api/raids/{raid['id']}/join", json={"member": {"platform": "telegram", "id": "9"}})
    assert again.status_code >= 400 and again.json()["error"]["message"] == f"Raid #{raid['id']} has ended."

    async with serve(services) as base, http_session(f"{base}/mcp/") as s:
        changed = await ok(s, "update_community_settings", community_id=cid, settings={"language": "ru"})
        assert changed["settings"] == {"language": "ru"} and changed["effective"]["language"] == "ru"
