"""The points ledger: every change of a member's points is one row, and every board derives from it.

Join and speed bonuses, claims, completion bonuses, manual adjustments and revokes all go through
`record`, which writes the ledger rows and, in the same transaction, the cached running scores that
boards read (`member_scores`, one row per community, UTC window and member; `member_score_slices`,
quarter-hour sums a board in another time zone adds up). A board therefore
always equals the ledger's sums, while a board read stays an index scan.

Nothing here is ever updated or deleted. Taking points back (`reverse`) adds rows that each reverse
one earlier row, at that row's effective time: a claim made Sunday 23:50 and accepted Monday 00:10
is credited to Monday's day, week and month, and revoking it on Wednesday takes the points back from
exactly those windows.

A gain that takes a member's all-time points past one of the community's milestones earns the badge
in the same transaction (core/badges.py); badges are never taken back here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core import badges
from core.storage.ledger_models import PointsEntry
from core.storage.models import MemberScore, MemberScoreSlice
from core.windows import WINDOWS, window_start

L = PointsEntry.__table__
_SCORES = MemberScore.__table__
_SLICES = MemberScoreSlice.__table__
SLICE_MINUTES = 15  # every time zone's midnight falls on a quarter hour: a schedule's windows are slice sums


@dataclass(frozen=True)
class Entry:
    """One change of points, before it is written."""

    community_id: int
    member_id: int
    points: int
    kind: str
    effective_at: datetime
    raid_id: int | None = None
    claim_id: int | None = None
    reverses_id: int | None = None
    actor_id: int | None = None
    reason: str | None = None


_INSERT = insert(L).values(
    community_id=bindparam("b_community_id"), member_id=bindparam("b_member_id"), raid_id=bindparam("b_raid_id"),
    claim_id=bindparam("b_claim_id"), kind=bindparam("b_kind"), points=bindparam("b_points"),
    effective_at=bindparam("b_effective_at"), recorded_at=bindparam("b_recorded_at"),
    reverses_id=bindparam("b_reverses_id"), actor_member_id=bindparam("b_actor_id"), reason=bindparam("b_reason"),
)


def _upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_SCORES)
    return stmt.on_conflict_do_update(
        index_elements=["community_id", "window", "window_start", "member_id"],
        set_={"points": _SCORES.c.points + stmt.excluded.points, "last_scored_at": stmt.excluded.last_scored_at},
    )


# Built once, on the table: one parameterized statement per dialect stays in SQLAlchemy's compiled
# cache and runs as one executemany.
_UPSERTS = {"sqlite": _upsert(sqlite), "postgresql": _upsert(postgresql)}


def _slice_upsert(dialect: Any) -> Any:
    stmt = dialect.insert(_SLICES)
    return stmt.on_conflict_do_update(
        index_elements=["community_id", "slice_start", "member_id"],
        set_={"points": _SLICES.c.points + stmt.excluded.points, "last_scored_at": stmt.excluded.last_scored_at},
    )


_SLICE_UPSERTS = {"sqlite": _slice_upsert(sqlite), "postgresql": _slice_upsert(postgresql)}


def slice_start(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % SLICE_MINUTES, second=0, microsecond=0)


async def record(s: AsyncSession, entries: Iterable[Entry], *, now: datetime) -> int:
    """Write `entries` (zero-point ones are dropped) and the scores they change. Returns their sum."""
    rows = [e for e in entries if e.points]
    if not rows:
        return 0
    await s.execute(_INSERT, [
        {"b_community_id": e.community_id, "b_member_id": e.member_id, "b_raid_id": e.raid_id,
         "b_claim_id": e.claim_id, "b_kind": e.kind, "b_points": e.points, "b_effective_at": e.effective_at,
         "b_recorded_at": now, "b_reverses_id": e.reverses_id, "b_actor_id": e.actor_id, "b_reason": e.reason}
        for e in rows
    ])
    await _score(s, rows)
    await badges.award(s, rows, now)  # milestones crossed: recorded and announced in this same transaction
    return sum(e.points for e in rows)


async def _score(s: AsyncSession, entries: Sequence[Entry]) -> None:
    """Add the entries to the member's day, week, month and all-time scores of their effective times.

    Summed per score row first: one upsert may not touch the same row twice."""
    scores: dict[tuple[int, str, datetime, int], list[Any]] = {}
    for e in entries:
        for w in WINDOWS:
            key = (e.community_id, w, window_start(w, e.effective_at), e.member_id)
            acc = scores.setdefault(key, [0, e.effective_at])
            acc[0] += e.points
            acc[1] = max(acc[1], e.effective_at)
    params = [
        {"community_id": c, "window": w, "window_start": start, "member_id": m, "points": p, "last_scored_at": at}
        for (c, w, start, m), (p, at) in scores.items()
        if p
    ]
    dialect = s.get_bind().dialect.name
    if params:
        await s.execute(_UPSERTS[dialect], params)
    # Quarter-hour slices: a board in another time zone (a schedule's tz) sums the slices of its window.
    slices: dict[tuple[int, datetime, int], list[Any]] = {}
    for e in entries:
        acc = slices.setdefault((e.community_id, slice_start(e.effective_at), e.member_id), [0, e.effective_at])
        acc[0] += e.points
        acc[1] = max(acc[1], e.effective_at)
    slice_params = [
        {"community_id": c, "slice_start": start, "member_id": m, "points": p, "last_scored_at": at}
        for (c, start, m), (p, at) in slices.items()
        if p
    ]
    if slice_params:
        await s.execute(_SLICE_UPSERTS[dialect], slice_params)


async def reversible(s: AsyncSession, *, claim_id: int, raid_id: int, member_id: int,
                     with_completion: bool) -> list[PointsEntry]:
    """The rows a revoke of `claim_id` takes back: the claim's own rows (points, speed bonus, and
    the completion bonus if this claim unlocked it) and, when `with_completion`, the member's
    completion bonus in this raid whichever claim unlocked it. Rows already reversed are left out."""
    reversal = aliased(PointsEntry)
    mine = PointsEntry.claim_id == claim_id
    if with_completion:
        mine = or_(mine, and_(PointsEntry.raid_id == raid_id, PointsEntry.member_id == member_id,
                              PointsEntry.kind == "completion_bonus"))
    q = (
        select(PointsEntry)
        .where(mine, PointsEntry.kind != "revoke", PointsEntry.points != 0)
        .where(~select(reversal.id).where(reversal.reverses_id == PointsEntry.id).exists())
        .order_by(PointsEntry.id)
    )
    return list((await s.scalars(q)).all())


def reversals(rows: Sequence[PointsEntry], *, claim_id: int | None, actor_id: int | None,
              reason: str | None) -> list[Entry]:
    """Entries that take back `rows` exactly, each at the effective time of the row it reverses."""
    return [
        Entry(r.community_id, r.member_id, -r.points, "revoke", r.effective_at, raid_id=r.raid_id,
              claim_id=claim_id, reverses_id=r.id, actor_id=actor_id, reason=reason)
        for r in rows
    ]


__all__ = ["Entry", "record", "reversals", "reversible"]
