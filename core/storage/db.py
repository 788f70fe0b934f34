"""Engines, transactions and group commit.

Every write in nubi is a function `op(session) -> result` handed to `Database.write`. That one seam
lets one writer per process gather the operations waiting at that moment into one transaction
(group commit: each caller answered only after the commit):

- SQLite: a writer thread with plain pysqlite runs the batch's ops one after another, each in a
  savepoint, so a failing op leaves nothing behind.
- PostgreSQL: the batch's ops run side by side as a pipeline (`_pipelined`): each statement runs
  once for every op waiting on it, in one network round trip, so a burst of claims costs a handful
  of round trips per batch instead of per claim. No savepoints: an op that fails before it writes
  fails alone; one that fails after writing, or a failed statement, rolls the batch back and its ops
  run again one by one, each in its own transaction (retrying deadlocks and serialization races).

A lone op skips the batch machinery and runs in its own transaction.
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
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Unavailable
from core.storage import pgfast, rls

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[AsyncSession], Awaitable[T]]

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_READERS = 4
PG_POOL = 20  # connections per process; the scale-out guide sizes max_connections from it
# PostgreSQL group commit: one batch at a time per process (two would take a raid's row and its
# objectives' rows in different orders and deadlock). A batch holds its row locks until it commits:
# keep it short. With savepoints (careful mode) each op is a subtransaction, and PostgreSQL tracks
# at most 64 per transaction cheaply.
PG_MAX_BATCH = 64
CAREFUL_SECONDS = 2.0
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
        # Whether the op changed anything yet: a PostgreSQL batch has no savepoints, so an op that
        # fails after writing spoils its batch, while one that fails before writing does not.
        self.wrote = False

    @property
    def _s(self) -> Session:
        if self._orm is None:
            # Joins the connection's transaction: it never commits it, and a failed flush fails the op.
            # "rollback_only" also inside a savepoint (careful PostgreSQL batches): by default the
            # Session would make a savepoint of its own there and roll it back when it closes.
            self._orm = Session(bind=self._conn, expire_on_commit=False, join_transaction_mode="rollback_only")
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

    def _fast(self, statement: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        """A marked statement on PostgreSQL, run straight on asyncpg (core/storage/pgfast.py), or None."""
        if len(args) != 1 or kw:
            return None
        conn = self._connection()
        if conn.dialect.name != "postgresql":
            return None
        found = pgfast.plan(statement, args[0], conn.dialect)
        return None if found is None else pgfast.run(conn, found, args[0])

    def _note(self, statement: Any, result: Any = None) -> None:
        """Record a write: any statement but a SELECT, unless it reports that it changed no row."""
        if self.wrote or getattr(statement, "is_select", False):
            return
        self.wrote = getattr(result, "rowcount", -1) != 0

    def _orm_note(self, statement: Any) -> None:
        orm = self._orm
        if orm is not None and (orm.new or orm.dirty or orm.deleted):
            self.wrote = True  # autoflush writes them first
        if statement is not None:
            self._note(statement)

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        try:
            return self._execute(statement, args, kw)
        except DBAPIError:
            self.wrote = True  # on PostgreSQL the transaction is aborted: the batch cannot go on
            raise

    def _execute(self, statement: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        if self._plain(statement):
            result = self._fast(statement, args, kw)
            if result is None:
                result = self._connection().execute(statement, *args, **_buffered(kw))
            self._note(statement, result)
            return result
        self._orm_note(statement)
        return self._s.execute(statement, *args, **_buffered(kw))

    async def scalar(self, statement: Any, *args: Any, **kw: Any) -> Any:
        try:
            return self._scalar(statement, args, kw)
        except DBAPIError:
            self.wrote = True
            raise

    def _scalar(self, statement: Any, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        if self._plain(statement):
            result = self._fast(statement, args, kw)
            if result is not None:
                self._note(statement, result)
                return result.scalar()
            self._note(statement)
            return self._connection().scalar(statement, *args, **kw)
        self._orm_note(statement)
        return self._s.scalar(statement, *args, **kw)

    async def scalars(self, statement: Any, *args: Any, **kw: Any) -> Any:
        self._orm_note(statement)
        return self._s.scalars(statement, *args, **_buffered(kw))

    async def get(self, *args: Any, **kw: Any) -> Any:
        self._orm_note(None)
        return self._s.get(*args, **kw)

    async def flush(self, *args: Any, **kw: Any) -> None:
        self.wrote = True
        self._s.flush(*args, **kw)

    def add(self, instance: Any) -> None:
        self.wrote = True
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


class _Spoiled(Exception):
    """An op of a PostgreSQL batch failed after writing, or a statement failed: the batch rolls back."""


def _run_batch_pg(connection: Connection, ops: list[Op[Any]], careful: bool) -> list[tuple[Any, BaseException | None]]:
    """The ops of a PostgreSQL batch, one after another in one transaction and one greenlet.

    Optimistic: no savepoints (each is two round trips), because an op that fails before it writes
    anything (not a participant, the raid is over, ...) leaves the transaction as it found it. One
    that fails after writing raises _Spoiled: the caller rolls the batch back and runs its ops one
    by one. In `careful` mode (after a recent spoil) each op gets a savepoint instead.
    """
    outcomes: list[tuple[Any, BaseException | None]] = []
    for op in ops:
        facade = _SyncSession(connection=connection)
        savepoint = connection.begin_nested() if careful else None
        try:
            result = _drive(op(facade))  # type: ignore[arg-type]
            facade.release(flush=True)
        except Exception as exc:
            facade.release(flush=False)
            if savepoint is not None:
                if savepoint.is_active:  # a failed flush has rolled it back already
                    savepoint.rollback()
            elif facade.wrote or isinstance(exc, DBAPIError):
                raise _Spoiled() from exc
            outcomes.append((None, exc))
            continue
        if savepoint is not None:
            savepoint.commit()
        outcomes.append((result, None))
    return outcomes


class _Leave:
    """What an op's pipelined session yields when the op needs more than a pipeline gives."""


