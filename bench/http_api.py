"""Benchmark 5, HTTP: the Sessions API of `nubi run` against the upstream ElizaOS server, same run.

Three servers, each a process of its own on 127.0.0.1:

- nubi: the real `nubi run` (`python -m bot.cli run`) on the target database, with no platform
  tokens (the default: API, dashboard, MCP and scheduler; Telegram and Discord not imported);
- ElizaOS: `@elizaos/server` 1.7.2 from npm (bench/elizaos, installed with `npm ci` on first use),
  one agent on embedded PGlite, no model plugin (the Sessions API needs none);
- bare: an ASGI app that answers 200 with no work, under the same uvicorn settings: the floor that
  the server and this load generator set.

One load generator (`Client`: keep-alive HTTP/1.1 on asyncio streams, lighter than aiohttp's
client, which took a third of a core at 32 clients) drives nubi and ElizaOS with the same phases and
bodies, at 1 and 32 clients: create a session; post a message; `GET .../messages?limit=50` on a
session holding 500 messages. Before each measured phase both servers are left to settle, so neither
works off a backlog (ElizaOS handles each stored message after answering) during a measurement, and
then get a warm-up of a tenth of the phase's requests at the phase's concurrency, not measured (its
p99 is reported beside the figure). Requests are timed from write to last byte on connections opened
before, and the load generator's garbage collector is off while they run, for both servers alike. ElizaOS limits each client address to 1,000 requests per 15 minutes, so every client
sends from its own source address in 127.0.0.0/8 and moves to a fresh one every 400 requests, for
both servers alike (nubi's own per-address limit is lifted the same way, by configuration). Raid
joins are measured on nubi only (ElizaOS has no raids), against the bare app.

Reported per phase: requests/s and p99 of each, nubi's rate as a ratio to ElizaOS; each server's
RSS after both have held 1,000 sessions and 10,000 messages. Every 2xx nubi answered is checked in
its database afterwards, or the run stops. Targets (issue 11): each phase at 32 clients 5x ElizaOS
or more with p99 <= 50 ms; `nubi run` at most 110 MiB RSS after 1,000 sessions and 10,000 messages.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import aiohttp

from tests.pg import free_port

from .env import REPO, Figure, Raw, Report, Target, bench_settings, hwm_mb, percentile, rss_mb

SESSIONS = "/api/messaging/sessions"
NUBI_AGENT = bench_settings("sqlite+aiosqlite:///unused.db").agents[0].id
ELIZA_DIR = Path(__file__).resolve().parent / "elizaos"
PER_ADDRESS = 400  # requests from one source address (ElizaOS allows 1,000 per 15 minutes)
RSS_TARGET_MIB = 110.0  # rss_mb() reads /proc in KiB and divides by 1024: its "MB" are MiB
P99_TARGET_MS = 50.0
PEER_RATIO_TARGET = 5.0
HELD_SESSIONS, HELD_MESSAGES = 1_000, 10_000
HISTORY = 500  # messages in the session the GET phase reads
WARM_UP = 0.1  # of a phase's requests, sent first and not measured (both servers)
REPEATS = 3  # turns of each 32-client phase per server (the median counts)

Request = tuple[str, str, dict[str, Any] | None]  # method, path, JSON body


@dataclass
class Load:
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    median_p99_ms: float | None = None  # a median over turns (`_median`): its p99

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p99_ms(self) -> float:
        if self.median_p99_ms is not None:
            return self.median_p99_ms
        return percentile(self.latencies, 99) * 1000

    @property
    def good(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)


class Addresses:
    """Fresh loopback source addresses: 127.0.0.2, 127.0.0.3, ... (never .0 or .255)."""

    def __init__(self) -> None:
        self._n = count(2)

    def take(self) -> str:
        while True:
            n = next(self._n)
            a, b, c = (n >> 16) & 255, (n >> 8) & 255, n & 255
            if c not in (0, 255):
                return f"127.{a}.{b}.{c}"


ADDRESSES = Addresses()


class Process:
    """A server process on a free loopback port; `ready` says how to tell it serves."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        # No platform token reaches a server: the figures are the default's, with no chat adapter.
        inherited = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
        self.env = {**inherited, **(env or {})}
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.agent_id = NUBI_AGENT

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Process:
        env = {k: v.replace("{port}", str(self.port)) for k, v in self.env.items()}
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=self.cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self._drain = asyncio.create_task(self._read_output())
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    break
                try:
                    async with http.get(self.base + f"{SESSIONS}/health") as resp:
                        if resp.status == 200 and (self.name != "ElizaOS" or self.agent_id != NUBI_AGENT):
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} did not start: {' '.join(self.argv)}\n{self._tail()}")

    async def _read_output(self) -> None:
        self._lines: list[str] = []
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self._lines = [*self._lines[-40:], line]
            if line.startswith('{"ready":true'):
                info = json.loads(line)
                self.agent_id, self.pid = info["agentId"], int(info["pid"])

    def _tail(self) -> str:
        return "\n".join(getattr(self, "_lines", []))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._drain.cancel()

    def rss(self) -> float:
        return rss_mb(self.pid)

    def peak(self) -> float:
        return hwm_mb(self.pid)


