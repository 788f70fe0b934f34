"""Socket.IO end to end: a real uvicorn server on 127.0.0.1, driven by python-socketio's AsyncClient
and by the JavaScript socket.io-client, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
import uvicorn
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from adapters.http.app import create_app
from adapters.http.realtime import ALL
from core.badges import Award, announcement_text
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.events import EventBus
from core.i18n import use_language
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from tests.conftest import IN_CI

ADMIN_KEY = "admin-key-for-tests-0001"
TEAM_KEY = "team-key-for-tests-0002"  # scoped to the web community "team"
AGENT = Settings().agents[0].id
TELEGRAM = ChatRef("telegram", "-1001", "Raid Group")
TEAM = ChatRef("web", "team", "Team web")
URL = "https://x.com/nubi/status/42"
JS_DIR = Path(__file__).parent / "js"


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """API keys are configured unless a test asks for an open API with indirect parametrization."""
    mode = getattr(request, "param", "keys")
    if mode == "open":
        return Settings()
    if mode == "redis":
        return Settings(realtime={"redis_url": "redis://127.0.0.1:1/0"})
    if mode == "cors":
        return Settings(http={"cors_origins": ["https://ok.example"]})
    return Settings(http={"api_keys": [{"key": ADMIN_KEY}, {"key": TEAM_KEY, "community": "web:team"}]})


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port, in this event loop (it shares the database)."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if not server.started:
        task.result() if task.done() else task.cancel()
        raise RuntimeError("uvicorn did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Client:
    """A python-socketio client that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self.sio.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        self.events[event].append((asyncio.get_running_loop().time(), args[0] if args else None))

    async def connect(self, url: str) -> Client:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=5)
        return self

    async def call(self, event: str, payload: Any = None) -> dict[str, Any]:
        ack = await self.sio.call(event, payload, timeout=10)
        assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
        return ack

    async def ok(self, event: str, payload: Any = None) -> Any:
        ack = await self.call(event, payload)
        assert ack["ok"], ack
        return ack["data"]

    async def error(self, event: str, payload: Any = None) -> str:
        ack = await self.call(event, payload)
        assert ack["ok"] is False and isinstance(ack["error"]["message"], str), ack
        return ack["error"]["code"]

    def of(self, event: str, pred: Callable[[Any], bool] = lambda _: True) -> list[Any]:
        return [data for _, data in self.events[event] if pred(data)]

    async def wait_for(self, event: str, pred: Callable[[Any], bool] = lambda _: True, within: float = 5) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            found = self.of(event, pred)
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {event} matching within {within}s; got {dict(self.events)}")


@pytest.fixture
async def server(services: Services) -> AsyncIterator[tuple[str, Any]]:
    app = create_app(services)
    async with running(app) as url:
        yield url, app


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Any]]:
    made: list[Client] = []

    async def make(url: str) -> Client:
        client = await Client().connect(url)
        made.append(client)
        return client

    yield make
    for c in made:
        await c.sio.disconnect()


def member(i: int, platform: str = "telegram") -> MemberRef:
    return MemberRef(platform, str(5000 + i), f"raider{i}", f"raider{i}")


def update(kind: str, raid_id: int) -> Callable[[Any], bool]:
    return lambda m: m["type"] == kind and m["raidId"] == raid_id


