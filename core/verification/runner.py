"""Running a raid's verifier: claim the job, reserve reads, verify, apply, remember, report.

The scheduler only triggers (`due` says which raids, `run` does one); the rows are the truth. A
lease on the raid's sweep row keeps two processes from sweeping one raid at once; deferrals, the
incremental search window and the parts a final sweep already finished all live in that row, so a
restart picks up where the last run stopped. Outcomes go through RaidService.review (and
credit_found), so points, counters, bonuses, leaderboards and events behave as for a moderator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import RaidNotFound
from core.events import ProgressChanged
from core.i18n import _
from core.moderation import audit
from core.raids.urls import x_status_id
from core.storage.models import (
    Ban,
    Community,
    CommunityMember,
    Member,
    Raid,
    RaidAction,
    RaidParticipant,
)
from core.storage.upsert import insert
from core.storage.verification_models import ClaimCheck, XLink, XSweep

from . import ledger
from .abuse import community_cfg, gates_for
from .base import (
    ClaimInfo,
    Credit,
    Deferred,
    HonorVerifier,
    OpenReader,
    Outcome,
    Raider,
    RaidInfo,
    ReviewVerifier,
    SweepDeferred,
    SweepFinished,
    Verdict,
    Verifier,
    VerifyContext,
)
from .credit import credit_found
from .proof import ProofLinkVerifier
from .sweep import SweepVerifier

if TYPE_CHECKING:
    from core.services import Services

log = logging.getLogger(__name__)

SWEPT_TIERS = ("proof_link", "x_api")
LEASE = timedelta(minutes=10)
OVERLAP = timedelta(minutes=2)  # interval searches re-read a little, so nothing falls between runs
SEARCH_DAYS = 6  # recent search covers 7 days: a final sweep later than this cannot read anything
USAGE_CAP_RETRY = timedelta(hours=1)
APPLY_BATCH = 50


def verifier_for(tier: str, *, max_pages: int = 10) -> Verifier:
    verifiers: dict[str, Verifier] = {
        "honor": HonorVerifier(),
        "review": ReviewVerifier(),
        "proof_link": ProofLinkVerifier(),
        "x_api": SweepVerifier(max_pages),
    }
    return verifiers[tier]


@dataclass(frozen=True)
class SweepReport:
    raid_id: int
    tier: str
    final: bool
    verified: int
    rejected: int
    flagged: int
    credited: int
    reads: int
    deferred: str | None
    retry_at: datetime | None


class VerificationRunner:
    def __init__(self, services: Services, open_reader: OpenReader | None, *, max_pages: int = 10) -> None:
        self.s = services
        self.open_reader = open_reader
        self.max_pages = max_pages

    # -- scheduling ----------------------------------------------------------------------------

    async def due(self) -> list[tuple[int, bool]]:
        """(raid id, final) for every raid whose sweep should run now: active raids at their interval,
        ended raids until their final sweep is done (right after the end, then at each retry time)."""
        now = self.s.clock.now()

        async def op(s: AsyncSession) -> list[tuple[int, bool]]:
            rows = (
                await s.execute(
                    select(Raid.id, Raid.status, XSweep.next_at, XSweep.deferred_reason)
                    .outerjoin(XSweep, XSweep.raid_id == Raid.id)
                    .where(Raid.verification_tier.in_(SWEPT_TIERS), XSweep.final_at.is_(None))  # not settled yet
                    .where(or_(Raid.status == "active", Raid.ended_at >= now - timedelta(days=SEARCH_DAYS)))
                    .order_by(Raid.id)
                )
            ).all()
            out = []
            for raid_id, status, next_at, deferred in rows:
                if status == "active":
                    if next_at is None or next_at <= now:
                        out.append((raid_id, False))
                elif deferred is None or next_at is None or next_at <= now:
                    out.append((raid_id, True))
            return out

        return await self.s.db.read(op)

    # -- one run -------------------------------------------------------------------------------

    async def run(self, raid_id: int, *, final: bool = False) -> SweepReport | None:
        """Verify one raid now. None when another process holds the raid's sweep."""
        now = self.s.clock.now()
        if not await self.s.db.write(lambda s: _lease(s, raid_id, now)):
            return None
        try:
            return await self._run(raid_id, final, now)
        finally:
            await self.s.db.write(lambda s: _release(s, raid_id))

    async def _run(self, raid_id: int, final: bool, now: datetime) -> SweepReport:
        ctx, previous = await self.s.db.read(lambda s: self._context(s, raid_id, final, now))
        verifier = verifier_for(ctx.raid.tier, max_pages=self.max_pages)
        want = verifier.estimate(ctx) if self.open_reader is not None else 0
        verdict, reads = (await verifier.verify(ctx, None), 0) if want == 0 else await self._read(ctx, verifier, want, now)
        counts = await self._apply(ctx, verdict, now)
        await self.s.db.write(lambda s: self._remember(s, ctx, verdict, reads, previous, now))
        d = verdict.deferred
        retry_at = self._retry_at(d, now) if d else None
        report = SweepReport(raid_id, ctx.raid.tier, ctx.final, *counts, reads, d.reason if d else None, retry_at)
        log.info(
            "x sweep raid=%d tier=%s final=%s reads=%d verified=%d rejected=%d flagged=%d credited=%d deferred=%s",
            raid_id, report.tier, report.final, reads, *counts, report.deferred,
        )
        cid = ctx.raid.community_id
        if d is not None:
            await self.s.bus.publish(SweepDeferred(raid_id, cid, d.reason, retry_at.isoformat() if retry_at else None))
        if verdict.metrics is not None:
            await self.s.bus.publish(ProgressChanged(raid_id, cid))
        await self.s.bus.publish(SweepFinished(raid_id, cid, ctx.final, *counts, reads))
        return report

    async def _read(self, ctx: VerifyContext, verifier: Verifier, want: int, now: datetime) -> tuple[Verdict, int]:
        assert self.open_reader is not None
        x = self.s.settings.x
        day = ledger.day_key(now)
        raid_id = ctx.raid.id
        granted, short = await self.s.db.write(
            lambda s: ledger.reserve(s, raid_id, day, want, per_raid=x.reads_per_raid, per_day=x.reads_per_day)
        )
        if granted == 0:
            return Verdict(deferred=Deferred(f"{short}_budget", detail=f"the {short} read budget is used up")), 0
        reads = 0
        try:
            async with self.open_reader(granted) as reader:
                try:
                    return await verifier.verify(ctx, reader), reader.reads
                finally:
                    reads = reader.reads
        finally:
            await self.s.db.write(lambda s: ledger.refund(s, raid_id, day, granted - reads))

    def _retry_at(self, d: Deferred, now: datetime) -> datetime | None:
        if d.reason == "raid_budget":
            return None  # this raid will not be read again
        if d.reason == "day_budget":
            return ledger.next_day(now)
        if d.retry_at is not None:
            return d.retry_at
        wait = USAGE_CAP_RETRY if d.reason == "usage_capped" else timedelta(seconds=self.s.settings.x.sweep_interval_seconds)
        return now + wait

    # -- context -------------------------------------------------------------------------------

    async def _context(self, s: AsyncSession, raid_id: int, final: bool, now: datetime) -> tuple[VerifyContext, XSweep | None]:
        raid = await s.get(Raid, raid_id)
        if raid is None:
            raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
        cfg = community_cfg(self.s.settings, await s.scalar(select(Community.settings).where(Community.id == raid.community_id)))
        info = RaidInfo(
            raid.id, raid.community_id, raid.verification_tier, raid.target_url, x_status_id(raid.target_url),
            raid.status, raid.started_at, raid.ends_at, raid.ended_at,
        )
        flags = {
            (m, a): reason
            for m, a, reason in (
                await s.execute(
                    select(ClaimCheck.member_id, ClaimCheck.action_type, ClaimCheck.reason)
                    .where(ClaimCheck.raid_id == raid_id, ClaimCheck.outcome == "flagged")
                )
            ).all()
        }
        claims = [
            ClaimInfo(a.id, a.member_id, a.action_type, a.verification, a.proof_url, a.claimed_at,
                      flags.get((a.member_id, a.action_type)))
            for a in (await s.scalars(select(RaidAction).where(RaidAction.raid_id == raid_id))).all()
        ]
        fingerprints: dict[str, set[int]] = {}
        for text_hash, member_id in (
            await s.execute(
                select(ClaimCheck.text_hash, ClaimCheck.member_id).where(
                    ClaimCheck.raid_id == raid_id, ClaimCheck.outcome == "verified", ClaimCheck.text_hash.is_not(None)
                )
            )
        ).all():
            fingerprints.setdefault(text_hash, set()).add(member_id)
        sweep = await s.get(XSweep, raid_id)
        since = max(raid.started_at, sweep.last_ok_at - OVERLAP) if sweep and sweep.last_ok_at else raid.started_at
        is_final = final and raid.status != "active"
        done = frozenset(sweep.final_parts or ()) if is_final and sweep else frozenset()
        ctx = VerifyContext(
            info, claims, await _raiders(s, raid), fingerprints, gates_for(cfg), now, is_final, since, done
        )
        return ctx, sweep

    # -- applying and remembering --------------------------------------------------------------------

    async def _apply(self, ctx: VerifyContext, verdict: Verdict, now: datetime) -> tuple[int, int, int, int]:
        """Settle outcomes and credits, a batch at a time concurrently: the raid service's writes are
        safe under concurrency, and on SQLite a batch shares one group commit."""
        counts = {"verified": 0, "rejected": 0, "flagged": 0, "credited": 0}
        notes: list[dict[str, Any]] = []

        async def settle(o: Outcome) -> None:
            if o.state in ("verified", "rejected"):
                result = await self.s.raids.review(o.claim_id, o.state == "verified", reviewer_id=None,
                                                   machine=True, refresh=False)
                if result.already:
                    return  # a moderator settled it first
            counts[o.state] += 1
            notes.append(_note(ctx.raid.id, o.member_id, o.action, o.state, o.reason, o.detail, o.post_id, o.text_hash, now))

        async def credit(c: Credit) -> None:
            if await credit_found(self.s, ctx.raid.id, c) is not None:
                counts["credited"] += 1
                notes.append(_note(ctx.raid.id, c.member_id, c.action, "verified", "found_unclaimed",
                                   "credited by the X sweep", c.post_id, c.text_hash, now))

        jobs: list[Callable[[], Awaitable[None]]] = [partial(settle, o) for o in verdict.outcomes]
        jobs += [partial(credit, c) for c in verdict.credits]
        for start in range(0, len(jobs), APPLY_BATCH):
            await asyncio.gather(*(job() for job in jobs[start : start + APPLY_BATCH]))
        if notes:
            await self.s.db.write(lambda s: _save_notes(s, notes))
        if ctx.raid.status != "active" and (notes or verdict.metrics is not None):
            await self.s.raids.refresh_report(ctx.raid.id)  # a sweep after the end may have changed its numbers
        return counts["verified"], counts["rejected"], counts["flagged"], counts["credited"]

    async def _remember(
        self, s: AsyncSession, ctx: VerifyContext, verdict: Verdict, reads: int, previous: XSweep | None, now: datetime
    ) -> None:
        d = verdict.deferred
        values: dict[str, Any] = {"runs": XSweep.runs + 1, "last_reads": reads, "last_run_at": now}
        if d is None:
            values |= {"last_ok_at": now, "deferred_reason": None,
                       "next_at": now + timedelta(seconds=self.s.settings.x.sweep_interval_seconds)}
        else:
            values |= {"deferred_reason": d.reason[:32], "next_at": self._retry_at(d, now)}
        if ctx.final:
            values["final_parts"] = sorted(set(ctx.done_parts) | verdict.completed_parts)
            if d is None:
                values["final_at"] = now
        if d is not None and d.reason == "raid_budget":
            values["final_at"] = now  # nothing more can be read for this raid: pending claims stay with moderators
        if verdict.metrics is not None:
            values |= {"metrics": verdict.metrics, "metrics_at": now}
        await s.execute(update(XSweep).where(XSweep.raid_id == ctx.raid.id).values(**values))
        if d is not None and (previous is None or previous.deferred_reason != d.reason):
            retry = self._retry_at(d, now)
            await audit(
                s, ctx.raid.community_id, "x_sweep_deferred", now, raid_id=ctx.raid.id, reason=d.reason,
                data={"detail": d.detail, "retryAt": retry.isoformat() if retry else None, "final": ctx.final},
            )