def nubi_server(url: str, workdir: Path) -> Process:
    """`nubi run` as an operator starts it, on the target database, no tokens set."""
    env = {
        "NUBI_DATABASE_URL": url,
        "NUBI_HTTP_PORT": "{port}",
        # The load generator rotates its addresses for ElizaOS's sake; nubi's limit goes the same way.
        "NUBI_HTTP_RATE_LIMIT_PER_MINUTE": "1000000000",
        "NUBI_RAIDS_MAX_PARTICIPANTS": "100000",
    }
    return Process("nubi", [sys.executable, "-m", "bot.cli", "run"], env, cwd=workdir)


def bare_server() -> Process:
    return Process("bare", [sys.executable, "-m", "bench.http_server", "bare", "{port}"])


def eliza_installed() -> str | None:
    """Install the ElizaOS peer from its lock file on first use; the reason it cannot run, or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js and npm are not on PATH"
    if not (ELIZA_DIR / "node_modules" / "@elizaos" / "server").is_dir():
        print("  installing @elizaos/server 1.7.2 (npm ci, a few minutes, once)", flush=True)
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(ELIZA_DIR)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr.strip().splitlines()[-1:]}"
    return None


def eliza_server(data_dir: Path) -> Process:
    env = {
        "SERVER_HOST": "127.0.0.1",
        "SENTRY_DSN": "http://k@127.0.0.1:9/1",  # its default DSN points outside; nothing listens here
        "LOG_LEVEL": "error",
        "ELIZA_UI_ENABLE": "false",
    }
    return Process("ElizaOS", ["node", "server.mjs", "{port}", str(data_dir)], env, cwd=ELIZA_DIR)


class Client:
    """One keep-alive HTTP/1.1 connection from one source address, on asyncio's streams.

    The load generator shares the two cores with the server it measures; aiohttp's client spent
    about 0.4 ms of CPU per request there (a bare server answered under 2,000 requests/s at 32
    clients), so this sends each request as one prepared write and reads the status line, the
    headers and a Content-Length or chunked body. The same bytes go to nubi and to ElizaOS."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self.host, self.port, self.source = host, port, source
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection (before the first request is timed, as wrk does; a request reopens a
        connection the server closed, and that one is timed)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, local_addr=(self.source, 0))

    async def request(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, bytes]:
        await self.connect()
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.writer.write(head.encode("latin-1") + b"\r\n" + payload)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(p[:-2] for p in parts)
        else:
            data = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(base: str, clients: int, total: int, cap_seconds: float, make: Callable[[int], Request]) -> Load:
    """`clients` workers, each from its own source address (a fresh one every PER_ADDRESS requests),
    until `total` requests are done or the time cap passes. Each request is timed from its write to
    its last byte read, on a connection opened before. This process's garbage collector is off while
    the requests run (collected after): its pauses are the load generator's, not the server's, and
    landed inside the requests they interrupted (a 150 ms stall every few seconds at 32 clients)."""
    issued = 0
    lat: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + cap_seconds
    host, _, port = base.removeprefix("http://").partition(":")

    async def worker() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < deadline:
            client = Client(host, int(port), ADDRESSES.take())
            try:
                await client.connect()
                for _ in range(PER_ADDRESS):
                    if issued >= total or time.perf_counter() >= deadline:
                        return
                    i = issued
                    issued += 1
                    method, path, body = make(i)
                    t = time.perf_counter()
                    status, _ = await client.request(method, path, body)
                    statuses[status] = statuses.get(status, 0) + 1
                    lat.append(time.perf_counter() - t)
            finally:
                client.close()

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    finally:
        gc.enable()
        gc.unfreeze()
    return Load(len(lat), elapsed, lat, statuses)


