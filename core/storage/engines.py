"""Engines for the two databases, and what a database error means for a caller.

Promises: SQLite connections take BEGIN away from the driver (writers begin IMMEDIATE, so a
read-modify-write never loses an update), run in WAL with a busy timeout and foreign keys on.
PostgreSQL connections that sat idle are pinged before use, so a server restart costs a caller at
most one "try again", never a hang. `is_connection_error` and `sqlstate` tell a lost database (the
caller hears "unavailable") from a deadlock or serialization race (the write is retried) and from
an op's own error (the caller hears it). `WalCheckpoints` keeps SQLite's checkpoints off the writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("core.storage.db")
SQLITE_BUSY_TIMEOUT_MS = 30_000
CHECKPOINT_SECONDS = 1.0
RETRY_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected
PING_AFTER_IDLE_SECONDS = 1.0
LAST_USED = "nubi_last_used"  # key in a pooled connection's info


def normalize_url(url: str) -> str:
    """Accept the plain driver names people paste and map them to the async drivers we ship."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        url = "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def sqlite_pragmas(engine: AsyncEngine | Engine, begin: str, *, cache_kib: int | None = None,
                   autocheckpoint: bool = True, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    """Set up every connection of a SQLite engine; `begin` is the statement that opens a transaction;
    `cache_kib` caps each connection's page cache (SQLite's default is 2,000 KiB); `autocheckpoint=False`
    leaves WAL checkpoints to someone else (core/storage/db.py runs them off the writer's thread)."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver so we decide its kind (IMMEDIATE for writers).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if cache_kib is not None:
            cursor.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        if not autocheckpoint:
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


def ping_when_idle(engine: AsyncEngine) -> None:
    """Test a pooled PostgreSQL connection before use only if it sat idle (SQLAlchemy's pre-ping
    tests every checkout, three round trips each time: a third of an empty read). A connection in
    steady use is known good; one that sat through a server restart fails the ping and the pool
    replaces it. A connection that breaks in use fails its statement with "try again", as before."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info[LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[LAST_USED] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get(LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:  # the pool discards this connection and checks out another
            raise DisconnectionError("a pooled connection did not answer its ping") from exc


def is_connection_error(exc: BaseException) -> bool:
    """The database was lost (or never reached): nothing the caller sent may be assumed to have landed."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate(exc) or ""
    if state.startswith(("08", "57P")):  # connection exception; server shutting down or starting up
        return True
    if isinstance(exc, InterfaceError | ConnectionError | OSError):
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
        return any(s in text for s in ("connect", "closed", "terminat", "shutdown", "refused"))
    return False


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a database error, or None: as the asyncpg dialect exposes it on the
    wrapped error, or on asyncpg's own error (older SQLAlchemy lets some escape unwrapped at connect,
    such as "the database system is starting up")."""
    for err in (getattr(exc, "orig", None), exc):
        found = getattr(err, "sqlstate", None) or getattr(getattr(err, "__cause__", None), "sqlstate", None)
        if isinstance(found, str):
            return found
    return None


def is_driver_error(exc: BaseException) -> bool:
    """An error of asyncpg's own (a statement sent straight to it, core/storage/driver.py). asyncpg is
    not imported for it: on SQLite, the default, it never loads (about 1.5 MiB of a server), and no
    asyncpg error can exist before it has."""
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(exc, asyncpg.PostgresError)


def is_retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: PostgreSQL rolled the statement back; running again may pass.
    SQLAlchemy's wrapped error, or asyncpg's own from a statement sent straight to it (core/storage/driver.py)."""
    return (isinstance(exc, DBAPIError) or is_driver_error(exc)) and sqlstate(exc) in RETRY_SQLSTATES


def is_locked_out(exc: BaseException) -> bool:
    """SQLite answered at once that another connection holds the lock (a connection with no busy
    timeout): sqlite3's own error, or SQLAlchemy's wrapping it."""
    raw = getattr(exc, "orig", None) or exc
    return getattr(raw, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class WalCheckpoints:
    """SQLite's WAL checkpoints, off every writer's COMMIT (a checkpoint copies and syncs up to 1,000
    pages, and every caller of that batch would wait for it): every CHECKPOINT_SECONDS after writes
    (`wrote()`), a passive checkpoint on a thread of its own copies what no reader still needs into the
    database file without blocking the writers or the readers. The last connection to close
    checkpoints what is left."""

    def __init__(self, readers: Engine) -> None:
        self._readers = readers
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nubi-sqlite-checkpoint")
        self._task: asyncio.Task[None] | None = None
        self._writes = 0  # write transactions since the start (lone ops and batches)
        self._stopped = False

    def wrote(self) -> None:
        """A write transaction ended (on the event loop's thread)."""
        self._writes += 1
        if not self._stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="nubi-sqlite-checkpoints")

    async def _run(self) -> None:
        done = 0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            if self._writes == done:
                continue
            done = self._writes
            try:
                await loop.run_in_executor(self._thread, self._checkpoint)
            except Exception as exc:  # the next round tries again; a write never waits for this
                log.warning("a WAL checkpoint failed: %s", exc)

    def _checkpoint(self) -> None:
        pooled = self._readers.raw_connection()
        try:
            pooled.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            pooled.close()

    async def stop(self) -> None:
        self._stopped = True  # a write after this is left to the last connection's checkpoint
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._thread.shutdown(wait=True)
