"""Raids: start, join, claim, review, end exactly once, progress, snapshots and reports.

Each write is one transaction handed to `Database.write`; events go out only after it committed.
The max-participants cap and the single end are enforced by conditional UPDATEs in the database,
so they hold under concurrency and across processes.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.config import RaidsConfig, Settings
from core.directory import (
    ChatRef,
    MemberRef,
    ensure_community,
    ensure_member,
    member_uuid,
)
from core.errors import (
    Banned,
    NoActiveRaid,
    NotParticipant,
    RaidAlreadyActive,
    RaidEnded,
    RaidFull,
    RaidNotFound,
    UnknownObjective,
    ValidationError,
)
from core.events import (
    ClaimRecorded,
    ClaimVerified,
    EventBus,
    LockReleased,
    MemberJoined,
    PostDue,
    ProgressChanged,
    RaidStarted,
)
from core.events import RaidEnded as RaidEndedEvent
from core.scores import credit
from core.storage.db import Database
from core.storage.models import (
    ChatLock,
    Community,
    Member,
    NubiSession,
    Raid,
    RaidAction,
    RaidMetric,
    RaidObjective,
    RaidParticipant,
    RaidReport,
    SessionActivity,
)
from core.storage.upsert import insert
from core.verification.abuse import claim_rate_since, screen_claim

from . import scoring
from . import statements as st
from .model import (
    NEVER_VERIFIABLE,
    BoardEntry,
    ClaimResult,
    JoinResult,
    ObjectiveProgress,
    RaidProgress,
    RaidSpec,
    ReviewItem,
)
from .urls import normalize_target

log = logging.getLogger(__name__)

MIN_DURATION = 60
MAX_DURATION = 24 * 3600


class _AlreadyJoined(Exception):
    """Rolls back a join that lost the race to the same member's concurrent join."""


def community_raid_settings(settings: Settings, community_settings: dict[str, Any] | None) -> RaidsConfig:
    """A community's raid settings: its own keys over the global [raids] defaults."""
    own = (community_settings or {}).get("raids") or {}
    if not own:
        return settings.raids
    return RaidsConfig.model_validate({**settings.raids.model_dump(), **own})


OBJECTIVES_CACHED = 1024  # raids whose objectives a process keeps in memory (a few hundred bytes each)


