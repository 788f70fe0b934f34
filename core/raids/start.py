"""Starting a raid, and claiming the one right to post its messages."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import RaidsConfig
from core.directory import ChatRef, MemberRef, ensure_community, ensure_member, member_uuid
from core.errors import RaidAlreadyActive, ValidationError
from core.events import PostDue, RaidStarted
from core.storage.models import Community, NubiSession, Raid, RaidObjective, SessionActivity

from . import scoring
from .common import MAX_DURATION, MIN_DURATION, community_raid_settings
from .ending import EndingMixin
from .model import RaidProgress, RaidSpec
from .urls import normalize_target


class StartMixin(EndingMixin):
    """Starting raids and claiming their chat posts."""

    # -- starting ------------------------------------------------------------------------------

    async def start(self, chat: ChatRef, spec: RaidSpec, *, by: MemberRef | None = None) -> RaidProgress:
        target = normalize_target(spec.target_url)
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[int, list[int], list[tuple[int, dict[str, Any]]]]:
            community_id = await ensure_community(s, chat, now)
            settings_json = await s.scalar(select(Community.settings).where(Community.id == community_id))
            cfg = community_raid_settings(self.settings, settings_json)
            objectives, duration, max_p, tier = _validated(spec, cfg)
            starter = await ensure_member(s, by, now) if by else None
            active = (
                await s.scalars(select(Raid.id).where(Raid.community_id == community_id, Raid.status == "active"))
            ).all()
            replaced: list[int] = []
            if active and not cfg.allow_multiple_active:
                if not spec.replace:
                    raise RaidAlreadyActive(
                        f"Raid #{active[0]} is still running here. End it first, or start with `replace` to end it now."
                    )
                replaced = list(active)
            raid = Raid(
                community_id=community_id,
                target_url=target,
                status="active",
                started_by=starter,
                started_at=now,
                ends_at=now + timedelta(seconds=duration),
                duration_seconds=duration,
                max_participants=max_p,
                participant_count=0,
                action_count=0,
                points_awarded=0,
                lock_chat=spec.lock,
                verification_tier=tier,
                scoring=scoring.ScoringRules.from_bonuses(cfg.bonuses).as_dict(),
            )
            s.add(raid)
            await s.flush()
            for action, (count, points) in objectives.items():
                s.add(RaidObjective(raid_id=raid.id, action_type=action, target=count, points=points, count=0))
            session = NubiSession(
                id=str(uuid.uuid4()),
                channel_id=str(uuid.uuid4()),
                agent_id=self.settings.agents[0].id,
                user_id=member_uuid(starter) if starter else str(uuid.UUID(int=0)),
                session_type="raid",
                community_id=community_id,
                status="active",
                created_at=now,
                last_activity=now,
                expires_at=raid.ends_at,
                renewal_count=0,
                timeout_config={},
                meta={"raidId": raid.id, "target": target},
            )
            s.add(session)
            await s.flush()
            raid.session_id = session.id
            s.add(SessionActivity(session_id=session.id, activity_type="created", at=now, data={"raidId": raid.id}))
            locks: list[tuple[int, dict[str, Any]]] = []
            for old in replaced:
                locks += await self._end_in_tx(s, old, "cancelled", "replaced by a new raid", now)
            return raid.id, replaced, locks

        raid_id, replaced, locks = await self.db.write(op)
        for old in replaced:
            await self._after_end(old, "cancelled", locks)
        progress = await self.progress(raid_id)
        await self.bus.publish(RaidStarted(raid_id, progress.community_id))
        return progress

    async def set_progress_ref(self, raid_id: int, ref: dict[str, Any]) -> None:
        """Where the adapter posted the raid's live message, so edits survive a restart."""

        async def op(s: AsyncSession) -> None:
            await s.execute(update(Raid).where(Raid.id == raid_id).values(progress_ref=ref))

        await self.db.write(op)

    async def claim_post(self, raid_id: int) -> bool:
        """Claim the right to post the raid message: True for exactly one caller across processes."""
        return await self._claim_once(raid_id, Raid.posted_at)

    async def claim_completion_post(self, raid_id: int) -> bool:
        """Claim the right to post the completion report: True for exactly one caller across processes."""
        return await self._claim_once(raid_id, Raid.completion_posted_at)

    async def _claim_once(self, raid_id: int, column: Any) -> bool:
        now = self.clock.now()

        async def op(s: AsyncSession) -> bool:
            won = await s.scalar(
                update(Raid).where(Raid.id == raid_id, column.is_(None)).values({column: now}).returning(Raid.id)
            )
            return won is not None

        return await self.db.write(op)

    async def unposted(self) -> list[PostDue]:
        """Chat posts nobody has made yet, for Telegram and Discord chats.

        The scheduler republishes these in every process; the adapter that serves the raid's platform
        claims each one, so a raid started or ended in a process without that adapter (or in one that
        died) still gets its posts, exactly once.
        """
        recent = self.clock.now() - timedelta(days=1)

        async def op(s: AsyncSession) -> list[PostDue]:
            rows = (await s.execute(
                select(Raid.id, Raid.community_id, Community.platform, Raid.status, Raid.posted_at)
                .join(Community, Community.id == Raid.community_id)
                .where(Community.platform.in_(("telegram", "discord")))
                .where(
                    (Raid.status == "active") & Raid.posted_at.is_(None)
                    | (Raid.status != "active") & Raid.posted_at.is_not(None)
                    & Raid.completion_posted_at.is_(None) & (Raid.ended_at >= recent)
                )
            )).all()
            return [PostDue(r[0], r[1], r[2], None if r[3] == "active" else r[3]) for r in rows]

        return await self.db.read(op)


def _validated(spec: RaidSpec, cfg: RaidsConfig) -> tuple[dict[str, tuple[int, int]], int, int, str]:
    objectives: dict[str, tuple[int, int]] = {}
    wanted = spec.objectives or {a: cfg.objectives[a].target for a in cfg.default_objectives}
    for action, count in wanted.items():
        if action not in cfg.objectives:
            raise ValidationError(f"unknown action {action!r}", field="objectives")
        if not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise ValidationError(f"{action} target must be a whole number from 1 to 1000000", field="objectives")
        points = spec.points.get(action, cfg.objectives[action].points)
        if not isinstance(points, int) or not 0 <= points <= 10_000:
            raise ValidationError(f"{action} points must be from 0 to 10000", field="objectives")
        objectives[action] = (count, points)
    duration = spec.duration_seconds if spec.duration_seconds is not None else cfg.default_duration_minutes * 60
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValidationError("duration must be between 1 minute and 24 hours", field="duration")
    max_p = spec.max_participants if spec.max_participants is not None else cfg.max_participants
    if not 1 <= max_p <= 100_000:
        raise ValidationError("max participants must be between 1 and 100000", field="max")
    tier = spec.verification or cfg.verification
    if tier not in ("honor", "proof_link", "x_api", "review"):
        raise ValidationError("verification must be honor, proof_link, x_api or review", field="verification")
    return objectives, duration, max_p, tier
