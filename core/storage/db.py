"""Engines, transactions and the single SQLite writer.

Every write in nubi is a function `op(session) -> result` handed to `Database.write`. That one seam
lets SQLite run with one writer connection that gathers the operations waiting at that moment into
one transaction (group commit: each operation isolated by a savepoint, each caller answered only
after the commit), while PostgreSQL runs operations concurrently, retrying the ones that lose a
deadlock or serialization race.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Unavailable
from core.storage import rls

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[AsyncSession], Awaitable[T]]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_READERS = 4
PG_POOL = 20  # connections per process; the scale-out guide sizes max_connections from it
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
PING_AFTER_IDLE_SECONDS = 1.0
_LAST_USED = "nubi_last_used"


def normalize_url(url: str) -> str:
    """Accept the plain driver names people paste and map them to the async drivers we ship."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        url = "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def _sqlite_pragmas(engine: AsyncEngine | Engine, begin: str) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so we decide its kind (IMMEDIATE for writers).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Test a pooled PostgreSQL connection before use only if it sat idle (SQLAlchemy's pre-ping
    tests every checkout, three round trips each time: a third of an empty read). A connection in
    steady use is known good; one that sat through a server restart fails the ping and the pool
    replaces it. A connection that breaks in use fails its statement with "try again", as before."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise DisconnectionError("a pooled connection did not answer its ping") from exc


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = _sqlstate(exc) or ""
    if state.startswith(("08", "57P")):  # connection exception; server shutting down or starting up
        return True
    if isinstance(exc, InterfaceError | ConnectionError | OSError):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
        return any(s in text for s in ("connect", "closed", "terminat", "shutdown", "refused"))
    return False


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


class _SyncSession:
    """The AsyncSession surface ops use, over a sync Session or a sync Connection.

    Its coroutines never suspend, so an op's coroutine runs to completion in one step (`_drive`):
    the same op code serves the async engines (inside one `run_sync` greenlet) and the SQLite
    threads. Core statements (on tables, nothing pending to flush first) run straight on the
    connection; over a bare Connection, the ORM Session that entity work needs is made on first use,
    inside the connection's transaction.
    """

    def __init__(self, session: Session | None = None, *, connection: Connection | None = None) -> None:
        self._orm = session
        self._conn = connection
        self._owns_orm = session is None

    @property
    def _s(self) -> Session:
        if self._orm is None:
            # Joins the connection's transaction: it never commits it, and a failed flush fails the op.
            self._orm = Session(bind=self._conn, expire_on_commit=False)
        return self._orm

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._s.connection()
        return self._conn

    def _plain(self, statement: Any) -> bool:
        if getattr(statement, "_propagate_attrs", True):
            return False
        orm = self._orm
        return orm is None or not (orm.new or orm.dirty or orm.deleted)

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        if self._plain(statement):
            return self._connection().execute(statement, *args, **_buffered(kw))
        return self._s.execute(statement, *args, **_buffered(kw))

    async def scalar(self, statement: Any, *args: Any, **kw: Any) -> Any:
        if self._plain(statement):
            return self._connection().scalar(statement, *args, **kw)
        return self._s.scalar(statement, *args, **kw)

    async def scalars(self, *args: Any, **kw: Any) -> Any:
        return self._s.scalars(*args, **_buffered(kw))

    async def get(self, *args: Any, **kw: Any) -> Any:
        return self._s.get(*args, **kw)

    async def flush(self, *args: Any, **kw: Any) -> None:
        self._s.flush(*args, **kw)

    def add(self, instance: Any) -> None:
        self._s.add(instance)

    def get_bind(self, *args: Any, **kw: Any) -> Any:
        return self._s.get_bind(*args, **kw) if self._orm is not None else self._conn

    def release(self, *, flush: bool) -> None:
        """Over a Connection: write what the op left pending (if it succeeded) and let the session go."""
        if self._owns_orm and self._orm is not None:
            try:
                if flush:
                    self._orm.flush()
            finally:
                self._orm.close()


