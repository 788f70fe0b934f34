"""The points ledger: every change of points is a row, boards are its sums, revoke reverses exactly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.clock import FakeClock
from core.directory import ChatRef, MemberRef
from core.errors import Conflict
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from core.storage.models import Member, RaidAction
from migrations import downgrade, upgrade
from tests.ledger_check import assert_boards_equal_ledger, ledger_rows, window_sums

CHAT = ChatRef("telegram", "-1001", "Raid Group")
URL = "https://x.com/nubi/status/42"
SUNDAY_2350 = datetime(2026, 1, 11, 23, 50, tzinfo=UTC)


def member(i: int) -> MemberRef:
    return MemberRef("telegram", str(1000 + i), f"raider{i}", f"raider{i}")


async def week_points(services: Services, community_id: int, member_id: int, at: datetime) -> int:
    board = await services.boards.board(community_id, "week", top=100, at=at)
    return next((e.points for e in board if e.member_id == member_id), 0)


async def test_revoke_after_a_week_boundary_leaves_both_weeks_exact(services: Services, clock: FakeClock) -> None:
    clock.set(SUNDAY_2350)
    p = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5, "repost": 5}, verification="review"), by=member(0))
    joined = await services.raids.join(p.id, member(1))
    await services.raids.join(p.id, member(2))
    claim = await services.raids.claim(p.id, member(1), "like")
    assert claim.verification == "pending" and claim.points == 0
    await services.raids.claim(p.id, member(2), "like")
    old_week = await week_points(services, p.community_id, joined.member_id, SUNDAY_2350)
    assert old_week == joined.bonus == 5

    clock.set(SUNDAY_2350 + timedelta(minutes=20))  # Monday 00:10: a new week
    accepted = await services.raids.review(claim.claim_id, True, reviewer_id=None)
    assert accepted.points > 0
    monday = clock.now()
    assert await week_points(services, p.community_id, joined.member_id, monday) == accepted.points
    assert await week_points(services, p.community_id, joined.member_id, SUNDAY_2350) == old_week

    clock.advance(days=2)
    taken = await services.raids.revoke(claim.claim_id, reviewer_id=None, reason="no like found")
    assert taken == accepted.points
    assert await week_points(services, p.community_id, joined.member_id, SUNDAY_2350) == old_week
    assert await week_points(services, p.community_id, joined.member_id, monday) == 0
    rows = [r for r in await ledger_rows(services) if r.claim_id == claim.claim_id]
    credits = [r for r in rows if r.kind != "revoke"]
    reversals = {r.reverses_id: r for r in rows if r.kind == "revoke"}
    assert sorted(reversals) == sorted(r.id for r in credits)
    for r in credits:
        assert (reversals[r.id].points, reversals[r.id].effective_at) == (-r.points, r.effective_at)
    await assert_boards_equal_ledger(services, [p.community_id], clock.now())


async def test_revoking_the_only_claim_takes_back_the_completion_bonus(services: Services) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}), by=member(0))
    joined = await services.raids.join(p.id, member(1))
    claim = await services.raids.claim(p.id, member(1), "like")
    assert claim.completion_bonus == 10
    earned = claim.points + claim.completion_bonus
    (rank, before) = await services.boards.rank(p.community_id, joined.member_id, "all")
    assert (rank, before) == (1, joined.bonus + earned)

    assert await services.raids.revoke(claim.claim_id, reviewer_id=None) == earned
    assert await services.boards.rank(p.community_id, joined.member_id, "all") == (1, joined.bonus)
    progress = await services.raids.progress(p.id)
    assert (progress.actions, progress.points_awarded, progress.objectives[0].count) == (0, joined.bonus, 0)
    assert [(e.member_id, e.points) for e in await services.raids.leaderboard(p.id)] == [(joined.member_id, 5)]
    with pytest.raises(Conflict, match="no accepted points"):
        await services.raids.revoke(claim.claim_id, reviewer_id=None)  # once only
    await assert_boards_equal_ledger(services, [p.community_id], services.clock.now())


async def test_revoking_another_claim_of_a_completed_set_takes_the_bonus_too(services: Services) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5, "repost": 5}), by=member(0))
    joined = await services.raids.join(p.id, member(1))
    like = await services.raids.claim(p.id, member(1), "like")
    repost = await services.raids.claim(p.id, member(1), "repost")
    assert repost.completion_bonus == 10 and like.completion_bonus == 0
    assert await services.raids.revoke(like.claim_id, reviewer_id=None) == like.points + 10
    assert await services.boards.rank(p.community_id, joined.member_id, "all") == (1, joined.bonus + repost.points)
    await assert_boards_equal_ledger(services, [p.community_id], services.clock.now())


async def test_manual_points_are_ledger_rows_with_actor_and_reason(services: Services) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}), by=member(0))
    joined = await services.raids.join(p.id, member(1))
    await services.moderation.adjust_points(p.community_id, joined.member_id, 40, "  helped a lot ", actor=None)
    await services.moderation.adjust_points(p.community_id, joined.member_id, -15, "spam", actor=None)
    manual = [(r.kind, r.points, r.reason, r.raid_id) for r in await ledger_rows(services) if r.kind == "manual"]
    assert manual == [("manual", 40, "helped a lot", None), ("manual", -15, "spam", None)]
    assert await services.boards.rank(p.community_id, joined.member_id, "all") == (1, 5 + 40 - 15)
    await assert_boards_equal_ledger(services, [p.community_id], services.clock.now())


async def test_migration_backfills_old_scores_into_the_ledger(services: Services, clock: FakeClock, db_url: str) -> None:
    """Scores written over several days, weeks and months (raids, manual points, a revoke) survive
    0004's backfill: the ledger rebuilt from them sums to every stored board."""
    community_ids = set()
    for day, chat in enumerate([CHAT, ChatRef("telegram", "-1002", "Other")] * 3):
        clock.set(datetime(2026, 1, 30, 23, 20, tzinfo=UTC) + timedelta(days=day * 3))
        p = await services.raids.start(chat, RaidSpec(URL, {"like": 2, "repost": 2}, duration_seconds=3 * 3600), by=member(0))
        community_ids.add(p.community_id)
        for i in range(1, 4):
            await services.raids.join(p.id, member(i))
            c = await services.raids.claim(p.id, member(i), "like")
            clock.advance(minutes=20)  # some scores of a raid land on the next day
        if day == 2:
            await services.raids.revoke(c.claim_id, reviewer_id=None)
        member_id = (await services.db.read(lambda s: s.scalars(select(Member.id).limit(1)))).first()
        await services.moderation.adjust_points(p.community_id, member_id, 7 + day, "bonus", actor=None)
        await services.raids.end(p.id)
    before = window_sums(await ledger_rows(services))
    await services.db.dispose()

    downgrade(db_url, "0003")
    upgrade(db_url)
    services = Services(Database(db_url), clock, services.settings, EventBus())
    try:
        await _check_backfill(services, before, sorted(community_ids))
    finally:
        await services.db.dispose()


async def _check_backfill(services: Services, before: dict, community_ids: list[int]) -> None:  # type: ignore[type-arg]
    clock = services.clock
    rows = await ledger_rows(services)
    assert rows and {r.kind for r in rows} == {"backfill"}
    assert window_sums(rows) == before
    await assert_boards_equal_ledger(services, community_ids, clock.now())
    # and new changes go on from there: points, and a revoke of a claim credited before the ledger
    await services.moderation.adjust_points(community_ids[0], rows[0].member_id, 3, "after", actor=None)
    old = (await services.db.read(lambda s: s.scalars(
        select(RaidAction).where(RaidAction.verification == "unverifiable").order_by(RaidAction.id).limit(1)))).one()
    assert old.points > 0
    assert await services.raids.revoke(old.id, reviewer_id=None, reason="late audit") == old.points
    await assert_boards_equal_ledger(services, community_ids, clock.now())
