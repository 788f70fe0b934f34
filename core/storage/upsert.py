"""Dialect-matched INSERT ... ON CONFLICT, whose API is the same on SQLite and PostgreSQL, and a
plain INSERT of a new mapped object without the unit of work."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert as sa_insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


_PLANS: dict[type, tuple[Any, list[tuple[str, str]]]] = {}


async def add_now(session: AsyncSession, obj: Any) -> None:
    """INSERT a new mapped object at once, as one Core statement built once per class.

    For hot paths: the unit of work (identity map, dirty tracking, flush ordering) costs more than
    the INSERT itself. The object stays transient (later changes to it are not saved); attributes
    left unset get their column defaults.
    """
    plan = _PLANS.get(type(obj))
    if plan is None:
        mapper = sa_inspect(type(obj))
        pairs = [(prop.key, prop.columns[0].key) for prop in mapper.column_attrs]
        plan = _PLANS[type(obj)] = (sa_insert(mapper.local_table), pairs)
    stmt, pairs = plan
    state = obj.__dict__
    await session.execute(stmt, {column: state[attr] for attr, column in pairs if attr in state})
