"""Who is left off the boards is the platform's word, never the caller's API key.

Over the Sessions API with no key every caller may run moderator commands, yet a member who joins
and claims there is on the board. A join through REST or MCP keeps the moderator flag a chat
platform set. REST routes that take a member act only on members of that community.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from adapters.http.app import create_app
from core.commands.service import ChatContext
from core.directory import ChatRef, MemberRef
from core.services import Services
from core.storage.models import CommunityMember
from tests.test_http_raids import assert_error, counts
from tests.test_http_sessions import create, say, serve

CHAT = ChatRef("telegram", "-100123", "Raiders")
TG_MOD = ChatContext(CHAT, MemberRef("telegram", "7", "Mo", "mo_mod"), is_moderator=True)
URL = "https://x.com/nubi/status/42"


async def test_a_keyless_sessions_api_member_is_on_the_board(services: Services) -> None:
    async with serve(services) as srv:  # no API keys configured: every caller may moderate
        http = srv.http
        mod = (await create(http, metadata={"username": "captain"}))["sessionId"]
        member = (await create(http, metadata={"username": "deckhand"}))["sessionId"]
        await say(http, mod, f"/raid start {URL} likes=5")
        assert "joined raid" in (await say(http, member, "/join"))["agentResponse"]["text"]
        assert "Like claimed" in (await say(http, member, "/claim like"))["agentResponse"]["text"]
        board = (await say(http, member, "/leaderboard week"))["agentResponse"]["text"]
        me = (await say(http, member, "/me"))["agentResponse"]["text"]
    assert "deckhand" in board and "No points yet" not in board
    assert "(#1)" in me


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def test_rest_and_mcp_joins_keep_the_platform_moderator_flag(
    services: Services, client: httpx.AsyncClient
) -> None:
    first = await services.commands.handle_text(TG_MOD, f"/raid start {URL} likes=5")
    assert first is not None and first.raid is not None
    await services.commands.handle_text(TG_MOD, "/join")
    await services.commands.handle_text(TG_MOD, "/raid end")
    second = await services.commands.handle_text(TG_MOD, f"/raid start {URL} likes=5")
    assert second is not None and second.raid is not None
    community = second.raid.community_id

    async def flag() -> bool:
        return bool(await services.db.read(lambda s: s.scalar(select(CommunityMember.is_moderator).where(
            CommunityMember.community_id == community))))

    assert await flag()
    joined = await client.post(f"/api/raids/{second.raid.id}/join",
                               json={"member": {"platform": "telegram", "id": "7", "name": "Mo"}})
    assert joined.status_code == 200, joined.text
    assert await flag()  # the REST join said nothing of Mo's rights, so Mo stays off the boards
    await services.raids.join(second.raid.id, MemberRef("telegram", "7", "Mo"))  # as MCP and Socket.IO call it
    assert await flag()


async def test_rest_members_are_taken_only_inside_their_community(
    services: Services, client: httpx.AsyncClient
) -> None:
    here = (await client.post("/api/raids", json={"community": {"platform": "telegram", "id": "-1001"},
                                                 "targetUrl": URL, "objectives": {"like": 5}})).json()
    there = (await client.post("/api/raids", json={"community": {"platform": "telegram", "id": "-1002"},
                                                  "targetUrl": URL, "objectives": {"like": 5}})).json()
    outsider = (await client.post(f"/api/raids/{there['id']}/join",
                                  json={"member": {"platform": "web", "id": "far", "name": "far"}})).json()["memberId"]
    before = await counts(services)
    cid = here["communityId"]
    assert_error(await client.post(f"/api/communities/{cid}/points",
                                   json={"memberId": outsider, "points": 5, "reason": "x"}), 400,
                 "VALIDATION_ERROR", "memberId")
    assert_error(await client.post(f"/api/communities/{cid}/bans", json={"memberId": outsider}), 400,
                 "VALIDATION_ERROR", "memberId")
    assert await counts(services) == before
