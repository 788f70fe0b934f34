"""Claim verification against the local fake X API v2: sweeps, proof links, budgets, gates, audits.

Every test runs on SQLite and PostgreSQL through the real services; X is FakeXAPI over real HTTP,
read by the real XClient. The fake's clock follows the services' FakeClock (`tick`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.x.verifier import run_due, run_sweep
from core.clock import FakeClock
from core.config import RaidsConfig, Settings, XConfig
from core.directory import ChatRef, MemberRef
from core.errors import RateLimited, ValidationError
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import Member, Raid, RaidAction, RaidParticipant
from core.storage.verification_models import ClaimCheck, XLink
from core.verification import ledger
from core.verification.abuse import pick_for_audit, screen_claim
from core.verification.base import SweepDeferred
from core.verification.runner import public_metrics
from tests.fakes.x_api import EP_SEARCH_RECENT, FakeXAPI

TOKEN = "sweep-token"
CHAT = ChatRef("telegram", "-100500", "Raiders")


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeXAPI]:
    async with FakeXAPI(TOKEN, now=clock.now().timestamp()) as server:
        server.add_user("brand")
        yield server


@pytest.fixture
def settings(fake: FakeXAPI) -> Settings:
    x = XConfig(bearer_token=TOKEN, base_url=fake.base_url, reads_per_raid=60, reads_per_day=500, sweep_interval_seconds=60)
    return Settings(x=x)


def tick(clock: FakeClock, fake: FakeXAPI, **delta: float) -> None:
    clock.advance(**delta)
    fake.now = clock.now().timestamp()


def member(i: int) -> MemberRef:
    return MemberRef("telegram", str(5000 + i), f"raider{i}", f"raider{i}")


async def link(
    services: Services, ref: MemberRef, handle: str, *, proven: bool = True,
    created: datetime | None = None, followers: int | None = None,
) -> int:
    """A linked member, proven or not, with the account facts a proof would have stored."""
    member_id, h = await services.links.link(ref, handle)

    async def op(s: Any) -> None:
        await s.execute(update(Member).where(Member.id == member_id).values(x_handle_verified=proven))
        s.add(XLink(member_id=member_id, handle=h, account_created_at=created, followers=followers))

    await services.db.write(op)
    return member_id


async def start(services: Services, fake: FakeXAPI, tier: str, **objectives: int) -> tuple[int, str]:
    target = fake.add_tweet("brand", "raid me", created_at=services.clock.now() - timedelta(hours=1))
    spec = RaidSpec(f"https://x.com/brand/status/{target}", objectives or {"like": 500, "repost": 500, "reply": 500,
                    "quote": 500}, duration_seconds=600, verification=tier)
    return (await services.raids.start(CHAT, spec, by=member(999))).id, target


async def claims(services: Services, raid_id: int) -> dict[tuple[int, str], tuple[str, str]]:
    async def op(s: Any) -> dict[tuple[int, str], tuple[str, str]]:
        rows = (await s.execute(select(RaidAction).where(RaidAction.raid_id == raid_id))).scalars().all()
        return {(a.member_id, a.action_type): (a.verification, a.source) for a in rows}

    return await services.db.read(op)


async def reasons(services: Services, raid_id: int) -> dict[tuple[int, str], tuple[str, str]]:
    async def op(s: Any) -> dict[tuple[int, str], tuple[str, str]]:
        rows = (await s.execute(select(ClaimCheck).where(ClaimCheck.raid_id == raid_id))).scalars().all()
        return {(c.member_id, c.action_type): (c.outcome, c.reason) for c in rows}

    return await services.db.read(op)


async def spent(services: Services, scope: str, key: str) -> int:
    return await services.db.read(lambda s: ledger.spent(s, scope, key))


# -- the X API sweep ---------------------------------------------------------------------------------


async def test_sweep_of_150_raiders(services: Services, fake: FakeXAPI, clock: FakeClock) -> None:
    fake.page_size = 40  # every part spans several pages
    raid, target = await start(services, fake, "x_api")
    refs = [member(i) for i in range(150)]
    for i in range(150):
        fake.add_user(f"r{i}")
    ids = await asyncio.gather(*(link(services, refs[i], f"r{i}", proven=i < 145) for i in range(150)))
    await asyncio.gather(*(services.raids.join(raid, r) for r in refs))
    tick(clock, fake, minutes=1)

    for i in [*range(100), *range(120, 140), *range(145, 150)]:  # claimed, unclaimed, unproven links
        fake.add_tweet(f"r{i}", retweet_of=target)
    for i in range(30):
        fake.add_user(f"stranger{i}")
        fake.add_tweet(f"stranger{i}", retweet_of=target)
    for i in range(60):
        fake.add_tweet(f"r{i}", f"gm from raider {i}, number {i} is here", reply_to=target)
    for i in range(60, 65):
        fake.add_tweet(f"r{i}", "Great project!! @brand", reply_to=target)  # one text, five members
    for i in range(30):
        fake.add_tweet(f"r{i}", f"quote {i}: look at this", quote_of=target)
    fake.add_tweet("r140", "too early", reply_to=target, created_at=clock.now() - timedelta(minutes=5))

    await asyncio.gather(
        *(services.raids.claim(raid, refs[i], "like") for i in range(150)),
        *(services.raids.claim(raid, refs[i], "repost") for i in range(120)),
        *(services.raids.claim(raid, refs[i], "reply") for i in range(65)),
        *(services.raids.claim(raid, refs[i], "quote") for i in range(30)),
    )

    report = await run_sweep(services, raid)

    assert report is not None and report.deferred is None
    assert (report.verified, report.credited, report.flagged, report.rejected) == (190, 20, 5, 0)
    assert len(fake.requests_to("/2/tweets/search/recent")) == 6  # reposts 4 pages, replies 2
    assert report.reads == len(fake.requests) == await spent(services, "raid", str(raid))
    state = await claims(services, raid)
    assert all(state[(ids[i], "repost")] == ("verified", "claim") for i in range(100))
    assert all(state[(ids[i], "repost")] == ("pending", "claim") for i in range(100, 120))
    assert all(state[(ids[i], "repost")] == ("verified", "sweep") for i in range(120, 140))
    assert not any((ids[i], "repost") in state for i in range(145, 150))  # unproven links earn nothing
    assert (ids[140], "reply") not in state  # replied before the raid started
    assert all(state[(ids[i], "reply")][0] == "verified" for i in range(60))
    assert all(state[(ids[i], "reply")][0] == "pending" for i in range(60, 65))
    assert all(state[(ids[i], "like")][0] == "unverifiable" for i in range(150))
    why = await reasons(services, raid)
    assert {why[(ids[i], "reply")] for i in range(60, 65)} == {("flagged", "duplicate_text")}
    progress = await services.raids.progress(raid)
    assert {o.action: o.count for o in progress.objectives} == {"like": 150, "repost": 120, "reply": 60, "quote": 30}
    metrics = await public_metrics(services, raid)
    assert metrics is not None and (metrics["retweet_count"], metrics["reply_count"], metrics["quote_count"]) == (155, 66, 30)
    board = {e.member_id: e.points for e in await services.boards.board(progress.community_id, "all", top=100)}
    assert board[ids[130]] > 0  # credited reposts score like claims

    # An interval later a late repost turns up; the next due sweep verifies its claim.
    tick(clock, fake, minutes=2)
    fake.add_tweet("r100", retweet_of=target)
    (second,) = await run_due(services)
    assert (second.final, second.verified, second.credited) == (False, 1, 0)

    # The search endpoint is exhausted when the raid ends: the final sweep defers, never fails.
    fake.rate_limits[EP_SEARCH_RECENT] = len(fake.requests_to("/2/tweets/search/recent"))
    tick(clock, fake, minutes=1)
    assert await services.raids.end(raid, reason="ended by a moderator")
    (deferred,) = await run_due(services)
    assert (deferred.final, deferred.deferred) == (True, "rate_limited")
    assert deferred.retry_at is not None and deferred.retry_at > clock.now()
    assert (await claims(services, raid))[(ids[101], "repost")][0] == "pending"
    assert services.recorder.of(SweepDeferred)[-1].reason == "rate_limited"
    log = await services.moderation.audit_log(progress.community_id)
    assert [e["reason"] for e in log if e["action"] == "x_sweep_deferred"] == ["rate_limited"]
    assert await run_due(services) == []  # nothing is due before the reset
    quote_reads = len(fake.requests_to(f"/2/tweets/{target}/quote_tweets"))

    tick(clock, fake, seconds=(deferred.retry_at - clock.now()).total_seconds() + 1)
    (final,) = await run_due(services)

    assert (final.final, final.deferred, final.rejected) == (True, None, 19)
    assert len(fake.requests_to(f"/2/tweets/{target}/quote_tweets")) == quote_reads  # finished before the 429
    state = await claims(services, raid)
    assert state[(ids[100], "repost")][0] == "verified"
    assert all(state[(ids[i], "repost")][0] == "rejected" for i in range(101, 120))
    assert all(state[(ids[i], "reply")][0] == "pending" for i in range(60, 65))  # still with moderators
    assert await run_due(services) == []
    stored = await services.raids.report(raid)
    assert stored is not None and stored["claimsByState"]["rejected"] == 19
    total = len(fake.requests)
    assert total == await spent(services, "raid", str(raid)) == await spent(services, "day", clock.now().date().isoformat())
    assert total <= services.settings.x.reads_per_raid
