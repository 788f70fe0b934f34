"""Every entry point asks the one access policy (core/access.py); this test enumerates them, it does not sample.

The entry points come from the app itself: every operation of the OpenAPI document, every route left
out of it (the dashboard page, its files, the docs, the MCP mount), every Socket.IO event handler
registered on the server, and every MCP tool and resource the MCP server lists. Each must be in
CLASSES below (public, community, list or admin); one that is not fails the test, so a route added
tomorrow cannot slip through unclassified. To classify a new route: add its "METHOD /path" to
CLASSES and, for a write, a body to BODIES that would succeed for a caller allowed to make it.

With community B's raid, claim, ban, schedule, sessions and members present, each entry point is
called (through a real uvicorn server, on SQLite, PostgreSQL, and PostgreSQL with row-level security)
as a key of community A, as a key of the default web community, with no key from a non-loopback
address, and with a foreign Host; each must answer with its documented refusal, and no byte of B's
data (its title, target, member names, session ids or its ids under `raidId`/`communityId`) may
appear in any answer. The admin key, calling the same requests, sees B: the control that shows the
requests reach B's objects at all. Afterwards B's rows are exactly as they were.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import socketio
import uvicorn
from fastapi.routing import iter_route_contexts
from sqlalchemy import func, select

import core.storage.verification_models  # noqa: F401  (its tables are in Base.metadata too)
from adapters.http.app import create_app
from adapters.mcp.mount import LazyMcp
from core.clock import FakeClock
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from core.storage.models import Base

ADMIN_KEY, A_KEY, WEB_KEY = "admin-key-policy-0001", "a-key-policy-0002", "web-key-policy-0003"
AGENT = Settings().agents[0].id
A = ChatRef("telegram", "-100111", "Alpha group")
B = ChatRef("telegram", "-100999", "BetaSecret group")
MARK = "betasecret"  # in B's title, target, members' names and web community: never in A's answers
B_URL = "https://x.com/betasecret/status/999"
A_URL = "https://x.com/alpha/status/111"
OUTSIDE = "203.0.113.9"  # a client address that is not loopback (TEST-NET-3)

# -- the classification: every entry point, and what a caller that is not B's may get from it ----------
# public: anyone (still only on an allowed Host); community: refused (403/404) for another community's
# objects; list: answered, narrowed to the caller's own community; admin: admin keys only (403).
CLASSES: dict[str, str] = {
    "GET /": "public", "GET /docs": "public", "GET /docs/oauth2-redirect": "public",
    "GET /openapi.json": "public", "MOUNT /static": "public", "MOUNT /docs/static": "public", "GET /api/messaging/sessions/health": "public",
    "GET /api/agents": "list",
    "GET /api/messaging/sessions": "list",
    "POST /api/messaging/sessions": "community",
    "GET /api/messaging/sessions/{session_id}": "community",
    "DELETE /api/messaging/sessions/{session_id}": "community",
    "POST /api/messaging/sessions/{session_id}/messages": "community",
    "GET /api/messaging/sessions/{session_id}/messages": "community",
    "POST /api/messaging/sessions/{session_id}/renew": "community",
    "POST /api/messaging/sessions/{session_id}/heartbeat": "community",
    "PATCH /api/messaging/sessions/{session_id}/timeout": "community",
    "POST /api/raids/sessions": "community",
    "GET /api/raids/sessions": "list",
    "GET /api/raids/sessions/{session_id}": "community",
    "POST /api/raids/sessions/{session_id}/join": "community",
    "POST /api/raids/sessions/{session_id}/actions": "community",
    "GET /api/raids/sessions/{session_id}/leaderboard": "community",
    "GET /api/raids/sessions/{session_id}/metrics": "community",
    "POST /api/raids": "community",
    "GET /api/raids": "list",
    "GET /api/raids/{raid_id}": "community",
    "POST /api/raids/{raid_id}/join": "community",
    "POST /api/raids/{raid_id}/claims": "community",
    "GET /api/raids/{raid_id}/leaderboard": "community",
    "GET /api/raids/{raid_id}/leaderboard.csv": "community",
    "GET /api/raids/{raid_id}/metrics": "community",
    "GET /api/raids/{raid_id}/report": "community",
    "GET /api/raids/{raid_id}/report.csv": "community",
    "POST /api/raids/{raid_id}/end": "community",
    "POST /api/claims/{claim_id}/review": "community",
    "POST /api/claims/{claim_id}/revoke": "community",
    "GET /api/communities/{community_id}/settings": "community",
    "PATCH /api/communities/{community_id}/settings": "community",
    "GET /api/dashboard/communities/{community_id}/settings": "community",
    "GET /api/communities": "list",
    "GET /api/communities/{community_id}": "community",
    "GET /api/communities/{community_id}/leaderboard": "community",
    "GET /api/communities/{community_id}/leaderboard.csv": "community",
    "GET /api/communities/{community_id}/history": "community",
    "GET /api/communities/{community_id}/review": "community",
    "POST /api/communities/{community_id}/points": "community",
    "GET /api/communities/{community_id}/audit": "community",
    "GET /api/communities/{community_id}/link-conflicts": "community",
    "GET /api/communities/{community_id}/schedules": "community",
    "POST /api/communities/{community_id}/schedules": "community",
    "DELETE /api/communities/{community_id}/schedules/{schedule_id}": "community",
    "GET /api/communities/{community_id}/bans": "community",
    "POST /api/communities/{community_id}/bans": "community",
    "DELETE /api/communities/{community_id}/bans/{member_id}": "community",
    "GET /api/communities/{community_id}/chat-links": "community",
    "POST /api/communities/{community_id}/chat-link-codes": "community",
    "POST /api/communities/{community_id}/chat-links": "community",
    "DELETE /api/communities/{community_id}/chat-links/{link_id}": "community",
    "POST /api/communities/{community_id}/member-merges": "community",
    "GET /api/communities/{community_id}/members/{member_id}/accounts": "community",
    "GET /api/context/members/{member_id}": "admin",
    "GET /api/context/sessions/{session_id}": "admin",
    "POST /api/realtime/token": "community",
    "GET /api/dashboard/raids": "list",
    "GET /api/dashboard/me": "list",
    "GET /api/dashboard/raids/{raid_id}": "community",
    "GET /api/dashboard/communities/{community_id}/leaderboard": "community",
    "MOUNT /mcp": "admin",
    # Socket.IO: connecting and authenticating are open; every other event needs a caller who may see B.
    "SIO connect": "public", "SIO disconnect": "public", "SIO session:authenticate": "public",
    "SIO session:join": "community", "SIO session:message": "community", "SIO raid:subscribe": "community",
    "SIO raid:join": "community", "SIO raid:action": "community",
    # MCP: tools and resources span communities, so admin keys only.
    "MCP tool start_raid": "admin", "MCP tool join_raid": "admin", "MCP tool claim_action": "admin",
    "MCP tool get_raid": "admin", "MCP tool get_leaderboard": "admin", "MCP tool get_member_context": "admin",
    "MCP tool revoke_claim": "admin", "MCP tool get_community_settings": "admin",
    "MCP tool update_community_settings": "admin",
    "MCP tool list_chat_links": "admin", "MCP tool create_chat_link_code": "admin", "MCP tool link_chats": "admin",
    "MCP tool unlink_chat": "admin", "MCP tool merge_members": "admin", "MCP tool get_member_accounts": "admin",
    "MCP resource nubi://raids/active": "admin", "MCP resource nubi://raids/{raid_id}": "admin",
}

MEMBER = {"platform": "telegram", "id": "4242", "name": "intruder"}


def bodies(w: World) -> dict[str, Any]:
    """A body per write that the admin could send with success: the refusal is the policy's, not validation's."""
    return {
        "POST /api/messaging/sessions": {"agentId": AGENT, "userId": str(uuid.uuid4()),
                                         "metadata": {"community": "betasecret-web"}},
        "POST /api/messaging/sessions/{session_id}/messages": {"content": "hello", "transport": "http"},
        "PATCH /api/messaging/sessions/{session_id}/timeout": {"timeoutMinutes": 60},
        "POST /api/raids/sessions": {"targetUrl": B_URL, "objectives": [{"type": "like", "count": 5}],
                                     "community": {"platform": B.platform, "id": B.external_id}},
        "POST /api/raids/sessions/{session_id}/join": {"member": MEMBER},
        "POST /api/raids/sessions/{session_id}/actions": {"member": MEMBER, "actionType": "like"},
        "POST /api/raids": {"community": {"platform": B.platform, "id": B.external_id}, "targetUrl": B_URL,
                            "objectives": {"like": 1}, "replace": True},
        "POST /api/raids/{raid_id}/join": {"member": MEMBER},
        "POST /api/raids/{raid_id}/claims": {"member": MEMBER, "action": "like"},
        "POST /api/raids/{raid_id}/end": {"cancel": True},
        "POST /api/claims/{claim_id}/review": {"decision": "accept"},
        "POST /api/claims/{claim_id}/revoke": {"reason": "x"},
        "PATCH /api/communities/{community_id}/settings": {"settings": {"max_participants": 50}},
        "POST /api/communities/{community_id}/points": {"memberId": w.b_member, "points": 5, "reason": "x"},
        "POST /api/communities/{community_id}/schedules": {"cron": "0 12 * * 1", "window": "week"},
        "POST /api/communities/{community_id}/bans": {"memberId": w.b_member, "reason": "x"},
        "POST /api/realtime/token": {"sessionId": w.b_conversation},
        "POST /api/communities/{community_id}/chat-link-codes": {},
        "POST /api/communities/{community_id}/chat-links": {"code": w.link_code},
        "POST /api/communities/{community_id}/member-merges": {"first": w.b_member, "second": w.b_banned},
    }


@dataclass
class World:
    svc: Services
    b_community: int
    b_raid: int
    b_raid_session: str
    b_conversation: str  # a Sessions API conversation in B's web community
    b_claim: int
    b_member: int
    b_banned: int
    b_schedule: int
    b_link: int  # B's link with a partner chat
    link_code: str  # an unused chat link code of that partner chat, which B's moderators could redeem

    def path(self, template: str) -> str:
        session = self.b_raid_session if template.startswith("/api/raids/sessions") else self.b_conversation
        return template.format(raid_id=self.b_raid, community_id=self.b_community, session_id=session,
                               claim_id=self.b_claim, member_id=self.b_banned, schedule_id=self.b_schedule,
                               link_id=self.b_link)

    @property
    def secrets(self) -> list[str]:
        return [MARK, self.b_raid_session, self.b_conversation]


def keyed_settings(url: str, rls: bool = False) -> Settings:
    return Settings(
        database={"url": url, "row_level_security": rls},
        http={"api_keys": [{"key": ADMIN_KEY}, {"key": A_KEY, "community": "telegram:-100111"},
                           {"key": WEB_KEY, "community": f"web:agent:{AGENT}"}],
              "trusted_proxies": ["127.0.0.1"], "rate_limit_per_minute": 100_000},
    )


@pytest.fixture(params=["sqlite", "postgresql", "postgresql+rls"])
async def world(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[World]:
    if request.param == "postgresql+rls":
        from tests.test_rls import _database

        _owner, url = await _database(request)
    else:
        request.getfixturevalue("pg_cluster")
        url = await _plain_url(request, tmp_path, request.param)
    settings = keyed_settings(url, rls=request.param.endswith("rls"))
    settings.raids.verification = "review"  # claims wait for review: B has a pending claim
    svc = Services(Database(url, row_level_security=settings.database.row_level_security), FakeClock(), settings,
                   EventBus())
    try:
        yield await _populate(svc)
    finally:
        await svc.db.dispose()


async def _plain_url(request: pytest.FixtureRequest, tmp_path: Any, kind: str) -> str:
    import shutil

    from tests import pg
    from tests.conftest import make_pg_database

    if kind == "sqlite":
        path = tmp_path / "nubi.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite+aiosqlite:///{path}"
    cluster = request.getfixturevalue("pg_cluster")
    if cluster is None:
        pytest.skip(f"PostgreSQL not available here: {pg.missing_reason()} (under CI this fails)")
    return await make_pg_database(cluster, request.getfixturevalue("pg_template"))


async def _populate(svc: Services) -> World:
    """A and B as the chat adapters and an admin would leave them (global work, no scope)."""
    a_raid = await svc.raids.start(A, RaidSpec(A_URL, {"like": 3}), by=MemberRef("telegram", "1", "alpha-mod"))
    await svc.raids.join(a_raid.id, MemberRef("telegram", "2", "alpha-raider"))
    raid = await svc.raids.start(B, RaidSpec(B_URL, {"like": 3}), by=MemberRef("telegram", "9", "betasecret-mod"))
    raider = MemberRef("telegram", "91", "betasecret-raider", "betasecret_raider")
    joined = await svc.raids.join(raid.id, raider)
    claim = await svc.raids.claim(raid.id, raider, "like")
    banned = await svc.raids.join(raid.id, MemberRef("telegram", "92", "betasecret-banned"))
    await svc.moderation.ban(raid.community_id, banned.member_id, "betasecret reason", actor=None)
    schedule = await svc.schedules.add(raid.community_id, "0 9 * * 1", "week")
    await svc.moderation.adjust_points(raid.community_id, joined.member_id, 7, "betasecret bonus", actor=None)
    assert await svc.raids.snapshot(raid.id)
    conversation = await svc.sessions.create(AGENT, str(uuid.uuid4()),
                                             metadata={"community": "betasecret-web", "userName": "betasecret-user"})
    await svc.sessions.send_message(conversation.id, "betasecret plans")
    await svc.sessions.create(AGENT, str(uuid.uuid4()), metadata={"userName": "web-own-user"})  # the web key's own
    assert claim.claim_id is not None and claim.verification == "pending"
    partner = ChatRef("telegram", "-100555", "Partner group")
    link = await svc.partners.join(B, (await svc.partners.issue(partner)).code)
    code = (await svc.partners.issue(partner)).code
    # the raider and the banned member asked to be one member: refused, both sat in B's raid (a merge waits)
    refused = await svc.member_links.redeem(MemberRef("telegram", "92"), (await svc.member_links.issue(raider)).code)
    assert not refused.linked
    return World(svc, raid.community_id, raid.id, raid.session_id or "", conversation.id, claim.claim_id,
                 joined.member_id, banned.member_id, schedule.id, link.link_id, code)


# -- enumeration ---------------------------------------------------------------------------------------


def http_entry_points(app: Any) -> set[str]:
    """Every operation of the OpenAPI document, plus the routes and mounts it leaves out."""
    found = {f"{method.upper()} {path}" for path, ops in app.fastapi.openapi()["paths"].items() for method in ops}
    for route in iter_route_contexts(app.fastapi.routes):
        if route.methods is None:
            found.add(f"MOUNT {route.path}")
        elif not route.include_in_schema:
            found |= {f"{m} {route.path}" for m in route.methods if m != "HEAD"}
    return found


def socket_entry_points(app: Any) -> set[str]:
    return {f"SIO {event}" for event in app.state.realtime.sio.handlers["/"]}


async def mcp_entry_points(http: httpx.AsyncClient) -> set[str]:
    tools = await mcp(http, "tools/list", {}, ADMIN_KEY)
    resources = await mcp(http, "resources/list", {}, ADMIN_KEY)
    templates = await mcp(http, "resources/templates/list", {}, ADMIN_KEY)
    return ({f"MCP tool {t['name']}" for t in tools.json()["result"]["tools"]}
            | {f"MCP resource {r['uri']}" for r in resources.json()["result"]["resources"]}
            | {f"MCP resource {t['uriTemplate']}" for t in templates.json()["result"]["resourceTemplates"]})


async def mcp(http: httpx.AsyncClient, method: str, params: dict[str, Any], key: str | None,
              headers: dict[str, str] | None = None) -> httpx.Response:
    """One JSON-RPC exchange with the stateless MCP endpoint."""
    sent = {"Accept": "application/json, text/event-stream", **({"X-API-KEY": key} if key else {}), **(headers or {})}
    return await http.post("/mcp/", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                           headers=sent)


def mcp_call(entry: str, w: World) -> tuple[str, dict[str, Any]]:
    kind, _, name = entry.removeprefix("MCP ").partition(" ")
    if kind == "resource":
        return "resources/read", {"uri": name.replace("{raid_id}", str(w.b_raid))}
    args = {
        "start_raid": {"chat_platform": B.platform, "chat_id": B.external_id, "url": B_URL, "replace": True},
        "join_raid": {"raid_id": w.b_raid, "member": MEMBER},
        "claim_action": {"raid_id": w.b_raid, "member": MEMBER, "action": "like"},
        "get_raid": {"raid_id": w.b_raid},
        "get_leaderboard": {"community_id": w.b_community},
        "get_member_context": {"member_id": w.b_member},
        "revoke_claim": {"claim_id": w.b_claim, "reason": "x"},
        "get_community_settings": {"community_id": w.b_community},
        "update_community_settings": {"community_id": w.b_community, "settings": {"max_participants": 50}},
        "list_chat_links": {"community_id": w.b_community},
        "create_chat_link_code": {"community_id": w.b_community},
        "link_chats": {"community_id": w.b_community, "code": w.link_code},
        "unlink_chat": {"community_id": w.b_community, "link_id": w.b_link},
        "merge_members": {"community_id": w.b_community, "first": w.b_member, "second": w.b_banned},
        "get_member_accounts": {"member_id": w.b_member},
    }[name]
    return "tools/call", {"name": name, "arguments": args}


# -- the checks ----------------------------------------------------------------------------------------


def leaks(w: World, text: str, sent: str = "") -> list[str]:
    """What of B an answer shows: its marker and session ids, or B's ids under raidId/communityId.

    An id the caller itself sent may come back (a refusal reads exactly like "not found": echoing the
    id there and not here would tell that the session exists); nothing else of B may.
    """
    found = [s for s in w.secrets if s.lower() in text.lower() and s.lower() not in sent.lower()]
    try:
        data = json.loads(text)
    except ValueError:
        return found
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("raidId") == w.b_raid or item.get("communityId") == w.b_community:
                found.append(f"B's ids in {str(item)[:80]}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def sent(r: httpx.Response) -> str:
    return f"{r.request.url} {r.request.content.decode(errors='replace')}"


def documented_error(r: httpx.Response, *statuses: int) -> str:
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
    return error["code"]


async def snapshot(svc: Services) -> dict[str, Any]:
    """Row counts of every table, and B's raid as its community sees it: what a refused call must not change."""
    async def op(s: Any) -> dict[str, Any]:
        return {t.name: await s.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}

    counts = await svc.db.read(op)
    return {"counts": counts}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def serving(svc: Services) -> AsyncIterator[tuple[str, Any]]:
    mcp = LazyMcp(svc)  # as `nubi run` mounts it: built by the first /mcp request
    app = create_app(svc, mounts=[("/mcp", mcp)], lifespans=[mcp.lifespan()])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=2))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await task


