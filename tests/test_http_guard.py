"""The guard in front of every entry point: keys by digest, Host and Origin, exact public paths,
client addresses through trusted proxies only, and one bounded rate limit for REST and Socket.IO."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import httpx
import pytest
import socketio

from adapters.http.app import create_app
from core.clock import FakeClock
from core.config import ConfigError, Settings, load_settings
from core.events import EventBus
from core.ratelimit import MAX_BUCKETS, RateLimiter
from core.services import Services
from core.storage.db import Database
from tests.test_cli import run
from tests.test_realtime import running

KEY = "a-long-admin-key-for-the-guard-tests"


def _services(db_url: str, **http: object) -> Services:
    return Services(Database(db_url), FakeClock(), Settings(http=http), EventBus())


def _client(app: object, host: str = "localhost", address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 5000))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}")


async def test_a_key_may_be_configured_by_its_sha256_only(db_url: str) -> None:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    svc = _services(db_url, api_keys=[{"key_sha256": digest.upper(), "community": "telegram:-100123"}])
    try:
        async with _client(create_app(svc)) as http:
            assert (await http.get("/api/raids", headers={"X-API-KEY": KEY})).status_code == 200
            for wrong in (digest, KEY[:-1], ""):  # the digest itself is no key
                r = await http.get("/api/raids", headers={"X-API-KEY": wrong})
                assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    finally:
        await svc.db.dispose()


def test_key_config_errors_name_the_key() -> None:
    for bad, words in (
        ({"api_keys": [{"community": "*"}]}, "exactly one of key or key_sha256"),
        ({"api_keys": [{"key": KEY, "key_sha256": "ab" * 32}]}, "exactly one of key or key_sha256"),
        ({"api_keys": [{"key_sha256": "xyz"}]}, "http.api_keys.0.key_sha256"),
        ({"api_keys": [{"key": KEY, "community": "-100123"}]}, "http.api_keys.0.community"),
        ({"trusted_proxies": ["not-an-ip"]}, "http.trusted_proxies"),
        ({"allowed_hosts": ["https://nubi.example.org/"]}, "http.allowed_hosts"),
    ):
        with pytest.raises(ConfigError) as err:
            load_settings(None, env={"NUBI_HTTP_" + k.upper(): __import__("json").dumps(v) for k, v in bad.items()})
        assert words in str(err.value), (bad, err.value.problems)


def test_keys_new_prints_a_key_and_the_lines_that_admit_it(tmp_path: Path) -> None:
    made = run("keys", "new", "--community", "telegram:-100123", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[0].removeprefix("key: ")
    assert len(key) >= 40
    config = tmp_path / "config.toml"
    config.write_text("[http]\n" + made.stdout.split("\n\n", 1)[1].replace("[[http.api_keys]]", "[[http.api_keys]]"))
    settings = load_settings(config, env={})
    (api_key,) = settings.http.api_keys
    assert api_key.community == "telegram:-100123" and api_key.key is None
    assert api_key.key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    checked = run("--config", str(config), "config", "check", cwd=tmp_path)
    assert checked.returncode == 0 and "api keys 0 admin + 1 community" in checked.stdout, checked.stderr
    admin = run("keys", "new", "--admin", cwd=tmp_path)
    assert admin.returncode == 0 and 'community = "*"' in admin.stdout
    assert admin.stdout.splitlines()[0] != made.stdout.splitlines()[0]  # random each time
    bad = run("keys", "new", "--community", "nowhere", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--community" in bad.stderr


async def test_host_origin_and_exact_public_paths(db_url: str) -> None:
    svc = _services(db_url, allowed_hosts=["nubi.example.org"], cors_origins=["https://dash.example.org"])
    keyed = _services(db_url, api_keys=[{"key": KEY}])
    try:
        app = create_app(svc)
        for host, served in (("localhost:8080", True), ("127.0.0.1", True), ("[::1]:9", True),
                             ("nubi.example.org", True), ("nubi.example.org:443", True),
                             ("attacker.example", False), ("127.0.0.1.attacker.example", False), ("", False)):
            async with _client(app, host=host or "localhost") as http:
                r = await http.get("/api/agents", headers={"Host": host})
                if served:
                    assert r.status_code == 200, host
                else:
                    assert r.status_code == 421 and r.json()["error"]["code"] == "MISDIRECTED_REQUEST", host
        async with _client(app) as http:
            body = {"community": {"platform": "web", "id": "x"}, "targetUrl": "https://x.com/a/status/1"}
            for origin, allowed in (("http://localhost", True), ("https://dash.example.org", True),
                                    ("http://attacker.example", False), ("null", False)):
                r = await http.post("/api/raids", json=body, headers={"Origin": origin})
                assert (r.status_code != 403) == allowed, (origin, r.text)
                if not allowed:
                    assert r.json()["error"]["code"] == "FORBIDDEN"
            assert (await http.get("/api/raids", headers={"Origin": "http://attacker.example"})).status_code == 200
        async with _client(create_app(keyed)) as http:
            assert (await http.get("/api/messaging/sessions/health")).status_code == 200
            for path in ("/api/messaging/sessions/health/x", "/api/messaging/sessions/health/../../raids",
                         "/docs/x", "/telegram/webhook/x", "/staticx"):
                r = await http.get(path)
                assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED", path
    finally:
        await svc.db.dispose()
        await keyed.db.dispose()


async def test_forwarded_for_counts_only_from_trusted_proxies(db_url: str) -> None:
    """The per-address limit falls on the client a trusted proxy names; an untrusted peer cannot dodge it."""
    svc = _services(db_url, trusted_proxies=["10.0.0.0/8"], rate_limit_per_minute=2)
    try:
        app = create_app(svc)
        async with _client(app, address="10.0.0.5") as proxy, _client(app, address="127.0.0.1") as direct:
            for client in ("127.0.0.2", "127.0.0.3"):  # two clients behind the proxy: a budget each
                codes = [(await proxy.get("/api/agents", headers={"X-Forwarded-For": client})).status_code
                         for _ in range(3)]
                assert codes == [200, 200, 429], codes
            spoofed = [(await direct.get("/api/agents", headers={"X-Forwarded-For": f"127.0.1.{i}"})).status_code
                       for i in range(3)]
            assert spoofed == [200, 200, 429]  # the header from an untrusted peer is ignored
    finally:
        await svc.db.dispose()


async def test_socketio_events_share_the_rest_rate_limit(db_url: str) -> None:
    svc = _services(db_url, api_keys=[{"key": KEY}], rate_limit_per_minute=4)
    try:
        async with running(create_app(svc)) as url:
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, transports=["websocket"], wait_timeout=5)
            try:
                # the address's budget of 4: the connect, authenticating, two events; the third is refused
                acks = [await client.call("session:authenticate", {"apiKey": KEY}, timeout=10)]
                acks += [await client.call("raid:subscribe", {"raidId": 1}, timeout=10) for _ in range(3)]
                codes = [a["data"]["community"] if a["ok"] else a["error"]["code"] for a in acks]
                assert codes == [None, "RAID_NOT_FOUND", "RAID_NOT_FOUND", "RATE_LIMIT_EXCEEDED"]
                assert acks[-1]["error"]["details"]["retryAfterSeconds"] > 0
                async with httpx.AsyncClient(base_url=url) as http:  # the same caller (key and address) is out of budget over REST too
                    r = await http.get("/api/raids", headers={"X-API-KEY": KEY})
                    assert r.status_code == 429 and r.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
                late = socketio.AsyncClient(reconnection=False)  # and connecting again is refused too
                with pytest.raises(socketio.exceptions.ConnectionError):
                    await late.connect(url, transports=["websocket"], wait_timeout=5)
            finally:
                await client.disconnect()
    finally:
        await svc.db.dispose()


def test_the_limiter_forgets_addresses_and_its_memory_stays_bounded() -> None:
    limiter = RateLimiter(600)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):  # 100,000 distinct addresses within one second
            assert limiter.allow(f"ip:10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", now=1000.0 + i * 1e-5)[0]
        grown = tracemalloc.get_traced_memory()[0] - base
        assert len(limiter) == MAX_BUCKETS and grown < 4_000_000, grown
        limiter.allow("ip:one more", now=1000.0 + 121)  # two windows later every idle entry is gone
        settled = tracemalloc.get_traced_memory()[0] - base
        assert len(limiter) == 1 and settled < 2_000_000, settled
    finally:
        tracemalloc.stop()


def test_the_limiter_counts_a_sliding_minute() -> None:
    limiter = RateLimiter(3)
    assert [limiter.allow("k", now=t)[0] for t in (0, 1, 2, 3)] == [True, True, True, False]
    ok, wait = limiter.allow("k", now=30)
    assert not ok and 0 < wait <= 30
    assert limiter.allow("k", now=61)[0] is False  # 3 of the last minute still mostly in view
    assert limiter.allow("k", now=100)[0] is True  # two thirds of them have slid out
    assert limiter.allow("k", now=250)[0] is True  # an idle bucket starts afresh
