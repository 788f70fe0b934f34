"""Reading raids: progress, boards, lists, metrics snapshots."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import partners as _partners
from core.badges import marked
from core.directory import ChatRef
from core.errors import NoActiveRaid, RaidNotFound
from core.i18n import _, normalize
from core.storage.models import Community, Raid, RaidAction, RaidMetric, RaidObjective
from core.storage.upsert import insert

from . import statements as st
from .common import RaidsBase, _ordered
from .model import BoardEntry, ObjectiveProgress, RaidProgress


class MetricsMixin(RaidsBase):
    """Reading raids for callers and boards."""

    # -- reading -------------------------------------------------------------------------------

    async def progress(self, raid_id: int, *, top: int = 5) -> RaidProgress:
        return await self.db.read(lambda s: self._progress(s, raid_id, top=top))

    async def _progress(self, s: AsyncSession, raid_id: int, *, top: int = 5) -> RaidProgress:
        row = (
            await s.execute(select(Raid, Community).join(Community, Community.id == Raid.community_id).where(Raid.id == raid_id))
        ).first()
        if row is None:
            raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
        raid, community = row
        objectives = (
            await s.scalars(select(RaidObjective).where(RaidObjective.raid_id == raid_id).order_by(RaidObjective.action_type))
        ).all()
        pending = await s.scalar(
            select(func.count()).where(RaidAction.raid_id == raid_id, RaidAction.verification == "pending")
        )
        board = await marked(s, raid.community_id, await self._raid_board(s, raid, top)) if top else []
        return RaidProgress(
            id=raid.id,
            community_id=raid.community_id,
            chat=ChatRef(community.platform, community.external_id, community.title, raid.channel_id or None),
            target_url=raid.target_url,
            status=raid.status,
            started_at=raid.started_at,
            ends_at=raid.ends_at,
            ended_at=raid.ended_at,
            participants=raid.participant_count,
            max_participants=raid.max_participants,
            actions=raid.action_count,
            points_awarded=raid.points_awarded,
            pending=pending or 0,
            lock=raid.lock_chat,
            verification=raid.verification_tier,
            objectives=[ObjectiveProgress(o.action_type, o.target, o.points, o.count) for o in _ordered(objectives)],
            top=board,
            now=self.clock.now(),
            progress_ref=raid.progress_ref,
            session_id=raid.session_id,
            end_cause=raid.end_cause,
            pin=raid.pin_post,
            thread=raid.thread_id,
            in_thread=raid.in_thread,
            language=normalize((community.settings or {}).get("language")),
        )

    async def _raid_board(self, s: AsyncSession, raid: Any, limit: int, offset: int = 0) -> list[BoardEntry]:
        params = {"raid_id": raid.id, "community_id": raid.community_id, "limit": limit, "offset": offset}
        rows = (await s.execute(self._board, params)).all()
        return [BoardEntry(offset + i + 1, r[0], r[1], r[2], r[3]) for i, r in enumerate(rows)]

    async def leaderboard(self, raid_id: int, *, top: int = 10, offset: int = 0) -> list[BoardEntry]:
        async def op(s: AsyncSession) -> list[BoardEntry]:
            raid = (await s.execute(st.RAID_FACTS, {"raid_id": raid_id})).first()
            if raid is None:
                raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
            return await marked(s, raid.community_id, await self._raid_board(s, raid, top, offset))

        return await self.db.read(op)

    async def list(
        self, *, community_id: int | None = None, status: str | None = None, limit: int = 50
    ) -> list[RaidProgress]:
        async def op(s: AsyncSession) -> list[int]:
            q = select(Raid.id).order_by(Raid.id.desc()).limit(limit)
            if community_id is not None:
                q = q.where(Raid.community_id == community_id)
            if status is not None:
                q = q.where(Raid.status == status)
            return list((await s.scalars(q)).all())

        ids = await self.db.read(op)
        return [await self.progress(i, top=3) for i in ids]

    async def active_raid_id(self, chat: ChatRef, *, partners: bool = True) -> int:
        """The chat's own active raid, else (with `partners`) the active raid of a linked chat it takes part in."""
        return (await self.active_raid(chat, partners=partners))[0]

    async def active_raid(self, chat: ChatRef, *, partners: bool = True) -> tuple[int, bool]:
        """(raid id, whether it is a linked chat's raid this chat takes part in as a partner chat)."""
        async def op(s: AsyncSession) -> int | None:
            return await s.scalar(
                select(Raid.id)
                .join(Community, Community.id == Raid.community_id)
                .where(
                    Community.platform == chat.platform,
                    Community.external_id == chat.external_id,
                    Raid.channel_id == chat.channel_key,
                    Raid.status == "active",
                )
                .order_by(Raid.id.desc())
                .limit(1)
            )

        raid_id = await self.db.read(op)
        if raid_id is not None:
            return raid_id, False
        if partners:
            raid_id = await self.db.read(lambda s: _partners.active_partner_raid(s, chat))
            if raid_id is not None:
                return raid_id, True
        raise NoActiveRaid(_("There is no active raid here right now."))

    async def snapshot(self, raid_id: int) -> bool:
        """Record a metrics snapshot of an active raid (once per second at most, whoever asks)."""
        now = self.clock.now().replace(microsecond=0)

        async def op(s: AsyncSession) -> bool:
            p = await self._progress(s, raid_id, top=0)
            if not p.active:
                return False
            engagement = round(p.actions / p.participants, 3) if p.participants else 0.0
            res = await s.execute(
                insert(s, RaidMetric)
                .values(
                    raid_id=raid_id,
                    taken_at=now,
                    participants=p.participants,
                    actions=p.actions,
                    completion_pct=p.completion_pct,
                    engagement_score=engagement,
                    time_left_seconds=p.time_left_seconds,
                )
                .on_conflict_do_nothing(index_elements=["raid_id", "taken_at"])
            )
            return bool(res.rowcount)

        return await self.db.write(op)

    async def metrics(self, raid_id: int) -> list[dict[str, Any]]:
        async def op(s: AsyncSession) -> list[dict[str, Any]]:
            rows = (await s.scalars(select(RaidMetric).where(RaidMetric.raid_id == raid_id).order_by(RaidMetric.taken_at))).all()
            return [
                {
                    "takenAt": r.taken_at.isoformat(),
                    "participants": r.participants,
                    "actions": r.actions,
                    "completionPct": r.completion_pct,
                    "engagementScore": r.engagement_score,
                    "timeLeftSeconds": r.time_left_seconds,
                }
                for r in rows
            ]

        return await self.db.read(op)

