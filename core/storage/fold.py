"""Folding one owner's rows into another's, in the caller's transaction: a Discord channel community into
its server (core/communities.py), a member into the one they linked (core/member_links/merge.py).

`fold(s, Model, "member_id", src, dst, ...)` copies every row of `src` to `dst` with one
INSERT ... SELECT, and where `dst` already has a row with the same key (`key`, the table's unique
columns) combines the two as `combine` says, column by column: SUM adds (scores), EITHER is true if
either is (moderator, excluded), LATER keeps the later time; with no `combine` the row `dst` has wins
(bans, badges). Then `src`'s rows are deleted. A surrogate `id` column is left to the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import case, delete, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.upsert import insert

SUM, EITHER, LATER = "sum", "either", "later"


def later(a: Any, b: Any) -> Any:
    """The later of two timestamps, in SQL both databases read (no GREATEST on SQLite)."""
    return case((a > b, a), else_=b)


async def fold(
    s: AsyncSession, model: Any, owner: str, src: int, dst: int, *, key: Sequence[str],
    combine: Mapping[str, str] | None = None,
) -> None:
    table = model.__table__
    columns = [c.name for c in table.columns if c.name != "id"]
    rows = select(*[literal(dst).label(owner) if c == owner else table.c[c] for c in columns]).where(
        table.c[owner] == src)
    stmt = insert(s, model).from_select(columns, rows)
    if combine:
        excluded = stmt.excluded
        rules = {SUM: lambda old, new: old + new, EITHER: lambda old, new: old | new,
                 LATER: lambda old, new: later(new, old)}
        stmt = stmt.on_conflict_do_update(index_elements=list(key), set_={
            c: rules[how](table.c[c], excluded[c]) for c, how in combine.items()})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    await s.execute(stmt)
    await s.execute(delete(model).where(table.c[owner] == src))


SCORES = {"points": SUM, "last_scored_at": LATER}
MEMBERSHIP = {"is_moderator": EITHER, "excluded": EITHER, "last_seen_at": LATER}
