"""Checks that every board equals the points ledger: used by the ledger tests and the stateful test."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.services import Services
from core.storage.ledger_models import PointsEntry
from core.storage.models import MemberScore, Raid, RaidParticipant
from core.windows import WINDOWS, window_start


async def ledger_rows(services: Services, community_id: int | None = None) -> list[PointsEntry]:
    q = select(PointsEntry).order_by(PointsEntry.id)
    if community_id is not None:
        q = q.where(PointsEntry.community_id == community_id)
    return list(await services.db.read(lambda s: s.scalars(q)))


def window_sums(rows: list[PointsEntry]) -> dict[tuple[int, str, datetime, int], int]:
    """(community, window, window start, member) -> points, from the ledger alone; zeros left out."""
    sums: dict[tuple[int, str, datetime, int], int] = defaultdict(int)
    for r in rows:
        for w in WINDOWS:
            sums[(r.community_id, w, window_start(w, r.effective_at), r.member_id)] += r.points
    return {k: v for k, v in sums.items() if v}


async def assert_boards_equal_ledger(services: Services, community_ids: list[int], at: datetime) -> None:
    """In these communities, every stored score, every raid's participant points, and the boards and
    ranks a member sees now (day, week, month, all) are the ledger's sums."""
    rows = [r for c in community_ids for r in await ledger_rows(services, c)]
    expected = window_sums(rows)
    scores = select(MemberScore).where(MemberScore.community_id.in_(community_ids))
    stored = {
        (m.community_id, m.window, m.window_start, m.member_id): m.points
        for m in await services.db.read(lambda s: s.scalars(scores))
        if m.points
    }
    assert stored == expected, _diff(stored, expected)

    per_raid: dict[tuple[int, int], int] = defaultdict(int)
    for r in rows:
        if r.raid_id is not None:
            per_raid[(r.raid_id, r.member_id)] += r.points
    seats = (
        select(RaidParticipant).join(Raid, Raid.id == RaidParticipant.raid_id).where(Raid.community_id.in_(community_ids))
    )
    participants = {
        (p.raid_id, p.member_id): p.points
        for p in await services.db.read(lambda s: s.scalars(seats))
    }
    for key, points in participants.items():
        assert points == per_raid.get(key, 0), (key, points, per_raid.get(key, 0))
    for raid_id in {raid for raid, _ in participants}:
        board = await services.raids.leaderboard(raid_id, top=1000)
        want = {m: p for (raid, m), p in per_raid.items() if raid == raid_id and p > 0}
        assert {e.member_id: e.points for e in board} == want, (raid_id, board, want)

    for community_id in community_ids:
        for w in WINDOWS:
            start = window_start(w, at)
            want = {m: p for (c, win, st, m), p in expected.items() if c == community_id and win == w and st == start and p > 0}
            board = await services.boards.board(community_id, w, top=100, at=at)
            assert {e.member_id: e.points for e in board} == want, (community_id, w, board, want)
            for e in board:
                rank, points = await services.boards.rank(community_id, e.member_id, w)
                assert (rank, points) == (e.rank, e.points)


def _diff(stored: dict[Any, int], expected: dict[Any, int]) -> str:
    keys = sorted(set(stored) | set(expected), key=str)
    return "\n".join(f"{k}: stored {stored.get(k)} ledger {expected.get(k)}" for k in keys
                     if stored.get(k) != expected.get(k))
