"""The one seam for storage: `Database.read(op)` and `Database.write(op)`, with group commit.

Every write in nubi is a function `op(session) -> result` handed to `Database.write`. What it promises:
- atomic per command: an op's statements all land or none does;
- answered after commit: a caller hears back only once the transaction holding its op has committed
  (or failed; then nothing of its op was kept);
- group commit: the ops waiting at one moment share one transaction (one writer per process, one
  batch at a time), each in a savepoint of its own (core/storage/executor.py), in arrival order. An op
  that fails, fails alone: its savepoint is rolled back, the others commit. `group_commit` batches
  every write; `batch_contended` only the ones that say they contend for the same rows
  (`write_sql(op, contended=True)`: a raid's joins and claims), PostgreSQL's default;
- no op runs twice unless its first run is known to have left nothing behind: an op rolled back to
  its savepoint by a deadlock or serialization race is run again after its batch commits, alone with
  retries; a batch whose COMMIT hits such a race was rolled back whole, and its ops run again alone;
- a lost database is "unavailable, try again" (`core.errors.Unavailable`), never a stack trace.

`Database.write_sql(op)` keeps the same promises for the hot path's ops of hand-written SQL
(`op(sql) -> result`, core/storage/driver.py), which batch apart from session ops: on SQLite each in
a savepoint sent straight to sqlite3; on PostgreSQL side by side without savepoints, their statements
pipelined (core/storage/pipeline.py), where an op that fails after writing rolls its batch back whole
and runs again alone while the others are re-queued (an op that fails before writing, as refusals do,
fails alone and the batch goes on).

SQLite: plain `sqlite3` (pysqlite under SQLAlchemy), one writer at a time. `write_sql` ops (the hot
path's) run on the event loop's own thread on a connection that never waits for a lock; session ops,
and SQL ops while another process holds the write lock, on one writer thread, one hop per batch. A few
reader threads read meanwhile (WAL lets them read while the writer writes). PostgreSQL: `pool_size` connections
held open (core/storage/lanes.py), each command or batch on one of them in an asyncpg transaction,
session ops inside `AsyncConnection.run_sync`; with row-level security every command has its own
transaction (core/storage/rls.py scopes it to one community). The queue and its writer task are
core/storage/group_commit.py; this module says how each batch and each lone op runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import Unavailable
from core.storage import rls
from core.storage.driver import PgSql, Sql, SqliteSql
from core.storage.engines import (
    WalCheckpoints,
    is_connection_error,
    is_locked_out,
    is_retryable,
    normalize_url,
    ping_when_idle,
    sqlite_pragmas,
)
from core.storage.executor import (
    Outcome,
    drive,
    in_callers_context,
    run_alone,
    run_batch,
    run_sql_alone,
    run_sql_batch,
    sql_in_callers_context,
)
from core.storage.group_commit import BUSY, UNAVAILABLE, GroupCommitQueue, SqlOp
from core.storage.lanes import Lanes, default_size
from core.storage.pipeline import Pipe

__all__ = ["Database", "normalize_url"]

T = TypeVar("T")
Op = Callable[[Any], Awaitable[T]]

SQLITE_READERS = 4
# Each reader's page cache: the OS keeps the file's pages cached for all of them, so four private
# 2 MiB caches (SQLite's default) mostly duplicate it; the writer keeps the default.
READER_CACHE_KIB = 512
# PostgreSQL tracks at most 64 subtransactions (one savepoint per op) of a transaction cheaply.
PG_MAX_BATCH = 64
RETRY_ATTEMPTS = 5
_LOCKED = object()  # `_sqlite_on_loop`: another process holds the write lock


class Database:
    def __init__(
        self, url: str, *, group_commit: bool = True, max_batch: int = 256, row_level_security: bool = False,
        pool_size: int | None = None, batch_contended: bool | None = None,
    ) -> None:
        """`group_commit`: every write batches. `batch_contended` (default: as `group_commit`): the writes
        that say they contend (`write_sql(op, contended=True)`) batch even when the others do not."""
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        # PostgreSQL only (SQLite has no row-level security): see core/storage/rls.py.
        self.row_level_security = row_level_security and self.dialect == "postgresql"
        self.engine: AsyncEngine | None = None
        self._lanes: Lanes | None = None
        self.pool_size = 0  # PostgreSQL's connections held per process (SQLite holds none of this kind)
        self.sqlite_writer: Engine | None = None
        self.sqlite_readers: Engine | None = None
        self._loop_writer: Engine | None = None
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("SQLite needs a file path (an in-memory database cannot be shared)")
            sync_url = self.url.replace("sqlite+aiosqlite://", "sqlite+pysqlite://", 1)
            # The writer thread's connection (session ops; SQL ops while another process holds the lock),
            # one hop per batch.
            self.sqlite_writer = create_engine(
                sync_url, pool_size=1, max_overflow=0, connect_args={"check_same_thread": False}
            )
            # WAL checkpoints run on a thread of their own (engines.WalCheckpoints), not in a writer's commit.
            sqlite_pragmas(self.sqlite_writer, "BEGIN IMMEDIATE", autocheckpoint=False)
            self.sqlite_readers = create_engine(
                sync_url, pool_size=SQLITE_READERS, max_overflow=0, connect_args={"check_same_thread": False}
            )
            sqlite_pragmas(self.sqlite_readers, "BEGIN", cache_kib=READER_CACHE_KIB)
            self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nubi-sqlite-writer")
            self._reader_threads = ThreadPoolExecutor(max_workers=SQLITE_READERS, thread_name_prefix="nubi-sqlite-reader")
            # `read_sql`'s own connection, used on the event loop's thread only, never waiting for a lock.
            self._loop_reader = create_engine(sync_url, pool_size=1, max_overflow=0, connect_args={"timeout": 0})
            sqlite_pragmas(self._loop_reader, "BEGIN", cache_kib=READER_CACHE_KIB, busy_timeout_ms=0)
            # `write_sql`'s writer, on the event loop's thread (`_transaction`), never waiting for a lock
            # either: the writer of the hot path's ops. The two writers take turns (`_sqlite_lock`).
            self._loop_writer = create_engine(sync_url, pool_size=1, max_overflow=0, connect_args={"timeout": 0})
            sqlite_pragmas(self._loop_writer, "BEGIN IMMEDIATE", autocheckpoint=False, busy_timeout_ms=0)
        else:
            # Connections per process (the scale-out guide sizes max_connections from it).
            self.pool_size = pool_size or default_size()
            self.engine = create_async_engine(self.url, pool_size=self.pool_size, max_overflow=0, pool_timeout=30,
                                              pool_use_lifo=True)
            ping_when_idle(self.engine)
            # Every command takes one of these held connections, in arrival order.
            self._lanes = Lanes(self.engine, self.pool_size)
        # Row-level security scopes a whole transaction to one community: no batches across them.
        self.group_commit = group_commit and not self.row_level_security
        self.batch_contended = (group_commit if batch_contended is None else batch_contended) and not self.row_level_security
        self.max_batch = max_batch if self.is_sqlite else min(max_batch, PG_MAX_BATCH)
        self._sqlite_lock: asyncio.Lock | None = None
        self._checkpoints = WalCheckpoints(self.sqlite_readers) if self.sqlite_readers is not None else None
        self._queue = GroupCommitQueue(self._execute_batch, self._write_one, self.max_batch)
        self._contended_alone = 0  # contended ops running at once, not batched (`write_sql`)
        self._at_once_limit = max(1, self.pool_size // 2)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def statement_engines(self) -> list[Engine]:
        """The sync engines whose events see every statement run (a benchmark counts them)."""
        if self.engine is not None:
            return [self.engine.sync_engine]
        return [e for e in (self.sqlite_writer, self.sqlite_readers, self._loop_writer) if e is not None]

    # -- reads -----------------------------------------------------------------------------------

    async def read(self, op: Op[T]) -> T:
        op = in_callers_context(op)
        with _unavailable_when_lost():
            if self.is_sqlite:
                return await asyncio.get_running_loop().run_in_executor(self._reader_threads, self._read_sqlite, op)
            return await self._read_pg(op)

    async def read_sql(self, op: Callable[[Sql], Awaitable[T]]) -> T:
        """`read` for an op of hand-written SQL on the driver (core/storage/driver.py): the hottest
        reads (a page of a session's messages). SQLite: a reader thread's pooled sqlite3 connection
        (`Engine.raw_connection()`), the op's statements in one read transaction, no SQLAlchemy
        statement machinery; PostgreSQL: a held connection's asyncpg connection (core/storage/lanes.py), in
        autocommit (one snapshot per statement, as `read` has), or in a transaction with row-level security."""
        with _unavailable_when_lost():
            if self.is_sqlite:
                # On the loop's thread, no hop: 32 clients' page reads on the reader threads ran at half the
                # rate of one client's, the threads and the loop taking turns at the GIL. A read that would
                # wait for a lock (WAL recovery, rare) goes to a reader thread instead.
                try:
                    return self._read_sqlite_sql(op, self._loop_reader)
                except sqlite3.OperationalError as exc:
                    if not is_locked_out(exc):
                        raise
                bound = sql_in_callers_context(op, threaded=True)
                return await asyncio.get_running_loop().run_in_executor(
                    self._reader_threads, self._read_sqlite_sql, bound, self.sqlite_readers)
            return await self._read_pg_sql(op)

    def _read_sqlite_sql(self, op: Callable[[Sql], Awaitable[T]], engine: Engine | None) -> T:
        assert engine is not None
        pooled = engine.raw_connection()
        try:
            driver = pooled.driver_connection
            driver.execute("BEGIN")
            try:
                return drive(op(SqliteSql(driver, _no_session)))  # type: ignore[no-any-return]
            finally:
                driver.execute("COMMIT")  # a read: nothing to keep or lose
        finally:
            pooled.close()  # back to the pool

    async def _read_pg_sql(self, op: Callable[[Sql], Awaitable[T]]) -> T:
        assert self._lanes is not None
        async with self._lanes.lane() as lane:
            if not self.row_level_security:
                return await op(PgSql(lane.driver, lane.conn))
            async with lane.driver.transaction():
                await rls.apply(lane.conn)
                return await op(PgSql(lane.driver, lane.conn))

    def _read_sqlite(self, op: Op[T]) -> T:
        assert self.sqlite_readers is not None
        with self.sqlite_readers.begin() as conn:
            return run_alone(conn, op)

    async def _read_pg(self, op: Op[T]) -> T:
        assert self._lanes is not None
        async with self._lanes.lane() as lane:
            if not self.row_level_security:
                # READ COMMITTED gives each statement its own snapshot either way: a read needs no
                # BEGIN and COMMIT around it (two round trips). With row-level security it does, for
                # the transaction-local community setting.
                return await lane.conn.run_sync(run_alone, op)
            async with lane.driver.transaction():
                await rls.apply(lane.conn)
                return await lane.conn.run_sync(run_alone, op)

    # -- writes ----------------------------------------------------------------------------------

    async def write(self, op: Op[T]) -> T:
        op = in_callers_context(op)
        if self.group_commit:
            return await self._queue.submit(op)
        return await self._write_alone(op)

    async def write_sql(self, op: Callable[[Sql], Awaitable[T]], *, contended: bool = False) -> T:
        """`write` for an op of hand-written SQL on the driver (core/storage/driver.py), with the same
        promises. With group commit such ops share batches of their own: SQLite runs them on the
        event loop's thread (`_sqlite_on_loop`), each in a savepoint sent straight to sqlite3
        (executor.run_sql_batch); PostgreSQL side by side in one asyncpg transaction, their statements
        pipelined (`_pg_sql_batch`). Without it, each op has a transaction of its own.

        `contended`: the op updates rows that every op of its kind updates too (a raid's counters), so
        on PostgreSQL such ops in transactions of their own wait for each other's row locks, one commit
        at a time; batched, they share one transaction and a few round trips. Such ops batch whenever
        `batch_contended` is on (PostgreSQL's default), other writes only with `group_commit`. Without
        `group_commit`, contended ops run at once, each in a transaction of its own, while fewer than
        half the connections run such ops and nothing is queued: a steady trickle never waits for a
        batch (one that came during a batch waited for it, then for its own), and a burst, past that
        many, is batched."""
        at_once = False
        if self.group_commit or (contended and self.batch_contended):
            if self.group_commit or self._contended_alone >= self._at_once_limit or self._queue.busy:
                # run by the writer task (on SQLite on the loop's thread, or the writer thread's)
                return await self._queue.submit(SqlOp(sql_in_callers_context(op, threaded=self.is_sqlite)))
            at_once = True  # a contended op with nothing to share a batch with
        if self.is_sqlite:  # maybe the writer thread: run_in_executor does not carry the context over
            op = sql_in_callers_context(op, threaded=True)
        if not at_once:
            return await self._write_sql_alone(op)
        self._contended_alone += 1
        try:
            return await self._write_sql_alone(op)
        finally:
            self._contended_alone -= 1

    async def write_statement(self, op: Callable[[Sql], Awaitable[T]]) -> T:
        """`write_sql` for an op that writes with exactly one statement, atomic by itself (a PostgreSQL
        data-modifying WITH writes all its rows or none), after reads if it needs them. On PostgreSQL
        without group commit or row-level security it runs in autocommit on a held connection: no BEGIN
        and COMMIT round trips, and each statement sees the latest committed rows, so the write must
        check again in its own WHERE whatever it relies on from the reads (core/sessions/hot.py, `post`).
        Otherwise exactly `write_sql`."""
        if self.is_sqlite or self.group_commit or self.row_level_security:
            return await self.write_sql(op)
        return await self._write_sql_alone(op, single=True)

    async def _write_sql_alone(self, op: Callable[[Sql], Awaitable[T]], *, single: bool = False) -> T:
        if self.is_sqlite:
            return await self._retried(lambda: self._transaction(run_sql_alone, op))
        if single:
            return await self._retried(lambda: self._pg_sql_statement(op))
        return await self._retried(lambda: self._pg_sql_transaction(op))

    async def _pg_sql_statement(self, op: Callable[[Sql], Awaitable[T]]) -> T:
        assert self._lanes is not None
        async with self._lanes.lane() as lane:
            return await op(PgSql(lane.driver, lane.conn))

    async def _pg_sql_transaction(self, op: Callable[[Sql], Awaitable[T]]) -> T:
        assert self._lanes is not None
        async with self._lanes.lane() as lane:
            q = PgSql(lane.driver, lane.conn)
            async with lane.driver.transaction():
                if self.row_level_security:
                    await rls.apply(lane.conn)
                result = await op(q)
                await q.close()
            return result

    async def _pg_sql_batch(self, ops: list[SqlOp]) -> list[Outcome]:
        """PostgreSQL group commit of SQL ops: one asyncpg transaction, the ops side by side, their
        statements pipelined (core/storage/pipeline.py says what a batch promises)."""
        assert self._lanes is not None
        async with self._lanes.lane() as lane, lane.driver.transaction():
            return await Pipe(lane.driver, lane.conn).run([op.op for op in ops])

    async def _write_alone(self, op: Op[T]) -> T:
        """One op in a transaction of its own."""
        return await self._retried(lambda: self._transaction(run_alone, op))

    @staticmethod
    async def _retried(attempt: Callable[[], Awaitable[Any]]) -> Any:
        """`attempt()`, run again after a deadlock or a serialization race (each failed attempt was rolled
        back whole, so running again is safe), its other errors as `_unavailable_when_lost` says them."""
        attempts = 0
        with _unavailable_when_lost():
            while True:
                attempts += 1
                try:
                    return await attempt()
                except Exception as exc:
                    if is_retryable(exc) and attempts < RETRY_ATTEMPTS:
                        await asyncio.sleep(0.01 * attempts)
                        continue
                    raise

    async def _transaction(self, work: Callable[[Any, Any], Any], arg: Any) -> Any:
        """`work(connection, arg)` in one write transaction, committed before this returns."""
        if self.is_sqlite:
            if self._sqlite_lock is None:
                self._sqlite_lock = asyncio.Lock()
            async with self._sqlite_lock:  # one writer at a time: a batch or a lone op, on either thread
                loop = asyncio.get_running_loop()
                assert self._checkpoints is not None
                try:
                    if work is run_sql_batch or work is run_sql_alone:
                        done = self._sqlite_on_loop(work, arg)
                        if done is not _LOCKED:
                            return done
                    return await loop.run_in_executor(self._writer_thread, self._sqlite_transaction, work, arg)
                finally:
                    self._checkpoints.wrote()
        assert self._lanes is not None
        # The driver's transaction: SQLAlchemy (in AUTOCOMMIT) emits the session's statements and
        # savepoints inside it, and no BEGIN or COMMIT of its own.
        async with self._lanes.lane() as lane, lane.driver.transaction():
            if self.row_level_security:
                await rls.apply(lane.conn)
            return await lane.conn.run_sync(work, arg)

    def _sqlite_transaction(self, work: Callable[[Any, Any], Any], arg: Any) -> Any:
        assert self.sqlite_writer is not None
        with self.sqlite_writer.begin() as conn:
            return work(conn, arg)

    def _sqlite_on_loop(self, work: Callable[[Any, Any], Any], arg: Any) -> Any:
        """SQL ops (`write_sql`) on the event loop's own thread: their statements are a few microseconds of
        SQLite each (no fsync at COMMIT in WAL mode; checkpoints run on a thread of their own), while a
        hop to the writer thread made the two threads take turns at the GIL for every statement. Measured
        at 32 clients: session creates 12-18% faster at a fifth less CPU each (bench/README.md).
        `_LOCKED` when another process holds the write lock: the writer thread, which waits, runs it."""
        assert self._loop_writer is not None
        with self._loop_writer.connect() as conn:
            try:
                transaction = conn.begin()  # BEGIN IMMEDIATE: the write lock now, or SQLITE_BUSY at once
            except OperationalError as exc:
                if is_locked_out(exc):
                    return _LOCKED
                raise
            with transaction:
                return work(conn, arg)

    @property
    def commits(self) -> int:
        """Transactions the group-commit writer committed (a benchmark reads it)."""
        return self._queue.commits

    async def _execute_batch(self, ops: list[Any]) -> list[Outcome]:
        """One group-commit batch in one transaction, each op in a savepoint (SQL ops on PostgreSQL back
        to back): all session ops or all SQL ops, as the queue hands them over."""
        if not isinstance(ops[0], SqlOp):
            return await self._transaction(run_batch, ops)  # type: ignore[no-any-return]
        if self.is_sqlite:
            return await self._transaction(run_sql_batch, [op.op for op in ops])  # type: ignore[no-any-return]
        return await self._pg_sql_batch(ops)

    async def _write_one(self, op: Any) -> Any:
        """A queued op run alone, with its retries."""
        return await (self._write_sql_alone(op.op) if isinstance(op, SqlOp) else self._write_alone(op))

    async def dispose(self) -> None:
        await self._queue.stop()
        if self._checkpoints is not None:  # after the last queued writes landed
            await self._checkpoints.stop()
        if self._lanes is not None:
            await self._lanes.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self.sqlite_writer is not None and self.sqlite_readers is not None:
            self._writer_thread.shutdown(wait=True)
            self._reader_threads.shutdown(wait=True)
            self.sqlite_writer.dispose()
            self.sqlite_readers.dispose()
            self._loop_reader.dispose()
            if self._loop_writer is not None:
                self._loop_writer.dispose()


def _no_session() -> Any:
    raise RuntimeError("a read_sql op has no SQLAlchemy session: use Database.read")


@contextlib.contextmanager
def _unavailable_when_lost() -> Iterator[None]:
    """A read's or a write's errors as a caller should hear them: no free connection is "busy", a lost
    database "unavailable", both to try again; anything else as it was."""
    try:
        yield
    except PoolTimeout as exc:
        raise Unavailable(BUSY) from exc
    except Exception as exc:
        if is_connection_error(exc):
            raise Unavailable(UNAVAILABLE) from exc
        raise
