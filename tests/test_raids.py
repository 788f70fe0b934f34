"""Raids through the real services on real databases: joins, claims, scoring, ends, reports."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from core.directory import ChatRef, MemberRef
from core.errors import (
    Banned,
    NotParticipant,
    RaidAlreadyActive,
    RaidEnded,
    RaidFull,
    UnknownObjective,
    ValidationError,
)
from core.events import ClaimRecorded, MemberJoined, RaidStarted
from core.events import RaidEnded as RaidEndedEvent
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import Member, RaidReport

CHAT = ChatRef("telegram", "-1001", "Raid Group")
URL = "https://twitter.com/nubi/status/42?s=20"


def member(i: int) -> MemberRef:
    return MemberRef("telegram", str(1000 + i), f"raider{i}", f"raider{i}")


async def start(services: Services, **kw) -> int:  # type: ignore[no-untyped-def]
    spec = RaidSpec(URL, **({"objectives": {"like": 2, "repost": 2}} | kw))
    return (await services.raids.start(CHAT, spec, by=member(0))).id


async def test_start_normalizes_and_validates(services: Services) -> None:
    p = await services.raids.start(CHAT, RaidSpec(URL, {"like": 50, "reply": 10}), by=member(0))
    assert p.target_url == "https://x.com/nubi/status/42"
    assert [(o.action, o.target, o.points) for o in p.objectives] == [("like", 50, 1), ("reply", 10, 3)]
    assert p.ends_at - p.started_at == timedelta(minutes=30) and p.max_participants == 500
    assert services.recorder.of(RaidStarted)[0].raid_id == p.id
    with pytest.raises(RaidAlreadyActive):
        await services.raids.start(CHAT, RaidSpec(URL))
    for bad in (
        RaidSpec("http://x.com/a/status/1"),
        RaidSpec("https://x.com/a"),
        RaidSpec(URL, duration_seconds=30),
        RaidSpec(URL, duration_seconds=25 * 3600),
        RaidSpec(URL, max_participants=0),
        RaidSpec(URL, {"like": 0}),
    ):
        with pytest.raises(ValidationError):
            await services.raids.start(ChatRef("telegram", "-2"), bad)
    # replace is explicit: the old raid is cancelled, the new one runs
    q = await services.raids.start(CHAT, RaidSpec(URL, replace=True))
    assert (await services.raids.progress(p.id)).status == "cancelled"
    assert q.active and [o.action for o in q.objectives] == ["like", "repost", "reply", "quote"]


async def test_join_is_idempotent_and_keeps_order(services: Services) -> None:
    raid = await start(services)
    first = await services.raids.join(raid, member(1))
    again = await services.raids.join(raid, member(1))
    second = await services.raids.join(raid, member(2))
    assert (first.position, first.already, first.bonus) == (1, False, 5)
    assert (again.position, again.already) == (1, True)
    assert second.position == 2
    assert (await services.raids.progress(raid)).participants == 2
    assert len(services.recorder.of(MemberJoined)) == 2


async def test_cap_is_exact_under_300_concurrent_joins(services: Services) -> None:
    raid = await start(services, max_participants=100)
    results = await asyncio.gather(
        *(services.raids.join(raid, member(i)) for i in range(300)), return_exceptions=True
    )
    joined = [r for r in results if not isinstance(r, BaseException)]
    full = [r for r in results if isinstance(r, RaidFull)]
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, RaidFull)]
    assert others == []
    assert len(joined) == 100 and len(full) == 200
    assert sorted(r.position for r in joined) == list(range(1, 101))
    assert (await services.raids.progress(raid)).participants == 100


async def test_a_new_member_joining_several_raids_at_once_is_one_member(services: Services) -> None:
    """First sight of an identity from concurrent commands (a double tap, two raids at once): on
    PostgreSQL both transactions try to create the member; one wins and the other uses its row."""
    services.settings.raids.allow_multiple_active = True
    raids = [await start(services) for _ in range(4)]
    newcomers = [member(500 + i) for i in range(10)]
    results = await asyncio.gather(*(services.raids.join(r, m) for m in newcomers for r in raids))
    for m in newcomers:
        ids = {res.member_id for res, (mm, _r) in zip(results, [(m2, r) for m2 in newcomers for r in raids],
                                                      strict=True) if mm == m}
        assert len(ids) == 1, f"{m.external_id} became {ids}"

    async def count(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(func.count()).select_from(Member).where(Member.display_name.like("raider5%")))

    assert await services.db.read(count) == len(newcomers)  # no member row left behind by the loser


async def test_claims_scoring_and_completion(services: Services, clock) -> None:
    raid = await start(services)
    with pytest.raises(NotParticipant):
        await services.raids.claim(raid, member(1), "like")
    await services.raids.join(raid, member(1))  # +5 early bird
    like = await services.raids.claim(raid, member(1), "like")
    assert (like.verification, like.points) == ("unverifiable", 1 + 3)  # 1 pt + full speed bonus
    dup = await services.raids.claim(raid, member(1), "like")
    assert dup.already and dup.points == like.points
    with pytest.raises(UnknownObjective):
        await services.raids.claim(raid, member(1), "quote")
    clock.advance(minutes=10)  # past the speed window
    repost = await services.raids.claim(raid, member(1), "repost")
    assert repost.points == 2 and repost.completion_bonus == 10
    board = await services.raids.leaderboard(raid)
    assert [(e.name, e.points) for e in board] == [("raider1", 5 + 4 + 2 + 10)]
    assert len(services.recorder.of(ClaimRecorded)) == 2


async def test_raid_completes_when_every_objective_is_met(services: Services) -> None:
    raid = await start(services)
    for i in (1, 2):
        await services.raids.join(raid, member(i))
        await services.raids.claim(raid, member(i), "like")
        await services.raids.claim(raid, member(i), "repost")
    p = await services.raids.progress(raid)
    assert p.status == "completed" and p.ended_at is not None
    ended = services.recorder.of(RaidEndedEvent)
    assert [(e.raid_id, e.status) for e in ended] == [(raid, "completed")]
    with pytest.raises(RaidEnded):
        await services.raids.join(raid, member(3))
    report = await services.raids.report(raid)
    assert report["status"] == "completed" and report["objectivesMet"] == 2
    assert report["participants"] == 2 and report["actions"] == 4
    assert report["claimsByState"]["unverifiable"] == 4


async def test_two_concurrent_ends_give_one_report_and_one_event(services: Services) -> None:
    raid = await start(services)
    await services.raids.join(raid, member(1))
    results = await asyncio.gather(*(services.raids.end(raid, reason="race") for _ in range(2)))
    assert sorted(results) == [False, True]
    assert len(services.recorder.of(RaidEndedEvent)) == 1
    count = await services.db.read(lambda s: s.scalar(select(func.count()).select_from(RaidReport)))
    assert count == 1
    assert (await services.raids.progress(raid)).status == "timeout"


async def test_end_statuses_and_overdue_sweep(services: Services, clock) -> None:
    a = await start(services)
    clock.advance(minutes=31)
    assert await services.raids.end_overdue() == [a]
    assert (await services.raids.progress(a)).status == "failed"  # nobody took part
    assert await services.raids.end_overdue() == []
    b = await start(services)
    await services.raids.end(b, status="cancelled", reason="mod")
    assert (await services.raids.progress(b)).status == "cancelled"


async def test_review_tier_queue_accept_reject(services: Services) -> None:
    raid = await start(services, verification="review")
    await services.raids.join(raid, member(1))
    await services.raids.join(raid, member(2))
    c1 = await services.raids.claim(raid, member(1), "repost")
    c2 = await services.raids.claim(raid, member(2), "repost")
    assert c1.verification == "pending" and c1.points == 0
    queue = await services.raids.review_queue(raid_id=raid)
    assert [q.claim_id for q in queue] == [c1.claim_id, c2.claim_id]
    ok = await services.raids.review(c1.claim_id, True, reviewer_id=None)
    no = await services.raids.review(c2.claim_id, False, reviewer_id=None)
    assert ok.verification == "accepted" and ok.points == 2 + 3  # a moderator approved it; nothing saw it
    assert no.verification == "rejected" and no.points == 0
    assert (await services.raids.review(c1.claim_id, False)).already
    p = await services.raids.progress(raid)
    assert p.pending == 0 and [o.count for o in p.objectives if o.action == "repost"] == [1]


async def test_revoke_moves_every_board(services: Services) -> None:
    raid = await start(services)
    await services.raids.join(raid, member(1))
    c = await services.raids.claim(raid, member(1), "like")
    p = await services.raids.progress(raid)
    before = (await services.boards.board(p.community_id, "week"))[0].points
    await services.raids.revoke(c.claim_id, reviewer_id=None, reason="audit: no like found")
    after = (await services.boards.board(p.community_id, "week"))[0].points
    assert before - after == c.points
    log = await services.moderation.audit_log(p.community_id)
    assert log[0]["action"] == "claim_revoke" and log[0]["amount"] == -c.points


async def test_ban_blocks_join_and_claims(services: Services) -> None:
    raid = await start(services)
    await services.raids.join(raid, member(1))
    p = await services.raids.progress(raid)
    mid = (await services.raids.join(raid, member(1))).member_id
    assert await services.moderation.ban(p.community_id, mid, "spam", actor=None)
    with pytest.raises(Banned):
        await services.raids.claim(raid, member(1), "like")
    assert await services.moderation.unban(p.community_id, mid, actor=None)
    await services.raids.claim(raid, member(1), "like")


async def test_metrics_snapshots(services: Services, clock) -> None:
    raid = await start(services)
    assert await services.raids.snapshot(raid)
    assert not await services.raids.snapshot(raid)  # same second: once
    await services.raids.join(raid, member(1))
    await services.raids.claim(raid, member(1), "like")
    clock.advance(seconds=60)
    assert await services.raids.snapshot(raid)
    rows = await services.raids.metrics(raid)
    assert [(r["participants"], r["actions"]) for r in rows] == [(0, 0), (1, 1)]
    assert rows[1]["completionPct"] == 25.0 and rows[1]["timeLeftSeconds"] == 29 * 60


async def test_chat_posts_are_claimed_once_and_republished_until_made(services: Services, clock) -> None:
    from core.outbox import LEASE, raid_key, report_key

    raid = await start(services)
    web = (await services.raids.start(ChatRef("web", "agent:x"), RaidSpec(URL))).id
    due = await services.outbox.due()
    assert [(d.raid_id, d.platform, d.kind) for d in due] == [(raid, "telegram", "raid")]  # web raids have no chat post
    sent: list[str] = []
    gate = asyncio.Event()

    async def send(d) -> dict:  # type: ignore[no-untyped-def]
        await gate.wait()
        sent.append(d.nonce)
        return {"message_id": 1}

    async def release() -> None:
        await asyncio.sleep(0.05)
        gate.set()

    results = await asyncio.gather(*(services.outbox.deliver(raid_key(raid), send) for _ in range(3)), release())
    assert sorted(results[:3]) == [False, False, True] and len(sent) == 1  # the lease lets one sender through
    assert await services.outbox.due() == []

    await services.raids.end(raid, status="cancelled")
    await services.raids.end(web, status="cancelled")
    assert [(d.raid_id, d.kind) for d in await services.outbox.due()] == [(raid, "report")]

    async def lost(d) -> dict:  # type: ignore[no-untyped-def]
        raise ConnectionResetError("the connection dropped")  # any error at all: the post stays owed

    assert not await services.outbox.deliver(report_key(raid), lost)
    assert await services.outbox.due() == []  # not before its retry time
    clock.advance(seconds=6)
    assert [d.kind for d in await services.outbox.due()] == ["report"]
    assert await services.outbox.deliver(report_key(raid), send)
    assert await services.outbox.due() == [] and not await services.outbox.deliver(report_key(raid), send)

    # A sender that died between claiming and marking: the lease runs out, the post goes out again.
    third = await start(services)

    async def crash(d) -> dict:  # type: ignore[no-untyped-def]
        raise asyncio.CancelledError  # the process is gone mid-send: no release, no mark

    with pytest.raises(asyncio.CancelledError):
        await services.outbox.deliver(raid_key(third), crash)
    assert await services.outbox.due() == []  # leased
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert [d.raid_id for d in await services.outbox.due()] == [third]
