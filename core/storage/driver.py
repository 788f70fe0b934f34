"""Hand-written SQL on the driver connection of a write's transaction, for the hottest commands.

A command run through SQLAlchemy's statement machinery spent about ten times the driver's own time
per statement (bench/README.md); join and claim run a dozen statements each. `Database.write_sql(op)`
hands `op` a `Sql`: a few methods that send one statement to the driver (`sqlite3` or asyncpg) on
the connection of the transaction the op runs in, reached through documented APIs only
(`Connection.connection.driver_connection`, `AsyncConnection.get_raw_connection()`), plus
`session()` for the rare statement that is easier through SQLAlchemy, in the same transaction.

What it promises:
- one SQL text for both databases, with asyncpg's `$1, $2 ...` placeholders (SQLite reads them as
  `?1, ?2 ...`); values go in as the column types store them: `ts()` for a UTC datetime (SQLite keeps
  SQLAlchemy's text form, so both stacks read each other's rows), `json()` for a JSON value, plain
  Python bools and ints otherwise; rows come back as tuples, `when()` and `doc()` read a timestamp or a
  JSON value back the same on both;
- the same transaction semantics as `Database.write`: an op is atomic (on SQLite it runs in the
  group commit's savepoint like any op; on PostgreSQL in an asyncpg transaction of its own), and its
  caller is answered after the commit;
- a statement's text is prepared once per connection (sqlite3's statement cache; asyncpg's).
"""

from __future__ import annotations

import json as _json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

_SQLITE_TEXT: dict[str, str] = {}
_PLACEHOLDER = re.compile(r"\$(\d+)")
# How SQLAlchemy's SQLite DATETIME stores a value (core/storage/types.py hands it UTC, naive).
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"


def sqlite_text(sql: str) -> str:
    """`$n` placeholders as SQLite's `?n` (numbered, so a value may be used twice)."""
    out = _SQLITE_TEXT.get(sql)
    if out is None:
        out = _SQLITE_TEXT[sql] = _PLACEHOLDER.sub(r"?\1", sql)
    return out


class Sql:
    """One transaction's driver connection. Subclasses: `SqliteSql`, `PgSql`."""

    dialect: str = ""

    @staticmethod
    def json(value: Any) -> str:
        return _json.dumps(value, separators=(",", ":"))

    @staticmethod
    def doc(value: Any) -> Any:
        """A JSON column's value as Python (asyncpg under SQLAlchemy decodes it; SQLite gives text)."""
        return _json.loads(value) if isinstance(value, str | bytes) else value

    def ts(self, value: datetime | None) -> Any:
        raise NotImplementedError

    def when(self, value: Any) -> datetime | None:
        raise NotImplementedError

    async def row(self, sql: str, *args: Any) -> Sequence[Any] | None:
        raise NotImplementedError

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def run(self, sql: str, *args: Any) -> None:
        raise NotImplementedError

    async def value(self, sql: str, *args: Any) -> Any:
        found = await self.row(sql, *args)
        return None if found is None else found[0]

    def session(self) -> Any:
        """An AsyncSession-like session in this same transaction, for statements built with SQLAlchemy
        (made on first use)."""
        raise NotImplementedError