_LEAVE = _Leave()


class _Ask:
    """Awaited by an op: its statement, answered by the batch (together with the same statement of
    the other ops of the batch)."""

    __slots__ = ("plan", "params")

    def __init__(self, plan: Any, params: Any) -> None:
        self.plan = plan
        self.params = params

    def __await__(self) -> Any:
        return (yield self)


class _Departure:
    def __await__(self) -> Any:
        yield _LEAVE
        raise RuntimeError("an op that left its pipeline was resumed")


class _PipelinedSession:
    """The session surface for an op in a PostgreSQL pipeline (see `_pipelined`).

    Its prebuilt Core statements (core/storage/pgfast.py) suspend the op until the batch has run
    that statement for every op waiting on it. Anything else (the ORM, a statement built per call)
    makes the op leave the pipeline: it runs again later, alone, in the same transaction.
    """

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self.wrote = False
        self.left = False

    def get_bind(self, *_args: Any, **_kw: Any) -> Connection:
        return self._conn

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        found = None
        if not self.left and len(args) == 1 and not kw and not getattr(statement, "_propagate_attrs", True):
            found = pgfast.plan(statement, args[0], self._conn.dialect)
        if found is None:
            self.left = True
            await _Departure()
        result = await _Ask(found, args[0])
        if not self.wrote and not found.is_select and result.rowcount != 0:
            self.wrote = True
        return result

    async def scalar(self, statement: Any, *args: Any, **kw: Any) -> Any:
        return (await self.execute(statement, *args, **kw)).scalar()

    async def _leave(self, *_args: Any, **_kw: Any) -> Any:
        self.left = True
        await _Departure()

    scalars = get = flush = _leave

    def add(self, _instance: Any) -> None:
        self.left = True  # the op leaves at its next statement, or is run again if it ends first