async def test_subscribe_join_claim_and_updates(services: Services, server, clients) -> None:
    url, _ = server
    admin = await clients(url)
    assert (await admin.ok("session:authenticate", {"apiKey": ADMIN_KEY})) == {"community": None, "sessionId": None}
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 3, "repost": 2}), by=member(0))
    created = await admin.wait_for("raid:created", lambda m: m["raidId"] == raid.id)
    assert created["raid"]["targetUrl"] == URL and created["raid"]["status"] == "active"

    snapshot = await admin.ok("raid:subscribe", {"raidId": raid.id})
    assert snapshot["id"] == raid.id and snapshot["participants"] == 0
    assert [o["action"] for o in snapshot["objectives"]] == ["like", "repost"]

    joined = await admin.ok("raid:join", {"raidId": raid.id, "member": {"platform": "telegram", "id": "77", "name": "Ann"}})
    assert joined["position"] == 1 and joined["already"] is False
    event = await admin.wait_for("raid:update", update("participant_joined", raid.id))
    assert event["memberId"] == joined["memberId"] and event["position"] == 1
    progress = await admin.wait_for("raid:update", lambda m: update("progress_update", raid.id)(m)
                                    and m["progress"]["participants"] == 1)
    assert progress["progress"]["id"] == raid.id

    claim = await admin.ok("raid:action", {"raidId": raid.id, "action": "likes", "member": {"platform": "telegram", "id": 77}})
    assert claim["action"] == "like" and claim["verification"] == "unverifiable" and claim["points"] >= 1
    done = await admin.wait_for("raid:update", update("action_completed", raid.id))
    assert done["action"] == "like" and done["memberId"] == joined["memberId"]
    await admin.wait_for("raid:update", lambda m: update("progress_update", raid.id)(m) and m["progress"]["actions"] == 1)
    assert await admin.error("raid:action", {"raidId": raid.id, "action": "quote",
                                             "member": {"platform": "telegram", "id": "77"}}) == "UNKNOWN_OBJECTIVE"
    assert await admin.error("raid:action", {"raidId": raid.id, "action": "like",
                                             "member": {"platform": "telegram", "id": "78"}}) == "NOT_PARTICIPANT"

    assert await services.raids.end(raid.id, status="cancelled")
    ended = await admin.wait_for("raid:update", update("raid_completed", raid.id))
    assert ended["status"] == "cancelled" and ended["report"]["raidId"] == raid.id
    assert ended["report"]["participants"] == 1
    assert await admin.error("raid:join", {"raidId": raid.id, "member": {"id": "79"}}) == "RAID_ENDED"
    assert await admin.error("raid:subscribe", {"raidId": 999_999}) == "RAID_NOT_FOUND"


async def test_raid_payloads_carry_the_partner_chats_as_rest_shows_them(services: Services, server, clients) -> None:
    """A raid posted in a linked chat too: raid:created, the raid:subscribe snapshot and progress_update
    carry `partnerChats`, the same list REST gives for the raid (one builder, core/catalog.py)."""
    url, _ = server
    partner = ChatRef("discord", "930000000000000777", "Server C", "930000000000000778")
    issued = await services.partners.issue(TELEGRAM)
    await services.partners.join(partner, issued.code)
    admin = await clients(url)
    await admin.ok("session:authenticate", {"apiKey": ADMIN_KEY})
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 3}, partners=True), by=member(0))
    expected = [{"platform": "discord", "id": "930000000000000777", "title": "Server C",
                 "channel": "930000000000000778", "posted": False}]  # no Discord adapter runs: still owed

    created = await admin.wait_for("raid:created", lambda m: m["raidId"] == raid.id)
    assert created["raid"]["partnerChats"] == expected
    snapshot = await admin.ok("raid:subscribe", {"raidId": raid.id})
    assert snapshot["partnerChats"] == expected
    await admin.ok("raid:join", {"raidId": raid.id, "member": {"platform": "telegram", "id": "77", "name": "Ann"}})
    progress = await admin.wait_for("raid:update", lambda m: update("progress_update", raid.id)(m)
                                    and m["progress"]["participants"] == 1)
    assert progress["progress"]["partnerChats"] == expected
    async with httpx.AsyncClient(base_url=url) as http:
        rest = (await http.get(f"/api/raids/{raid.id}", headers={"X-API-KEY": ADMIN_KEY})).json()
    assert rest["partnerChats"] == expected
    assert set(snapshot) == set(rest) == set(progress["progress"]), set(snapshot) ^ set(rest)  # one representation

    alone = await services.raids.start(ChatRef("telegram", "-1002", "Other"), RaidSpec(URL, {"like": 3}), by=member(1))
    assert (await admin.wait_for("raid:created", lambda m: m["raidId"] == alone.id))["raid"]["partnerChats"] == []