class SqliteSql(Sql):
    """sqlite3 in the writer's transaction (on the loop's thread or the writer thread): each coroutine
    completes at once (the executor drives it).

    `session()` is made on first use by `make_session`, on the same connection and transaction."""

    dialect = "sqlite"
    __slots__ = ("_conn", "_make_session", "_session")

    def __init__(self, driver_connection: Any, make_session: Any) -> None:
        self._conn = driver_connection
        self._make_session = make_session
        self._session: Any = None

    def ts(self, value: datetime | None) -> Any:
        # _SQLITE_TS's text; isoformat writes it several times faster than strftime
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def when(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    async def row(self, sql: str, *args: Any) -> Sequence[Any] | None:
        return self._conn.execute(sqlite_text(sql), args).fetchone()  # type: ignore[no-any-return]

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return self._conn.execute(sqlite_text(sql), args).fetchall()  # type: ignore[no-any-return]

    async def run(self, sql: str, *args: Any) -> None:
        self._conn.execute(sqlite_text(sql), args)

    def session(self) -> Any:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def finish(self) -> None:
        """Write what the op's session holds, and let the session go."""
        if self._session is not None:
            self._session.session.flush()
            self._session.session.close()

    def discard(self) -> None:
        if self._session is not None:
            self._session.session.close()


class PgSql(Sql):
    """asyncpg inside the transaction `Database.write_sql` opened on it.

    `wrote` says whether the op may have changed anything in the transaction: it sent a statement
    other than a SELECT, a statement failed (PostgreSQL then refuses the rest of the transaction), or
    it used the session. An op that fails with `wrote` false left the transaction as it found it."""

    dialect = "postgresql"
    __slots__ = ("_conn", "_async_conn", "_session", "wrote")

    def __init__(self, driver_connection: Any, async_connection: Any) -> None:
        self._conn = driver_connection
        self._async_conn = async_connection
        self._session: Any = None
        self.wrote = False

    def ts(self, value: datetime | None) -> Any:
        return value

    def when(self, value: Any) -> datetime | None:
        return value if value is None else value.astimezone(UTC)

    async def row(self, sql: str, *args: Any) -> Sequence[Any] | None:
        if not sql.startswith("SELECT"):
            self.wrote = True
        try:
            return await self._conn.fetchrow(sql, *args)  # type: ignore[no-any-return]
        except BaseException:
            self.wrote = True
            raise

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        if not sql.startswith("SELECT"):
            self.wrote = True
        try:
            return list(await self._conn.fetch(sql, *args))
        except BaseException:
            self.wrote = True
            raise

    async def run(self, sql: str, *args: Any) -> None:
        self.wrote = True
        await self._conn.execute(sql, *args)

    async def value(self, sql: str, *args: Any) -> Any:
        if not sql.startswith("SELECT"):
            self.wrote = True
        try:
            return await self._conn.fetchval(sql, *args)
        except BaseException:
            self.wrote = True
            raise

    def session(self) -> Any:
        self.wrote = True  # what it does is not tracked
        if self._session is None:
            from sqlalchemy.ext.asyncio import AsyncSession

            # The connection is in AUTOCOMMIT as far as SQLAlchemy knows, so it emits no BEGIN or
            # COMMIT of its own: its statements run inside the asyncpg transaction around the op.
            self._session = AsyncSession(bind=self._async_conn, expire_on_commit=False, autoflush=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.flush()
            await self._session.close()


_TEXTS: dict[str, Any] = {}


class SessionSql(Sql):
    """The same SQL through an op's SQLAlchemy session (`text()`), for code that already holds one:
    the slower path, for rare commands (a moderator's review, an adjustment) sharing the hot path's code."""

    __slots__ = ("_s",)

    def __init__(self, session: Any) -> None:
        self._s = session
        self.dialect = session.get_bind().dialect.name

    def ts(self, value: datetime | None) -> Any:
        if value is None or self.dialect != "sqlite":
            return value
        return value.astimezone(UTC).strftime(_SQLITE_TS)

    def when(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @staticmethod
    def _text(sql: str) -> Any:
        found = _TEXTS.get(sql)
        if found is None:
            from sqlalchemy import text

            found = _TEXTS[sql] = text(_PLACEHOLDER.sub(r":p\1", sql))
        return found

    async def row(self, sql: str, *args: Any) -> Sequence[Any] | None:
        return (await self._s.execute(self._text(sql), {f"p{i}": a for i, a in enumerate(args, 1)})).first()  # type: ignore[no-any-return]

    async def rows(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list((await self._s.execute(self._text(sql), {f"p{i}": a for i, a in enumerate(args, 1)})).all())

    async def run(self, sql: str, *args: Any) -> None:
        await self._s.execute(self._text(sql), {f"p{i}": a for i, a in enumerate(args, 1)})

    def session(self) -> Any:
        return self._s
