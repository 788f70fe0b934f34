"""The hot statements on PostgreSQL, run straight on the asyncpg connection.

SQLAlchemy's execution path (execution context, cursor adapter, result metadata, events) costs
more Python time per statement than asyncpg's own round trip: on a 2-core machine shared with
PostgreSQL it was a third of a claim's CPU. Statements marked with `prebuilt` (the prebuilt Core
statements of the join, claim, session and message paths) are compiled once per parameter shape by
SQLAlchemy's PostgreSQL dialect, and then executed through the connection SQLAlchemy checked out: in
its transaction (started the way SQLAlchemy starts it), with its prepared-statement cache, its type
codecs and bind/result processors, its exception translation (so callers see the same
`sqlalchemy.exc` errors and a lost connection is invalidated the same way). Anything else (ORM
work, statements built per call) goes through SQLAlchemy as before.

`pipeline` runs one such statement for all the ops of a group-commit batch waiting on it, in one
round trip (core/storage/db.py, `_pipelined`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Integer, bindparam
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.util import await_

_MARKED: dict[int, Any] = {}  # id -> statement (kept alive, so the id is never reused)
_PLANS: dict[tuple[int, tuple[str, ...], bool], _Plan | None] = {}
_TAG = "nubi_tag"
_ROWCOUNT = re.compile(r"(?:SELECT|UPDATE|DELETE|INSERT \d+) (\d+)")
executed = 0  # statements run by this path; the burst benchmark counts them


def prebuilt(statement: Any) -> Any:
    """Mark a statement built once at import as one this path may run; returns it."""
    _MARKED[id(statement)] = statement
    return statement


class _Result(IteratorResult):  # type: ignore[type-arg]
    """SQLAlchemy's own Result API (first, one, scalar, scalars, mappings, rows by name), plus rowcount."""

    rowcount: int = -1