async def test_a_badge_earned_reaches_the_sockets_that_may_see_its_community(services: Services, server, clients) -> None:
    url, _ = server
    admin, team = await clients(url), await clients(url)
    await admin.ok("session:authenticate", {"apiKey": ADMIN_KEY})
    await team.ok("session:authenticate", {"apiKey": TEAM_KEY})
    group = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 3}), by=member(0))
    web = await services.raids.start(TEAM, RaidSpec(URL, {"like": 3}), by=member(0, "web"))
    await services.community_settings.change(group.community_id, {"badges": "5:Early, 9:Liker", "language": "es"},
                                             actor=None)
    await services.community_settings.change(web.community_id, {"badges": "5:Early"}, actor=None)
    await services.raids.join(group.id, member(1))  # +5 early bird: Early
    await services.raids.claim(group.id, member(1), "like")  # Liker
    await services.raids.join(web.id, member(2, "web"))

    liker = await admin.wait_for("badge:earned", lambda m: m["badge"] == "Liker")
    assert {k: liker[k] for k in ("communityId", "name", "points", "raidId", "platforms", "language")} == {
        "communityId": group.community_id, "name": "raider1", "points": 9, "raidId": group.id,
        "platforms": ["telegram"], "language": "es"}
    with use_language("es"):  # the announcement as the community reads it in chat
        assert liker["text"] == announcement_text(Award(group.community_id, liker["memberId"], 9, "Liker", None,
                                                        "raider1", None, ""))
    assert liker["text"] != "🏅 raider1 reached 9 points and earned the Liker badge!"
    mine = await team.wait_for("badge:earned", lambda m: m["communityId"] == web.community_id)
    assert (mine["name"], mine["badge"], mine["language"]) == ("raider2", "Early", "en")
    await admin.wait_for("badge:earned", lambda m: m["communityId"] == web.community_id)
    assert [m["badge"] for m in admin.of("badge:earned", lambda m: m["communityId"] == group.community_id)] == \
        ["Early", "Liker"]  # each once
    assert team.of("badge:earned", lambda m: m["communityId"] == group.community_id) == []  # not its community


async def test_a_burst_of_claims_is_coalesced(services: Services, server, clients) -> None:
    url, app = server
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL, {"like": 100}), by=member(0))
    for i in range(50):
        await services.raids.join(raid.id, member(i))
    await app.state.realtime.progress.drain()
    watcher = await clients(url)
    await watcher.ok("session:authenticate", {"apiKey": ADMIN_KEY})
    assert (await watcher.ok("raid:subscribe", {"raidId": raid.id}))["participants"] == 50

    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(services.raids.claim(raid.id, member(i), "like") for i in range(50)))
    burst = loop.time() - start
    await watcher.wait_for("raid:update", lambda m: update("progress_update", raid.id)(m)
                           and m["progress"]["actions"] == 50, within=5)
    times = [t - start for t, m in watcher.events["raid:update"] if m["type"] == "progress_update"]
    # at most two in any second as the client sees them (the server spaces them a second apart)
    assert all(len([u for u in times if t <= u < t + 1.0]) <= 2 for t in times), times
    assert len(times) <= burst + 2, times
    assert len(watcher.of("raid:update", update("action_completed", raid.id))) == 50  # these are not coalesced