async def public_metrics(services: Services, raid_id: int) -> dict[str, Any] | None:
    """The target's public counters from the last sweep (retweets, replies, quotes, likes...), for the
    progress post; None before any sweep read them."""

    async def op(s: AsyncSession) -> dict[str, Any] | None:
        row = (await s.execute(select(XSweep.metrics, XSweep.metrics_at).where(XSweep.raid_id == raid_id))).first()
        if row is None or row.metrics is None:
            return None
        return {**row.metrics, "at": row.metrics_at.isoformat() if row.metrics_at else None}

    return await services.db.read(op)


async def _raiders(s: AsyncSession, raid: Raid) -> dict[int, Raider]:
    """Every linked member the sweep may match: the raid's participants and the community's members."""
    participant = exists().where(RaidParticipant.raid_id == raid.id, RaidParticipant.member_id == Member.id)
    in_community = exists().where(CommunityMember.community_id == raid.community_id, CommunityMember.member_id == Member.id)
    banned = exists().where(Ban.community_id == raid.community_id, Ban.member_id == Member.id).label("banned")
    rows = (
        await s.execute(
            select(Member.id, Member.x_handle, Member.x_handle_verified, banned, XLink.handle,
                   XLink.account_created_at, XLink.followers)
            .outerjoin(XLink, XLink.member_id == Member.id)
            .where(Member.x_handle.is_not(None), or_(participant, in_community))
        )
    ).all()
    raiders = {}
    for member_id, handle, proven, is_banned, facts_for, created, followers in rows:
        fresh = facts_for == handle  # facts of a previous handle say nothing about this one
        raiders[member_id] = Raider(
            member_id, handle.lower(), bool(proven), not is_banned,
            created if fresh else None, followers if fresh else None,
        )
    return raiders