async def fill(server: Process, count_: int, clients: int, make: Callable[[int], Request]) -> Load:
    """Setup traffic (not measured): every request must succeed."""
    got = await load(server.base, clients, count_, 3600.0, make)
    if got.good != got.requests or got.requests != count_:
        raise RuntimeError(f"{server.name}: setup answered {got.statuses} for {count_} requests")
    return got


async def _json(server: Process, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(local_addr=(ADDRESSES.take(), 0))
    async with aiohttp.ClientSession(server.base, connector=connector) as http, \
            http.request(method, path, json=body) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"{server.name}: {method} {path} answered {resp.status} {await resp.text()}")
        return await resp.json()


async def settle(server: Process, quiet_ms: float = 50.0, limit_s: float = 120.0) -> None:
    """Wait until a server has worked off what the setup queued (ElizaOS processes every stored
    message after answering): three health checks in a row under `quiet_ms`, or `limit_s` passed."""
    calm, deadline = 0, time.monotonic() + limit_s
    connector = aiohttp.TCPConnector(local_addr=(ADDRESSES.take(), 0))
    async with aiohttp.ClientSession(server.base, connector=connector) as http:
        while calm < 3 and time.monotonic() < deadline:
            t = time.perf_counter()
            async with http.get(f"{SESSIONS}/health") as resp:
                await resp.read()
            calm = calm + 1 if (time.perf_counter() - t) * 1000 < quiet_ms else 0
            await asyncio.sleep(0.2)


async def quiet(*servers: Process | None) -> None:
    """Before each measured phase, every server has worked off what the previous phases left it (ElizaOS
    handles each stored message after answering it): otherwise one server's backlog would run during
    the other's phase, or its own next one, on the same two cores."""
    for server in servers:
        if server is not None:
            await settle(server, limit_s=60.0)


class Peer:
    """What the load generator needs of one Sessions API server: its agent, its sessions."""

    def __init__(self, server: Process) -> None:
        self.server = server
        self.sessions: list[str] = []
        self.history = ""
        self.created = 0
        self.messages = 0

    def create(self, _i: int) -> Request:
        return "POST", SESSIONS, {"agentId": self.server.agent_id, "userId": str(uuid.uuid4())}

    def message(self, i: int) -> Request:
        return "POST", f"{SESSIONS}/{self.sessions[i % len(self.sessions)]}/messages", {
            "content": f"gm raiders, message {i}"}

    def read(self, _i: int) -> Request:
        return "GET", f"{SESSIONS}/{self.history}/messages?limit=50", None

    async def setup(self) -> None:
        for _ in range(32):
            self.sessions.append((await _json(self.server, *self.create(0)))["sessionId"])
        self.history = (await _json(self.server, *self.create(0)))["sessionId"]
        self.created += 33
        await fill(self.server, HISTORY, 8, lambda i: ("POST", f"{SESSIONS}/{self.history}/messages",
                                                       {"content": f"history {i}"}))
        self.messages += HISTORY


PHASES = (("session create", "create"), ("message", "message"), ("GET 50 messages", "read"))


async def bench(target: Target, report: Report, quick: bool) -> None:
    total, cap = (300, 3.0) if quick else (3000, 10.0)
    held_sessions, held_messages = (200, 2_000) if quick else (HELD_SESSIONS, HELD_MESSAGES)
    print(f"\n== http on {target.kind}: nubi run vs ElizaOS 1.7.2, up to {total} requests or {cap:.0f} s "
          "per phase, 1 and 32 clients", flush=True)
    why_not = eliza_installed()
    url = await target.fresh()
    workdir = Path(tempfile.mkdtemp(prefix="nubi-http-"))
    try:
        async with bare_server() as bare, nubi_server(url, workdir) as nubi:
            if why_not is None:
                async with eliza_server(workdir / "eliza-data") as eliza:
                    joins = await _compare(target, report, bare, nubi, eliza, total, cap, held_sessions,
                                           held_messages, mine := Peer(nubi))
            else:
                report.notes.append(f"http: ElizaOS not measured ({why_not})")
                joins = await _compare(target, report, bare, nubi, None, total, cap, held_sessions, held_messages,
                                       mine := Peer(nubi))
        await _check_persisted(url, mine, joins)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        await target.drop(url)