class RaidService:
    def __init__(self, db: Database, clock: Clock, settings: Settings, bus: EventBus) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.bus = bus
        self._board = _raid_board_query(settings)
        # action -> (target, points) per raid: fixed when the raid starts, read by every claim.
        # Filled only from committed claims, so a rolled-back raid never leaves an entry behind.
        self._objectives: OrderedDict[int, dict[str, tuple[int, int]]] = OrderedDict()

    # -- reading -------------------------------------------------------------------------------

    async def progress(self, raid_id: int, *, top: int = 5) -> RaidProgress:
        return await self.db.read(lambda s: self._progress(s, raid_id, top=top))

    async def _progress(self, s: AsyncSession, raid_id: int, *, top: int = 5) -> RaidProgress:
        row = (
            await s.execute(select(Raid, Community).join(Community, Community.id == Raid.community_id).where(Raid.id == raid_id))
        ).first()
        if row is None:
            raise RaidNotFound(f"Raid {raid_id} not found")
        raid, community = row
        objectives = (
            await s.scalars(select(RaidObjective).where(RaidObjective.raid_id == raid_id).order_by(RaidObjective.action_type))
        ).all()
        pending = await s.scalar(
            select(func.count()).where(RaidAction.raid_id == raid_id, RaidAction.verification == "pending")
        )
        board = await self._raid_board(s, raid, top) if top else []
        return RaidProgress(
            id=raid.id,
            community_id=raid.community_id,
            chat=ChatRef(community.platform, community.external_id, community.title),
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
        )

    async def _raid_board(self, s: AsyncSession, raid: Any, limit: int, offset: int = 0) -> list[BoardEntry]:
        params = {"raid_id": raid.id, "community_id": raid.community_id, "limit": limit, "offset": offset}
        rows = (await s.execute(self._board, params)).all()
        return [BoardEntry(offset + i + 1, r[0], r[1], r[2], r[3]) for i, r in enumerate(rows)]

    async def leaderboard(self, raid_id: int, *, top: int = 10, offset: int = 0) -> list[BoardEntry]:
        async def op(s: AsyncSession) -> list[BoardEntry]:
            raid = (await s.execute(st.RAID_FACTS, {"raid_id": raid_id})).first()
            if raid is None:
                raise RaidNotFound(f"Raid {raid_id} not found")
            return await self._raid_board(s, raid, top, offset)

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

    async def active_raid_id(self, chat: ChatRef) -> int:
        async def op(s: AsyncSession) -> int | None:
            return await s.scalar(
                select(Raid.id)
                .join(Community, Community.id == Raid.community_id)
                .where(
                    Community.platform == chat.platform,
                    Community.external_id == chat.external_id,
                    Raid.status == "active",
                )
                .order_by(Raid.id.desc())
                .limit(1)
            )

        raid_id = await self.db.read(op)
        if raid_id is None:
            raise NoActiveRaid("There is no active raid here right now.")
        return raid_id

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

    # -- joining and claiming ----------------------------------------------------------------------

    async def join(self, raid_id: int, member: MemberRef, *, is_moderator: bool = False) -> JoinResult:
        now = self.clock.now()

        async def op(s: AsyncSession) -> JoinResult:
            raid = await _open_raid_facts(s, raid_id, now)
            member_id = await ensure_member(s, member, now)
            dialect = s.get_bind().dialect.name
            await s.execute(st.TOUCH_MEMBER[dialect], st.dml(community_id=raid.community_id, member_id=member_id,
                                                       is_moderator=is_moderator, now=now))
            existing, is_banned = (
                await s.execute(st.JOINED_OR_BANNED,
                                {"raid_id": raid_id, "member_id": member_id, "community_id": raid.community_id})
            ).one()
            if existing is not None:
                return JoinResult(raid_id, member_id, existing, True, 0, raid.community_id)
            if is_banned:
                raise Banned("You are banned from raids in this community.")
            rules = scoring.ScoringRules.from_dict(raid.scoring)
            bumped = (
                await s.execute(st.BUMP, st.dml(raid_id=raid_id, early_joiners=rules.early_joiners,
                                          early_points=rules.early_joiner_points))
            ).first()
            if bumped is None:
                raise RaidFull(f"Raid #{raid_id} is full ({raid.max_participants} raiders).")
            position = bumped[0]
            bonus = scoring.early_joiner_bonus(rules, position)
            inserted = await s.scalar(
                st.INSERT_PARTICIPANT[dialect],
                st.dml(raid_id=raid_id, member_id=member_id, position=position, now=now, points=bonus,
                 scored_at=now if bonus else None),
            )
            if inserted is None:
                raise _AlreadyJoined()
            if bonus:
                await credit(s, raid.community_id, member_id, bonus, now)
            if raid.session_id:
                await _activity(s, raid.session_id, "raid_joined", now, {"memberId": member_id, "position": position})
            return JoinResult(raid_id, member_id, position, False, bonus, raid.community_id)

        try:
            result = await self.db.write(op)
        except _AlreadyJoined:
            result = await self.db.write(op)
        if not result.already:
            community_id = result.community_id
            await self.bus.publish(MemberJoined(raid_id, community_id, result.member_id, result.position))
            await self.bus.publish(ProgressChanged(raid_id, community_id))
        return result

    async def claim(
        self, raid_id: int, member: MemberRef, action: str, *, proof_url: str | None = None
    ) -> ClaimResult:
        now = self.clock.now()

        async def op(s: AsyncSession) -> ClaimResult:
            raid = _open_raid((await s.execute(st.CLAIM_CONTEXT, {
                "raid_id": raid_id, "platform": member.platform, "external_id": member.external_id,
                "action": action, "since": claim_rate_since(now),
            })).first(), raid_id, now)
            if raid.participant_id is None:
                raise NotParticipant("Join the raid first, then claim your actions.")
            participant_id, member_id = raid.participant_id, raid.member_id
            if raid.banned:
                raise Banned("You are banned from raids in this community.")
            objectives = self._objectives.get(raid_id) or await _objectives(s, raid_id)
            seen_objectives.append(objectives)
            if action not in objectives:
                raise UnknownObjective(
                    f"This raid does not ask for {action}s. It asks for: {', '.join(_ordered_names(objectives))}."
                )
            verification = await screen_claim(
                s, self.settings, raid, member_id, participant_id, action, proof_url, now,
                _initial_state(raid.verification_tier, action), facts=raid,
            )
            accepted = verification in ("unverifiable", "verified")
            rules = scoring.ScoringRules.from_dict(raid.scoring)
            points = scoring.claim_points(rules, objectives[action][1], raid.started_at, now) if accepted else 0
            claim_id = await s.scalar(
                st.INSERT_CLAIM[s.get_bind().dialect.name],
                st.dml(raid_id=raid_id, participant_id=participant_id, member_id=member_id, action=action,
                 verification=verification, points=points, proof_url=proof_url, now=now),
            )
            if claim_id is None:
                prior = (
                    await s.execute(st.PRIOR_CLAIM, {"participant_id": participant_id, "action": action})
                ).one()
                return ClaimResult(raid_id, member_id, action, prior.verification, prior.points, True, prior.id,
                                   community_id=raid.community_id)
            if raid.session_id:
                await _activity(s, raid.session_id, "raid_action", now,
                                {"memberId": member_id, "action": action, "verification": verification})
            bonus, completed = 0, False
            if accepted:
                bonus, completed = await self._credit_claim(
                    s, raid, participant_id, member_id, action, points, objectives, now
                )
            return ClaimResult(raid_id, member_id, action, verification, points, False, claim_id, bonus, completed,
                               raid.community_id)

        seen_objectives: list[dict[str, tuple[int, int]]] = []
        result = await self.db.write(op)
        self._remember_objectives(raid_id, seen_objectives[-1])
        if not result.already:
            community_id = result.community_id
            await self.bus.publish(
                ClaimRecorded(raid_id, community_id, result.member_id, action, result.verification, result.points)
            )
            await self.bus.publish(ProgressChanged(raid_id, community_id))
            if result.raid_completed:
                await self.end(raid_id, reason="every objective met")
        return result

    def _remember_objectives(self, raid_id: int, objectives: dict[str, tuple[int, int]]) -> None:
        self._objectives[raid_id] = objectives
        self._objectives.move_to_end(raid_id)
        if len(self._objectives) > OBJECTIVES_CACHED:
            self._objectives.popitem(last=False)

    async def _credit_claim(
        self,
        s: AsyncSession,
        raid: Any,
        participant_id: int,
        member_id: int,
        action: str,
        points: int,
        objectives: dict[str, tuple[int, int]],
        now: datetime,
    ) -> tuple[int, bool]:
        """Credit an accepted claim: participant, boards, then the raid's shared counters.
        Returns (bonus, raid now complete).

        Every claim of a raid updates the same objective row and raid row, and holds their locks until
        its transaction ends (on PostgreSQL other claims wait for them; on SQLite the batch is one
        writer anyway): they are updated last, right before the commit.
        """
        rules = scoring.ScoringRules.from_dict(raid.scoring)
        claims = await s.scalar(
            st.SCORE_PARTICIPANT, st.dml(participant_id=participant_id, points=points, now=now)
        )
        bonus = 0
        if claims == len(objectives) and rules.completion_points:
            done = await s.scalar(
                st.COMPLETE_PARTICIPANT, st.dml(participant_id=participant_id, bonus=rules.completion_points)
            )
            bonus = rules.completion_points if done else 0
        await credit(s, raid.community_id, member_id, points + bonus, now)
        count = await s.scalar(st.COUNT_UP, st.dml(raid_id=raid.id, action=action))
        # This UPDATE takes the raid row's lock: claims of one raid serialize from here, so the
        # completion check below sees every objective count committed before it (PostgreSQL too).
        await s.execute(st.SCORE_RAID, st.dml(raid_id=raid.id, points=points + bonus))
        completed = False
        if raid.status == "active" and count == objectives[action][0]:  # this claim met its objective
            completed = await s.scalar(st.UNMET, {"raid_id": raid.id}) == 0
        return bonus, completed

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
        verified: bool = True,
    ) -> ClaimResult:
        """Settle a pending claim. `verified=False` accepts it as honestly unverifiable instead."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[ClaimResult, int]:
            claim, raid = await _claim_and_raid(s, claim_id, community_id)
            new_state = ("verified" if verified else "unverifiable") if accept else "rejected"
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
                    s, raid, claim.participant_id, claim.member_id, claim.action_type, points, objectives, now
                )
            return (
                ClaimResult(raid.id, claim.member_id, claim.action_type, new_state, points, False, claim_id, bonus, completed),
                raid.community_id,
            )

        result, cid = await self.db.write(op)
        if not result.already:
            await self.bus.publish(
                ClaimVerified(result.raid_id, cid, result.member_id, result.action, result.verification, result.points + result.completion_bonus)
            )
            await self.bus.publish(ProgressChanged(result.raid_id, cid))
            if result.raid_completed:
                await self.end(result.raid_id, reason="every objective met")
        return result

    async def revoke(self, claim_id: int, *, reviewer_id: int | None, reason: str, community_id: int | None = None) -> int:
        """Take back an accepted claim (an audit or a moderator): its points leave every board."""
        from core.moderation import audit

        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[int, int, int]:
            claim, raid = await _claim_and_raid(s, claim_id, community_id)
            prior_points = claim.points
            won = await s.scalar(
                update(RaidAction)
                .where(RaidAction.id == claim_id, RaidAction.verification.in_(("verified", "unverifiable")))
                .values(verification="rejected", verified_at=now, reviewed_by=reviewer_id, points=0)
                .returning(RaidAction.id)
            )
            if won is None:
                raise ValidationError(f"Claim #{claim_id} has no accepted points to revoke.", field="claim")
            await s.execute(
                update(RaidObjective)
                .where(RaidObjective.raid_id == raid.id, RaidObjective.action_type == claim.action_type)
                .values(count=RaidObjective.count - 1)
            )
            await s.execute(
                update(RaidParticipant)
                .where(RaidParticipant.id == claim.participant_id)
                .values(points=RaidParticipant.points - prior_points, claims_count=RaidParticipant.claims_count - 1)
            )
            await s.execute(
                update(Raid)
                .where(Raid.id == raid.id)
                .values(action_count=Raid.action_count - 1, points_awarded=Raid.points_awarded - prior_points)
            )
            await credit(s, raid.community_id, claim.member_id, -prior_points, claim.claimed_at)
            await audit(
                s, raid.community_id, "claim_revoke", now, actor=reviewer_id, target=claim.member_id,
                raid_id=raid.id, amount=-prior_points, reason=reason, data={"claimId": claim_id},
            )
            return raid.id, raid.community_id, prior_points

        raid_id, cid, points = await self.db.write(op)
        await self.bus.publish(ProgressChanged(raid_id, cid))
        return points

    # -- ending --------------------------------------------------------------------------------------

    async def end(self, raid_id: int, *, status: str | None = None, reason: str = "") -> bool:
        """End the raid if it is still active. True only for the one call (in any process) that ended it."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[str | None, list[tuple[int, dict[str, Any]]]]:
            raid = await s.get(Raid, raid_id)
            if raid is None:
                raise RaidNotFound(f"Raid {raid_id} not found")
            final = status or await _final_status(s, raid)
            locks = await self._end_in_tx(s, raid_id, final, reason, now)
            return (final if locks is not None else None), (locks or [])

        final, locks = await self.db.write(op)
        if final is None:
            return False
        await self._after_end(raid_id, final, locks)
        return True

    async def _end_in_tx(
        self, s: AsyncSession, raid_id: int, status: str, reason: str, now: datetime
    ) -> list[tuple[int, dict[str, Any]]] | None:
        won = await s.scalar(
            update(Raid)
            .where(Raid.id == raid_id, Raid.status == "active")
            .values(status=status, ended_at=now, end_reason=reason[:64] or None)
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
                .returning(ChatLock.id, ChatLock.saved_permissions)
            )
        ).all()
        return [(r[0], r[1]) for r in released]

    async def _after_end(self, raid_id: int, status: str, locks: list[tuple[int, dict[str, Any]]]) -> None:
        community_id = await self._community_of(raid_id)
        for lock_id, saved in locks:
            await self.bus.publish(LockReleased(lock_id, community_id, saved, "raid_ended"))
        await self.bus.publish(RaidEndedEvent(raid_id, community_id, status))

    async def end_overdue(self) -> list[int]:
        """End every active raid past its deadline. Safe to run in every process at once."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> list[int]:
            return list((await s.scalars(select(Raid.id).where(Raid.status == "active", Raid.ends_at <= now))).all())

        ended = []
        for raid_id in await self.db.read(op):
            if await self.end(raid_id, reason="time is up"):
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
        return {
            "raidId": raid_id,
            "status": progress.status,
            "targetUrl": progress.target_url,
            "startedAt": progress.started_at.isoformat(),
            "endedAt": ended.isoformat(),
            "durationSeconds": int((ended - progress.started_at).total_seconds()),
            "participants": progress.participants,
            "actions": progress.actions,
            "claimsByState": {k: by_state.get(k, 0) for k in ("verified", "unverifiable", "pending", "rejected")},
            "objectives": [
                {"action": o.action, "target": o.target, "count": o.count, "met": o.met} for o in progress.objectives
            ],
            "objectivesMet": sum(1 for o in progress.objectives if o.met),
            "pointsAwarded": progress.points_awarded,
            "completionPct": progress.completion_pct,
            "topRaiders": [{"rank": e.rank, "memberId": e.member_id, "name": e.name, "points": e.points} for e in progress.top],
        }

    async def refresh_report(self, raid_id: int) -> dict[str, Any] | None:
        """Rewrite a stored report (e.g. after the final verification sweep changed claim states)."""

        async def op(s: AsyncSession) -> dict[str, Any] | None:
            if await s.scalar(select(RaidReport.id).where(RaidReport.raid_id == raid_id)) is None:
                return None
            report = await self._build_report(s, raid_id)
            await s.execute(update(RaidReport).where(RaidReport.raid_id == raid_id).values(report=report))
            return report

        return await self.db.write(op)

    async def report(self, raid_id: int) -> dict[str, Any] | None:
        async def op(s: AsyncSession) -> dict[str, Any] | None:
            if await s.get(Raid, raid_id) is None:
                raise RaidNotFound(f"Raid {raid_id} not found")
            return await s.scalar(select(RaidReport.report).where(RaidReport.raid_id == raid_id))

        return await self.db.read(op)

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

    # -- small helpers ------------------------------------------------------------------------------

    async def _community_of(self, raid_id: int) -> int:
        return await self.db.read(lambda s: s.scalar(select(Raid.community_id).where(Raid.id == raid_id))) or 0


ORDER = ("like", "repost", "reply", "quote", "bookmark", "follow")


def _raid_board_query(settings: Settings) -> Any:
    """Top participants of a raid, best first (ties: who scored first, then who joined first)."""
    from core.leaderboards import excluded_members_clause

    return (
        select(RaidParticipant.member_id, Member.display_name, RaidParticipant.points, RaidParticipant.claims_count)
        .join(Member, Member.id == RaidParticipant.member_id)
        .where(RaidParticipant.raid_id == bindparam("raid_id"), RaidParticipant.points > 0)
        .where(excluded_members_clause(settings, bindparam("community_id"), RaidParticipant.member_id))
        .order_by(
            RaidParticipant.points.desc(),
            RaidParticipant.last_scored_at.asc(),
            RaidParticipant.join_position.asc(),
        )
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
    )


def _ordered(objectives: Any) -> list[Any]:
    return sorted(objectives, key=lambda o: ORDER.index(o.action_type))


def _ordered_names(actions: Any) -> list[str]:
    return sorted(actions, key=ORDER.index)


def _initial_state(tier: str, action: str) -> str:
    if tier == "honor" or (tier in ("proof_link", "x_api") and action in NEVER_VERIFIABLE):
        return "unverifiable"
    return "pending"


async def _objectives(s: AsyncSession, raid_id: int) -> dict[str, tuple[int, int]]:
    """action -> (target, points) of a raid's objectives."""
    rows = await s.execute(st.OBJECTIVES, {"raid_id": raid_id})
    return {a: (t, p) for a, t, p in rows.all()}