async def _pipelined(conn: AsyncConnection, ops: list[Op[Any]]) -> list[tuple[Any, BaseException | None]]:
    """Run a PostgreSQL batch's ops side by side in one transaction, one round trip per statement
    for all of them.

    Each op is a coroutine that only awaits its session. They advance in lockstep: every op runs to
    its next statement, then each distinct statement runs once for all the ops waiting on it
    (asyncpg pipelines the executions), and each op gets its own rows back. A burst of claims thus
    costs about seven round trips per batch instead of per claim. Like concurrent transactions, an
    op does not see what the others of its step write until the next step; every later statement
    sees them (one transaction), so a cap or a duplicate is still caught by the conditional UPDATE
    or the ON CONFLICT that catches it between concurrent commands.

    An op that fails before writing fails alone. One that fails after writing, or any failed
    statement, raises _Spoiled (the caller rolls back and runs the ops one by one). An op that needs
    the ORM leaves the pipeline and runs afterwards, alone, in the same transaction.
    """
    adapted = (await conn.get_raw_connection()).dbapi_connection
    dialect = conn.dialect
    facades = [_PipelinedSession(conn.sync_connection) for _ in ops]  # type: ignore[arg-type]
    live = {i: op(facades[i]) for i, op in enumerate(ops)}  # type: ignore[arg-type]
    answers: dict[int, Any] = dict.fromkeys(live)
    outcomes: list[tuple[Any, BaseException | None]] = [(None, None)] * len(ops)
    later: list[int] = []
    held: dict[Any, int] = {}  # a row a SELECT ... FOR UPDATE locked -> the op that holds it
    parked: dict[int, tuple[Any, _Ask]] = {}  # ops waiting for such a row, with their request

    def done(i: int) -> None:
        del live[i]
        for key in [k for k, holder in held.items() if holder == i]:
            del held[key]

    try:
        while live:
            ready: dict[int, _Ask] = {}  # this step's request of each op
            for i, (key, request) in list(parked.items()):
                if key not in held:  # the op that had the row is done with it
                    held[key] = i
                    del parked[i]
                    ready[i] = request
            for i in list(live):
                if i in parked or i in ready:
                    continue
                try:
                    request = live[i].send(answers[i])
                except StopIteration as finished:
                    done(i)
                    if facades[i].left:
                        later.append(i)  # it added an object it never flushed: run it again, alone
                    else:
                        outcomes[i] = (finished.value, None)
                    continue
                except Exception as exc:
                    done(i)
                    if facades[i].wrote:
                        raise _Spoiled() from exc
                    outcomes[i] = (None, exc)
                    continue
                if request is _LEAVE:
                    live[i].close()
                    done(i)
                    if facades[i].wrote:
                        raise _Spoiled()
                    later.append(i)
                    continue
                if request.plan.locks:
                    key = _lock_key(request)
                    if held.setdefault(key, i) != i:
                        parked[i] = (key, request)  # another op of the batch has this row: wait for it
                        continue
                ready[i] = request
            if not ready and live:
                raise _Spoiled()  # ops of the batch wait on each other's rows: run them one by one
            asks: dict[int, tuple[Any, list[tuple[int, Any]]]] = {}  # the same statement, together
            for i, request in ready.items():
                asks.setdefault(id(request.plan), (request.plan, []))[1].append((i, request.params))
            for found, waiting in asks.values():
                try:
                    if len(waiting) > 1 and found.tagged is not None:
                        results = await pgfast.pipeline(adapted, dialect, found, [p for _, p in waiting])
                    else:
                        results = [await pgfast.run_async(adapted, dialect, found, p) for _, p in waiting]
                except Exception as exc:
                    wrapped = await _wrapped(conn, found.sql, exc)
                    if wrapped is exc:
                        raise
                    raise wrapped from exc
                for (i, _), result in zip(waiting, results, strict=True):
                    answers[i] = result
    finally:
        for coro in live.values():
            coro.close()
    if later:
        rest = await conn.run_sync(_run_batch_pg, [ops[i] for i in later], False)
        for i, outcome in zip(later, rest, strict=True):
            outcomes[i] = outcome
    return outcomes


def _lock_key(request: _Ask) -> Any:
    params = request.params
    key = (request.plan.sql, tuple(params.items()) if isinstance(params, dict) else id(request))
    try:
        hash(key)
    except TypeError:
        return (request.plan.sql, id(request))
    return key


