"""`nubi demo`: a whole raid through the real services on a throwaway SQLite database.

N synthetic members join and claim through the same service calls the adapters make, the raid ends
the way a real one does (every objective met, or time up, found by the same overdue sweep the
scheduler runs), and the report and leaderboard are the ones a chat would get.

The raid lasts `duration` wall-clock seconds. nubi refuses raids shorter than a minute, so a shorter
demo runs its clock faster: a 1-minute raid passes in `duration` seconds (said on screen).
"""

from __future__ import annotations

import asyncio
import math
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
from core.raids.model import RaidProgress, RaidSpec
from core.raids.service import MIN_DURATION
from core.services import Services
from core.storage.db import Database
from core.views import leaderboard_view, raid_view, report_view
from migrations import upgrade

# Share of the members that do each action, and each objective's target as a share of the members.
# Every target sits below what the members do, so by default the raid completes; with `fail` nobody
# quotes, so the quote objective is never met and the raid runs out of time.
DOES = {"like": 0.9, "repost": 0.7, "reply": 0.5, "quote": 0.3}
TARGET = {"like": 0.8, "repost": 0.6, "reply": 0.4, "quote": 0.2}
ARRIVAL_SHARE = 0.6  # members arrive during the first 60% of the raid


class ScaledClock:
    """Time that runs `factor` times faster than the wall clock, from a start instant."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.start = datetime.now(UTC)
        self._t0 = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._t0) * self.factor)


def objectives(members: int) -> dict[str, int]:
    return {action: max(1, math.ceil(members * share)) for action, share in TARGET.items()}


def actions_of(role: int, members: int, *, fail: bool) -> list[str]:
    """What member number `role` does: numbers below 90% of the members like, below 70% repost, and so on."""
    return [a for a, share in DOES.items() if role < max(1, math.ceil(members * share)) and not (fail and a == "quote")]


def ending_reason(p: RaidProgress, wall_seconds: float) -> str:
    met = sum(o.met for o in p.objectives)
    if p.status == "completed":
        return f"Raid ended after {wall_seconds:.1f} s: completed, every objective was met ({met}/{met})."
    missing = ", ".join(f"{o.action} {o.count}/{o.target}" for o in p.objectives if not o.met)
    if p.status == "timeout":
        return (f"Raid ended after {wall_seconds:.1f} s: time ran out with {met}/{len(p.objectives)} objectives "
                f"met (short: {missing}).")
    return f"Raid ended after {wall_seconds:.1f} s: {p.status}."


async def run_demo(members: int, duration: float, *, out: TextIO, fail: bool = False, seed: int = 7) -> dict:
    rng = random.Random(seed)
    raid_seconds = max(MIN_DURATION, math.ceil(duration))
    factor = raid_seconds / duration
    with tempfile.TemporaryDirectory(prefix="nubi-demo-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        await asyncio.to_thread(upgrade, url)
        clock = ScaledClock(factor)
        svc = Services(Database(url), clock, Settings(), EventBus())
        chat = ChatRef("console", "demo", "nubi demo")
        targets = objectives(members)
        out.write(f"nubi demo: {members} synthetic member(s), a raid of {duration:g} s wall-clock"
                  + (f" (nubi's shortest raid, {raid_seconds // 60} min, on a clock running {factor:.1f}x)"
                     if factor > 1.001 else "")
                  + ("; --fail: nobody quotes, so time will run out" if fail else
                     "; the members do enough to meet every objective") + "\n\n")
        try:
            progress = await svc.raids.start(
                chat,
                RaidSpec("https://x.com/nubi/status/1800000000000000000", targets,
                         duration_seconds=raid_seconds, max_participants=members),
                by=MemberRef("console", "moderator", "moderator"),
            )
            raid_id = progress.id
            started = time.monotonic()
            arrivals = sorted(rng.random() * duration * ARRIVAL_SHARE for _ in range(members))
            roles = list(range(members))  # who does how much, independent of who arrives first
            rng.shuffle(roles)

            ended = asyncio.Event()

            async def still_on_after(seconds: float) -> bool:
                """Wait, unless the raid ends first (then the member goes home instead)."""
                try:
                    await asyncio.wait_for(ended.wait(), seconds)
                except TimeoutError:
                    return True
                return False

            async def raider(rank: int) -> None:
                who = MemberRef("console", f"m{rank}", f"raider{rank:04d}")
                try:
                    if not await still_on_after(arrivals[rank]):
                        return
                    await svc.raids.join(raid_id, who)
                    for action in actions_of(roles[rank], members, fail=fail):
                        if not await still_on_after(rng.random() * duration * 0.05):
                            return
                        await svc.raids.claim(raid_id, who, action)
                except NubiError:
                    pass  # the raid ended while this member was at it, as in a real chat

            tasks = [asyncio.create_task(raider(i)) for i in range(members)]
            while True:  # the scheduler's job, done inline: end the raid once its time is up
                await svc.raids.end_overdue()
                p = await svc.raids.progress(raid_id)
                _draw(out, raid_view(p).text)
                if not p.active:
                    break
                await asyncio.sleep(min(1.0, duration / 20))
            wall = time.monotonic() - started
            ended.set()
            await asyncio.gather(*tasks)
            report = await svc.raids.report(raid_id) or {}
            final = await svc.raids.progress(raid_id)
            _draw(out, raid_view(final).text)
            out.write(ending_reason(final, wall) + "\n\n" + report_view(report).text + "\n\n")
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