def _buffered(kw: dict[str, Any]) -> dict[str, Any]:
    """Rows read up front, as AsyncSession does: an op may hand its result to its caller, who reads
    it after the session and its connection are gone."""
    options = {**kw.get("execution_options", {}), "prebuffer_rows": True}
    return {**kw, "execution_options": options}


def _run_op(connection: Connection, op: Op[T]) -> T:
    """An op inside the one greenlet AsyncConnection.run_sync gives it: its statements go through
    the sync API (the driver still awaits in the event loop), not one greenlet hop each, and no ORM
    session is made unless the op works with entities."""
    facade = _SyncSession(connection=connection)
    try:
        result = _drive(op(facade))  # type: ignore[arg-type]
    except BaseException:
        facade.release(flush=False)
        raise
    facade.release(flush=True)
    return result


def _drive(coro: Any) -> Any:
    """Run a coroutine that never suspends to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a write op awaited something other than its database session")


class Database:
    def __init__(
        self, url: str, *, group_commit: bool = True, max_batch: int = 256, row_level_security: bool = False
    ) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        # PostgreSQL only (SQLite has no row-level security): see core/storage/rls.py.
        self.row_level_security = row_level_security and self.dialect == "postgresql"
        if self.dialect == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ValueError("SQLite needs a file path (an in-memory database cannot be shared)")
            self.write_engine = create_async_engine(self.url, pool_size=1, max_overflow=0, pool_timeout=120)
            self.read_engine = create_async_engine(self.url, pool_size=4, max_overflow=4)
            _sqlite_pragmas(self.write_engine, "BEGIN IMMEDIATE")
            _sqlite_pragmas(self.read_engine, "BEGIN")
            # The group-commit writer: plain pysqlite on one thread of its own, one hop per batch.
            self._sync_engine = create_engine(
                self.url.replace("sqlite+aiosqlite://", "sqlite+pysqlite://", 1),
                pool_size=1, max_overflow=0, connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(self._sync_engine, "BEGIN IMMEDIATE")
            self._sync_sessions = sessionmaker(self._sync_engine, expire_on_commit=False)
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nubi-sqlite-writer")
            # Reads likewise run whole on a few reader threads with their own pysqlite connections
            # (WAL lets them read while the writer writes): one hop per read instead of one per statement.
            self._reader_engine = create_engine(
                self.url.replace("sqlite+aiosqlite://", "sqlite+pysqlite://", 1),
                pool_size=SQLITE_READERS, max_overflow=0, connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(self._reader_engine, "BEGIN")
            self._reader_sessions = sessionmaker(self._reader_engine, expire_on_commit=False)
            self._readers = ThreadPoolExecutor(max_workers=SQLITE_READERS, thread_name_prefix="nubi-sqlite-reader")
        else:
            self.write_engine = create_async_engine(self.url, pool_size=PG_POOL, max_overflow=0, pool_timeout=30)
            _ping_when_idle(self.write_engine)
            self.read_engine = self.write_engine
        self.group_commit = group_commit and self.dialect == "sqlite"
        self.max_batch = max_batch
        self._pending: list[tuple[Op[Any], asyncio.Future[Any]]] = []
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set while the writer has nothing queued
        self._writer: asyncio.Task[None] | None = None
        self._write_lock: asyncio.Lock | None = None
        # PostgreSQL: callers queue here in arrival order for one of the pool's connections, instead of
        # racing the pool's own timeout (a burst of thousands of commands would otherwise fail).
        self._slots: asyncio.Semaphore | None = None
        self.commits = 0  # transactions committed by the writer; a benchmark reads it

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _pg_slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(PG_POOL)
        return self._slots

    async def read(self, op: Op[T]) -> T:
        try:
            if self.is_sqlite:
                return await asyncio.get_running_loop().run_in_executor(self._readers, self._read_sync, op)
            async with self._pg_slots():
                return await self._read_one(op)
        except (DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                raise Unavailable("The database is unavailable right now; try again shortly.") from exc
            raise
        except PoolTimeout as exc:
            raise Unavailable("The database is busy right now; try again shortly.") from exc

    def _read_sync(self, op: Op[T]) -> T:
        with self._reader_sessions() as session, session.begin():
            return _drive(op(_SyncSession(session)))  # type: ignore[arg-type]

    async def _read_one(self, op: Op[T]) -> T:
        if not self.row_level_security:
            # READ COMMITTED gives each statement its own snapshot either way: a read needs no
            # BEGIN and COMMIT around it (two round trips). With row-level security it does, for
            # the transaction-local community setting.
            async with self.read_engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(_run_op, op)
        async with self.read_engine.begin() as conn:
            await rls.apply(conn)
            return await conn.run_sync(_run_op, op)

    async def write(self, op: Op[T]) -> T:
        if self.group_commit:
            return await self._enqueue(op)
        attempts = 0
        while True:
            attempts += 1
            try:
                if self.is_sqlite:
                    if self._write_lock is None:
                        self._write_lock = asyncio.Lock()
                    async with self._write_lock:
                        return await self._run_one(op)
                async with self._pg_slots():
                    return await self._run_one(op)
            except PoolTimeout as exc:
                raise Unavailable("The database is busy right now; try again shortly.") from exc
            except DBAPIError as exc:
                if _sqlstate(exc) in RETRY_SQLSTATES and attempts < 5:
                    await asyncio.sleep(0.01 * attempts)
                    continue
                if _is_connection_error(exc):
                    raise Unavailable("The database is unavailable right now; try again shortly.") from exc
                raise
            except OSError as exc:
                raise Unavailable("The database is unavailable right now; try again shortly.") from exc

    async def _run_one(self, op: Op[T]) -> T:
        async with self.write_engine.begin() as conn:
            if self.row_level_security:
                await rls.apply(conn)
            return await conn.run_sync(_run_op, op)

    # -- group commit (SQLite) -------------------------------------------------------------------

    async def _enqueue(self, op: Op[T]) -> T:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._idle = asyncio.Event()
            self._writer = loop.create_task(self._writer_loop(), name="nubi-sqlite-writer")
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
                await self._run_batch(batch)
            self._idle.set()

    async def _run_batch(self, batch: list[tuple[Op[Any], asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._thread, self._run_batch_sync, [op for op, _ in batch])
        except Exception as exc:  # the batch could not commit: no caller may think it landed
            log.exception("group commit of %d operations failed", len(batch))
            err: BaseException = exc
            if isinstance(exc, DBAPIError | OSError):
                err = Unavailable("The database is unavailable right now; try again shortly.")
                err.__cause__ = exc
            for _op, fut in batch:
                if not fut.done():
                    fut.set_exception(err)
            return
        self.commits += 1
        for (_op, fut), (result, error) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    def _run_batch_sync(self, ops: list[Op[Any]]) -> list[tuple[Any, BaseException | None]]:
        """One transaction for the whole batch, each op in a savepoint (writer thread only)."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        with self._sync_sessions() as session:
            session.begin()
            facade = _SyncSession(session)
            single = len(ops) == 1
            for op in ops:
                savepoint = None if single else session.begin_nested()
                try:
                    result = _drive(op(facade))  # type: ignore[arg-type]
                    session.flush()  # what the op added is written inside its own savepoint
                    if savepoint is not None:
                        savepoint.commit()
                    outcomes.append((result, None))
                except Exception as exc:  # the op's own error: nothing of it is kept
                    if savepoint is not None:
                        savepoint.rollback()
                    else:
                        session.rollback()
                    outcomes.append((None, exc))
                # Ops return plain values; a session that kept every object of the batch
                # would make each autoflush walk all of them (quadratic in the batch size).
                session.expunge_all()
            if session.in_transaction():
                session.commit()
        return outcomes

    async def dispose(self) -> None:
        if self._writer is not None:
            if self._pending and self._idle is not None:
                await self._idle.wait()  # let queued writes land before closing
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
            self._writer = None
        if self.is_sqlite:
            self._thread.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._sync_engine.dispose()
            self._reader_engine.dispose()
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
