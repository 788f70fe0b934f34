"""Community-level behaviour: windows, exclusions, history, schedules across processes, locks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.config import LeaderboardConfig, Settings
from core.directory import ChatRef, MemberRef, ensure_community
from core.errors import Conflict
from core.events import AnnouncementDue, EventBus, EventRecorder, LockReleased
from core.export import board_csv, report_csv
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database

CHAT = ChatRef("discord", "555", "raids", channel="5550")
URL = "https://x.com/nubi/status/7"


def m(i: int) -> MemberRef:
    return MemberRef("discord", str(i), f"user{i}", f"user{i}")


async def one_raid(svc: Services, members: list[int], actions=("like",)) -> int:  # type: ignore[no-untyped-def]
    raid = (await svc.raids.start(CHAT, RaidSpec(URL, {"like": 100, "repost": 100}), by=m(0))).id
    for i in members:
        await svc.raids.join(raid, m(i), is_moderator=(i == 0))
        for a in actions:
            await svc.raids.claim(raid, m(i), a)
    await svc.raids.end(raid)
    return raid


async def test_windows_rollover_and_history(services: Services, clock) -> None:
    clock.set(datetime(2026, 3, 8, 23, 0, tzinfo=UTC))  # a Sunday
    raid = await one_raid(services, [1, 2])
    cid = (await services.raids.progress(raid)).community_id
    week = await services.boards.board(cid, "week")
    assert [e.name for e in week] == ["user1", "user2"]  # tie broken by earlier achievement
    clock.set(datetime(2026, 3, 9, 0, 30, tzinfo=UTC))  # Monday: a new week and day
    assert await services.boards.board(cid, "week") == []
    assert [e.name for e in await services.boards.board(cid, "month")] == ["user1", "user2"]
    assert len(await services.boards.board(cid, "all")) == 2
    closed = await services.boards.close_windows()
    assert closed == 2  # the day and the week that ended
    assert await services.boards.close_windows() == 0  # idempotent
    history = await services.boards.history(cid, "week")
    assert history[0]["windowStart"].startswith("2026-03-02") and history[0]["winners"][0]["name"] == "user1"
    rank, points = await services.boards.rank(cid, await _member_id(services, 2), "all")
    assert rank == 2 and points > 0


async def _member_id(svc: Services, i: int) -> int:
    from sqlalchemy import select

    from core.storage.models import MemberIdentity

    return await svc.db.read(lambda s: s.scalar(select(MemberIdentity.member_id).where(
        MemberIdentity.platform == "discord", MemberIdentity.external_id == str(i))))


async def test_exclusions(db_url: str, clock) -> None:
    settings = Settings(leaderboard=LeaderboardConfig(exclude_moderators=True, exclude_members=["discord:2"]))
    svc = Services(Database(db_url), clock, settings, EventBus())
    try:
        raid = await one_raid(svc, [0, 1, 2, 3])
        names = [e.name for e in await svc.raids.leaderboard(raid)]
        assert names == ["user1", "user3"]  # the moderator and the excluded member are left off
        cid = (await svc.raids.progress(raid)).community_id
        assert [e.name for e in await svc.boards.board(cid, "week")] == ["user1", "user3"]
    finally:
        await svc.db.dispose()


async def test_announcement_slot_fires_once_across_processes(db_url: str, clock, settings) -> None:
    a = Services(Database(db_url), clock, settings, EventBus())
    b = Services(Database(db_url), clock, settings, EventBus())
    rec_a, rec_b = EventRecorder(a.bus), EventRecorder(b.bus)
    try:
        clock.set(datetime(2026, 3, 9, 11, 0, tzinfo=UTC))
        community = await a.db.write(lambda s: ensure_community(s, CHAT, clock.now()))
        sched = await a.schedules.add(community, "0 12 * * mon", "week", top_n=3)
        assert await a.schedules.run_due() == 0  # created after the last slot: nothing due
        clock.set(datetime(2026, 3, 9, 12, 0, 20, tzinfo=UTC))
        results = await asyncio.gather(a.schedules.run_due(), b.schedules.run_due(), a.schedules.run_due())
        assert sum(results) == 1
        fired = rec_a.of(AnnouncementDue) + rec_b.of(AnnouncementDue)
        assert [(e.schedule_id, e.slot) for e in fired] == [(sched.id, "2026-03-09T12:00:00+00:00")]
        clock.advance(days=7)
        assert await b.schedules.run_due() == 1
    finally:
        await a.db.dispose()
        await b.db.dispose()


async def test_lock_saved_released_once_and_confirmed(services: Services, clock) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL, lock=True), by=m(0))
    saved = {"send_messages": True, "add_reactions": False}
    lock_id = await services.locks.lock(p.community_id, saved, p.ends_at + timedelta(minutes=5), raid_id=p.id)
    with pytest.raises(Conflict):
        await services.locks.lock(p.community_id, {}, p.ends_at, raid_id=p.id)
    await services.raids.end(p.id, status="cancelled")
    released = services.recorder.of(LockReleased)
    assert [(e.lock_id, e.saved_permissions) for e in released] == [(lock_id, saved)]
    assert [i.id for i in await services.locks.pending_releases("discord")] == [lock_id]
    await services.locks.confirm_released(lock_id)
    assert await services.locks.pending_releases() == []
    assert await services.locks.active(p.community_id) is None


async def test_lock_deadline(services: Services, clock) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL), by=m(0))
    await services.locks.lock(p.community_id, {"x": 1}, clock.now() + timedelta(minutes=1), raid_id=None)
    assert await services.locks.release_overdue() == []
    clock.advance(minutes=1)
    assert len(await services.locks.release_overdue()) == 1
    assert await services.locks.release_overdue() == []


async def test_exports_and_context(services: Services) -> None:
    raid = await one_raid(services, [1, 2], actions=("like", "repost"))
    board = await services.raids.leaderboard(raid)
    csv = board_csv(board)
    assert csv.splitlines()[0] == "rank,member_id,name,points" and ",user1," in csv
    report = await services.raids.report(raid)
    rcsv = report_csv(report)
    assert f"summary,status,{report['status']}" in rcsv.replace("\r", "")
    assert "objective,like,2,100" in rcsv.replace("\r", "")
    ctx = await services.context.for_member(await _member_id(services, 1))
    assert ctx["member"]["name"] == "user1" and ctx["recentRaids"][0]["raidId"] == raid
    assert ctx["streakDays"] == 1 and "user1" in ctx["text"]
    evil = board_csv([type(board[0])(1, 9, "=HYPERLINK(1)", 3)])
    assert "'=HYPERLINK" in evil
