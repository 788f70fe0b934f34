"""Benchmark 6, server RSS: `nubi run` holding exactly what issue 11 names, beside ElizaOS.

A fresh `nubi run` process (no platform tokens: API, dashboard, MCP and scheduler; no chat adapter
imported) on a fresh database of the target kind, driven by the load generator of
bench/http_api.py with exactly 1,000 session creates and then 10,000 message posts spread over
those sessions (8 clients), nothing else. Its VmRSS is read three times: idle after startup,
right after the load, and after the server has been left alone for a few seconds (what an operator
sees); the peak (VmHWM) is noted. The upstream ElizaOS server (`@elizaos/server` 1.7.2, bench/elizaos)
gets the same fresh start and the same requests in the same run. Every 2xx nubi answered is checked
in its database afterwards. Target (issue 11): at most 110 MiB after 1,000 sessions and 10,000 messages.

The HTTP benchmark (bench/http_api.py) still reports its own RSS after every phase it ran; that
process has held six times the sessions and thousands of raid joins, so it is not this target.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import aiohttp

from .env import Figure, Raw, Report, Target, load_average
from .http_api import (
    ADDRESSES,
    RSS_TARGET_MIB,
    Peer,
    Process,
    eliza_installed,
    eliza_server,
    fill,
    nubi_server,
    settle,
)

SESSIONS, MESSAGES = 1_000, 10_000
CLIENTS = 8
REST_SECONDS = 5.0


async def drive(server: Process, sessions: int, messages: int) -> dict[str, float]:
    """Idle, loaded and rested RSS (MiB) of a freshly started server after exactly `sessions` creates
    and `messages` posts spread over them."""
    await settle(server)
    idle = server.rss()
    peer = Peer(server)
    peer.sessions = await _create(server, peer, sessions)
    await fill(server, messages, CLIENTS, peer.message)
    loaded = server.rss()
    await settle(server)
    await asyncio.sleep(REST_SECONDS)
    return {"idle": idle, "loaded": loaded, "rested": server.rss(), "peak": server.peak()}


async def _create(server: Process, peer: Peer, sessions: int) -> list[str]:
    """`sessions` creates from CLIENTS clients (each from its own loopback address); the ids answered."""
    ids: list[str] = []

    async def client(n: int) -> None:
        connector = aiohttp.TCPConnector(limit=1, local_addr=(ADDRESSES.take(), 0))
        async with aiohttp.ClientSession(server.base, connector=connector) as http:
            for _ in range(n):
                method, path, body = peer.create(0)
                async with http.request(method, path, json=body) as resp:
                    if resp.status >= 300:
                        raise RuntimeError(f"{server.name}: session create answered {resp.status}")
                    ids.append((await resp.json())["sessionId"])

    share = [sessions // CLIENTS + (1 if i < sessions % CLIENTS else 0) for i in range(CLIENTS)]
    await asyncio.gather(*(client(n) for n in share))
    return ids


async def bench(target: Target, report: Report, quick: bool) -> None:
    sessions, messages = (200, 2_000) if quick else (SESSIONS, MESSAGES)
    print(f"\n== server RSS on {target.kind}: a fresh nubi run, then ElizaOS 1.7.2, each given {sessions:,} "
          f"sessions and {messages:,} messages (load {load_average()})", flush=True)
    why_not = eliza_installed()
    url = await target.fresh()
    workdir = Path(tempfile.mkdtemp(prefix="nubi-rss-"))
    try:
        async with nubi_server(url, workdir) as nubi:
            ours = await drive(nubi, sessions, messages)
        await _check_persisted(url, sessions, messages)
        theirs = None
        if why_not is None:
            async with eliza_server(workdir / "eliza-data") as eliza:
                theirs = await drive(eliza, sessions, messages)
        else:
            report.notes.append(f"server RSS: ElizaOS not measured ({why_not})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        await target.drop(url)
    peer = "ElizaOS 1.7.2, fresh, the same requests"
    print(f"  nubi {ours}\n  ElizaOS {theirs}\n  load {load_average()}", flush=True)
    report.add(Figure(
        "server rss", target.kind, "nubi run RSS, fresh and idle", ours["idle"], "MiB", peer,
        None if theirs is None else theirs["idle"], higher_is_better=False,
    ))
    report.add(Figure(
        "server rss", target.kind, f"nubi run RSS after {sessions:,} sessions and {messages:,} messages", ours["loaded"],
        "MiB", peer, None if theirs is None else theirs["loaded"], higher_is_better=False,
        target=f"<= {RSS_TARGET_MIB:.0f} MiB", met=ours["loaded"] <= RSS_TARGET_MIB if not quick else None,
        note=f"{ours['rested']:.1f} MiB {REST_SECONDS:.0f} s later, peak {ours['peak']:.1f} MiB",
    ))


async def _check_persisted(url: str, sessions: int, messages: int) -> None:
    r = await Raw.connect(url)
    try:
        found = (
            await r.fetchval("SELECT count(*) FROM nubi_sessions WHERE session_type NOT IN (?, ?)", "raid", "community"),
            await r.fetchval("SELECT count(*) FROM session_messages WHERE is_agent = ?", False),
        )
    finally:
        await r.close()
    if found != (sessions, messages):
        raise RuntimeError(f"server RSS: nubi answered {sessions} sessions and {messages} messages, "
                           f"its database holds {found}")
