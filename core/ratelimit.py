"""A per-caller request limiter whose memory is bounded, shared by REST, Socket.IO and MCP.

Each bucket (an API key, a client address) keeps three numbers, not a timestamp per request: the
sliding-window counter (the previous minute's count, weighted by how much of it still overlaps the
last 60 seconds, plus the current minute's). Buckets idle for two windows carry nothing and are
dropped; and however many addresses knock, at most `max_buckets` are kept, the least recently used
going first. Forgetting an address lets it start afresh, which is the price of a table an address
flood cannot grow: per-key buckets (few, configured) still hold a flooding key back.
"""

from __future__ import annotations

import time
from collections import OrderedDict

WINDOW = 60.0
MAX_BUCKETS = 10_000


class RateLimiter:
    def __init__(self, per_minute: int, *, max_buckets: int = MAX_BUCKETS, window: float = WINDOW) -> None:
        self.per_minute = per_minute
        self.max_buckets = max_buckets
        self.window = window
        # bucket -> [start of the current window, previous window's count, current window's count]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, bucket: str, now: float | None = None) -> tuple[bool, float]:
        """Count one request; (allowed, seconds until it would be) — a refused request is not counted."""
        now = time.monotonic() if now is None else now
        self._expire(now)
        state = self._buckets.get(bucket)
        if state is None:
            state = [now, 0.0, 0.0]
            self._buckets[bucket] = state
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(bucket)
        start, previous, current = state
        elapsed = now - start
        if elapsed >= self.window:  # roll forward one or more windows
            previous = current if elapsed < 2 * self.window else 0.0
            start, current = start + self.window * int(elapsed // self.window), 0.0
            elapsed = now - start
        weight = 1.0 - elapsed / self.window
        if previous * weight + current + 1 > self.per_minute:
            state[:] = [start, previous, current]
            if current + 1 > self.per_minute or previous == 0:
                return False, max(0.01, start + self.window - now)
            # wait until enough of the previous window has slid out of view
            needed = (previous * weight + current + 1 - self.per_minute) / previous * self.window
            return False, max(0.01, needed)
        state[:] = [start, previous, current + 1]
        return True, 0.0

    def _expire(self, now: float) -> None:
        """Drop buckets idle for two windows (the least recently used come first)."""
        while self._buckets:
            bucket, (start, _prev, _cur) = next(iter(self._buckets.items()))
            if now - start < 2 * self.window:
                return
            del self._buckets[bucket]
