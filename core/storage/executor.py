"""Running write ops in a transaction: one op alone, or a batch of ops sharing one transaction.

An op is `async def op(session) -> result`; `session` offers the AsyncSession methods ops use
(`execute`, `scalar`, `scalars`, `get`, `add`, `flush`, `get_bind`), over one sync ORM `Session`
joined to a `Connection` whose transaction the caller (core/storage/db.py) begins and commits. The
session's coroutines never suspend, so an op runs to completion in one step (`drive`): the same
code serves the SQLite writer thread and PostgreSQL (inside `AsyncConnection.run_sync`, one greenlet
for the whole batch instead of one per statement).

What this module promises, on both databases:
- a lone op (`run_alone`) raises its own error and the caller rolls the transaction back;
- in a batch (`run_batch`) each op runs inside its own savepoint (`Session.begin_nested`), one after
  another in arrival order, each seeing what the ops before it wrote. An op that raises is rolled back
  to its savepoint: it leaves nothing behind and the transaction goes on for the others. So whether
  an op wrote never needs guessing, and no op is ever run twice here;
- an op that failed on a deadlock or serialization race is reported as such (`Outcome.retry`): its
  savepoint rollback left nothing behind, so the caller may run it again after the batch commits;
- an error that leaves the transaction unusable (the connection is lost, a savepoint cannot be
  rolled back) propagates: the caller fails or retries the whole batch, which never committed;
- an op wrapped by `in_callers_context` runs in its caller's contextvars (its language), whichever
  thread or task runs it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from core.storage.engines import is_connection_error, is_retryable

if TYPE_CHECKING:
    from core.storage.driver import Sql

T = TypeVar("T")
Op = Callable[[Any], Awaitable[T]]


class OpSession:
    """The AsyncSession surface an op sees, over a sync Session: each coroutine finishes at once."""

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    async def execute(self, statement: Any, *args: Any, **kw: Any) -> Any:
        return self.session.execute(statement, *args, **_buffered(kw))

    async def scalar(self, statement: Any, *args: Any, **kw: Any) -> Any:
        return self.session.scalar(statement, *args, **kw)

    async def scalars(self, statement: Any, *args: Any, **kw: Any) -> Any:
        return self.session.scalars(statement, *args, **_buffered(kw))

    async def get(self, *args: Any, **kw: Any) -> Any:
        return self.session.get(*args, **kw)

    async def flush(self, *args: Any, **kw: Any) -> None:
        self.session.flush(*args, **kw)

    def add(self, instance: Any) -> None:
        self.session.add(instance)

    def get_bind(self, *args: Any, **kw: Any) -> Any:
        return self.session.get_bind(*args, **kw)


def _buffered(kw: dict[str, Any]) -> dict[str, Any]:
    """Entity rows loaded up front, as AsyncSession loads them (the same execution option it sets):
    an op may hand its result to its caller, who reads it after the session is gone."""
    options = {**kw.get("execution_options", {}), "prebuffer_rows": True}
    return {**kw, "execution_options": options}


class RunAlone(Exception):
    """The op cannot run inside this batch (nothing of it was kept): run it alone once the batch committed."""


@dataclass(slots=True)
class Outcome:
    """One op's part of a batch: its result, or its error (nothing of it kept)."""

    result: Any = None
    error: BaseException | None = None

    @property
    def retry(self) -> bool:
        """Failed on a deadlock or serialization race, or could not run in the batch (`RunAlone`): worth
        running again, alone, once the batch has committed."""
        return self.error is not None and (isinstance(self.error, RunAlone) or is_retryable(self.error))


def drive(coro: Any) -> Any:
    """Run a coroutine that never suspends to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a database op awaited something other than its database session")


def _session(connection: Connection) -> Session:
    # Joins the connection's transaction: the session never commits it ("rollback_only"), and the
    # caller's `engine.begin()` block commits or rolls back.
    return Session(bind=connection, expire_on_commit=False, autoflush=True, join_transaction_mode="rollback_only")


def run_alone(connection: Connection, op: Op[T]) -> T:
    """One op in the connection's transaction; its error propagates (the caller rolls back)."""
    with _session(connection) as session:
        result = drive(op(OpSession(session)))
        session.flush()  # what the op added but never flushed
        return result  # type: ignore[no-any-return]