class _Plan:
    __slots__ = ("sql", "args", "keys", "processors", "returns_rows", "is_select", "locks", "tagged")

    def __init__(self, compiled: Any, params: Sequence[str], dialect: Any, *, tagged: _Plan | None = None) -> None:
        self.sql: str = compiled.string
        self.is_select = bool(getattr(compiled.statement, "is_select", False))
        # SELECT ... FOR UPDATE: the ops of one batch share a transaction, so the row lock would not
        # keep them apart; the pipeline does (see core/storage/db.py, _pipelined).
        self.locks = getattr(compiled.statement, "_for_update_arg", None) is not None
        # The same statement with one more output column, the position of its arguments in a
        # pipeline (see `pipeline`); None if it cannot take one.
        self.tagged = tagged
        processors = compiled._bind_processors
        given = set(params)
        # Per position: (parameter name, None) or (None, constant) for a value built into the statement.
        self.args: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            proc = processors.get(name)
            if name in given:
                self.args.append((name, None, proc))
            else:
                bind = compiled.binds[name]
                if bind.required or bind.callable is not None:
                    raise KeyError(f"statement needs parameter {name!r}")
                value = bind.value
                self.args.append((None, proc(value) if proc and value is not None else value, None))
        columns = compiled._result_columns
        self.returns_rows = bool(columns)
        self.keys = [rc.keyname for rc in columns]
        result_procs = [rc.type._cached_result_processor(dialect, None) for rc in columns]
        self.processors = result_procs if any(result_procs) else None

    def bind(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for name, constant, proc in self.args:
            if name is None:
                out.append(constant)
            else:
                value = params[name]
                out.append(proc(value) if proc is not None and value is not None else value)
        return out


def plan(statement: Any, params: Any, dialect: Any) -> _Plan | None:
    """The compiled plan for a marked statement with these parameters, or None (use SQLAlchemy)."""
    if id(statement) not in _MARKED:
        return None
    many = isinstance(params, list)
    shape = params[0] if many else params
    if not isinstance(shape, dict):
        return None
    key = (id(statement), tuple(shape), many)
    try:
        return _PLANS[key]
    except KeyError:
        pass
    compiled = statement.compile(dialect=dialect, column_keys=list(shape), for_executemany=many)
    found: _Plan | None = None
    if _plain_positional(compiled):
        found = _Plan(compiled, list(shape), dialect, tagged=_tagged(statement, list(shape), dialect))
        if many and found.returns_rows:
            found = None  # executemany with RETURNING takes SQLAlchemy's insertmanyvalues path
    _PLANS[key] = found
    return found


def _plain_positional(compiled: Any) -> bool:
    return not (compiled.literal_execute_params or compiled.post_compile_params) and compiled.positiontup is not None


def _tagged(statement: Any, params: list[str], dialect: Any) -> _Plan | None:
    """The statement returning one more column, a bound tag: a SELECT adds it to its columns, an
    INSERT/UPDATE/DELETE to its RETURNING (one row per row it changed, so the tags also count them)."""
    tag = bindparam(_TAG, type_=Integer).label(_TAG)
    try:
        if getattr(statement, "is_select", False):
            variant = statement.add_columns(tag)
        elif getattr(statement, "is_dml", False):
            variant = statement.returning(tag)
        else:
            return None
        compiled = variant.compile(dialect=dialect, column_keys=[*params, _TAG])
    except Exception:  # a form that cannot take the column (a UNION, say): no pipeline for it
        return None
    if not _plain_positional(compiled) or compiled._result_columns[-1].keyname != _TAG:
        return None
    return _Plan(compiled, [*params, _TAG], dialect)


def run(conn: Connection, found: _Plan, params: Any) -> _Result:
    """Execute inside the op's greenlet (AsyncConnection.run_sync), on the connection's own asyncpg link."""
    try:
        return await_(run_async(conn.connection.dbapi_connection, conn.dialect, found, params))
    except Exception as error:
        # As SQLAlchemy would: wrapped in sqlalchemy.exc, a lost connection invalidated.
        conn._handle_dbapi_exception(error, found.sql, params, None, None)
        raise


async def pipeline(adapted: Any, dialect: Any, found: _Plan, requests: list[Any]) -> list[_Result]:
    """Run one statement for many callers in one round trip, each caller's rows apart.

    `requests` holds each caller's parameters (a dict, or a list of dicts for an executemany). The
    statement runs once per parameter set, in order, in the current transaction (asyncpg pipelines
    the executions: one network round trip), and the tag column tells whose each returned row is.
    Raises the driver's error as the DBAPI error; the transaction is then aborted.
    """
    global executed
    tagged = found.tagged
    assert tagged is not None
    args: list[list[Any]] = []
    owner: list[int] = []
    for index, params in enumerate(requests):
        for one in params if isinstance(params, list) else (params,):
            args.append(tagged.bind({**one, _TAG: len(owner)}))
            owner.append(index)
    try:
        if adapted._transaction is None and not adapted.autocommit:
            await adapted._start_transaction()
        prepared, _ = await adapted._prepare(tagged.sql, dialect._invalidate_schema_cache_asof)
        records = await prepared.fetchmany(args)
    except Exception as error:
        adapted._handle_exception(error)  # raises the DBAPI error
        raise
    executed += len(args)
    rows: list[list[Any]] = [[] for _ in requests]
    for record in records:
        rows[owner[record[-1]]].append(record[:-1])
    keys = tagged.keys[:-1]
    processors = tagged.processors[:-1] if tagged.processors else None
    returns_rows = found.is_select or bool(keys)
    results = []
    for mine in rows:
        result = _Result(SimpleResultMetaData(keys, _processors=processors), iter(mine) if returns_rows else iter(()))
        result.rowcount = len(mine)
        results.append(result)
    return results


async def run_async(adapted: Any, dialect: Any, found: _Plan, params: Any) -> _Result:
    """One statement for one caller, from async code (`run` calls it from the op's greenlet).
    Raises the driver's error as the DBAPI error."""
    global executed
    many = isinstance(params, list)
    args: Any = [found.bind(p) for p in params] if many else found.bind(params)
    rows: list[Any] = []
    rowcount = -1
    try:
        if adapted._transaction is None and not adapted.autocommit:
            await adapted._start_transaction()
        prepared, _ = await adapted._prepare(found.sql, dialect._invalidate_schema_cache_asof)
        if many:
            await prepared.executemany(args)
        else:
            rows = await prepared.fetch(*args)
            match = _ROWCOUNT.match(prepared.get_statusmsg() or "")
            rowcount = int(match.group(1)) if match else -1
    except Exception as error:
        adapted._handle_exception(error)
        raise
    executed += 1
    meta = SimpleResultMetaData(found.keys, _processors=found.processors)
    result = _Result(meta, iter(rows) if found.returns_rows else iter(()))
    result.rowcount = rowcount
    return result
