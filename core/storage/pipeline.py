"""PostgreSQL group commit of SQL ops, pipelined: the ops of a batch run side by side in one transaction,
and each statement text that several of them wait on goes to the server once for all of them.

Run back to back, a batch paid a round trip per statement per op on one connection: slower than the
same commands each in a transaction of its own on a pool of connections. Pipelined, a batch of 64 joins
and claims pays a few times the round trips of one of them, and one commit (bench/README.md).

How: every op of the batch runs as a task with a `PipeSql` of its own. A statement an op sends is
queued, and the op waits for its answer. When every op still running waits on one, the batch sends
them, grouped by SQL text in the order they first came: a text one op waits on goes as it is
(`fetch`, `execute`); a text several wait on goes once through asyncpg's pipelined `executemany` (no
rows wanted) or `fetchmany`, wrapped so each row carries the index of the op it belongs to
(`WITH q AS (<text>) SELECT $n, q.* FROM q`; a text that is a WITH itself goes once per op). Each op
gets its own rows back, then runs on to its next statement. An op's statements run in its own order; what ops of a batch see of each other's
writes is what commands in concurrent transactions could see, and no more than that is promised.

What it promises (db.py's contract for a batch):
- one transaction: every op's writes are committed together, or none of them;
- an op that fails before it sent a statement other than a SELECT fails alone (`Outcome.error`), the
  batch goes on;
- an op that cannot run side by side with others runs again alone once the batch committed: one that
  asks for a SQLAlchemy session (`session()`, whose statements cannot join the pipeline) or locks rows
  to keep the others of its kind out (`SELECT ... FOR UPDATE`: in one shared transaction the lock keeps
  nothing out). If it had written already, the batch is rolled back as below;
- an op that fails after it may have written stops the batch once every other op has finished:
  `Rerun(indices)` says which ops to run again alone; nothing of the batch is kept;
- a failing statement aborts the transaction: the ops that sent it are run again alone (`Rerun`), the
  others go back to the queue, nothing is kept; a lost connection is raised as it is.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.storage.driver import PgSql, Sql
from core.storage.engines import is_connection_error
from core.storage.executor import Outcome, RunAlone
from core.storage.group_commit import Rerun

Op = Callable[[Any], Awaitable[Any]]

_TAGGED: dict[tuple[str, int], str] = {}
_LOCKING: dict[str, bool] = {}
_ROW_LOCK = re.compile(r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b", re.IGNORECASE)


def locks_rows(sql: str) -> bool:
    """Whether a SELECT takes row locks (FOR UPDATE, FOR SHARE and their kin)."""
    found = _LOCKING.get(sql)
    if found is None:
        found = _LOCKING[sql] = _ROW_LOCK.search(sql) is not None
    return found


def tagged(sql: str, params: int) -> str:
    """`sql` returning, before its own columns, parameter `params + 1` (the op's index in a group)."""
    key = (sql, params)
    found = _TAGGED.get(key)
    if found is None:
        found = _TAGGED[key] = f"WITH q AS ({sql}) SELECT ${params + 1}::int4, q.* FROM q"
    return found


class PipeSql(PgSql):
    """An op's connection in a pipelined batch: each statement waits for the batch to send it."""

    __slots__ = ("_pipe", "_index")

    def __init__(self, pipe: Pipe, index: int, async_connection: Any) -> None:
        super().__init__(None, async_connection)
        self._pipe = pipe
        self._index = index

    async def row(self, sql: str, *args: Any) -> Sequence[Any] | None:
        if not sql.startswith("SELECT"):
            self.wrote = True
        elif locks_rows(sql):
            raise RunAlone("a row lock keeps out nothing in a shared transaction")
        found = await self._pipe.ask(self._index, sql, args, True)
        return found[0] if found else None

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        if not sql.startswith("SELECT"):
            self.wrote = True
        elif locks_rows(sql):
            raise RunAlone("a row lock keeps out nothing in a shared transaction")
        return await self._pipe.ask(self._index, sql, args, True)  # type: ignore[no-any-return]

    async def run(self, sql: str, *args: Any) -> None:
        self.wrote = True
        await self._pipe.ask(self._index, sql, args, False)

    value = Sql.value  # through `row`, as every statement here goes (PgSql's own is asyncpg's fetchval)

    def session(self) -> Any:
        raise RunAlone("a session's statements cannot join the pipeline")

    async def close(self) -> None:
        return None


class _Ask:
    __slots__ = ("index", "sql", "args", "rows", "future")

    def __init__(self, index: int, sql: str, args: tuple[Any, ...], rows: bool, future: asyncio.Future[Any]) -> None:
        self.index = index
        self.sql = sql
        self.args = args
        self.rows = rows
        self.future = future


class Pipe:
    """One pipelined batch on one asyncpg connection, inside a transaction the caller opened."""

    def __init__(self, driver: Any, async_connection: Any) -> None:
        self.driver = driver
        self.async_connection = async_connection
        self.asks: list[_Ask] = []
        self.running = 0  # ops not finished yet
        self.all_waiting = asyncio.Event()

    def ask(self, index: int, sql: str, args: tuple[Any, ...], rows: bool) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.asks.append(_Ask(index, sql, args, rows, future))
        self._check()
        return future

    def _check(self) -> None:
        if len(self.asks) == self.running:
            self.all_waiting.set()

    async def run(self, ops: Sequence[Op]) -> list[Outcome]:
        outcomes: list[Outcome] = [Outcome() for _ in ops]
        again: list[int] = []
        self.running = len(ops)

        async def one(index: int, op: Op) -> None:
            q = PipeSql(self, index, self.async_connection)
            try:
                outcomes[index] = Outcome(result=await op(q))
            except Exception as exc:  # RunAlone too: its Outcome runs it again alone after the commit
                if q.wrote:
                    again.append(index)
                else:
                    outcomes[index] = Outcome(error=exc)
            finally:
                self.running -= 1
                self._check()

        tasks = [asyncio.ensure_future(one(i, op)) for i, op in enumerate(ops)]
        try:
            while self.running:
                await self.all_waiting.wait()
                self.all_waiting.clear()
                asks, self.asks = self.asks, []
                if asks:
                    await self._send(asks, again)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if again:
            raise Rerun(sorted(again))
        return outcomes

    async def _send(self, asks: list[_Ask], again: list[int]) -> None:
        """Send what the ops wait on; a failing statement stops the batch with `Rerun` of the ops that
        sent it and of those that already failed after writing."""
        groups: dict[tuple[str, bool], list[_Ask]] = {}
        for ask in asks:
            groups.setdefault((ask.sql, ask.rows), []).append(ask)
        driver = self.driver
        for (sql, _rows), group in groups.items():
            try:
                await _send_group(driver, sql, group)
            except Exception as exc:
                if is_connection_error(exc) or driver.is_closed():
                    raise
                raise Rerun(sorted({*again, *(ask.index for ask in group)})) from exc


async def _send_group(driver: Any, sql: str, group: list[_Ask]) -> None:
    if len(group) == 1 or (group[0].rows and sql.lstrip()[:4].upper() == "WITH"):
        # One op, or a text that cannot be wrapped (PostgreSQL allows a data-modifying WITH only at the
        # top level): one round trip each.
        for ask in group:
            if ask.rows:
                ask.future.set_result(await driver.fetch(sql, *ask.args))
            else:
                await driver.execute(sql, *ask.args)
                ask.future.set_result(None)
    elif not group[0].rows:
        await driver.executemany(sql, [ask.args for ask in group])
        for ask in group:
            ask.future.set_result(None)
    else:
        params = len(group[0].args)
        found: list[list[Any]] = [[] for _ in group]
        for row in await driver.fetchmany(tagged(sql, params), [(*ask.args, i) for i, ask in enumerate(group)]):
            found[row[0]].append(tuple(row)[1:])
        for ask, own in zip(group, found, strict=True):
            ask.future.set_result(own)
