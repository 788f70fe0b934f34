"""PostgreSQL connections held open and handed out one command at a time ("lanes").

What this module promises:
- at most `size` connections at once (the process's budget, `database.pool_size`, by default
  `default_size()`): each lane is one pooled connection checked out once and kept, so a command pays
  no pool checkout, no execution option and no driver lookup; commands take a free lane in arrival
  order (a FIFO semaphore), so a burst of thousands queues instead of racing a pool timeout;
- a command holds one lane at a time: asking for a second while holding one (a read inside a write's
  op, say) raises at once, since `size` commands doing so would each wait for the others forever;
- every transaction is the driver's own (asyncpg `Connection.transaction()`, opened by the caller on
  `Lane.driver`). SQLAlchemy sees the connection in AUTOCOMMIT, so it emits no BEGIN or COMMIT of
  its own: its statements (a read, a session op's flush and savepoints, a SQL op's `session()`) run
  inside the driver's transaction, or on their own for a plain read;
- a lane goes back only clean: not in a transaction, neither for asyncpg nor for SQLAlchemy;
- a lost connection is never handed out twice: a lane whose statement failed on a lost connection,
  whose driver says it is closed, or that sat idle for PING_AFTER_IDLE_SECONDS and does not answer a
  ping is invalidated and dropped, and a fresh one is opened through the pool (whose checkout pings a
  connection that sat idle too). A server restart costs a caller at most one "try again", never a
  hang. The error a caller sees for a lost connection says so (`is_connection_error`), whatever
  asyncpg called it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.storage.engines import PING_AFTER_IDLE_SECONDS, is_connection_error

MAX_DEFAULT_SIZE = 20
PER_CORE = 5


def default_size() -> int:
    """Connections per process when `database.pool_size` is unset: five per core this process may run
    on, at most 20. Connections beyond what the cores serve only take turns at them, and waiting in
    PostgreSQL's lock queue costs more than waiting here. Measured on 2 cores (bench/README.md): 20
    connections gave 32 Sessions API clients p99s of 42-100 ms and the raid burst its lowest rates;
    5 gave the Sessions API its best p99s (25-31 ms) but the raid burst 0.85-0.91x its asyncpg baseline
    on the same budget; 10 kept both targets."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(MAX_DEFAULT_SIZE, PER_CORE * cores)


class Lane:
    """A held connection: SQLAlchemy's `conn` (AUTOCOMMIT) and its asyncpg connection `driver`."""

    __slots__ = ("conn", "driver", "used")

    def __init__(self, conn: AsyncConnection, driver: Any) -> None:
        self.conn = conn
        self.driver = driver
        self.used = time.monotonic()


class Lanes:
    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.size = size
        self._free: list[Lane] = []  # last in, first out: the warmest connection first
        self._turn: asyncio.Semaphore | None = None
        self._closed = False

    def lane(self) -> _Use:
        """`async with lanes.lane() as lane`: a lane for one command (a read, or a transaction the
        caller opens on `lane.driver`), given back clean or dropped when its connection was lost."""
        return _Use(self)

    async def acquire(self) -> Lane:
        """Wait for a free lane in arrival order; `release` it after use."""
        if self._turn is None:
            self._turn = asyncio.Semaphore(self.size)
        await self._turn.acquire()
        try:
            return await self._take()
        except BaseException:
            self._turn.release()
            raise

    async def release(self, lane: Lane, exc: BaseException | None) -> None:
        """Give `lane` back after a command that ended with `exc` (None: it succeeded). Raises, from
        `exc`, a ConnectionError when the connection was lost and asyncpg's error does not say so."""
        assert self._turn is not None
        try:
            if exc is None:
                await self._give_back(lane)
            elif not isinstance(exc, Exception):  # cancelled mid-statement: the connection's state is unknown
                await _drop(lane)
            elif not (is_connection_error(exc) or lane.driver.is_closed()):
                await self._give_back(lane)  # the op's own error: the lane is fine
            else:
                await _drop(lane)
                if not is_connection_error(exc):
                    raise ConnectionError("the database connection was lost") from exc
        finally:
            self._turn.release()

    async def _take(self) -> Lane:
        while self._free:
            lane = self._free.pop()
            if lane.driver.is_closed():
                await _drop(lane)
                continue
            if time.monotonic() - lane.used >= PING_AFTER_IDLE_SECONDS:
                try:
                    await lane.driver.execute("SELECT 1")
                except Exception:  # it sat through a restart, say: a fresh one instead
                    await _drop(lane)
                    continue
            return lane
        conn = await self.engine.connect()
        try:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = (await conn.get_raw_connection()).driver_connection
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return Lane(conn, driver)

    async def _give_back(self, lane: Lane) -> None:
        if lane.conn.in_transaction() and not lane.driver.is_in_transaction():
            # A session left open by a failed op: SQLAlchemy's transaction on an AUTOCOMMIT
            # connection is only its own bookkeeping (the driver's ROLLBACK already ran).
            await lane.conn.rollback()
        if lane.driver.is_closed() or lane.driver.is_in_transaction():  # unknown state: not handed out again
            await _drop(lane)
        elif self._closed:
            await _close(lane)
        else:
            lane.used = time.monotonic()
            self._free.append(lane)

    async def close(self) -> None:
        """Return every idle lane to the pool (before the engine is disposed); busy ones follow when done."""
        self._closed = True
        free, self._free = self._free, []
        for lane in free:
            await _close(lane)


class _Use:
    """One command's hold on a lane (a class, not a generator: it runs for every command)."""

    __slots__ = ("lanes", "held", "token")

    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.held: Lane | None = None

    async def __aenter__(self) -> Lane:
        task = asyncio.current_task()
        if task is not None and _HOLDER.get() is task:
            raise RuntimeError("a command holding a database connection asked for a second one; with every "
                               "connection held that way, all of them would wait forever")
        self.held = await self.lanes.acquire()
        self.token = _HOLDER.set(task)
        return self.held

    async def __aexit__(self, _kind: Any, exc: BaseException | None, _tb: Any) -> None:
        assert self.held is not None
        _HOLDER.reset(self.token)
        await self.lanes.release(self.held, exc)


# The task holding a lane, while it does. A task it starts inherits the value but is not that task: it
# waits for a lane of its own like any other command.
_HOLDER: contextvars.ContextVar[asyncio.Task[Any] | None] = contextvars.ContextVar("nubi_lane_holder", default=None)


async def _close(lane: Lane) -> None:
    with contextlib.suppress(Exception):
        await lane.conn.close()


async def _drop(lane: Lane) -> None:
    """Invalidate the connection (the pool will not hand it out again) and let it go."""
    with contextlib.suppress(Exception):
        await lane.conn.invalidate()
    await _close(lane)
