"""What every raid use case shares: the service's state, settings resolution, and small lookups."""

from __future__ import annotations

import logging
from collections import OrderedDict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.config import RaidsConfig, Settings
from core.errors import RaidEnded, RaidNotFound, ValidationError
from core.events import EventBus
from core.i18n import _
from core.storage.db import Database
from core.storage.models import Member, Raid, RaidAction, RaidObjective, RaidParticipant
from core.verification.base import initial_state

from . import statements as st

log = logging.getLogger(__name__)

MIN_DURATION = 60
MAX_DURATION = 24 * 3600


def community_raid_settings(settings: Settings, community_settings: dict[str, Any] | None) -> RaidsConfig:
    """A community's raid settings: its own keys over the global [raids] defaults, at every depth."""
    from core.community_settings import effective_raids

    return effective_raids(settings, community_settings)


OBJECTIVES_CACHED = 1024  # raids whose objectives a process keeps in memory (a few hundred bytes each)



class RaidsBase:
    """The state the use-case mixins share; `RaidService` (core/raids/service.py) sets it up."""

    def __init__(self, db: Database, clock: Clock, settings: Settings, bus: EventBus) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        self.bus = bus
        self._board = _raid_board_query(settings)
        # action -> (target, points) per raid: fixed when the raid starts, read by every claim.
        # Filled only from committed claims, so a rolled-back raid never leaves an entry behind.
        self._objectives: OrderedDict[int, dict[str, tuple[int, int]]] = OrderedDict()

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
    return initial_state(tier, action)


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
        raise ValidationError(_("There is no claim #{id}.").format(id=claim_id), field="claim")
    raid = await s.get(Raid, claim.raid_id)
    assert raid is not None
    if community_id is not None and raid.community_id != community_id:
        raise ValidationError(_("There is no claim #{id} here.").format(id=claim_id), field="claim")
    return claim, raid


async def _open_raid_facts(s: AsyncSession, raid_id: int, now: datetime) -> Any:
    """The raid's fixed facts and status (a row, not an entity), if members may still act on it."""
    return _open_raid((await s.execute(st.RAID_FACTS, {"raid_id": raid_id})).first(), raid_id, now)


def _open_raid(raid: Any, raid_id: int, now: datetime) -> Any:
    if raid is None:
        raise RaidNotFound(_("Raid {id} not found").format(id=raid_id))
    if raid.status != "active" or raid.ends_at <= now:
        raise RaidEnded(_("Raid #{id} has ended.").format(id=raid_id))
    return raid


def _end_cause(status: str, deadline_passed: bool) -> str:
    """Why a raid ended, when the caller did not say: from the facts at the moment it ended."""
    if status == "cancelled":
        return "cancelled_by_moderator"
    if status == "completed":
        return "objectives_met"
    return "time_up" if deadline_passed else "ended_by_moderator"


async def _final_status(s: AsyncSession, raid: Raid) -> str:
    if raid.participant_count == 0:
        return "failed"
    unmet = await s.scalar(
        select(func.count()).where(RaidObjective.raid_id == raid.id, RaidObjective.count < RaidObjective.target)
    )
    return "completed" if unmet == 0 else "timeout"