def run_batch(connection: Connection, ops: list[Op[Any]]) -> list[Outcome]:
    """The ops one after another in the connection's transaction, each in a savepoint of its own.

    Raises only when the transaction itself is lost (see the module's promises); each op's own
    error is in its Outcome.
    """
    outcomes: list[Outcome] = []
    with _session(connection) as session:
        facade = OpSession(session)
        for op in ops:
            savepoint = session.begin_nested()
            try:
                result = drive(op(facade))
                session.flush()  # what the op added is written inside its own savepoint
            except Exception as exc:
                if is_connection_error(exc):
                    raise
                # Also after a failed flush, which deactivated the savepoint: this closes it, and
                # the session goes on in the outer transaction.
                savepoint.rollback()
                outcomes.append(Outcome(error=exc))
            else:
                savepoint.commit()
                outcomes.append(Outcome(result=result))
            # Ops return plain values; a session that kept every object of the batch would make
            # each autoflush walk all of them (quadratic in the batch size).
            session.expunge_all()
    return outcomes


# -- ops of hand-written SQL (core/storage/driver.py) on SQLite's writer connection -----------------


def _sql_for(connection: Connection) -> Any:
    from core.storage.driver import SqliteSql

    return SqliteSql(connection.connection.driver_connection, lambda: OpSession(_session(connection)))


def run_sql_alone(connection: Connection, op: Any) -> Any:
    """One SQL op in the connection's transaction; its error propagates (the caller rolls back)."""
    q = _sql_for(connection)
    result = drive(op(q))
    q.finish()
    return result


def run_sql_batch(connection: Connection, ops: list[Any]) -> list[Outcome]:
    """SQL ops one after another in the connection's transaction, each in a savepoint of its own sent
    straight to sqlite3 (the same promises as `run_batch`, without a session per op)."""
    outcomes: list[Outcome] = []
    driver = connection.connection.driver_connection
    for op in ops:
        q = _sql_for(connection)
        driver.execute("SAVEPOINT nubi_op")
        try:
            result = drive(op(q))
            q.finish()
        except Exception as exc:
            if is_connection_error(exc):
                raise
            q.discard()
            driver.execute("ROLLBACK TO nubi_op")  # nothing of this op kept
            driver.execute("RELEASE nubi_op")
            outcomes.append(Outcome(error=exc))
        else:
            driver.execute("RELEASE nubi_op")
            outcomes.append(Outcome(result=result))
    return outcomes


# -- an op in its caller's context, wherever it runs ----------------------------------------------


def in_callers_context(op: Op[T]) -> Op[T]:
    """The op as it runs in the caller's context (its contextvars: the community's language, which
    the errors it raises are worded in), wherever it runs: a reader or writer thread (run_in_executor
    does not carry the context over), or the group-commit writer task, which serves many callers."""
    context = contextvars.copy_context()

    async def bound(session: Any) -> T:
        return context.run(drive, op(session))  # type: ignore[no-any-return]

    return bound


def sql_in_callers_context(op: Callable[[Sql], Awaitable[T]], *, threaded: bool) -> Callable[[Sql], Awaitable[T]]:
    """`in_callers_context` for a `write_sql` op: on SQLite's threads its statements never suspend, so
    it is driven inside the caller's context; on PostgreSQL's writer task it runs as a task of its own
    in the caller's context (asyncio.create_task(context=...)), awaited by the writer."""
    context = contextvars.copy_context()
    if threaded:
        async def driven(q: Sql) -> T:
            return context.run(drive, op(q))  # type: ignore[no-any-return]

        return driven

    async def awaited(q: Sql) -> T:
        return await asyncio.create_task(op(q), context=context)  # type: ignore[arg-type]

    return awaited
