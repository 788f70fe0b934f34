"""Ending a raid exactly once (one conditional UPDATE only one process can win), overdue raids, reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox, partners
from core.errors import RaidNotFound
from core.events import LockReleased, ReportChanged
from core.events import RaidEnded as RaidEndedEvent
from core.i18n import _
from core.storage.models import ChatLock, NubiSession, Raid, RaidAction, RaidReport, SessionActivity
from core.storage.upsert import insert
from core.storage.verification_models import ClaimCheck
from core.verification.base import WINDOW_CLOSED

from .common import _end_cause, _final_status
from .metrics import MetricsMixin
from .model import CLAIM_STATES, END_CAUSES


class EndingMixin(MetricsMixin):
    """Ending raids exactly once, and their reports."""

    # -- ending --------------------------------------------------------------------------------------

    async def end(
        self, raid_id: int, *, status: str | None = None, reason: str = "", cause: str | None = None
    ) -> bool:
        """End the raid if it is still active. True only for the one call (in any process) that ended it.

        `cause` says why (END_CAUSES); left out, it follows from the facts: past the deadline the time
        ran out, a cancel is a moderator's, and any other end before the deadline is someone's choice."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[str | None, list[tuple[int, dict[str, Any], int]]]:
            raid = await s.get(Raid, raid_id)
            if raid is None:
                raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
            final = status or await _final_status(s, raid)
            why = cause or _end_cause(final, raid.ends_at <= now)
            locks = await self._end_in_tx(s, raid_id, final, reason, now, why)
            return (final if locks is not None else None), (locks or [])

        final, locks = await self.db.write(op)
        if final is None:
            return False
        await self._after_end(raid_id, final, locks)
        return True

    async def _end_in_tx(
        self, s: AsyncSession, raid_id: int, status: str, reason: str, now: datetime, cause: str
    ) -> list[tuple[int, dict[str, Any], int]] | None:
        won = await s.scalar(
            update(Raid)
            .where(Raid.id == raid_id, Raid.status == "active")
            .values(status=status, ended_at=now, end_reason=reason[:64] or None, end_cause=cause)
            .returning(Raid.id)
        )
        if won is None:
            return None
        report = await self._build_report(s, raid_id)
        await s.execute(
            insert(s, RaidReport)
            .values(raid_id=raid_id, status=status, created_at=now, report=report)
            .on_conflict_do_nothing(index_elements=["raid_id"])
        )
        community_id, pinned = (await s.execute(select(Raid.community_id, Raid.pin_post).where(Raid.id == raid_id))).one()
        await outbox.enqueue(s, "report", outbox.report_key(raid_id), community_id, raid_id, now)
        if pinned:  # undone like a post is made: at least once, retried by the sweep until the chat took it
            await outbox.enqueue(s, "unpin", outbox.unpin_key(raid_id), community_id, raid_id, now)
        for row_id, partner in await partners.raid_chats_in_tx(s, raid_id):  # one report in each partner chat
            await outbox.enqueue(s, "report", outbox.partner_report_key(raid_id, row_id), partner, raid_id, now)
            if pinned:  # and the unpin of its post there
                await outbox.enqueue(s, "unpin", outbox.partner_unpin_key(raid_id, row_id), partner, raid_id, now)
        session_id = await s.scalar(select(Raid.session_id).where(Raid.id == raid_id))
        if session_id:
            await s.execute(
                update(NubiSession)
                .where(NubiSession.id == session_id, NubiSession.status == "active")
                .values(status="ended", ended_at=now)
            )
            s.add(SessionActivity(session_id=session_id, activity_type="ended", at=now, data={"status": status}))
        released = (
            await s.execute(
                update(ChatLock)
                .where(ChatLock.raid_id == raid_id, ChatLock.released_at.is_(None), ChatLock.release_requested_at.is_(None))
                .values(release_requested_at=now, release_reason="raid_ended")
                .returning(ChatLock.id, ChatLock.saved_permissions, ChatLock.community_id)
            )
        ).all()
        # each lock with its own community: a partner chat's lock (core/partners.py) is of another one
        return [(r[0], r[1], r[2]) for r in released]

    async def _after_end(self, raid_id: int, status: str, locks: list[tuple[int, dict[str, Any], int]]) -> None:
        community_id = await self._community_of(raid_id)
        for lock_id, saved, locked_community in locks:
            await self.bus.publish(LockReleased(lock_id, locked_community, saved, "raid_ended"))
        await self.bus.publish(RaidEndedEvent(raid_id, community_id, status))

    async def end_overdue(self) -> list[int]:
        """End every active raid past its deadline. Safe to run in every process at once."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> list[int]:
            return list((await s.scalars(select(Raid.id).where(Raid.status == "active", Raid.ends_at <= now))).all())

        ended = []
        for raid_id in await self.db.read(op):
            if await self.end(raid_id, reason="time is up", cause="time_up"):
                ended.append(raid_id)
        return ended

    async def active_deadlines(self) -> list[tuple[int, datetime]]:
        async def op(s: AsyncSession) -> list[tuple[int, datetime]]:
            return [(r[0], r[1]) for r in (await s.execute(select(Raid.id, Raid.ends_at).where(Raid.status == "active"))).all()]

        return await self.db.read(op)

    # -- reports and metrics ------------------------------------------------------------------------

    async def _build_report(self, s: AsyncSession, raid_id: int) -> dict[str, Any]:
        progress = await self._progress(s, raid_id, top=10)
        by_state = dict(
            (await s.execute(
                select(RaidAction.verification, func.count()).where(RaidAction.raid_id == raid_id).group_by(RaidAction.verification)
            )).all()
        )
        ended = progress.ended_at or self.clock.now()
        cause = await s.scalar(select(Raid.end_cause).where(Raid.id == raid_id))
        expired = await s.scalar(
            select(func.count()).select_from(ClaimCheck)
            .where(ClaimCheck.raid_id == raid_id, ClaimCheck.reason == WINDOW_CLOSED)
        )
        return {
            "raidId": raid_id,
            "status": progress.status,
            "endCause": cause,
            "endedBecause": END_CAUSES.get(cause or "", ""),
            "targetUrl": progress.target_url,
            "startedAt": progress.started_at.isoformat(),
            "endedAt": ended.isoformat(),
            "durationSeconds": int((ended - progress.started_at).total_seconds()),
            "participants": progress.participants,
            "actions": progress.actions,
            "claimsByState": {k: by_state.get(k, 0) for k in CLAIM_STATES},
            # of the unverifiable ones: still pending when the verification window closed (no points)
            "unsettledAtClose": expired or 0,
            "final": by_state.get("pending", 0) == 0,
            "objectives": [
                {"action": o.action, "target": o.target, "count": o.count, "met": o.met} for o in progress.objectives
            ],
            "objectivesMet": sum(1 for o in progress.objectives if o.met),
            "pointsAwarded": progress.points_awarded,
            "completionPct": progress.completion_pct,
            "topRaiders": [{"rank": e.rank, "memberId": e.member_id, "name": e.name, "points": e.points,
                            "badge": e.badge, "platforms": list(e.platforms)} for e in progress.top],
        }

    async def refresh_report(self, raid_id: int) -> dict[str, Any] | None:
        """Rewrite a stored report (a sweep, a review or the verification window changed claim states);
        the report already posted in the chat is redrawn through the outbox."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[dict[str, Any], int] | None:
            if await s.scalar(select(RaidReport.id).where(RaidReport.raid_id == raid_id)) is None:
                return None
            report = await self._build_report(s, raid_id)
            await s.execute(update(RaidReport).where(RaidReport.raid_id == raid_id).values(report=report))
            await outbox.mark_stale(s, outbox.report_key(raid_id), now)
            for row_id, _partner in await partners.raid_chats_in_tx(s, raid_id):
                await outbox.mark_stale(s, outbox.partner_report_key(raid_id, row_id), now)
            return report, await s.scalar(select(Raid.community_id).where(Raid.id == raid_id))

        done = await self.db.write(op)
        if done is None:
            return None
        await self.bus.publish(ReportChanged(raid_id, done[1]))
        return done[0]

    async def report(self, raid_id: int) -> dict[str, Any] | None:
        async def op(s: AsyncSession) -> dict[str, Any] | None:
            if await s.get(Raid, raid_id) is None:
                raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
            return await s.scalar(select(RaidReport.report).where(RaidReport.raid_id == raid_id))

        return await self.db.read(op)

