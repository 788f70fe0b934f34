"""Starting a raid (its chat post goes into the outbox in the same transaction)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox, partners
from core.config import RaidsConfig
from core.directory import ChatRef, MemberRef, ensure_community, ensure_member, member_uuid
from core.errors import RaidAlreadyActive, ValidationError
from core.events import RaidStarted
from core.i18n import _
from core.storage.models import Community, NubiSession, Raid, RaidObjective, SessionActivity

from . import scoring
from .common import MAX_DURATION, MIN_DURATION, community_raid_settings
from .ending import EndingMixin
from .model import RaidProgress, RaidSpec
from .urls import normalize_target


class StartMixin(EndingMixin):
    """Starting raids."""

    # -- starting ------------------------------------------------------------------------------

    async def start(self, chat: ChatRef, spec: RaidSpec, *, by: MemberRef | None = None) -> RaidProgress:
        target = normalize_target(spec.target_url)
        if chat.platform == "discord" and not chat.channel:
            raise ValidationError(_("A Discord raid runs in a channel of the server: say which (its channel id)."),
                                  field="channel")
        if spec.in_thread and chat.platform != "discord":
            raise ValidationError(_("Only a Discord raid can run in a thread of its own."), field="thread")
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[int, list[int], list[tuple[int, dict[str, Any], int]]]:
            community_id = await ensure_community(s, chat, now)
            settings_json = await s.scalar(select(Community.settings).where(Community.id == community_id))
            cfg = community_raid_settings(self.settings, settings_json)
            objectives, duration, max_p, tier = _validated(spec, cfg, x_ready=self.settings.x.bearer_token is not None)
            starter = await ensure_member(s, by, now) if by else None
            active = (
                await s.scalars(select(Raid.id).where(
                    Raid.community_id == community_id, Raid.channel_id == chat.channel_key, Raid.status == "active"))
            ).all()
            replaced: list[int] = []
            if active and not cfg.allow_multiple_active:
                if not spec.replace:
                    raise RaidAlreadyActive(
                        _("Raid #{id} is still running here. End it first, or start with `replace` to end it now.").format(id=active[0])
                    )
                replaced = list(active)
            raid = Raid(
                community_id=community_id,
                channel_id=chat.channel_key,
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
                pin_post=cfg.pin if spec.pin is None else spec.pin,
                thread_id=spec.thread,
                in_thread=spec.in_thread,
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
                community=f"{chat.platform}:{chat.external_id}",
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
            await outbox.enqueue(s, "raid", outbox.raid_key(raid.id), community_id, raid.id, now)
            if cfg.partners if spec.partners is None else spec.partners:  # owed to each partner chat as well
                for row_id, partner in await partners.add_raid_chats(s, raid.id, community_id, chat.channel_key):
                    await outbox.enqueue(s, "raid", outbox.partner_raid_key(raid.id, row_id), partner, raid.id, now)
            locks: list[tuple[int, dict[str, Any], int]] = []
            for old in replaced:
                locks += await self._end_in_tx(s, old, "cancelled", "replaced by a new raid", now, "replaced")
            return raid.id, replaced, locks

        raid_id, replaced, locks = await self.db.write(op)
        for old in replaced:
            await self._after_end(old, "cancelled", locks)
        progress = await self.progress(raid_id)
        await self.bus.publish(RaidStarted(raid_id, progress.community_id))
        return progress

    async def move_to_thread(self, raid_id: int, thread_id: str) -> bool:
        """A Discord raid started with `thread` runs in the thread made for it from now on: its post,
        report, buttons and commands live there. False when it has one already (made by another process)."""

        async def op(s: AsyncSession) -> bool:
            moved = await s.scalar(
                update(Raid).where(Raid.id == raid_id, Raid.in_thread.is_(True), Raid.thread_id.is_(None))
                .values(channel_id=thread_id, thread_id=thread_id).returning(Raid.id))
            return moved is not None

        return await self.db.write(op)

    async def set_progress_ref(self, raid_id: int, ref: dict[str, Any]) -> None:
        """Where the adapter posted the raid's live message, so edits survive a restart."""

        async def op(s: AsyncSession) -> None:
            await s.execute(update(Raid).where(Raid.id == raid_id).values(progress_ref=ref))

        await self.db.write(op)


def _validated(
    spec: RaidSpec, cfg: RaidsConfig, *, x_ready: bool
) -> tuple[dict[str, tuple[int, int]], int, int, str]:
    objectives: dict[str, tuple[int, int]] = {}
    wanted = spec.objectives or {a: cfg.objectives[a].target for a in cfg.default_objectives}
    for action, count in wanted.items():
        if action not in cfg.objectives:
            raise ValidationError(_("unknown action '{action}'").format(action=action), field="objectives")
        if not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise ValidationError(_("{action} target must be a whole number from 1 to 1000000").format(action=action),
                                  field="objectives")
        points = spec.points.get(action, cfg.objectives[action].points)
        if not isinstance(points, int) or not 0 <= points <= 10_000:
            raise ValidationError(_("{action} points must be from 0 to 10000").format(action=action), field="objectives")
        objectives[action] = (count, points)
    duration = spec.duration_seconds if spec.duration_seconds is not None else cfg.default_duration_minutes * 60
    if not MIN_DURATION <= duration <= MAX_DURATION:
        raise ValidationError(_("duration must be between 1 minute and 24 hours"), field="duration")
    max_p = spec.max_participants if spec.max_participants is not None else cfg.max_participants
    if not 1 <= max_p <= 100_000:
        raise ValidationError(_("max participants must be between 1 and 100000"), field="max")
    tier = spec.verification or cfg.verification
    if tier not in ("honor", "proof_link", "x_api", "review"):
        raise ValidationError(_("verification must be honor, proof_link, x_api or review"), field="verification")
    if tier == "x_api" and not x_ready:
        raise ValidationError(
            _("This raid would check claims through the X API, but no X API token is set. An admin sets one "
              "with NUBI_X_BEARER_TOKEN (or bearer_token under [x] in the config file); or start the raid "
              "with verify=honor, verify=proof_link or verify=review."),
            field="verification",
        )
    return objectives, duration, max_p, tier