def _note(
    raid_id: int, member_id: int, action: str, outcome: str, reason: str, detail: str,
    post_id: str | None, text_hash: str | None, now: datetime,
) -> dict[str, Any]:
    return {
        "raid_id": raid_id, "member_id": member_id, "action_type": action, "outcome": outcome,
        "reason": reason[:32], "detail": detail or None, "post_id": post_id, "text_hash": text_hash, "checked_at": now,
    }


async def _save_notes(s: AsyncSession, notes: list[dict[str, Any]]) -> None:
    # One row per claim key: an upsert may not touch a row twice in one statement.
    unique = list({(n["member_id"], n["action_type"]): n for n in notes}.values())
    stmt = insert(s, ClaimCheck).values(unique)
    await s.execute(
        stmt.on_conflict_do_update(
            index_elements=["raid_id", "member_id", "action_type"],
            set_={k: getattr(stmt.excluded, k) for k in ("outcome", "reason", "detail", "post_id", "text_hash", "checked_at")},
        )
    )


async def _lease(s: AsyncSession, raid_id: int, now: datetime) -> bool:
    await s.execute(
        insert(s, XSweep)
        .values(raid_id=raid_id, runs=0, last_reads=0, final_parts=[])
        .on_conflict_do_nothing(index_elements=["raid_id"])
    )
    won = await s.scalar(
        update(XSweep)
        .where(XSweep.raid_id == raid_id, or_(XSweep.lease_until.is_(None), XSweep.lease_until <= now))
        .values(lease_until=now + LEASE)
        .returning(XSweep.raid_id)
    )
    return won is not None


async def _release(s: AsyncSession, raid_id: int) -> None:
    await s.execute(update(XSweep).where(XSweep.raid_id == raid_id).values(lease_until=None))
