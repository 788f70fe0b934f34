"""Coalescing and pacing shared by every adapter that edits or posts into a chat.

`Coalescer` turns any number of "this changed" pokes per key into at most one flush per interval,
and honours a platform's "retry after N seconds" by rescheduling. `SendBudget` keeps a chat under
a per-minute message cap. Both use the event loop's monotonic time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Raised by a flush when the platform asked us to wait (e.g. Telegram's RetryAfter, HTTP 429)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = max(0.0, float(seconds))


class Coalescer:
    def __init__(
        self,
        interval: float,
        flush: Callable[[Any], Awaitable[None]],
        *,
        time: Callable[[], float] | None = None,
    ) -> None:
        self.interval = interval
        self._flush = flush
        self._time = time
        self._last: dict[Hashable, float] = {}
        self._not_before: dict[Hashable, float] = {}
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}
        self._dirty: set[Hashable] = set()
        self.flushes = 0

    def _now(self) -> float:
        return self._time() if self._time else asyncio.get_running_loop().time()

    def poke(self, key: Hashable) -> None:
        """Something about `key` changed; a flush will follow, no sooner than the interval allows."""
        self._dirty.add(key)
        task = self._tasks.get(key)
        if task is not None and not task.done():
            return  # the scheduled flush reads the latest state, or runs again if one is under way
        self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key))

    def _delay(self, key: Hashable) -> float:
        now = self._now()
        due = max(self._last.get(key, -1e18) + self.interval, self._not_before.get(key, -1e18))
        return max(0.0, due - now)

    async def _run(self, key: Hashable) -> None:
        while True:
            delay = self._delay(key)
            if delay > 0:
                await asyncio.sleep(delay)
            self._last[key] = self._now()
            self._dirty.discard(key)
            try:
                await self._flush(key)
                self.flushes += 1
                if key not in self._dirty:
                    return
                # poked while flushing: that change may not be in what was sent, so go again
            except RetryLater as exc:
                self._dirty.add(key)
                self._not_before[key] = self._now() + exc.seconds
                log.info("flush of %r deferred %.1fs by the platform", key, exc.seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("flush of %r failed", key)
                return

    def pending(self) -> int:
        return sum(1 for t in self._tasks.values() if not t.done())

    async def drain(self) -> None:
        """Wait for every scheduled flush (tests and shutdown)."""
        while True:
            tasks = [t for t in self._tasks.values() if not t.done()]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        for t in self._tasks.values():
            t.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()


class SendBudget:
    """At most `per_minute` sends per key in any rolling minute; `wait` sleeps until one is free."""

    def __init__(self, per_minute: int, *, time: Callable[[], float] | None = None) -> None:
        self.per_minute = per_minute
        self._time = time
        self._sent: dict[Hashable, deque[float]] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}

    def _now(self) -> float:
        return self._time() if self._time else asyncio.get_running_loop().time()

    def _trim(self, key: Hashable) -> deque[float]:
        q = self._sent.setdefault(key, deque())
        cutoff = self._now() - 60.0
        while q and q[0] <= cutoff:
            q.popleft()
        return q

    def available(self, key: Hashable) -> int:
        return self.per_minute - len(self._trim(key))

    def give_back(self, key: Hashable) -> None:
        """Undo the newest `wait` of this key: its place was taken but nothing was sent with it."""
        q = self._sent.get(key)
        if q:
            q.pop()

    async def wait(self, key: Hashable) -> None:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            while True:
                q = self._trim(key)
                if len(q) < self.per_minute:
                    q.append(self._now())
                    return
                # re-check at least twice a second: the clock may be a test's, or time may jump
                await asyncio.sleep(min(0.5, max(0.01, q[0] + 60.0 - self._now())))