async def _compare(target: Target, report: Report, bare: Process, nubi: Process, eliza: Process | None,
                   total: int, cap: float, held_sessions: int, held_messages: int, mine: Peer) -> int:
    """Every phase on both servers; returns how many raid joins nubi answered."""
    theirs = Peer(eliza) if eliza else None
    joins = 0
    await mine.setup()
    if theirs:
        await theirs.setup()
    for server in (nubi, eliza):
        if server is not None:
            await settle(server)
    for clients in (1, 32):
        plural = f"{clients} client{'s' if clients > 1 else ''}"
        for name, method in PHASES:
            # At 32 clients (the targets) each server runs the phase REPEATS times, taking turns: these
            # machines drift by a third within minutes, and one measurement of each compared noise.
            runs = [await _turn(nubi, eliza, mine, theirs, method, clients, total, cap)
                    for _ in range(REPEATS if clients == 32 else 1)]
            mine_runs, peer_runs = [r[0] for r in runs], [r[2] for r in runs if r[2] is not None]
            for got in mine_runs:
                if got.good != got.requests:
                    raise RuntimeError(f"nubi {name}: non-2xx answers {got.statuses}")
            ours, cold = _median(mine_runs), runs[0][1]
            peer, peer_cold = (_median(peer_runs) if peer_runs else None), runs[0][3]
            spread = tails = ""
            if len(runs) > 1:
                spread = (f"; median of {len(runs)} turns each: nubi {', '.join(f'{r.rate:,.0f}' for r in mine_runs)}"
                          + ("" if not peer_runs else f"; ElizaOS {', '.join(f'{r.rate:,.0f}' for r in peer_runs)}"))
                tails = (f"; median of {len(runs)} turns' p99: nubi {', '.join(f'{r.p99_ms:.1f}' for r in mine_runs)}"
                         + ("" if not peer_runs else f"; ElizaOS {', '.join(f'{r.p99_ms:.0f}' for r in peer_runs)}"))
            goal = clients == 32
            report.add(Figure(
                "http", target.kind, f"Sessions API {name}, {plural}: requests/s", ours.rate, "req/s",
                "ElizaOS 1.7.2, same load" + ("" if peer is None else f" ({peer.good}/{peer.requests} 2xx)"),
                None if peer is None else peer.rate,
                target=f">= {PEER_RATIO_TARGET:.0f}x ElizaOS" if goal else "",
                met=(peer is not None and ours.rate >= PEER_RATIO_TARGET * peer.rate) if goal else None,
                note=f"{ours.requests} requests{spread}",
            ))
            report.add(Figure(
                "http", target.kind, f"Sessions API {name}, {plural}: p99", ours.p99_ms, "ms",
                "ElizaOS 1.7.2, same load", None if peer is None else peer.p99_ms, higher_is_better=False,
                target=f"<= {P99_TARGET_MS:.0f} ms" if goal else "", met=ours.p99_ms <= P99_TARGET_MS if goal else None,
                note=f"warm-up ({cold.requests} requests before): p99 {cold.p99_ms:.1f} ms"
                     + ("" if peer_cold is None else f", ElizaOS {peer_cold.p99_ms:.1f} ms") + tails,
            ))
        joins += await _raid_joins(target, report, bare, nubi, clients, total, cap)
    await _hold(mine, held_sessions, held_messages)
    if theirs is not None:
        await _hold(theirs, held_sessions, held_messages)
    rss = nubi.rss()
    # After every phase above (six times the sessions, thousands of raid joins): not the target's
    # figure, which bench/server_rss.py measures on a fresh process.
    report.add(Figure(
        "http", target.kind, "nubi run RSS after the whole HTTP run",
        rss, "MiB", "ElizaOS 1.7.2 after the same" if eliza else "bare ASGI app",
        eliza.rss() if eliza else bare.rss(), higher_is_better=False,
        note=f"peak {nubi.peak():.1f} MiB; the 110 MiB target: the rss benchmark",
    ))
    return joins


async def _turn(nubi: Process, eliza: Process | None, mine: Peer, theirs: Peer | None, method: str,
                clients: int, total: int, cap: float) -> tuple[Load, Load, Load | None, Load | None]:
    """One turn of a phase on each server, each after both settled and its own warm-up: nubi's load,
    its warm-up, ElizaOS's load and warm-up (None without ElizaOS)."""
    await quiet(nubi, eliza)
    cold = await _warm_up(nubi, mine, method, clients, total, cap)
    ours = await load(nubi.base, clients, total, cap, getattr(mine, method))
    _count(mine, method, ours)
    if eliza is None or theirs is None:
        return ours, cold, None, None
    await quiet(nubi, eliza)
    peer_cold = await _warm_up(eliza, theirs, method, clients, total, cap)
    peer = await load(eliza.base, clients, total, cap, getattr(theirs, method))
    _count(theirs, method, peer)
    return ours, cold, peer, peer_cold


