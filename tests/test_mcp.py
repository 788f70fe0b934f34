"""The MCP adapter through the SDK's own client: over stdio (a real `python -m adapters.mcp` process)
and over streamable HTTP (mounted at /mcp in the real HTTP app, served by uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextResourceContents

from adapters.http.app import create_app
from adapters.mcp import LazyMcp, mcp_http_app, transport
from core.clock import FakeClock
from core.config import Settings
from core.events import EventBus, EventRecorder, RaidStarted
from core.services import Services
from core.storage.db import Database

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"start_raid", "join_raid", "claim_action", "revoke_claim", "get_raid", "get_leaderboard",
         "get_member_context", "get_community_settings", "update_community_settings", "list_chat_links",
         "create_chat_link_code", "link_chats", "unlink_chat", "merge_members", "get_member_accounts"}
URL = "https://twitter.com/nubi/status/42?s=20"
ALICE = {"platform": "telegram", "id": "1001", "name": "alice", "username": "alice"}
BOB = {"platform": "telegram", "id": "1002", "name": "bob"}
START = {"chat_platform": "telegram", "chat_id": "-1001", "chat_title": "Raid Group", "url": URL,
         "objectives": {"like": 2, "repost": 1}, "duration_minutes": 10, "max_participants": 3}


async def ok(session: ClientSession, tool: str, **args: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


async def refused(session: ClientSession, tool: str, **args: Any) -> CallToolResult:
    result = await session.call_tool(tool, args)
    assert result.is_error
    assert "Traceback" not in result.content[0].text  # type: ignore[union-attr]
    return result


def text(result: CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


async def read_json(session: ClientSession, uri: str) -> Any:
    contents = (await session.read_resource(uri)).contents
    assert isinstance(contents[0], TextResourceContents) and contents[0].mime_type == "application/json"
    return json.loads(contents[0].text)


# -- stdio ------------------------------------------------------------------------------------------


@asynccontextmanager
async def stdio_session(db_url: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "adapters.mcp", db_url], cwd=str(ROOT), env={"PYTHONPATH": str(ROOT)}
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def test_stdio_tools_resources_and_errors(services: Services, clock: FakeClock, db_url: str) -> None:
    async with stdio_session(db_url) as s:
        assert {t.name for t in (await s.list_tools()).tools} == TOOLS
        templates = (await s.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["nubi://raids/{raid_id}"]
        assert await read_json(s, "nubi://raids/active") == []

        raid = await ok(s, "start_raid", **START)
        rid = raid["id"]
        assert raid["targetUrl"] == "https://x.com/nubi/status/42" and raid["status"] == "active"
        assert [(o["action"], o["target"]) for o in raid["objectives"]] == [("like", 2), ("repost", 1)]
        assert raid["maxParticipants"] == 3 and 590 <= raid["timeLeftSeconds"] <= 600
        # the subprocess wrote to the database it was given
        assert (await services.raids.progress(rid)).chat.title == "Raid Group"

        joined = await ok(s, "join_raid", raid_id=rid, member=ALICE)
        assert joined["position"] == 1 and not joined["alreadyJoined"] and joined["bonus"] > 0
        assert (await ok(s, "join_raid", raid_id=rid, member=ALICE))["alreadyJoined"]
        claim = await ok(s, "claim_action", raid_id=rid, member=ALICE, action="like")
        assert claim["verification"] == "unverifiable" and claim["points"] > 0 and not claim["alreadyClaimed"]

        progress = await ok(s, "get_raid", raid_id=rid)
        assert progress["participants"] == 1 and progress["actions"] == 1
        assert progress["objectives"][0] == {"action": "like", "target": 2, "points": 1, "count": 1, "met": False}
        assert progress["top"][0]["name"] == "alice"

        board = await ok(s, "get_leaderboard", raid_id=rid, top=5)
        assert [(e["rank"], e["name"]) for e in board["entries"]] == [(1, "alice")]
        community = await ok(s, "get_leaderboard", community_id=raid["communityId"], window="week")
        assert community["entries"][0]["member_id"] == joined["memberId"]

        ctx = await ok(s, "get_member_context", member_id=joined["memberId"])
        assert ctx["member"]["name"] == "alice" and ctx["activeRaids"][0]["id"] == rid
        assert "Member: alice" in ctx["text"] and f"Active raid #{rid}" in ctx["text"]
        by_account = await ok(s, "get_member_context", member={"platform": "telegram", "id": "1001"})
        assert by_account["member"]["id"] == joined["memberId"]

        # a Sessions API user is a web member: their session's context names them
        clock.set(datetime.now(UTC))
        session = await services.sessions.create(services.settings.agents[0].id, "0c7d2b57-7a4e-4c6f-9a57-2b1de0f1b001")
        await ok(s, "join_raid", raid_id=rid, member={"platform": "web", "id": session.user_id, "name": "webby"})
        ctx = await ok(s, "get_member_context", session_id=session.id)
        assert ctx["member"]["name"] == "webby" and ctx["session"]["sessionId"] == session.id

        active = await read_json(s, "nubi://raids/active")
        assert [(r["id"], r["participants"]) for r in active] == [(rid, 2)]
        assert (await read_json(s, f"nubi://raids/{rid}"))["targetUrl"] == "https://x.com/nubi/status/42"

        # domain errors: the friendly message, the stable code, no traceback
        missing = await refused(s, "get_raid", raid_id=99999)
        assert text(missing) == "Raid 99999 not found"
        assert missing.structured_content == {"error": {"code": "RAID_NOT_FOUND", "message": "Raid 99999 not found"}}
        bad_url = await refused(s, "start_raid", **(START | {"chat_id": "-2", "url": "http://example.com/post"}))
        assert text(bad_url) == "the target must be an https:// URL"
        assert bad_url.structured_content["error"]["details"] == {"field": "target"}  # type: ignore[index]
        again = await refused(s, "start_raid", **START)
        assert f"Raid #{rid} is still running here" in text(again)
        assert "does not ask for quotes" in text(await refused(s, "claim_action", raid_id=rid, member=ALICE,
                                                              action="quote"))
        assert "Join the raid first" in text(await refused(s, "claim_action", raid_id=rid, member=BOB, action="like"))
        assert "raid_id or community_id" in text(await refused(s, "get_leaderboard"))
        assert "exactly one" in text(await refused(s, "get_member_context", member_id=1, session_id=session.id))
        assert "does not know" in text(await refused(s, "get_member_context", member={"platform": "discord", "id": "7"}))
        # the schema refuses what it describes before any service runs
        assert "duration_minutes" in text(await refused(s, "start_raid", **(START | {"duration_minutes": 0})))
        assert "action" in text(await refused(s, "claim_action", raid_id=rid, member=ALICE, action="dance"))
        assert "raid_id" in text(await refused(s, "get_raid", raid_id="abc"))
        with pytest.raises(MCPError, match="Raid 99999 not found"):
            await s.read_resource("nubi://raids/99999")

        # partner chats and members, as `/community chats|link` and the boards show them
        cid = raid["communityId"]
        assert raid["partnerChats"] == [] and progress["partnerChats"] == []
        assert await ok(s, "list_chat_links", community_id=cid) == {"communityId": cid, "links": []}
        code = await ok(s, "create_chat_link_code", community_id=cid)
        assert code["channel"] is None and len(code["code"]) == 9
        same_chat = await refused(s, "link_chats", community_id=cid, code=code["code"])
        assert same_chat.structured_content["error"]["details"] == {"field": "code"}  # type: ignore[index]
        channel = await refused(s, "create_chat_link_code", community_id=cid, channel_id="5")
        assert channel.structured_content["error"]["details"] == {"field": "channel"}  # type: ignore[index]
        assert text(await refused(s, "unlink_chat", community_id=cid, link_id=1)) == \
            "This community has no chat link #1."
        accounts = await ok(s, "get_member_accounts", member_id=joined["memberId"], community_id=cid)
        assert accounts == {"communityId": cid, "memberId": joined["memberId"], "name": "alice",
                            "platforms": ["telegram"]}

        # a moderator takes a claim back: scoped to its community, once, audited
        elsewhere = await refused(s, "revoke_claim", claim_id=claim["claimId"], community_id=cid + 1)
        assert text(elsewhere) == f"There is no claim #{claim['claimId']} here."
        revoked = await ok(s, "revoke_claim", claim_id=claim["claimId"], reason="no like found", community_id=cid)
        assert revoked == {"claimId": claim["claimId"], "verification": "rejected", "pointsRevoked": claim["points"]}
        assert (await ok(s, "get_raid", raid_id=rid))["actions"] == 0
        twice = await refused(s, "revoke_claim", claim_id=claim["claimId"])
        assert twice.structured_content["error"]["code"] == "CONFLICT"  # type: ignore[index]
        audit = (await services.moderation.audit_log(cid))[0]
        assert (audit["action"], audit["amount"], audit["reason"]) == ("claim_revoke", -claim["points"], "no like found")

    assert (await services.raids.progress(rid)).participants == 2


# -- streamable HTTP --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serve(services: Services, mcp: Any = None) -> AsyncIterator[str]:
    """The real HTTP app with MCP mounted at /mcp, as the composition root wires it (LazyMcp: the SDK is
    loaded by the first /mcp request)."""
    mcp = mcp if mcp is not None else LazyMcp(services)
    app = create_app(services, mounts=[("/mcp", mcp)], lifespans=[mcp.lifespan()])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def http_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"x-api-key": key} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_streamable_http_mounted_in_the_app(services: Services) -> None:
    async with serve(services) as base:
        async with http_session(f"{base}/mcp/") as s:
            assert {t.name for t in (await s.list_tools()).tools} == TOOLS
            raid = await ok(s, "start_raid", **START)
            rid = raid["id"]
            # started in this process: the event reaches the bus the chat adapters listen on
            assert [e.raid_id for e in services.recorder.of(RaidStarted)] == [rid]
            await ok(s, "join_raid", raid_id=rid, member=ALICE)
            await ok(s, "claim_action", raid_id=rid, member=ALICE, action="repost")
            progress = await ok(s, "get_raid", raid_id=rid)
            assert progress["participants"] == 1 and progress["objectives"][1]["met"]
            assert [r["id"] for r in await read_json(s, "nubi://raids/active")] == [rid]
            assert text(await refused(s, "join_raid", raid_id=rid + 1, member=BOB)) == f"Raid {rid + 1} not found"
        # `/mcp` without the slash redirects within the origin, which the SDK client follows
        async with http_session(f"{base}/mcp") as s:
            assert (await ok(s, "get_raid", raid_id=rid))["participants"] == 1


async def test_mcp_is_built_once_by_the_first_requests_and_stopped_with_the_server(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []

    def counted(svc: Services) -> Any:
        built.append(mcp_http_app(svc))
        return built[-1]

    monkeypatch.setattr(transport, "mcp_http_app", counted)
    mcp = LazyMcp(services)
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
    async with serve(services, mcp) as base:
        assert mcp.app is None and built == []  # serving, and nothing of MCP built yet
        async with httpx2.AsyncClient() as client:
            answers = await asyncio.gather(*(client.post(f"{base}/mcp/", json=body, headers={
                "accept": "application/json, text/event-stream"}) for _ in range(8)))
        assert [r.status_code for r in answers] == [200] * 8 and all("nubi" in r.text for r in answers)
        assert built == [mcp.app]
        runner = mcp.runner
        assert runner is not None and not runner.done()
    assert runner.done() and runner.exception() is None  # the session manager stopped with the server


async def test_http_needs_an_admin_key_when_keys_are_set(db_url: str, clock: FakeClock) -> None:
    settings = Settings(http={"api_keys": [{"key": "admin-key", "community": "*"},
                                           {"key": "group-key", "community": "telegram:-1001"}]})
    services = Services(Database(db_url), clock, settings, EventBus())
    recorder = EventRecorder(services.bus)
    try:
        async with serve(services) as base:
            async with http_session(f"{base}/mcp/", key="admin-key") as s:
                rid = (await ok(s, "start_raid", **START))["id"]
            assert [e.raid_id for e in recorder.of(RaidStarted)] == [rid]
            body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
            headers = {"accept": "application/json, text/event-stream"}
            async with httpx2.AsyncClient() as client:
                scoped = await client.post(f"{base}/mcp/", json=body, headers=headers | {"x-api-key": "group-key"})
                anonymous = await client.post(f"{base}/mcp/", json=body, headers=headers)
            assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "FORBIDDEN"
            assert anonymous.status_code == 401
    finally:
        await services.db.dispose()