async def test_session_message_round_trip_with_a_command(services: Services, server, clients) -> None:
    url, _ = server
    info = await services.sessions.create(AGENT, str(uuid.uuid4()), metadata={"community": "team", "userName": "ann"})
    admin = await clients(url)
    await admin.ok("session:authenticate", {"apiKey": ADMIN_KEY})
    joined = await admin.ok("session:join", {"sessionId": info.id})
    assert joined["sessionId"] == info.id and joined["agentId"] == AGENT

    sent = await admin.ok("session:message", {"sessionId": info.id, "content": f"/raid start {URL} likes=3"})
    reply = sent["agentResponse"]["text"]
    assert reply and sent["userMessage"]["content"].startswith("/raid start")
    assert sent["sessionStatus"]["renewalCount"] >= 0 and "expiresAt" in sent["sessionStatus"]
    pushed = await admin.wait_for("session:message", lambda m: m["message"]["isAgent"])
    assert pushed == {"sessionId": info.id, "message": sent["agentResponse"]["message"]}
    assert pushed["message"]["content"] == reply
    assert admin.of("session:message", lambda m: not m["message"]["isAgent"])[0]["message"]["id"] == sent["userMessage"]["id"]
    created = await admin.wait_for("raid:created")  # the command really started a raid in the web community
    assert created["raid"]["chat"] == {"platform": "web", "id": "team", "title": "web team"}

    plain = await admin.ok("session:message", {"sessionId": info.id, "content": "hello there"})
    assert "agentResponse" not in plain
    await services.sessions.send_message(info.id, "sent over REST")  # any transport reaches the room
    await admin.wait_for("session:message", lambda m: m["message"]["content"] == "sent over REST")
    assert await admin.error("session:message", {"sessionId": info.id, "content": ""}) == "VALIDATION_ERROR"
    assert await admin.error("session:join", {"sessionId": str(uuid.uuid4())}) == "SESSION_NOT_FOUND"


async def test_auth_refusal_scopes_and_tokens(services: Services, server, clients, clock) -> None:
    url, _ = server
    telegram_raid = await services.raids.start(TELEGRAM, RaidSpec(URL), by=member(0))
    team_raid = await services.raids.start(TEAM, RaidSpec(URL), by=member(0, "web"))
    mine = await services.sessions.create(AGENT, str(uuid.uuid4()), metadata={"community": "team", "userName": "bo"})
    other = await services.sessions.create(AGENT, str(uuid.uuid4()), metadata={"community": "elsewhere"})

    anon = await clients(url)
    for event, payload in [("raid:subscribe", {"raidId": telegram_raid.id}), ("session:join", {"sessionId": mine.id}),
                           ("raid:join", {"raidId": team_raid.id}), ("session:message", {"sessionId": mine.id, "content": "x"})]:
        assert await anon.error(event, payload) == "UNAUTHORIZED"
    assert await anon.error("session:authenticate", {"apiKey": "wrong"}) == "UNAUTHORIZED"
    assert await anon.error("session:authenticate", {}) == "UNAUTHORIZED"
    assert await anon.error("raid:subscribe", {"raidId": telegram_raid.id}) == "UNAUTHORIZED"

    team = await clients(url)
    assert (await team.ok("session:authenticate", {"apiKey": TEAM_KEY}))["community"] == "web:team"
    assert await team.error("raid:subscribe", {"raidId": telegram_raid.id}) == "FORBIDDEN"
    assert (await team.ok("raid:subscribe", {"raidId": team_raid.id}))["id"] == team_raid.id
    assert await team.error("session:join", {"sessionId": other.id}) == "SESSION_NOT_FOUND"  # as over REST

    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/api/realtime/token", json={"sessionId": mine.id})).status_code == 401
        bad = await http.post("/api/realtime/token", json={"sessionId": "nope"}, headers={"X-API-KEY": ADMIN_KEY})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
        missing = await http.post("/api/realtime/token", json={"sessionId": str(uuid.uuid4())}, headers={"X-API-KEY": ADMIN_KEY})
        assert missing.status_code == 404
        refused = await http.post("/api/realtime/token", json={"sessionId": other.id}, headers={"X-API-KEY": TEAM_KEY})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "SESSION_NOT_FOUND"
        issued = await http.post("/api/realtime/token", json={"sessionId": mine.id}, headers={"X-API-KEY": TEAM_KEY})
        assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    assert issued.json()["expiresAt"] == (clock.now() + timedelta(minutes=10)).isoformat()

    user = await clients(url)
    assert await user.ok("session:authenticate", {"token": token}) == {"community": "web:team", "sessionId": mine.id}
    assert (await user.ok("session:join", {"sessionId": mine.id}))["sessionId"] == mine.id
    assert await user.error("session:join", {"sessionId": other.id}) == "FORBIDDEN"
    assert await user.error("raid:subscribe", {"raidId": telegram_raid.id}) == "FORBIDDEN"
    joined = await user.ok("raid:join", {"raidId": team_raid.id})  # as the session's own web member
    assert joined["position"] == 1
    assert await user.error("raid:join", {"raidId": team_raid.id, "member": {"id": "someone-else"}}) == "FORBIDDEN"
    await team.wait_for("raid:update", update("participant_joined", team_raid.id))
    sent = await user.ok("session:message", {"sessionId": mine.id, "content": "/raid end"})  # members are no moderators
    assert "moderator" in sent["agentResponse"]["text"]

    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert await (await clients(url)).error("session:authenticate", {"token": forged}) == "UNAUTHORIZED"
    clock.advance(minutes=11)
    late = await clients(url)
    assert await late.error("session:authenticate", {"token": token}) == "UNAUTHORIZED"
    assert await late.error("raid:subscribe", {"raidId": team_raid.id}) == "UNAUTHORIZED"


