"""Benchmark 3, memory: the app's RSS stays flat as raids grow, because state lives in the database.

The app runs in a child process of its own (`python -m bench.memory URL`), so the harness's bulk
loads never count against it. Stages: 0, 10,000 and 100,000 participants across 10 active raids
(2 claims each). At each stage the parent bulk-loads, then the child exercises the services
(progress and top 50 of every raid, the weekly board, a few joins and claims per raid), collects
garbage and reports VmRSS from /proc/self/status. Baseline: the child's RSS at stage 0, after the
same exercise, so imports and warmed caches are in the baseline and only growth is measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from core.clock import FakeClock
from core.directory import ChatRef, MemberRef
from core.events import EventBus
from core.services import Services
from core.storage.db import Database

from . import dataset
from .env import REPO, Figure, Raw, Report, Target, bench_settings, hwm_mb, rss_mb

RAIDS = 10
NOW = datetime(2026, 1, 7, 10, 0, tzinfo=UTC)
CHAT = ChatRef("telegram", "-100555", "Memory raiders")
GROWTH_TARGET_MB = 30.0
CLAIMS_EACH = 2


# -- the child: the app under measurement ------------------------------------------------------------


async def exercise(services: Services, raids: list[int], community_id: int, stage: int) -> None:
    for raid_id in raids:
        await services.raids.progress(raid_id)
        await services.raids.leaderboard(raid_id, top=50)
        for k in range(2):
            m = MemberRef("discord", f"mem-{stage}-{raid_id}-{k}", f"visitor {k}")
            await services.raids.join(raid_id, m)
            for action in ("like", "repost"):
                await services.raids.claim(raid_id, m, action)
    await services.boards.board(community_id, "week", top=50)


async def child(url: str) -> None:
    db = Database(url)
    services = Services(db, FakeClock(NOW), bench_settings(url), EventBus())
    stage = 0
    try:
        while line := sys.stdin.readline().strip():  # blocking is fine: the app is idle between stages
            ask = json.loads(line)
            for _ in range(2):  # the second pass is the steady state
                stage += 1
                await exercise(services, ask["raids"], ask["community"], stage)
            print(json.dumps({"rss": rss_mb(), "hwm": hwm_mb()}), flush=True)
    finally:
        await db.dispose()


# -- the parent: data and orchestration -----------------------------------------------------------


async def _measure(proc: asyncio.subprocess.Process, raids: list[int], community_id: int) -> dict[str, float]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write((json.dumps({"raids": raids, "community": community_id}) + "\n").encode())
    await proc.stdin.drain()
    line = await proc.stdout.readline()
    if not line:
        raise RuntimeError("the memory child died; see its stderr above")
    return json.loads(line)


async def bench(target: Target, report: Report, quick: bool) -> None:
    stages = (0, 2_000, 20_000) if quick else (0, 10_000, 100_000)
    print(f"\n== memory on {target.kind}: RSS with {', '.join(f'{s:,}' for s in stages)} participants "
          f"across {RAIDS} active raids", flush=True)
    url = await target.fresh()
    db = Database(url)
    services = Services(db, FakeClock(NOW), bench_settings(url), EventBus())
    proc = None
    try:
        raids = [await dataset.start_raid(services, CHAT, NOW) for _ in range(RAIDS)]
        community_id = (await services.raids.progress(raids[0], top=0)).community_id
        await db.dispose()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.memory", url, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        rss: dict[int, dict[str, float]] = {}
        loaded = 0
        r = await Raw.connect(url)
        try:
            for stage in stages:
                per_raid = (stage - loaded) // RAIDS
                if per_raid:
                    members = await dataset.add_members(r, community_id, per_raid * RAIDS, NOW)
                    for i, raid_id in enumerate(raids):
                        await dataset.add_participants(r, raid_id, members[i * per_raid : (i + 1) * per_raid],
                                                       CLAIMS_EACH, NOW, seed=stage + i)
                    await dataset.derive(r, community_id, dict.fromkeys(raids, NOW))
                    loaded = stage
                rss[stage] = await _measure(proc, raids, community_id)
                print(f"  {stage:>7,} participants: RSS {rss[stage]['rss']:.1f} MB (peak {rss[stage]['hwm']:.1f} MB)",
                      flush=True)
        finally:
            await r.close()
        base = rss[stages[0]]["rss"]
        for stage in stages[1:]:
            growth = rss[stage]["rss"] - base
            report.add(Figure("memory", target.kind, f"RSS at {stage:,} participants", rss[stage]["rss"], "MB",
                              "RSS at 0 participants", base, target=f"growth <= {GROWTH_TARGET_MB:.0f} MB",
                              met=growth <= GROWTH_TARGET_MB,
                              note=f"growth {growth:+.1f} MB, peak {rss[stage]['hwm']:.1f} MB"))
    finally:
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            await proc.wait()
        await db.dispose()
        await target.drop(url)


if __name__ == "__main__":
    asyncio.run(child(sys.argv[1]))