async def _activity(s: AsyncSession, session_id: str, kind: str, at: datetime, data: dict[str, Any]) -> None:
    await s.execute(st.ACTIVITY, st.dml(session_id=session_id, kind=kind, at=at, data=data))


async def _claim_and_raid(s: AsyncSession, claim_id: int, community_id: int | None) -> tuple[RaidAction, Raid]:
    """A claim and its raid, for a moderator acting in `community_id` (None: anywhere)."""
    claim = await s.get(RaidAction, claim_id)
    if claim is None:
        raise ValidationError(f"There is no claim #{claim_id}.", field="claim")
    raid = await s.get(Raid, claim.raid_id)
    assert raid is not None
    if community_id is not None and raid.community_id != community_id:
        raise ValidationError(f"There is no claim #{claim_id} here.", field="claim")
    return claim, raid


async def _open_raid_facts(s: AsyncSession, raid_id: int, now: datetime) -> Any:
    """The raid's fixed facts and status (a row, not an entity), if members may still act on it."""
    return _open_raid((await s.execute(st.RAID_FACTS, {"raid_id": raid_id})).first(), raid_id, now)


def _open_raid(raid: Any, raid_id: int, now: datetime) -> Any:
    if raid is None:
        raise RaidNotFound(f"Raid {raid_id} not found")
    if raid.status != "active" or raid.ends_at <= now:
        raise RaidEnded(f"Raid #{raid_id} has ended.")
    return raid


async def _final_status(s: AsyncSession, raid: Raid) -> str:
    if raid.participant_count == 0:
        return "failed"
    unmet = await s.scalar(
        select(func.count()).where(RaidObjective.raid_id == raid.id, RaidObjective.count < RaidObjective.target)
    )
    return "completed" if unmet == 0 else "timeout"


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


__all__ = ["RaidService", "community_raid_settings", "and_", "case"]