@pytest.mark.parametrize("settings", ["open"], indirect=True)
async def test_with_no_keys_configured_everything_is_open(services: Services, server, clients) -> None:
    url, _ = server
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL), by=member(0))
    client = await clients(url)
    assert (await client.ok("raid:subscribe", {"raidId": raid.id}))["id"] == raid.id
    await services.raids.start(TEAM, RaidSpec(URL), by=member(0, "web"))
    await client.wait_for("raid:created")


@pytest.mark.parametrize("settings", ["open", "cors"], indirect=True)
async def test_browsers_connect_from_the_app_or_the_configured_origins(services: Services, server) -> None:
    url, _ = server
    allowed = [url] + (["https://ok.example"] if services.settings.http.cors_origins else [])
    for origin in [*allowed, "https://evil.example"]:
        async with aiohttp.ClientSession() as http:
            client = socketio.AsyncClient(reconnection=False, http_session=http)
            try:
                await client.connect(url, headers={"Origin": origin}, transports=["websocket"], wait_timeout=5)
                assert origin in allowed, origin
                await client.disconnect()
            except socketio.exceptions.ConnectionError:
                assert origin not in allowed, origin


@pytest.mark.parametrize("settings", ["redis"], indirect=True)
async def test_redis_url_shares_rooms_through_redis(services: Services) -> None:
    app = create_app(services)
    manager = app.state.realtime.sio.manager
    assert isinstance(manager, socketio.AsyncRedisManager) and manager.redis_url == "redis://127.0.0.1:1/0"


@asynccontextmanager
async def redis_server(tmp_path: Path) -> AsyncIterator[str]:
    """A throwaway redis-server on a unix socket; skips when Redis or the redis package is missing."""
    binary = shutil.which("redis-server")
    if binary is None or importlib.util.find_spec("redis") is None:
        pytest.skip("needs redis-server and the redis package (pip install redis)")
    sock = tmp_path / "redis.sock"
    proc = await asyncio.create_subprocess_exec(
        binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        await proc.wait()


async def test_two_processes_share_rooms_through_redis(db_url: str, clock, tmp_path: Path) -> None:
    """Two apps with their own services and buses (as two processes would be): events of one reach the other's sockets."""
    async with redis_server(tmp_path) as redis_url:
        settings = Settings(realtime={"redis_url": redis_url})
        a, b = (Services(Database(db_url), clock, settings, EventBus()) for _ in range(2))
        try:
            app_a = create_app(a)
            async with running(app_a), running(create_app(b)) as url_b:
                client = await Client().connect(url_b)
                try:
                    for _ in range(100):  # the Redis listener of b starts lazily with its first client
                        await app_a.state.realtime.sio.emit("probe", {}, to=ALL)
                        if client.events["probe"]:
                            break
                        await asyncio.sleep(0.05)
                    raid = await a.raids.start(TELEGRAM, RaidSpec(URL), by=member(0))
                    await client.wait_for("raid:created", lambda m: m["raidId"] == raid.id)
                    await client.ok("raid:subscribe", {"raidId": raid.id})
                    joined = await a.raids.join(raid.id, member(1))
                    event = await client.wait_for("raid:update", update("participant_joined", raid.id))
                    assert event["memberId"] == joined.member_id
                    await client.wait_for("raid:update", lambda m: update("progress_update", raid.id)(m)
                                          and m["progress"]["participants"] == 1)
                    await asyncio.sleep(0.2)
                    assert len(client.of("raid:update", update("participant_joined", raid.id))) == 1
                finally:
                    await client.sio.disconnect()
        finally:
            await a.db.dispose()
            await b.db.dispose()


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) \
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                        max_leaves=12)


