"""Group commit's queue, the write half of core/storage/db.py's `Database` (which owns one).

What it promises (db.py's docstring has the whole contract): writes waiting at one moment share one
transaction, in arrival order, at most `max_batch` of them, one batch at a time per process; every
caller is answered after the commit of the transaction that held its op, or with its op's own error;
an op that failed alone (its savepoint rolled back) or whose batch was rolled back whole runs again
alone (`_settle`), never twice after it may have kept something; SQL ops (`SqlOp`, from `write_sql`)
and session ops batch apart. How a batch or a lone op runs is the database's business: `Database`
hands the queue two functions for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core.errors import Unavailable
from core.storage.engines import is_connection_error, is_driver_error
from core.storage.executor import Outcome

log = logging.getLogger("core.storage.db")
T = TypeVar("T")
Op = Callable[[Any], Awaitable[T]]
Waiting = tuple[Op[Any], "asyncio.Future[Any]"]
UNAVAILABLE = "The database is unavailable right now; try again shortly."
BUSY = "The database is busy right now; try again shortly."


class GroupCommitQueue:
    """The queue and its one writer task. The database says how a batch runs (`execute(ops)`: one
    transaction, an Outcome per op; SQL ops and session ops never share one) and how an op runs alone
    (`alone(op)`, with its retries)."""

    def __init__(self, execute: Callable[[list[Any]], Awaitable[list[Outcome]]],
                 alone: Callable[[Any], Awaitable[Any]], max_batch: int) -> None:
        self._execute = execute
        self._alone = alone
        self.max_batch = max_batch
        self.commits = 0  # transactions committed by the writer; a benchmark reads it
        self._pending: list[Waiting] = []
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set while the writer has nothing queued
        self._writer: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether ops are queued or a batch is running."""
        return self._idle is not None and not self._idle.is_set()

    async def stop(self) -> None:
        """Let queued writes land, then end the writer task."""
        if self._writer is not None:
            if self._pending and self._idle is not None:
                await self._idle.wait()
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
            self._writer = None

    async def submit(self, op: Op[T]) -> T:
        """Queue `op` (a session op, or a `SqlOp`); its result once its transaction committed."""
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._writer = loop.create_task(self._writer_loop(), name="nubi-db-writer")
        fut: asyncio.Future[T] = loop.create_future()
        self._pending.append((op, fut))
        assert self._wakeup is not None and self._idle is not None
        self._idle.clear()
        self._wakeup.set()
        return await fut

    async def _writer_loop(self) -> None:
        assert self._wakeup is not None and self._idle is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._run(batch)
            self._idle.set()

    async def _run(self, batch: list[Waiting]) -> None:
        """One batch: one transaction, each op in a savepoint; every caller answered after the commit."""
        if len(batch) == 1:  # no savepoint needed: the op's failure rolls back its own transaction
            await self._settle(*batch[0])
            return
        sql = [w for w in batch if isinstance(w[0], SqlOp)]
        if sql and len(sql) < len(batch):  # SQL ops and session ops run in batches of their own
            await self._run([w for w in batch if not isinstance(w[0], SqlOp)])
            await self._run(sql)
            return
        try:
            outcomes = await self._execute([op for op, _ in batch])
        except PoolTimeout as exc:
            fail_all(batch, Unavailable(BUSY), exc)
            return
        except Rerun as rerun:
            # Rolled back whole, nothing of any op kept: the ops that failed after writing run again
            # alone, and the others go back to the head of the queue for the next batch.
            alone = set(rerun.indices)
            self._pending[:0] = [w for i, w in enumerate(batch) if i not in alone]
            await asyncio.gather(*(self._settle(*batch[i]) for i in rerun.indices))
            return
        except Exception as exc:
            if is_connection_error(exc):  # wrapped, or the driver's own error (older SQLAlchemy)
                log.warning("a group commit of %d operations failed: %s", len(batch), exc)
                fail_all(batch, Unavailable(UNAVAILABLE), exc)
                return
            if isinstance(exc, DBAPIError | OSError) or is_driver_error(exc):
                # The transaction failed as a whole (a deadlock or serialization race at COMMIT, say) and
                # was rolled back: nothing of any op was kept, so each op runs again, alone.
                await asyncio.gather(*(self._settle(op, fut) for op, fut in batch))
                return
            log.exception("a group commit of %d operations failed", len(batch))  # a bug of ours
            fail_all(batch, exc, None)
            return
        self.commits += 1
        again = []
        for (op, fut), outcome in zip(batch, outcomes, strict=True):
            if outcome.retry:
                again.append(self._settle(op, fut))  # rolled back to its savepoint: nothing of it kept
            elif fut.done():
                continue
            elif outcome.error is not None:
                fut.set_exception(outcome.error)
            else:
                fut.set_result(outcome.result)
        if again:
            await asyncio.gather(*again)

    async def _settle(self, op: Op[Any], fut: asyncio.Future[Any]) -> None:
        try:
            result = await self._alone(op)
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(result)


class Rerun(Exception):
    """PostgreSQL SQL ops (these `indices` of their batch) failed after they may have written, or need
    to run alone: the batch was rolled back whole."""

    def __init__(self, indices: list[int]) -> None:
        super().__init__(indices)
        self.indices = indices


class SqlOp:
    """A queued `write_sql` op: the database runs its batches on the driver, apart from session ops."""

    __slots__ = ("op",)

    def __init__(self, op: Callable[[Any], Awaitable[Any]]) -> None:
        self.op = op


def fail_all(batch: list[Waiting], error: BaseException, cause: BaseException | None) -> None:
    if cause is not None:
        error.__cause__ = cause
    for _op, fut in batch:
        if not fut.done():
            fut.set_exception(error)
