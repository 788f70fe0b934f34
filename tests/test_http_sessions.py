"""The ElizaOS Sessions API over real HTTP: a uvicorn server on loopback, httpx and @elizaos/api-client.

Each test runs on SQLite and on PostgreSQL (the `services`/`db_url` fixtures). Time comes from the
FakeClock the services share, so expiry is reached by advancing it, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from adapters.http.app import create_app
from core.clock import FakeClock, to_ms
from core.config import ApiKey, HttpConfig, SessionsConfig, Settings
from core.events import (
    EventBus,
    EventRecorder,
    MemberJoined,
    RaidStarted,
    SessionCreated,
    SessionExpired,
    SessionMessageStored,
)
from core.services import Services
from core.storage.db import Database

AGENT = Settings().agents[0].id
USER = str(uuid.uuid4())
BASE = "/api/messaging/sessions"
RAID = "/raid start https://x.com/a/status/1 likes=5"
CREATED_KEYS = {"sessionId", "channelId", "agentId", "userId", "createdAt", "metadata", "expiresAt", "timeoutConfig"}
INFO_KEYS = CREATED_KEYS | {"lastActivity", "renewalCount", "timeRemaining", "isNearExpiration"}
DEFAULT_TIMEOUTS = {"timeoutMinutes": 30, "autoRenew": True, "maxDurationMinutes": 720, "warningThresholdMinutes": 5}
JS_DIR = Path(__file__).parent / "js"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class Running:
    http: httpx.AsyncClient
    app: Any
    url: str


@asynccontextmanager
async def serve(services: Services, headers: dict[str, str] | None = None) -> AsyncIterator[Running]:
    """The real app behind a real uvicorn on a free loopback port."""
    app = create_app(services)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # startup failed: raise it here
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
            yield Running(http, app, url)
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def services_for(db_url: str, clock: Any, settings: Settings) -> AsyncIterator[Services]:
    svc = Services(Database(db_url), clock, settings, EventBus())
    svc.recorder = EventRecorder(svc.bus)  # type: ignore[attr-defined]
    try:
        yield svc
    finally:
        await svc.db.dispose()


def check_error(resp: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    datetime.fromisoformat(err["timestamp"])
    if field is not None:
        assert err["details"]["field"] == field, err
    assert "Traceback" not in resp.text
    return err


async def create(http: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    resp = await http.post(BASE, json={"agentId": AGENT, "userId": str(uuid.uuid4()), **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


async def say(http: httpx.AsyncClient, sid: str, content: str, transport: str = "http") -> dict[str, Any]:
    resp = await http.post(f"{BASE}/{sid}/messages", json={"content": content, "transport": transport})
    assert resp.status_code == 201, resp.text
    return resp.json()


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in filter(str.strip, text.split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


# -- the endpoints --------------------------------------------------------------------------------


async def test_agents_and_health(services: Services, clock: FakeClock) -> None:
    async with serve(services) as srv:
        assert isinstance(srv.app.state.started_at, float)  # noted at startup, before any request
        agents = (await srv.http.get("/api/agents")).json()
        assert agents == {"success": True, "data": {"agents": [{"id": AGENT, "name": "nubi", "status": "active"}]}}
        resp = await srv.http.get(f"{BASE}/health")
        body = resp.json()
        assert resp.status_code == 200 and set(body) == {"status", "activeSessions", "expiringSoon", "timestamp", "uptime"}
        assert body["status"] == "healthy" and body["activeSessions"] == 0 and body["expiringSoon"] == 0
        assert body["timestamp"] == clock.now().isoformat()
        assert isinstance(body["uptime"], float) and 0 <= body["uptime"] < 60
        await create(srv.http, timeoutConfig={"timeoutMinutes": 5})  # inside the 5-minute warning at once
        await create(srv.http)
        again = (await srv.http.get(f"{BASE}/health")).json()
        assert (again["activeSessions"], again["expiringSoon"]) == (2, 1)
        assert again["uptime"] >= body["uptime"]


async def test_create_get_list_delete(services: Services, clock: FakeClock) -> None:
    async with serve(services) as srv:
        http = srv.http
        resp = await http.post(BASE, json={"agentId": AGENT.upper(), "userId": USER, "metadata": {"platform": "web"}})
        assert resp.status_code == 201
        made = resp.json()
        assert set(made) == CREATED_KEYS
        assert (made["agentId"], made["userId"], made["metadata"]) == (AGENT, USER, {"platform": "web"})
        assert made["timeoutConfig"] == DEFAULT_TIMEOUTS
        assert datetime.fromisoformat(made["expiresAt"]) == clock.now() + timedelta(minutes=30)
        clamped = await create(http, timeoutConfig={"timeoutMinutes": 1, "maxDurationMinutes": 99999})
        assert clamped["timeoutConfig"]["timeoutMinutes"] == 5
        assert clamped["timeoutConfig"]["maxDurationMinutes"] == 2880

        sid = made["sessionId"]
        info = (await http.get(f"{BASE}/{sid}")).json()
        assert set(info) == INFO_KEYS
        assert {k: info[k] for k in CREATED_KEYS} == made
        assert (info["renewalCount"], info["timeRemaining"], info["isNearExpiration"]) == (0, 30 * 60_000, False)
        assert info["lastActivity"] == made["createdAt"]
        assert (await http.get(f"{BASE}/{sid.upper()}")).json()["sessionId"] == sid

        listed = (await http.get(BASE)).json()
        assert set(listed) == {"sessions", "total", "stats"} and listed["total"] == 2
        assert {s["sessionId"] for s in listed["sessions"]} == {sid, clamped["sessionId"]}
        assert all(set(s) == INFO_KEYS for s in listed["sessions"])
        assert listed["stats"] == {"totalSessions": 2, "activeSessions": 2, "expiredSessions": 0}

        resp = await http.delete(f"{BASE}/{sid}")
        payload = {"success": True, "message": f"Session {sid} deleted successfully"}
        assert resp.status_code == 200 and resp.json() == {**payload, "data": payload}
        check_error(await http.get(f"{BASE}/{sid}"), 404, "SESSION_NOT_FOUND")
        check_error(await http.delete(f"{BASE}/{sid}"), 404, "SESSION_NOT_FOUND")
        listed = (await http.get(BASE)).json()
        assert [s["sessionId"] for s in listed["sessions"]] == [clamped["sessionId"]] and listed["total"] == 1
    assert len(services.recorder.of(SessionCreated)) == 2


async def test_validation_errors_write_nothing(services: Services) -> None:
    async with serve(services) as srv:
        http = srv.http
        raw_bodies = [b"{not json", b"[1, 2]", b"", b'"text"', b"NaN", b"\xff\xfe"]
        for raw in raw_bodies:
            resp = await http.post(BASE, content=raw, headers={"Content-Type": "application/json"})
            check_error(resp, 400, "VALIDATION_ERROR", "body")
        cases: list[tuple[dict[str, Any], str]] = [
            ({}, "agentId"),
            ({"agentId": "nope", "userId": USER}, "agentId"),
            ({"agentId": AGENT}, "userId"),
            ({"agentId": AGENT, "userId": 5}, "userId"),
            ({"agentId": AGENT, "userId": USER, "metadata": "x"}, "metadata"),
            ({"agentId": AGENT, "userId": USER, "metadata": {"x": "a" * 10_300}}, "metadata"),
            ({"agentId": AGENT, "userId": USER, "timeoutConfig": [5]}, "timeoutConfig"),
            ({"agentId": AGENT, "userId": USER, "timeoutConfig": {"bogus": 1}}, "timeoutConfig"),
            ({"agentId": AGENT, "userId": USER, "timeoutConfig": {"autoRenew": "yes"}}, "autoRenew"),
        ]
        for body, field in cases:
            check_error(await http.post(BASE, json=body), 400, "VALIDATION_ERROR", field)
        err = check_error(await http.post(BASE, json={"agentId": str(uuid.uuid4()), "userId": USER}), 404, "AGENT_NOT_FOUND")
        assert "agent" in err["message"].lower()
        assert (await http.get(BASE)).json()["stats"]["totalSessions"] == 0

        sid = (await create(http))["sessionId"]
        url = f"{BASE}/{sid}/messages"
        for raw in (b"{", b"[]", b""):
            check_error(await http.post(url, content=raw), 400, "VALIDATION_ERROR", "body")
        send_cases: list[tuple[dict[str, Any], str]] = [
            ({}, "content"),
            ({"content": ""}, "content"),
            ({"content": "   "}, "content"),
            ({"content": 42}, "content"),
            ({"content": "x" * 4001}, "content"),
            ({"content": "hi", "transport": "pigeon"}, "transport"),
            ({"content": "hi", "transport": ["http"]}, "transport"),
            ({"content": "hi", "mode": "pigeon"}, "mode"),
            ({"content": "hi", "mode": ["sync"]}, "mode"),
            ({"content": "hi", "attachments": "x"}, "attachments"),
            ({"content": "hi", "metadata": {"x": "a" * 10_300}}, "metadata"),
            ({"content": "hi", "metadata": [1]}, "metadata"),
        ]
        for body, field in send_cases:
            check_error(await http.post(url, json=body), 400, "VALIDATION_ERROR", field)
        assert (await http.get(url)).json() == {"messages": [], "hasMore": False}
        assert (await http.get(f"{BASE}/{sid}")).json()["renewalCount"] == 0  # refused sends did not renew
        assert (await http.post(url, json={"content": "x" * 4000})).status_code == 201  # the boundary is allowed

        for query, field in [
            ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=1.5", "limit"),
            ("before=-1", "before"), ("before=yesterday", "before"), ("after=x", "after"),
        ]:
            check_error(await http.get(f"{url}?{query}"), 400, "VALIDATION_ERROR", field)

        before = (await http.get(f"{BASE}/{sid}")).json()
        for body, field in [
            ({"timeoutMinutes": 4}, "timeoutMinutes"),
            ({"timeoutMinutes": 1441}, "timeoutMinutes"),
            ({"timeoutMinutes": "soon"}, "timeoutMinutes"),
            ({"autoRenew": "yes"}, "autoRenew"),
            ({"nope": 1}, "timeoutConfig"),
            ([30], "body"),
        ]:
            check_error(await http.patch(f"{BASE}/{sid}/timeout", json=body), 400, "VALIDATION_ERROR", field)
        after = (await http.get(f"{BASE}/{sid}")).json()
        assert after["timeoutConfig"] == before["timeoutConfig"] and after["expiresAt"] == before["expiresAt"]


@pytest.mark.parametrize("sid", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_session_is_404_everywhere(services: Services, sid: str) -> None:
    async with serve(services) as srv:
        http = srv.http
        for resp in [
            await http.get(f"{BASE}/{sid}"),
            await http.post(f"{BASE}/{sid}/messages", json={"content": "hi"}),
            await http.get(f"{BASE}/{sid}/messages"),
            await http.post(f"{BASE}/{sid}/renew"),
            await http.post(f"{BASE}/{sid}/heartbeat"),
            await http.patch(f"{BASE}/{sid}/timeout", json={"timeoutMinutes": 60}),
            await http.delete(f"{BASE}/{sid}"),
        ]:
            check_error(resp, 404, "SESSION_NOT_FOUND")


async def test_expired_is_410_once_then_404_on_every_endpoint(services: Services, clock: FakeClock) -> None:
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("POST", "/messages", {"content": "late"}),
        ("POST", "/messages", {"content": "late", "transport": "sse"}),
        ("GET", "/messages", None),
        ("POST", "/renew", None),
        ("POST", "/heartbeat", None),
        ("PATCH", "/timeout", {"timeoutMinutes": 60}),
        ("DELETE", "", None),
    ]
    async with serve(services) as srv:
        sids = [(await create(srv.http, timeoutConfig={"timeoutMinutes": 5}))["sessionId"] for _ in calls]
        clock.advance(minutes=5)
        for sid, (method, suffix, body) in zip(sids, calls, strict=True):
            first = await srv.http.request(method, f"{BASE}/{sid}{suffix}", json=body)
            err = check_error(first, 410, "SESSION_EXPIRED")
            assert err["details"] == {"sessionId": sid}
            check_error(await srv.http.request(method, f"{BASE}/{sid}{suffix}", json=body), 404, "SESSION_NOT_FOUND")
        health = (await srv.http.get(f"{BASE}/health")).json()
        assert health["activeSessions"] == 0
        listed = (await srv.http.get(BASE)).json()
        assert listed["total"] == 0 and listed["stats"]["activeSessions"] == 0
    assert sorted(e.session_id for e in services.recorder.of(SessionExpired)) == sorted(sids)
    assert services.recorder.of(SessionMessageStored) == []  # nothing was stored for an expired session


async def test_renew_heartbeat_and_timeout(services: Services, clock: FakeClock) -> None:
    async with serve(services) as srv:
        http = srv.http
        sid = (await create(http, timeoutConfig={"timeoutMinutes": 10}))["sessionId"]
        clock.advance(minutes=4)
        beat = (await http.post(f"{BASE}/{sid}/heartbeat")).json()
        assert set(beat) == INFO_KEYS and beat["renewalCount"] == 1
        assert datetime.fromisoformat(beat["lastActivity"]) == clock.now()
        assert datetime.fromisoformat(beat["expiresAt"]) == clock.now() + timedelta(minutes=10)
        clock.advance(minutes=2)
        resp = await http.post(f"{BASE}/{sid}/renew")
        assert resp.status_code == 200 and resp.json()["renewalCount"] == 2
        renewed_at = clock.now()

        resp = await http.patch(f"{BASE}/{sid}/timeout", json={"timeoutMinutes": 60, "autoRenew": False})
        changed = resp.json()
        assert resp.status_code == 200 and set(changed) == INFO_KEYS
        assert changed["timeoutConfig"] == {**DEFAULT_TIMEOUTS, "timeoutMinutes": 60, "autoRenew": False}
        assert datetime.fromisoformat(changed["expiresAt"]) == renewed_at + timedelta(minutes=60)

        clock.advance(minutes=1)  # autoRenew off: heartbeats and messages only touch lastActivity
        beat = (await http.post(f"{BASE}/{sid}/heartbeat")).json()
        assert beat["renewalCount"] == 2 and beat["expiresAt"] == changed["expiresAt"]
        assert datetime.fromisoformat(beat["lastActivity"]) == clock.now()
        sent = await say(http, sid, "still here", transport="websocket")
        assert sent["sessionStatus"]["wasRenewed"] is False and sent["sessionStatus"]["renewalCount"] == 2
        manual = (await http.post(f"{BASE}/{sid}/renew")).json()  # a manual renewal still works
        assert manual["renewalCount"] == 3
        assert datetime.fromisoformat(manual["expiresAt"]) == clock.now() + timedelta(minutes=60)


async def test_renewal_failed_past_max_duration(db_url: str, clock: FakeClock) -> None:
    async with services_for(db_url, clock, Settings()) as svc, serve(svc) as srv:
        sid = (await create(srv.http))["sessionId"]
        for _ in range(4):  # kept alive for 100 minutes
            clock.advance(minutes=25)
            assert (await srv.http.post(f"{BASE}/{sid}/heartbeat")).status_code == 200
    # The operator lowers the max duration to 60 minutes and restarts: this session is past it.
    lowered = Settings(sessions=SessionsConfig(max_duration_minutes=60))
    async with services_for(db_url, clock, lowered) as svc, serve(svc) as srv:
        err = check_error(await srv.http.post(f"{BASE}/{sid}/renew"), 400, "SESSION_RENEWAL_FAILED")
        assert err["details"] == {"sessionId": sid}
        info = (await srv.http.get(f"{BASE}/{sid}")).json()
        assert info["renewalCount"] == 4 and info["timeRemaining"] == 30 * 60_000


# -- messages -------------------------------------------------------------------------------------


async def test_send_transports_and_data_mirror(services: Services, clock: FakeClock) -> None:
    async with serve(services) as srv:
        http = srv.http
        made = await create(http)
        sid = made["sessionId"]
        clock.advance(minutes=1)
        resp = await http.post(
            f"{BASE}/{sid}/messages",
            json={"content": "pic", "attachments": [{"type": "image", "url": "https://e.x/p.png"}], "metadata": {"source": "web"}},
        )
        body = resp.json()
        assert resp.status_code == 201 and set(body) == {"success", "userMessage", "sessionStatus", "data"}
        assert body["data"] == {k: v for k, v in body.items() if k != "data"}
        user = body["userMessage"]
        assert user == {
            "id": user["id"],
            "channel_id": made["channelId"],
            "author_id": made["userId"],
            "content": "pic",
            "created_at": to_ms(clock.now()),
            "source_type": "user",
            "raw_message": {"content": "pic", "attachments": [{"type": "image", "url": "https://e.x/p.png"}]},
            "metadata": {"source": "web"},
        }
        assert body["sessionStatus"] == {
            "expiresAt": (clock.now() + timedelta(minutes=30)).isoformat(),
            "renewalCount": 1,
            "wasRenewed": True,
            "isNearExpiration": False,
        }

        clock.advance(seconds=1)  # each exchange a second apart, so newest-first order is unambiguous
        ws = await say(http, sid, "/help", transport="websocket")  # the reply is stored, not returned
        assert "agentResponse" not in ws and "agentResponse" not in ws["data"]
        newest = (await http.get(f"{BASE}/{sid}/messages?limit=1")).json()["messages"][0]
        assert newest["isAgent"] and newest["content"].startswith("nubi raids")
        assert newest["authorId"] == AGENT and newest["metadata"] == {"replyTo": ws["userMessage"]["id"]}

        clock.advance(seconds=1)
        synced = await say(http, sid, "/help")
        reply = synced["agentResponse"]
        assert "Member commands" in reply["text"] and "Moderator commands" in reply["text"]  # no keys: moderator
        assert synced["data"]["agentResponse"] == reply and synced["data"]["success"] is True
        stored = (await http.get(f"{BASE}/{sid}/messages?limit=1")).json()["messages"][0]
        assert (stored["id"], stored["content"], stored["createdAt"]) == (reply["messageId"], reply["text"], reply["createdAt"])

        clock.advance(seconds=1)
        plain = await say(http, sid, "just chatting")
        assert "agentResponse" not in plain  # plain text is stored with no agent reply
        newest = (await http.get(f"{BASE}/{sid}/messages?limit=1")).json()["messages"][0]
        assert (newest["content"], newest["isAgent"]) == ("just chatting", False)

        legacy = await http.post(f"{BASE}/{sid}/messages", json={"content": "/help", "mode": "sync"})
        assert legacy.status_code == 201 and "agentResponse" in legacy.json()
        total = len((await http.get(f"{BASE}/{sid}/messages")).json()["messages"])
    assert total == 1 + 2 + 2 + 1 + 2
    stored_events = services.recorder.of(SessionMessageStored)
    assert len(stored_events) == total and {e.session_id for e in stored_events} == {sid}


async def test_sse_streams_user_message_chunks_and_done(services: Services) -> None:
    async with serve(services) as srv:
        http = srv.http
        sid = (await create(http))["sessionId"]
        resp = await http.post(f"{BASE}/{sid}/messages", json={"content": "/help", "transport": "sse"})
        assert resp.status_code == 201 and resp.headers["content-type"].startswith("text/event-stream")
        events = sse_events(resp.text)
        names = [name for name, _ in events]
        assert names[0] == "user_message" and names[-1] == "done" and set(names[1:-1]) == {"chunk"}
        assert events[0][1]["content"] == "/help" and events[0][1]["source_type"] == "user"
        chunks = [data for name, data in events if name == "chunk"]
        done = events[-1][1]
        assert [c["index"] for c in chunks] == list(range(len(chunks))) and len(chunks) > 1
        assert "".join(c["chunk"] for c in chunks) == done["agentResponse"]["text"]
        assert {c["messageId"] for c in chunks} == {done["agentResponse"]["messageId"]}
        assert done["success"] is True and done["sessionStatus"]["renewalCount"] == 1
        stored = (await http.get(f"{BASE}/{sid}/messages")).json()["messages"]
        assert [(m["id"], m["isAgent"]) for m in stored] == [
            (done["agentResponse"]["messageId"], True), (events[0][1]["id"], False),
        ]

        plain = sse_events((await http.post(f"{BASE}/{sid}/messages", json={"content": "hi", "transport": "sse"})).text)
        assert [name for name, _ in plain] == ["user_message", "done"] and "agentResponse" not in plain[1][1]
        # a bad request is refused before any stream starts
        check_error(await http.post(f"{BASE}/{sid}/messages", json={"content": "", "transport": "sse"}), 400,
                    "VALIDATION_ERROR", "content")


async def test_failed_reply_is_an_error_never_a_trace(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(ctx: Any, text: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services.commands, "handle_text", broken)
    async with serve(services) as srv:
        http = srv.http
        sid = (await create(http))["sessionId"]
        resp = await http.post(f"{BASE}/{sid}/messages", json={"content": "/help", "transport": "http"})
        err = check_error(resp, 500, "INTERNAL_SERVER_ERROR")
        assert err["message"] == "An unexpected error occurred" and "secret" not in resp.text
        resp = await http.post(f"{BASE}/{sid}/messages", json={"content": "/help", "transport": "sse"})
        events = sse_events(resp.text)
        assert [name for name, _ in events] == ["user_message", "error"] and "secret" not in resp.text
        assert events[1][1]["error"]["code"] == "INTERNAL_SERVER_ERROR"
        messages = (await http.get(f"{BASE}/{sid}/messages")).json()["messages"]
        assert [(m["content"], m["isAgent"]) for m in messages] == [("/help", False), ("/help", False)]


async def test_pagination_newest_first_with_cursors(services: Services, clock: FakeClock) -> None:
    async with serve(services) as srv:
        http = srv.http
        sid = (await create(http))["sessionId"]
        empty = (await http.get(f"{BASE}/{sid}/messages")).json()
        assert empty == {"messages": [], "hasMore": False}  # no cursors without messages
        times = []
        for i in range(5):
            clock.advance(seconds=1)
            await say(http, sid, f"m{i}", transport="websocket")
            times.append(to_ms(clock.now()))
        url = f"{BASE}/{sid}/messages"
        page = (await http.get(url, params={"limit": 2})).json()
        assert [m["content"] for m in page["messages"]] == ["m4", "m3"] and page["hasMore"] is True
        assert page["cursors"] == {"before": times[3], "after": times[4]}
        assert all(set(m) == {"id", "content", "authorId", "isAgent", "createdAt", "metadata"} for m in page["messages"])
        older = (await http.get(url, params={"limit": 2, "before": page["cursors"]["before"]})).json()
        assert [m["content"] for m in older["messages"]] == ["m2", "m1"] and older["hasMore"] is True
        oldest = (await http.get(url, params={"before": older["cursors"]["before"]})).json()
        assert [m["content"] for m in oldest["messages"]] == ["m0"] and oldest["hasMore"] is False
        newer = (await http.get(url, params={"after": times[2]})).json()
        assert [m["content"] for m in newer["messages"]] == ["m4", "m3"] and newer["hasMore"] is False
        for i in range(5, 51):
            await services.sessions.send_message(sid, f"m{i}")
        default = (await http.get(url)).json()
        assert len(default["messages"]) == 50 and default["hasMore"] is True
        assert len((await http.get(url, params={"limit": 100})).json()["messages"]) == 51


# -- the command layer ------------------------------------------------------------------------------


async def test_raid_started_from_a_moderator_session_and_joined_from_another(services: Services) -> None:
    async with serve(services) as srv:
        http = srv.http
        mod = (await create(http, metadata={"username": "captain"}))["sessionId"]
        member = (await create(http, metadata={"username": "deckhand"}))["sessionId"]
        started = await say(http, mod, RAID)
        text = started["agentResponse"]["text"]
        [event] = services.recorder.of(RaidStarted)
        assert f"Raid #{event.raid_id}" in text and "https://x.com/a/status/1" in text and "0/5" in text
        joined = (await say(http, member, "/join"))["agentResponse"]["text"]
        assert f"deckhand joined raid #{event.raid_id} as raider #1" in joined
        [join] = services.recorder.of(MemberJoined)
        assert join.raid_id == event.raid_id and join.community_id == event.community_id
        assert (await services.raids.progress(event.raid_id)).participants == 1
        again = (await say(http, member, "/join"))["agentResponse"]["text"]
        assert "already" in again.lower()
        assert len(services.recorder.of(MemberJoined)) == 1


async def test_moderator_rights_follow_the_api_key(db_url: str, clock: FakeClock) -> None:
    keys = [
        ApiKey(key="admin-key"),
        ApiKey(key="web-key", community=f"web:agent:{AGENT}"),
        ApiKey(key="tg-key", community="telegram:42"),
    ]
    async with services_for(db_url, clock, Settings(http=HttpConfig(api_keys=keys))) as svc:
        async with serve(svc) as srv:
            for path in (BASE, "/api/agents", f"{BASE}/{uuid.uuid4()}"):
                check_error(await srv.http.get(path), 401, "UNAUTHORIZED")
                check_error(await srv.http.get(path, headers={"X-API-KEY": "wrong"}), 401, "UNAUTHORIZED")
            check_error(await srv.http.post(BASE, json={"agentId": AGENT, "userId": USER}), 401, "UNAUTHORIZED")
            assert (await srv.http.get(f"{BASE}/health")).status_code == 200  # health stays open
            assert (await srv.http.get(BASE)).json()["error"]["code"] == "UNAUTHORIZED"

        async def raid_reply(key: str, metadata: dict[str, str] | None = None) -> str:
            async with serve(svc, headers={"X-API-KEY": key}) as srv:
                sid = (await create(srv.http, metadata=metadata or {}))["sessionId"]
                reply = (await say(srv.http, sid, RAID))["agentResponse"]["text"]
                await say(srv.http, sid, "/raid cancel")
                return reply

        # A key for a chat community reaches no sessions; a web-community key only its own community's.
        async with serve(svc, headers={"X-API-KEY": "tg-key"}) as srv:
            check_error(await srv.http.post(BASE, json={"agentId": AGENT, "userId": USER}), 403, "FORBIDDEN")
        async with serve(svc, headers={"X-API-KEY": "web-key"}) as srv:
            check_error(await srv.http.post(BASE, json={"agentId": AGENT, "userId": USER,
                                                        "metadata": {"community": "elsewhere"}}), 403, "FORBIDDEN")
        assert not svc.recorder.of(RaidStarted)
        assert "Raid #" in await raid_reply("web-key")
        assert "Raid #" in await raid_reply("admin-key", {"community": "elsewhere"})
        assert len(svc.recorder.of(RaidStarted)) == 2
        async with serve(svc, headers={"X-API-KEY": "admin-key"}) as srv:
            foreign = (await create(srv.http, metadata={"community": "elsewhere"}))["sessionId"]
        async with serve(svc, headers={"X-API-KEY": "web-key"}) as srv:
            own = (await create(srv.http))["sessionId"]
            listed = {s["sessionId"] for s in (await srv.http.get(BASE)).json()["sessions"]}
            assert own in listed and foreign not in listed
            for method, path in (("GET", ""), ("GET", "/messages"), ("POST", "/renew"), ("DELETE", "")):
                resp = await srv.http.request(method, f"{BASE}/{foreign}{path}")
                check_error(resp, 404, "SESSION_NOT_FOUND")
            check_error(await srv.http.post(f"{BASE}/{foreign}/messages", json={"content": "hi"}), 404,
                        "SESSION_NOT_FOUND")


async def test_rate_limit(db_url: str, clock: FakeClock) -> None:
    async with services_for(db_url, clock, Settings(http=HttpConfig(rate_limit_per_minute=3))) as svc:
        async with serve(svc) as srv:
            for _ in range(3):
                assert (await srv.http.get(BASE)).status_code == 200
            resp = await srv.http.get(BASE)
            err = check_error(resp, 429, "RATE_LIMIT_EXCEEDED")
            assert int(resp.headers["Retry-After"]) >= 1 and err["details"]["retryAfterSeconds"] > 0


async def test_sessions_and_messages_survive_a_restart(db_url: str, clock: FakeClock) -> None:
    async with services_for(db_url, clock, Settings()) as svc, serve(svc) as srv:
        sid = (await create(srv.http, metadata={"username": "keeper"}))["sessionId"]
        await say(srv.http, sid, "/help")
        await say(srv.http, sid, "remember me")
        info = (await srv.http.get(f"{BASE}/{sid}")).json()
        messages = (await srv.http.get(f"{BASE}/{sid}/messages")).json()
    async with services_for(db_url, clock, Settings()) as svc, serve(svc) as srv:
        assert (await srv.http.get(f"{BASE}/{sid}")).json() == info
        assert (await srv.http.get(f"{BASE}/{sid}/messages")).json() == messages
        assert len(messages["messages"]) == 3
        listed = (await srv.http.get(BASE)).json()
        assert [s["sessionId"] for s in listed["sessions"]] == [sid]
        assert (await say(srv.http, sid, "back again"))["sessionStatus"]["renewalCount"] == 3


# -- the official JavaScript client ---------------------------------------------------------------


class TickingClock(FakeClock):
    """Moves 10 ms at every reading, so messages sent back to back never share a millisecond."""

    def now(self) -> datetime:
        return self.advance(seconds=0.01)


def _js_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (JS_DIR / "node_modules" / "@elizaos" / "api-client").is_dir():
        return "tests/js/node_modules is missing: run `cd tests/js && npm install`"
    return None


async def test_official_elizaos_api_client(db_url: str) -> None:
    missing = _js_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"the @elizaos/api-client test is required under CI: {missing}")
        pytest.skip(missing)
    async with services_for(db_url, TickingClock(), Settings()) as svc, serve(svc) as srv:
        proc = await asyncio.create_subprocess_exec(
            "node", str(JS_DIR / "elizaos_client.mjs"), srv.url, AGENT,
            cwd=JS_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    r = report["results"]
    failed = sorted(k for k, v in r.items() if not v["ok"])
    assert failed == sorted([
        "timeoutOutOfRange", "getUnknown", "createUnknownAgent", "createBadUuid", "sendTooLong",
        "messagesBadLimit", "getDeleted",
    ]), r
    value = {k: v["value"] for k, v in r.items() if v["ok"]}
    error = {k: (v["error"]["code"], v["error"]["status"]) for k, v in r.items() if not v["ok"]}

    assert value["health"]["status"] == "healthy"
    assert value["listAgents"] == {"agents": [{"id": AGENT, "name": "nubi", "status": "active"}]}
    sid = report["sessionId"]
    assert set(value["create"]) == CREATED_KEYS and value["create"]["agentId"] == AGENT
    assert value["get"]["sessionId"] == sid and set(value["get"]) == INFO_KEYS
    # the data mirror: the client hands its callers the payload, not undefined
    assert value["sendWebsocket"]["userMessage"]["content"] == "hello from the client"
    assert "agentResponse" not in value["sendWebsocket"]
    assert value["sendHttp"]["agentResponse"]["text"].startswith("nubi raids")
    assert value["sendHttp"]["sessionStatus"]["wasRenewed"] is True
    assert value["sendHttpPlain"]["success"] is True and "agentResponse" not in value["sendHttpPlain"]
    assert value["sendSseViaClient"] == {"success": True}  # the client cannot read a stream: it says so
    stream = value["sendSseStream"]
    assert stream["status"] == 201 and stream["contentType"].startswith("text/event-stream")
    names = [e["event"] for e in stream["events"]]
    assert names[0] == "user_message" and names[-1] == "done" and "chunk" in names

    everything = value["messagesAll"]["messages"]  # 5 from the user, 2 replies to /help (http and sse)
    assert [m["isAgent"] for m in everything].count(True) == 2 and len(everything) == 7
    created = [m["createdAt"] for m in everything]
    assert created == sorted(created, reverse=True) and len(set(created)) == len(created)
    page1, page2 = value["messagesPage1"], value["messagesPage2"]
    assert page1["hasMore"] is True and [m["id"] for m in page1["messages"]] == [m["id"] for m in everything[:3]]
    assert [m["id"] for m in page2["messages"]] == [m["id"] for m in everything[3:6]]
    assert page1["cursors"] == {"before": everything[2]["createdAt"], "after": everything[0]["createdAt"]}
    assert [m["id"] for m in value["messagesAfter"]["messages"]] == [m["id"] for m in everything[:2]]

    assert value["renew"]["status"] == 200 and value["renew"]["body"]["sessionId"] == sid
    renewals = value["renew"]["body"]["renewalCount"]
    assert value["heartbeat"]["renewalCount"] == renewals + 1
    assert value["timeout"]["timeoutConfig"]["timeoutMinutes"] == 90
    assert error["timeoutOutOfRange"] == ("VALIDATION_ERROR", 400)
    assert error["getUnknown"] == ("SESSION_NOT_FOUND", 404)
    assert error["createUnknownAgent"] == ("AGENT_NOT_FOUND", 404)
    assert error["createBadUuid"] == ("VALIDATION_ERROR", 400)
    assert error["sendTooLong"] == ("VALIDATION_ERROR", 400)
    assert error["messagesBadLimit"] == ("VALIDATION_ERROR", 400)

    assert [s["sessionId"] for s in value["listBeforeDelete"]["sessions"]] == [sid]
    assert value["delete"] == {"success": True, "message": f"Session {sid} deleted successfully"}
    assert error["getDeleted"] == ("SESSION_NOT_FOUND", 404)
    assert value["listAfterDelete"]["sessions"] == [] and value["listAfterDelete"]["total"] == 0
