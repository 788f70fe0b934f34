"""`nubi demo`: a real raid through the real services on a throwaway SQLite database.

The raid runs on a scaled clock, so its 30 minutes pass in the seconds you ask for, while N
synthetic members join and claim through the same service calls the adapters make.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.errors import NubiError
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from core.views import leaderboard_view, raid_view, report_view
from migrations import upgrade

RAID_MINUTES = 30


class ScaledClock:
    """Time that runs `factor` times faster than the wall clock, from a start instant."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.start = datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)


async def run_demo(members: int, duration: float, *, out: TextIO, seed: int = 7) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="nubi-demo-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        await asyncio.to_thread(upgrade, url)
        clock = ScaledClock(RAID_MINUTES * 60 / duration)
        svc = Services(Database(url), clock, Settings(), EventBus())
        chat = ChatRef("console", "demo", "nubi demo")
        try:
            progress = await svc.raids.start(
                chat,
                RaidSpec("https://x.com/nubi/status/1800000000000000000",
                         # targets a little above what the synthetic raiders do: the raid runs its course
                         {"like": max(1, members), "repost": max(1, members * 2 // 3),
                          "reply": max(1, members * 2 // 5), "quote": max(1, members // 5)},
                         duration_seconds=RAID_MINUTES * 60, max_participants=max(members, 1)),
                by=MemberRef("console", "moderator", "moderator"),
            )
            raid_id = progress.id
            errors = 0

            async def raider(i: int) -> None:
                nonlocal errors
                await asyncio.sleep(rng.random() * duration * 0.5)
                who = MemberRef("console", f"m{i}", f"raider{i:04d}")
                try:
                    await svc.raids.join(raid_id, who)
                    for action in ("like", "repost", "reply", "quote"):
                        if rng.random() < {"like": 0.9, "repost": 0.6, "reply": 0.35, "quote": 0.15}[action]:
                            await asyncio.sleep(rng.random() * duration * 0.1)
                            await svc.raids.claim(raid_id, who, action)
                except NubiError:
                    errors += 1  # e.g. the raid completed before this raider acted

            tasks = [asyncio.create_task(raider(i)) for i in range(members)]
            while True:  # the scheduler's job, done inline: end the raid once its time is up
                await svc.raids.end_overdue()
                p = await svc.raids.progress(raid_id)
                _draw(out, raid_view(p).text)
                if not p.active:
                    break
                await asyncio.sleep(min(0.5, duration / 20))
            await asyncio.gather(*tasks)
            report = await svc.raids.report(raid_id) or {}
            _draw(out, raid_view(await svc.raids.progress(raid_id)).text)
            out.write("\n" + report_view(report).text + "\n\n")
            board = await svc.raids.leaderboard(raid_id, top=10)
            out.write(leaderboard_view("raid", board, raid_id=raid_id).text + "\n")
            out.flush()
            return report
        finally:
            await svc.db.dispose()


def _draw(out: TextIO, text: str) -> None:
    if out.isatty():
        out.write("\x1b[2J\x1b[H")
    out.write(text + "\n\n")
    out.flush()
