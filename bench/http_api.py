"""Benchmark 5, HTTP: session create, message store and raid join through uvicorn, vs a bare ASGI app.

nubi's app (adapters/http/app.py create_app) and a bare ASGI app that answers 200 with no work run
in separate processes on 127.0.0.1 under the same uvicorn settings; an aiohttp load generator in
this process sends a bounded number of requests (or stops at a time cap) with 1 and 32 clients.
Reported per workload and concurrency: requests/s (ratio to the bare app), p99 latency, and the
server's RSS. Every 201/200 must be in the database afterwards, or the run stops.

For scale (the issue): upstream ElizaOS 1.7.2 created ~500 sessions/s and stored ~400 messages/s at
32 concurrent clients, p99 0.5-1 s, ~600 MB RSS. Target: 3x those rates, p99 <= 50 ms, <= 150 MB.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.pg import free_port

from .env import REPO, Figure, Raw, Report, Target, bench_settings, hwm_mb, percentile, rss_mb

AGENT = bench_settings("sqlite+aiosqlite:///unused.db").agents[0].id
SESSIONS = "/api/messaging/sessions"
RSS_TARGET_MB = 150.0
P99_TARGET_MS = 50.0
ELIZA = {"session create": 500.0, "message": 400.0}  # per second at 32 clients (the figures)


@dataclass
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies, 99) * 1000


class Server:
    """A server process on a free loopback port, ready once it answers."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.args = [*args, str(self.port)]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Server:
        self.proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.http_server", *self.args, cwd=REPO)
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(self.base + f"{SESSIONS}/health") as resp:
                        if resp.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                if self.proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        raise RuntimeError(f"the server {self.args} did not start")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    def rss(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def peak(self) -> float:
        assert self.proc is not None
        return hwm_mb(self.proc.pid)


async def load(base: str, clients: int, total: int, cap_seconds: float,
               request: Callable[[int], tuple[str, dict[str, Any]]]) -> Load:
    """`clients` workers sending POSTs until `total` are done or the time cap passes."""
    issued = 0
    lat: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + cap_seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector) as http:

        async def worker() -> None:
            nonlocal issued
            while issued < total and time.perf_counter() < deadline:
                i = issued
                issued += 1
                path, body = request(i)
                t = time.perf_counter()
                async with http.post(path, json=body) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return Load(len(lat), time.perf_counter() - t0, lat, statuses)


async def _post(base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession(base) as http, http.post(path, json=body) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"setup request {path} failed: {resp.status} {await resp.text()}")
        return await resp.json()


async def bench(target: Target, report: Report, quick: bool) -> None:
    total, cap = (300, 3.0) if quick else (3000, 10.0)
    print(f"\n== http on {target.kind}: up to {total} requests or {cap:.0f} s per workload, 1 and 32 clients",
          flush=True)
    url = await target.fresh()
    ok = {"session create": 0, "message": 0, "raid join": 0}
    try:
        async with Server("bare") as bare, Server("nubi", url) as nubi:
            raid = await _post(nubi.base, "/api/raids", {
                "community": {"platform": "web", "id": "bench", "title": "HTTP raiders"},
                "targetUrl": "https://x.com/nubi/status/9", "objectives": {"like": 1_000_000},
                "durationSeconds": 24 * 3600, "maxParticipants": 100_000,
            })
            sessions = [
                (await _post(nubi.base, SESSIONS, {"agentId": AGENT, "userId": str(uuid.uuid4())}))["sessionId"]
                for _ in range(32)
            ]
            joined = iter(range(10**9))
            workloads: dict[str, Callable[[int], tuple[str, dict[str, Any]]]] = {
                "session create": lambda i: (SESSIONS, {"agentId": AGENT, "userId": str(uuid.uuid4()),
                                                        "metadata": {"bench": True}}),
                "message": lambda i: (f"{SESSIONS}/{sessions[i % 32]}/messages",
                                      {"content": f"gm raiders, message {i}", "metadata": {"bench": True}}),
                "raid join": lambda i: (f"/api/raids/{raid['id']}/join",
                                        {"member": {"platform": "web", "id": f"http-{next(joined)}", "name": "raider"}}),
            }
            bare_rss = bare.rss()
            for clients in (1, 32):
                for name, make in workloads.items():
                    base_load = await load(bare.base, clients, total, cap, make)
                    got = await load(nubi.base, clients, total, cap, make)
                    good = sum(n for s, n in got.statuses.items() if 200 <= s < 300)
                    if good != got.requests:
                        raise RuntimeError(f"{name}: non-2xx answers {got.statuses}")
                    ok[name] += good
                    eliza = ELIZA.get(name) if clients == 32 else None
                    report.add(Figure(
                        "http", target.kind, f"{name}, {clients} client{'s' if clients > 1 else ''}: requests/s",
                        got.rate, "req/s", "bare ASGI app", base_load.rate,
                        target=f">= {3 * eliza:,.0f}/s (3x ElizaOS)" if eliza else "",
                        met=got.rate >= 3 * eliza if eliza else None, note=f"{got.requests} requests",
                    ))
                    report.add(Figure(
                        "http", target.kind, f"{name}, {clients} client{'s' if clients > 1 else ''}: p99", got.p99_ms,
                        "ms", "bare ASGI app", base_load.p99_ms, higher_is_better=False,
                        target=f"<= {P99_TARGET_MS:.0f} ms" if clients == 32 else "",
                        met=got.p99_ms <= P99_TARGET_MS if clients == 32 else None,
                    ))
            rss, peak = nubi.rss(), nubi.peak()
            report.add(Figure("http", target.kind, "server RSS after the run", rss, "MB", "bare ASGI app", bare_rss,
                              higher_is_better=False, target=f"<= {RSS_TARGET_MB:.0f} MB", met=peak <= RSS_TARGET_MB,
                              note=f"peak {peak:.1f} MB"))
        await _check_persisted(url, ok, setup_sessions=len(sessions) + 1)
    finally:
        await target.drop(url)


async def _check_persisted(url: str, ok: dict[str, int], setup_sessions: int) -> None:
    """Every answered create, message and join is a row (the raid's own session counts as one)."""
    r = await Raw.connect(url)
    try:
        found = {
            "session create": await r.fetchval("SELECT count(*) FROM nubi_sessions") - setup_sessions,
            "message": await r.fetchval("SELECT count(*) FROM session_messages WHERE is_agent = ?", False),
            "raid join": await r.fetchval("SELECT count(*) FROM raid_participants"),
        }
    finally:
        await r.close()
    if found != ok:
        raise RuntimeError(f"answered {ok} but the database holds {found}")
    print(f"  persisted: {found}", flush=True)