async def call(http: httpx.AsyncClient, entry: str, w: World, key: str | None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    method, _, template = entry.partition(" ")
    sent = {**({"X-API-KEY": key} if key else {}), **(headers or {})}
    if method == "MOUNT":
        path = {"/static": "/static/index.html", "/docs/static": "/docs/static/swagger-ui.css"}.get(template, "/mcp/")
        if template == "/mcp":
            return await mcp(http, "tools/call", mcp_call("MCP tool get_raid", w)[1], key, headers)
        return await http.get(path, headers=sent)
    body = bodies(w).get(entry)
    return await http.request(method, w.path(template), json=body, headers=sent)


async def test_every_entry_point_is_classified_and_refuses_other_communities(world: World) -> None:
    w = world
    async with serving(w.svc) as (url, app), httpx.AsyncClient(base_url=url, timeout=20) as http:
        entries = http_entry_points(app) | socket_entry_points(app) | await mcp_entry_points(http)
        unclassified = sorted(entries - set(CLASSES))
        assert not unclassified, f"classify these entry points in CLASSES (tests/test_access_policy.py): {unclassified}"
        stale = sorted(set(CLASSES) - entries)
        assert not stale, f"CLASSES names entry points the app no longer has: {stale}"
        before = await snapshot(w.svc)
        http_entries = sorted(e for e in entries if not e.startswith(("SIO ", "MCP ")))
        mcp_entries = sorted(e for e in entries if e.startswith("MCP "))

        # The control: the admin's reads reach B's objects, so the refusals below are the policy's.
        for entry in http_entries:
            if entry.startswith("GET ") and CLASSES[entry] != "public":
                r = await call(http, entry, w, ADMIN_KEY)
                assert r.status_code == 200 or entry.endswith(("/report", "/report.csv")), (entry, r.text[:200])
        assert leaks(w, (await call(http, "GET /api/raids/{raid_id}", w, ADMIN_KEY)).text)
        admin_raid = await mcp(http, *mcp_call("MCP tool get_raid", w), ADMIN_KEY)
        assert leaks(w, admin_raid.text), admin_raid.text

        for key in (A_KEY, WEB_KEY):
            for entry in http_entries:
                r = await call(http, entry, w, key)
                kind = CLASSES[entry]
                if kind == "public" or kind == "list":
                    assert r.status_code == 200, (key, entry, r.status_code, r.text[:200])
                elif kind == "community":
                    documented_error(r, 403, 404)
                else:
                    assert documented_error(r, 403) == "FORBIDDEN", (key, entry)
                assert not leaks(w, r.text, sent(r)), (key, entry, leaks(w, r.text))
            for entry in mcp_entries:
                r = await mcp(http, *mcp_call(entry, w), key)
                assert documented_error(r, 403) == "FORBIDDEN" and not leaks(w, r.text), (key, entry)

        outside = {"X-Forwarded-For": OUTSIDE}  # what the configured proxy on 127.0.0.1 says the client is
        foreign = {"Host": f"attacker.example:{url.rsplit(':', 1)[1]}"}
        for entry in http_entries + mcp_entries:
            if entry.startswith("MCP "):
                nokey = await mcp(http, *mcp_call(entry, w), None, outside)
                rebound = await mcp(http, *mcp_call(entry, w), ADMIN_KEY, foreign)
            else:
                nokey = await call(http, entry, w, None, outside)
                rebound = await call(http, entry, w, ADMIN_KEY, foreign)
            if CLASSES[entry] == "public":
                assert nokey.status_code == 200, (entry, nokey.text[:200])
            else:
                assert documented_error(nokey, 401) == "UNAUTHORIZED", entry
            assert documented_error(rebound, 421) == "MISDIRECTED_REQUEST", entry
            assert not leaks(w, nokey.text, sent(nokey)), entry
            assert not leaks(w, rebound.text, sent(rebound)), entry
        polling = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers=foreign)
        assert documented_error(polling, 421) == "MISDIRECTED_REQUEST"

        await sockets(url, w, before)