def _median(runs: list[Load]) -> Load:
    """The turn of median rate, carrying the median of the turns' p99s (each turn's own tail: one turn
    caught in a slow spell would otherwise set the p99 of all, as it would have set the rate)."""
    middle = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    tail = sorted(r.p99_ms for r in runs)[len(runs) // 2]
    return Load(middle.requests, middle.seconds, middle.latencies, middle.statuses, tail)


async def _warm_up(server: Process, peer: Peer, method: str, clients: int, total: int, cap: float) -> Load:
    """The phase's first WARM_UP share of requests, at its concurrency, not measured: the figures are
    each server's steady state (connections open, statements prepared, caches filled). What the
    first requests saw is reported beside the p99 all the same."""
    got = await load(server.base, clients, max(clients, int(total * WARM_UP)), cap, getattr(peer, method))
    _count(peer, method, got)
    if server.name == "nubi" and got.good != got.requests:
        raise RuntimeError(f"nubi {method} warm-up: non-2xx answers {got.statuses}")
    return got


def _count(peer: Peer, method: str, got: Load) -> None:
    if method == "create":
        peer.created += got.good
    elif method == "message":
        peer.messages += got.good


async def _hold(peer: Peer, sessions: int, messages: int) -> None:
    """Top both servers up to the same number of sessions and messages before reading their RSS."""
    if peer.created < sessions:
        await fill(peer.server, sessions - peer.created, 8, peer.create)
        peer.created = sessions
    if peer.messages < messages:
        await fill(peer.server, messages - peer.messages, 8, peer.message)
        peer.messages = messages


async def _raid_joins(target: Target, report: Report, bare: Process, nubi: Process, clients: int, total: int,
                      cap: float) -> int:
    raid = await _json(nubi, "POST", "/api/raids", {
        "community": {"platform": "web", "id": f"bench-{clients}", "title": "HTTP raiders"},
        "targetUrl": "https://x.com/nubi/status/9", "objectives": {"like": 1_000_000},
        "durationSeconds": 24 * 3600, "maxParticipants": 100_000,
    })
    joined = count()

    def make(_i: int) -> Request:
        return "POST", f"/api/raids/{raid['id']}/join", {
            "member": {"platform": "web", "id": f"http-{clients}-{next(joined)}", "name": "raider"}}

    floor = await load(bare.base, clients, total, cap, make)
    got = await load(nubi.base, clients, total, cap, make)
    if got.good != got.requests:
        raise RuntimeError(f"raid join: non-2xx answers {got.statuses}")
    plural = f"{clients} client{'s' if clients > 1 else ''}"
    report.add(Figure("http", target.kind, f"raid join, {plural}: requests/s", got.rate, "req/s",
                      "bare ASGI app (the server's floor)", floor.rate, note=f"{got.requests} requests"))
    report.add(Figure("http", target.kind, f"raid join, {plural}: p99", got.p99_ms, "ms", "bare ASGI app",
                      floor.p99_ms, higher_is_better=False,
                      target=f"<= {P99_TARGET_MS:.0f} ms" if clients == 32 else "",
                      met=got.p99_ms <= P99_TARGET_MS if clients == 32 else None))
    return got.good


async def _check_persisted(url: str, mine: Peer, joins: int) -> None:
    """Every session, message and join nubi answered 2xx for is a row (raids' own sessions aside)."""
    r = await Raw.connect(url)
    try:
        found = {
            "sessions": await r.fetchval("SELECT count(*) FROM nubi_sessions WHERE session_type NOT IN (?, ?)", "raid", "community"),
            "messages": await r.fetchval("SELECT count(*) FROM session_messages WHERE is_agent = ?", False),
            "joins": await r.fetchval("SELECT count(*) FROM raid_participants"),
        }
    finally:
        await r.close()
    answered = {"sessions": mine.created, "messages": mine.messages, "joins": joins}
    if found != answered:
        raise RuntimeError(f"nubi answered {answered} but its database holds {found}")
    print(f"  persisted: {found}", flush=True)
