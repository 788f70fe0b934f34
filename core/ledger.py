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

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core import badges
from core.storage.driver import SessionSql, Sql
from core.storage.ledger_models import PointsEntry
from core.windows import WINDOWS, window_start

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


_LEDGER_COLUMNS = ("community_id", "member_id", "raid_id", "claim_id", "kind", "points", "effective_at", "recorded_at",
                   "reverses_id", "actor_member_id", "reason")
_SCORE_COLUMNS = ("community_id", '"window"', "window_start", "member_id", "points", "last_scored_at")
_SLICE_COLUMNS = ("community_id", "slice_start", "member_id", "points", "last_scored_at")


def _values(columns: Sequence[str], rows: int) -> str:
    """`(cols) VALUES ($1, ...), (...)` for `rows` rows: one statement, one round trip, whatever the count."""
    n = len(columns)
    groups = ", ".join("(" + ", ".join(f"${r * n + c + 1}" for c in range(n)) + ")" for r in range(rows))
    return f"({', '.join(columns)}) VALUES {groups}"


_SQL: dict[tuple[str, int], str] = {}
_SETTINGS_SQL = "SELECT settings FROM communities WHERE id = $1"


def statement(table: str, rows: int) -> str:
    """The INSERT (ledger) or upsert (scores, slices) of `rows` rows, built once per row count."""
    found = _SQL.get((table, rows))
    if found is None:
        if table == "points_ledger":
            found = f"INSERT INTO points_ledger {_values(_LEDGER_COLUMNS, rows)}"
        elif table == "member_scores":
            found = (f"INSERT INTO member_scores {_values(_SCORE_COLUMNS, rows)} "
                     'ON CONFLICT (community_id, "window", window_start, member_id) DO UPDATE SET '
                     "points = member_scores.points + excluded.points, last_scored_at = excluded.last_scored_at")
        else:
            found = (f"INSERT INTO member_score_slices {_values(_SLICE_COLUMNS, rows)} "
                     "ON CONFLICT (community_id, slice_start, member_id) DO UPDATE SET "
                     "points = member_score_slices.points + excluded.points, last_scored_at = excluded.last_scored_at")
        _SQL[(table, rows)] = found
    return found


def slice_start(at: datetime) -> datetime:
    return at.replace(minute=at.minute - at.minute % SLICE_MINUTES, second=0, microsecond=0)


async def record(s: AsyncSession, entries: Iterable[Entry], *, now: datetime) -> int:
    """Write `entries` (zero-point ones are dropped) and the scores they change. Returns their sum."""
    return await record_sql(SessionSql(s), entries, now=now)


async def record_sql(
    q: Sql, entries: Iterable[Entry], *, now: datetime, settings: dict[int, Any] | None = None
) -> int:
    """`record` on a write's driver connection (core/storage/driver.py): three statements at most,
    the ledger rows, the score rows and the slice rows, each one multi-row INSERT."""
    rows = [e for e in entries if e.points]
    if not rows:
        return 0
    args: list[Any] = []
    for e in rows:
        args += [e.community_id, e.member_id, e.raid_id, e.claim_id, e.kind, e.points, q.ts(e.effective_at),
                 q.ts(now), e.reverses_id, e.actor_id, e.reason]
    await q.run(statement("points_ledger", len(rows)), *args)
    await _score(q, rows)
    # Milestones crossed: recorded and announced in this same transaction (core/badges.py), looked at
    # only where a member gained points in a community that names milestones, and through a session
    # only when one is crossed (a pipelined batch runs such an op alone, core/storage/pipeline.py).
    # `settings`: community id -> its settings document, where the caller read it already (a claim).
    gained = {e.community_id for e in rows if e.points > 0}
    for community_id in gained:
        own = settings[community_id] if settings and community_id in settings else q.doc(
            await q.value(_SETTINGS_SQL, community_id))
        items = badges.milestones(own)
        if items and await badges.owed(q, rows, community_id, items):
            await badges.award(q.session(), rows, now)  # every community's, at once
            break
    return sum(e.points for e in rows)


async def _score(q: Sql, entries: Sequence[Entry]) -> None:
    """Add the entries to the member's day, week, month and all-time scores of their effective times,
    and to their quarter-hour slices (a board in another time zone, a schedule's tz, sums the slices
    of its window).

    Summed per score row first: one upsert may not touch the same row twice."""
    scores: dict[tuple[int, str, datetime, int], list[Any]] = {}
    starts: dict[datetime, list[tuple[str, datetime]]] = {}  # a command's entries mostly share one time
    for e in entries:
        at = e.effective_at
        windows = starts.get(at)
        if windows is None:
            windows = starts[at] = [(w, window_start(w, at)) for w in WINDOWS]
        for w, start in windows:
            key = (e.community_id, w, start, e.member_id)
            acc = scores.get(key)
            if acc is None:
                scores[key] = [e.points, at]
            else:
                acc[0] += e.points
                acc[1] = max(acc[1], at)
    args: list[Any] = []
    for (c, w, start, m), (p, at) in scores.items():
        if p:
            args += [c, w, q.ts(start), m, p, q.ts(at)]
    if args:
        await q.run(statement("member_scores", len(args) // len(_SCORE_COLUMNS)), *args)
    slices: dict[tuple[int, datetime, int], list[Any]] = {}
    for e in entries:
        acc = slices.setdefault((e.community_id, slice_start(e.effective_at), e.member_id), [0, e.effective_at])
        acc[0] += e.points
        acc[1] = max(acc[1], e.effective_at)
    args = []
    for (c, start, m), (p, at) in slices.items():
        if p:
            args += [c, q.ts(start), m, p, q.ts(at)]
    if args:
        await q.run(statement("member_score_slices", len(args) // len(_SLICE_COLUMNS)), *args)


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


__all__ = ["Entry", "record", "record_sql", "reversals", "reversible", "statement"]
