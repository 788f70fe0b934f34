"""Settling claims: the review queue, accept or reject, revoke."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import badges, ledger
from core.errors import Conflict
from core.events import ClaimVerified, ProgressChanged
from core.i18n import _
from core.storage.models import Member, Raid, RaidAction, RaidObjective, RaidParticipant

from . import scoring
from .common import _claim_and_raid, _objectives
from .membership import MembershipMixin
from .model import COUNTED, NEVER_VERIFIABLE, ClaimResult, ReviewItem


class ReviewMixin(MembershipMixin):
    """Settling claims after the fact: moderators and verifiers."""

    # -- verification (honor and moderator review; the X-API verifiers use the same calls) ----------

    async def review_queue(self, *, community_id: int | None = None, raid_id: int | None = None, limit: int = 20) -> list[ReviewItem]:
        async def op(s: AsyncSession) -> list[ReviewItem]:
            q = (
                select(RaidAction, Member.display_name)
                .join(Member, Member.id == RaidAction.member_id)
                .join(Raid, Raid.id == RaidAction.raid_id)
                .where(RaidAction.verification == "pending")
                .order_by(RaidAction.id)
                .limit(limit)
            )
            if community_id is not None:
                q = q.where(Raid.community_id == community_id)
            if raid_id is not None:
                q = q.where(RaidAction.raid_id == raid_id)
            return [
                ReviewItem(a.id, a.raid_id, a.member_id, name, a.action_type, a.proof_url, a.claimed_at)
                for a, name in (await s.execute(q)).all()
            ]

        return await self.db.read(op)

    async def review(
        self, claim_id: int, accept: bool, *, reviewer_id: int | None = None, community_id: int | None = None,
        machine: bool = False, refresh: bool = True,
    ) -> ClaimResult:
        """Settle a pending claim. A moderator's accept is `accepted`; only a machine check that saw
        the action (`machine=True`, the X verifiers) makes it `verified`, and never for a like or a
        bookmark, which nothing can see. A claim of an ended raid changes its report (`refresh`: now;
        the X runner refreshes once after a whole sweep)."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[ClaimResult, int]:
            claim, raid = await _claim_and_raid(s, claim_id, community_id)
            if not accept:
                new_state = "rejected"
            elif machine and claim.action_type not in NEVER_VERIFIABLE:
                new_state = "verified"
            else:
                new_state = "accepted"
            won = await s.scalar(
                update(RaidAction)
                .where(RaidAction.id == claim_id, RaidAction.verification == "pending")
                .values(verification=new_state, verified_at=now, reviewed_by=reviewer_id)
                .returning(RaidAction.id)
            )
            if won is None:
                return ClaimResult(raid.id, claim.member_id, claim.action_type, claim.verification, claim.points, True, claim_id), raid.community_id
            points, bonus, completed = 0, 0, False
            if accept:
                objectives = await _objectives(s, raid.id)
                rules = scoring.ScoringRules.from_dict(raid.scoring)
                points = scoring.claim_points(rules, objectives[claim.action_type][1], raid.started_at, claim.claimed_at)
                await s.execute(update(RaidAction).where(RaidAction.id == claim_id).values(points=points))
                bonus, completed = await self._credit_claim(
                    s, raid, claim.participant_id, claim.member_id, claim_id, claim.action_type, points, objectives, now
                )
            return (
                ClaimResult(raid.id, claim.member_id, claim.action_type, new_state, points, False, claim_id, bonus, completed),
                raid.community_id,
            )

        with badges.collecting() as earned:
            result, cid = await self.db.write(op)
        if not result.already:
            await self.bus.publish(
                ClaimVerified(result.raid_id, cid, result.member_id, result.action, result.verification, result.points + result.completion_bonus)
            )
            await self.bus.publish(ProgressChanged(result.raid_id, cid))
            await badges.publish(self.bus, earned)
            if result.raid_completed:
                await self.end(result.raid_id, reason="every objective met", cause="objectives_met")
            elif refresh:
                await self.refresh_report(result.raid_id)  # no-op while the raid runs (no report yet)
        return result

    async def revoke(
        self, claim_id: int, *, reviewer_id: int | None, reason: str | None = None, community_id: int | None = None
    ) -> int:
        """Take back an accepted claim (an audit or a moderator). Returns the points taken back.

        Reverses exactly what the claim earned, in the windows where it was earned: its points, its
        speed bonus, and the completion bonus it (or the member's set of claims it belonged to)
        unlocked, each by a ledger row at the reversed row's effective time. Only one revoke of a
        claim can win (a conditional UPDATE); the others are told there is nothing left to revoke.
        """
        from core.moderation import audit

        reason = (reason or "").strip()[:500] or None
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[int, int, int]:
            claim, raid = await _claim_and_raid(s, claim_id, community_id)
            # As credited, read before the UPDATE below (which the session syncs into `claim`).
            prior_points, credited_at = claim.points, claim.verified_at or claim.claimed_at
            won = await s.scalar(
                update(RaidAction)
                .where(RaidAction.id == claim_id, RaidAction.verification.in_(COUNTED))
                .values(verification="rejected", verified_at=now, reviewed_by=reviewer_id, points=0)
                .returning(RaidAction.id)
            )
            if won is None:
                raise Conflict(_("Claim #{id} has no accepted points to revoke (it is pending, rejected or revoked).").format(
                    id=claim_id))
            completed = await s.scalar(
                update(RaidParticipant)
                .where(RaidParticipant.id == claim.participant_id, RaidParticipant.completed_all.is_(True))
                .values(completed_all=False)
                .returning(RaidParticipant.id)
            )
            rows = await ledger.reversible(
                s, claim_id=claim_id, raid_id=raid.id, member_id=claim.member_id, with_completion=completed is not None
            )
            entries = ledger.reversals(rows, claim_id=claim_id, actor_id=reviewer_id, reason=reason)
            if not rows and prior_points:  # credited before the ledger existed (migration 0004): as stored
                bonus = scoring.ScoringRules.from_dict(raid.scoring).completion_points if completed else 0
                entries = [ledger.Entry(raid.community_id, claim.member_id, -(prior_points + bonus), "revoke",
                                        credited_at, raid_id=raid.id, claim_id=claim_id, actor_id=reviewer_id,
                                        reason=reason)]
            taken = -await ledger.record(s, entries, now=now)
            await s.execute(
                update(RaidObjective)
                .where(RaidObjective.raid_id == raid.id, RaidObjective.action_type == claim.action_type)
                .values(count=RaidObjective.count - 1)
            )
            await s.execute(
                update(RaidParticipant)
                .where(RaidParticipant.id == claim.participant_id)
                .values(points=RaidParticipant.points - taken, claims_count=RaidParticipant.claims_count - 1)
            )
            await s.execute(
                update(Raid)
                .where(Raid.id == raid.id)
                .values(action_count=Raid.action_count - 1, points_awarded=Raid.points_awarded - taken)
            )
            await audit(
                s, raid.community_id, "claim_revoke", now, actor=reviewer_id, target=claim.member_id,
                raid_id=raid.id, amount=-taken, reason=reason, data={"claimId": claim_id},
            )
            return raid.id, raid.community_id, taken

        raid_id, cid, points = await self.db.write(op)
        await self.bus.publish(ProgressChanged(raid_id, cid))
        return points