async def sockets(url: str, w: World, before: dict[str, Any]) -> None:
    """Every community event, from a socket of A, of the web community, and of nobody; and the broadcasts."""
    payloads: dict[str, Any] = {
        "session:join": {"sessionId": w.b_conversation},
        "session:message": {"sessionId": w.b_conversation, "content": "hi"},
        "raid:subscribe": {"raidId": w.b_raid},
        "raid:join": {"raidId": w.b_raid, "member": MEMBER},
        "raid:action": {"raidId": w.b_raid, "member": MEMBER, "action": "like"},
    }
    assert set(payloads) == {e.removeprefix("SIO ") for e, kind in CLASSES.items()
                             if e.startswith("SIO ") and kind == "community"}
    received: list[Any] = []
    clients = []
    try:
        for key in (A_KEY, WEB_KEY, None):
            client = socketio.AsyncClient(reconnection=False)
            client.on("*", lambda event, *args: received.append((event, args)))
            await client.connect(url, transports=["websocket"], wait_timeout=5)
            clients.append(client)
            if key is not None:
                ack = await client.call("session:authenticate", {"apiKey": key}, timeout=10)
                assert ack["ok"] and not leaks(w, json.dumps(ack)), ack
            for event, payload in payloads.items():
                ack = await client.call(event, payload, timeout=10)
                expected = ("UNAUTHORIZED",) if key is None else ("FORBIDDEN", "SESSION_NOT_FOUND", "RAID_NOT_FOUND")
                assert ack["ok"] is False and ack["error"]["code"] in expected, (key, event, ack)
                if key == A_KEY and event == "raid:subscribe" and w.svc.db.row_level_security:
                    # the event ran in A's row-level-security scope: B's raid is not even found
                    assert ack["error"]["code"] == "RAID_NOT_FOUND", ack
                assert not leaks(w, json.dumps(ack), json.dumps(payload)), (key, event, ack)
        assert await snapshot(w.svc) == before  # every refused write (HTTP, MCP, socket) left the rows as they were
        # B's live events reach none of them: a join, and a new raid in B.
        await w.svc.raids.join(w.b_raid, MemberRef("telegram", "93", "betasecret-late"))
        await w.svc.raids.start(B, RaidSpec(B_URL, {"like": 2}, replace=True), by=MemberRef("telegram", "9", "m"))
        await asyncio.sleep(1.5)  # progress updates are coalesced to one a second
        assert not leaks(w, json.dumps(received, default=str)), received
        rebound = socketio.AsyncClient(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await rebound.connect(url, transports=["websocket"], headers={"Origin": "http://attacker.example"},
                                  wait_timeout=5)
    finally:
        for client in clients:
            await client.disconnect()


async def test_the_keyless_api_answers_loopback_clients_only(db_url: str) -> None:
    """Without keys every caller is admin, so a client that is not on loopback gets nothing but public paths;
    X-Forwarded-For counts only from a configured proxy (else anyone could claim to be 127.0.0.1)."""
    settings = Settings(database={"url": db_url})
    proxied = Settings(database={"url": db_url}, http={"trusted_proxies": ["10.0.0.0/8"]})
    svc = Services(Database(db_url), FakeClock(), settings, EventBus())
    try:
        await svc.raids.start(B, RaidSpec(B_URL, {"like": 1}))
        for app_settings, client, headers, admitted in (
            (settings, ("127.0.0.1", 5000), {}, True),
            (settings, (OUTSIDE, 5000), {}, False),
            (settings, (OUTSIDE, 5000), {"X-Forwarded-For": "127.0.0.1"}, False),  # not from a trusted proxy
            (proxied, ("10.1.2.3", 5000), {"X-Forwarded-For": OUTSIDE}, False),
            (proxied, ("10.1.2.3", 5000), {"X-Forwarded-For": "127.0.0.1"}, True),
        ):
            svc.settings = app_settings
            app = create_app(svc)
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                raids = await http.get("/api/raids", headers=headers)
                health = await http.get("/api/messaging/sessions/health", headers=headers)
                assert health.status_code == 200
                if admitted:
                    assert raids.status_code == 200 and MARK in raids.text, (client, headers)
                else:
                    assert documented_error(raids, 401) == "UNAUTHORIZED" and MARK not in raids.text
                    write = await http.post("/api/raids/1/end", json={}, headers=headers)
                    assert documented_error(write, 401) == "UNAUTHORIZED", (client, headers)
        assert (await svc.raids.progress(1)).status == "active"  # the refused end changed nothing
    finally:
        svc.settings = settings
        await svc.db.dispose()


async def test_chat_callers_reach_their_own_chat_only(services: Services) -> None:
    """A member's button names a raid id; a moderator's commands act in their chat: neither reaches B."""
    from core.commands.service import ChatContext

    b_raid = await services.raids.start(B, RaidSpec(B_URL, {"like": 3}), by=MemberRef("telegram", "9", "b-mod"))
    a_raid = await services.raids.start(A, RaidSpec(A_URL, {"like": 3}), by=MemberRef("telegram", "1", "a-mod"))
    member_of_a = ChatContext(A, MemberRef("telegram", "11", "alpha-raider"))
    mod_of_a = ChatContext(A, MemberRef("telegram", "1", "a-mod"), is_moderator=True)
    for custom_id in (f"nubi:join:{b_raid.id}", f"nubi:claim:{b_raid.id}:like", f"nubi:stats:{b_raid.id}"):
        reply = await services.commands.press(member_of_a, custom_id)
        assert "another chat" in reply.text and MARK not in reply.text.lower(), reply
    assert "Joined raid" in (await services.commands.press(member_of_a, f"nubi:join:{a_raid.id}")).text
    reply = await services.commands.handle_text(mod_of_a, "/raid end")  # ends A's raid, not B's
    assert reply is not None and MARK not in reply.text.lower()
    assert (await services.raids.progress(b_raid.id)).status == "active"
    assert (await services.raids.progress(b_raid.id, top=5)).participants == 0
    members_reply = await services.commands.handle_text(ChatContext(A, MemberRef("telegram", "12", "x")), "/raid end")
    assert members_reply is not None and "only moderators" in members_reply.text


def test_the_policy_table() -> None:
    """The rules themselves, caller by caller (the entry-point tests above prove every door asks them)."""
    from core import access
    from core.errors import PermissionDenied, SessionNotFound, Unauthorized

    a, b = "telegram:-100111", "telegram:-100999"
    key_a = access.community_key(a, "key1")
    token = access.session_caller("web:team", "s1")
    member, mod = access.chat_caller(A, moderator=False), access.chat_caller(A, moderator=True)
    assert [c.sees(a) for c in (access.ADMIN, key_a, member, mod, token, access.NOBODY)] == [
        True, True, True, True, False, False]
    assert not any(c.sees(b) for c in (key_a, member, mod, token, access.NOBODY))
    assert [access.may_moderate(c, a) for c in (access.ADMIN, key_a, member, mod, token)] == [
        True, True, False, True, False]
    assert not access.may_moderate(mod, b) and not access.may_moderate(key_a, b)
    for c, error in ((key_a, PermissionDenied), (token, PermissionDenied), (access.NOBODY, Unauthorized)):
        with pytest.raises(error):
            access.require_admin(c)
        with pytest.raises(error):
            access.require_community(c, b)
    access.require_community(key_a, a)
    with pytest.raises(PermissionDenied):
        access.require_community(key_a, None)  # a community that does not exist is nobody's
    with pytest.raises(SessionNotFound):
        access.require_session(key_a, "s2", b)
    with pytest.raises(PermissionDenied):
        access.require_session(token, "s2", "web:team")  # a token is for its own session only
    access.require_session(token, "s1", "web:team")
    assert access.list_scope(access.ADMIN) is None and access.list_scope(key_a) == a
    assert access.chat_for_raid(key_a, None, B) == ChatRef("telegram", "-100111")
    with pytest.raises(PermissionDenied):
        access.chat_for_raid(key_a, B, B)
    with pytest.raises(PermissionDenied):
        access.chat_for_raid(token, None, B)
    web = access.community_key("web:fans", "key2")
    assert access.session_community_for(web, None) == "fans" and access.session_community_for(access.ADMIN, "x") is None
    for c, asked in ((web, "others"), (key_a, None)):
        with pytest.raises(PermissionDenied):
            access.session_community_for(c, asked)
