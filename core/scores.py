"""Running scores per community and window: every point change goes through `credit`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.models import MemberScore, MemberScoreSlice
from core.storage.pgfast import prebuilt
from core.windows import WINDOWS, window_start

_SCORES = MemberScore.__table__


def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_SCORES)
    return stmt.on_conflict_do_update(
        index_elements=["community_id", "window", "window_start", "member_id"],
        set_={"points": _SCORES.c.points + stmt.excluded.points, "last_scored_at": stmt.excluded.last_scored_at},
    )


# Built once, on the table: one parameterized Core statement per dialect stays in SQLAlchemy's
# compiled cache and runs as one executemany (on the entity it took the ORM's slower bulk path).
_UPSERTS = {"sqlite": _upsert(sqlite), "postgresql": prebuilt(_upsert(postgresql))}

_SLICES = MemberScoreSlice.__table__
SLICE_MINUTES = 15  # every time zone's midnight falls on a quarter hour


def _slice_upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_SLICES)
    return stmt.on_conflict_do_update(
        index_elements=["community_id", "slice_start", "member_id"],
        set_={"points": _SLICES.c.points + stmt.excluded.points, "last_scored_at": stmt.excluded.last_scored_at},
    )


_SLICE_UPSERTS = {"sqlite": _slice_upsert(sqlite), "postgresql": prebuilt(_slice_upsert(postgresql))}


def slice_start(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % SLICE_MINUTES, second=0, microsecond=0)


async def credit(s: AsyncSession, community_id: int, member_id: int, points: int, at: datetime) -> None:
    """Add `points` (may be negative) to the member's day, week, month and all-time scores of `at`."""
    if points == 0:
        return
    rows = [
        {
            "community_id": community_id,
            "window": w,
            "window_start": window_start(w, at),
            "member_id": member_id,
            "points": points,
            "last_scored_at": at,
        }
        for w in WINDOWS
    ]
    dialect = s.get_bind().dialect.name
    await s.execute(_UPSERTS[dialect], rows)
    await s.execute(_SLICE_UPSERTS[dialect], {
        "community_id": community_id, "slice_start": slice_start(at), "member_id": member_id, "points": points,
        "last_scored_at": at,
    })