async def _wrapped(conn: AsyncConnection, sql: str, exc: Exception) -> BaseException:
    """A driver error from a pipeline as SQLAlchemy would raise it; a lost connection is invalidated."""
    dialect = conn.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    if isinstance(exc, dbapi_error):
        disconnect = dialect.is_disconnect(exc, None, None)
        wrapped: BaseException = DBAPIError.instance(
            sql, None, exc, dbapi_error, dialect=dialect, connection_invalidated=disconnect
        )
    elif isinstance(exc, OSError | ConnectionError):
        disconnect, wrapped = True, exc
    else:
        return exc
    if disconnect:
        with contextlib.suppress(Exception):
            await conn.invalidate()
    return wrapped


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
        # Row-level security scopes a whole transaction to one community: no batches across them.
        self.group_commit = group_commit and not self.row_level_security
        self.max_batch = max_batch if self.is_sqlite else min(max_batch, PG_MAX_BATCH)
        self._careful_until = 0.0
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
        return await self._write_alone(op)

    async def _write_alone(self, op: Op[T]) -> T:
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

    # -- group commit ----------------------------------------------------------------------------

    async def _enqueue(self, op: Op[T]) -> T:
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
                batch = self._take()
                await (self._run_batch(batch) if self.is_sqlite else self._run_pg_batch(batch))
            self._idle.set()

    def _take(self) -> list[tuple[Op[Any], asyncio.Future[Any]]]:
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        return batch

    async def _run_pg_batch(self, batch: list[tuple[Op[Any], asyncio.Future[Any]]]) -> None:
        if len(batch) == 1:
            await self._settle(*batch[0])
            return
        ops = [op for op, _ in batch]
        try:
            async with self._pg_slots(), self.write_engine.begin() as conn:
                if time.monotonic() < self._careful_until:
                    outcomes = await conn.run_sync(_run_batch_pg, ops, True)
                else:
                    outcomes = await _pipelined(conn, ops)
        except PoolTimeout as exc:
            self._fail(batch, Unavailable("The database is busy right now; try again shortly."), exc)
            return
        except (DBAPIError, OSError) as exc:
            if _is_connection_error(exc):
                self._fail(batch, Unavailable("The database is unavailable right now; try again shortly."), exc)
                return
            await self._one_by_one(batch)  # a deadlock or serialization failure at commit: no op landed
            return
        except _Spoiled:
            self._careful_until = time.monotonic() + CAREFUL_SECONDS
            await self._one_by_one(batch)
            return
        except Exception as exc:  # a bug of ours: no caller may think its op landed
            log.exception("PostgreSQL batch of %d operations failed", len(batch))
            self._fail(batch, exc, None)
            return
        self.commits += 1
        self._answer(batch, outcomes)

    async def _one_by_one(self, batch: list[tuple[Op[Any], asyncio.Future[Any]]]) -> None:
        """The ops of a batch that rolled back, each in its own transaction (with the usual retries)."""
        await asyncio.gather(*(self._settle(op, fut) for op, fut in batch))

    async def _settle(self, op: Op[Any], fut: asyncio.Future[Any]) -> None:
        try:
            result = await self._write_alone(op)
        except Exception as exc:
            if not fut.done():
                fut.set_exception(exc)
            return
        if not fut.done():
            fut.set_result(result)

    @staticmethod
    def _answer(batch: list[tuple[Op[Any], asyncio.Future[Any]]], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        """After the commit: each caller its result or its op's own error."""
        for (_op, fut), (result, error) in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    @staticmethod
    def _fail(batch: list[tuple[Op[Any], asyncio.Future[Any]]], error: BaseException, cause: BaseException | None) -> None:
        if cause is not None:
            error.__cause__ = cause
        for _op, fut in batch:
            if not fut.done():
                fut.set_exception(error)

    async def _run_batch(self, batch: list[tuple[Op[Any], asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            outcomes = await loop.run_in_executor(self._thread, self._run_batch_sync, [op for op, _ in batch])
        except Exception as exc:  # the batch could not commit: no caller may think it landed
            log.exception("group commit of %d operations failed", len(batch))
            if isinstance(exc, DBAPIError | OSError):
                self._fail(batch, Unavailable("The database is unavailable right now; try again shortly."), exc)
            else:
                self._fail(batch, exc, None)
            return
        self.commits += 1
        self._answer(batch, outcomes)

    def _run_batch_sync(self, ops: list[Op[Any]]) -> list[tuple[Any, BaseException | None]]:
        """One transaction for the whole batch, each op in a savepoint (writer thread only)."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        with self._sync_sessions() as session:
            session.begin()
            single = len(ops) == 1
            for op in ops:
                savepoint = None if single else session.begin_nested()
                # A facade per op: its connection must come from session.connection() inside the
                # new savepoint (which emits the SAVEPOINT); one kept from the op before would skip it.
                facade = _SyncSession(session)
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