EVENTS = ["session:authenticate", "session:join", "session:message", "raid:join", "raid:action", "raid:subscribe"]
KEYS = ["apiKey", "token", "sessionId", "content", "metadata", "attachments", "raidId", "member", "action", "proofUrl"]


async def test_arbitrary_payloads_never_crash_a_handler(services: Services, server, clients) -> None:
    url, _ = server
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL), by=member(0))
    info = await services.sessions.create(AGENT, str(uuid.uuid4()))
    client = await clients(url)
    await client.ok("session:authenticate", {"apiKey": ADMIN_KEY})
    loop = asyncio.get_running_loop()
    known = st.sampled_from([raid.id, info.id, "like", {"id": "9"}, ADMIN_KEY, -1, 2**63])
    payloads = json_values() | st.dictionaries(st.sampled_from(KEYS), json_values() | known, max_size=5)
    seen: list[str] = []

    @hsettings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(event=st.sampled_from(EVENTS), payload=payloads)
    def check(event: str, payload: Any) -> None:
        ack = asyncio.run_coroutine_threadsafe(client.call(event, payload), loop).result(timeout=20)
        if not ack["ok"]:
            assert isinstance(ack["error"]["code"], str) and ack["error"]["code"] != "INTERNAL_SERVER_ERROR", ack
        seen.append(event)

    await asyncio.to_thread(check)  # hypothesis drives from a thread; the server and client stay on this loop
    assert len(seen) >= 60
    assert await client.error("raid:subscribe", [1, 2]) == "VALIDATION_ERROR"
    assert await client.error("raid:subscribe") == "VALIDATION_ERROR"
    assert await client.error("raid:subscribe", {"raidId": "1"}) == "VALIDATION_ERROR"
    assert (await client.ok("raid:subscribe", {"raidId": raid.id}))["id"] == raid.id  # still answering
    fresh = await clients(url)
    assert await fresh.ok("session:authenticate", {"apiKey": ADMIN_KEY})


def node_or_skip() -> str:
    node = shutil.which("node")
    reason = None
    if node is None:
        reason = "node is not installed"
    elif not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        reason = "tests/js/node_modules is missing (run npm install in tests/js)"
    if reason:
        if IN_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)
    return node  # type: ignore[return-value]


async def read_json_line(stream: asyncio.StreamReader, within: float = 15) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), within)
    assert line, "the script ended early"
    return json.loads(line)


async def test_javascript_socketio_client_sees_a_join(services: Services, server) -> None:
    node = node_or_skip()
    url, _ = server
    raid = await services.raids.start(TELEGRAM, RaidSpec(URL), by=member(0))
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "socketio_client.mjs"), url, ADMIN_KEY, str(raid.id),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        auth = await read_json_line(proc.stdout)
        assert auth == {"step": "authenticated", "ack": {"ok": True, "data": {"community": None, "sessionId": None}}}
        sub = await read_json_line(proc.stdout)
        assert sub["step"] == "subscribed" and sub["ack"]["data"]["id"] == raid.id
        joined = await services.raids.join(raid.id, member(3))
        seen = await read_json_line(proc.stdout)
        assert seen["step"] == "event" and seen["msg"]["type"] == "participant_joined"
        assert seen["msg"]["raidId"] == raid.id and seen["msg"]["memberId"] == joined.member_id
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
