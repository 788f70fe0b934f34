"""Crediting an action a sweep found but nobody claimed: join the member if needed, record the claim,
then accept it through RaidService.review, so scoring, bonuses, boards and events are the raid
service's own. Recorded first as pending: if the process dies in between, the next sweep finds a
pending claim and verifies it like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.events import MemberJoined
from core.raids.model import ClaimResult
from core.storage.models import Ban, Raid, RaidAction, RaidObjective, RaidParticipant
from core.storage.upsert import insert

from .base import Credit

if TYPE_CHECKING:
    from datetime import datetime

    from core.services import Services


class _JoinRace(Exception):
    """The member joined concurrently: roll back the seat we counted and try again."""


async def credit_found(services: Services, raid_id: int, found: Credit) -> ClaimResult | None:
    """Record `found` as a verified claim (source "sweep"). None when it cannot count: the raid does
    not ask for the action, the member is banned, the raid is full, or the member claimed it meanwhile
    (the next sweep settles that claim). Auto-joined members get no early-joiner bonus: they did not
    answer the call, they just did the action."""
    now = services.clock.now()

    async def op(s: AsyncSession) -> tuple[int, int, int | None] | None:
        raid = await s.get(Raid, raid_id)
        objective = await s.get(RaidObjective, (raid_id, found.action))
        if raid is None or objective is None:
            return None
        banned = await s.scalar(
            select(Ban.id).where(Ban.community_id == raid.community_id, Ban.member_id == found.member_id)
        )
        if banned is not None:
            return None
        participant_id, position = await _participant(s, raid, found.member_id, now)
        if participant_id is None:
            return None
        claim_id = await s.scalar(
            insert(s, RaidAction)
            .values(
                raid_id=raid_id, participant_id=participant_id, member_id=found.member_id,
                action_type=found.action, verification="pending", points=0,
                proof_url=f"https://x.com/i/status/{found.post_id}", source="sweep",
                claimed_at=min(max(found.at, raid.started_at), raid.ends_at),  # the speed bonus runs from here
            )
            .on_conflict_do_nothing(index_elements=["participant_id", "action_type"])
            .returning(RaidAction.id)
        )
        return None if claim_id is None else (claim_id, raid.community_id, position)

    try:
        recorded = await services.db.write(op)
    except _JoinRace:
        recorded = await services.db.write(op)
    if recorded is None:
        return None
    claim_id, community_id, position = recorded
    if position is not None:
        await services.bus.publish(MemberJoined(raid_id, community_id, found.member_id, position))
    return await services.raids.review(claim_id, True, reviewer_id=None, machine=True, refresh=False)


async def _participant(
    s: AsyncSession, raid: Raid, member_id: int, now: datetime
) -> tuple[int | None, int | None]:
    """(participant id, join position if joined just now); (None, None) when the raid is full."""
    existing = await s.scalar(
        select(RaidParticipant.id).where(RaidParticipant.raid_id == raid.id, RaidParticipant.member_id == member_id)
    )
    if existing is not None:
        return existing, None
    position = await s.scalar(
        update(Raid)
        .where(Raid.id == raid.id, Raid.participant_count < Raid.max_participants)
        .values(participant_count=Raid.participant_count + 1)
        .returning(Raid.participant_count)
    )
    if position is None:
        return None, None
    participant_id = await s.scalar(
        insert(s, RaidParticipant)
        .values(
            raid_id=raid.id, member_id=member_id, join_position=position, joined_at=now, points=0,
            claims_count=0, completed_all=False, last_scored_at=None,
        )
        .on_conflict_do_nothing(index_elements=["raid_id", "member_id"])
        .returning(RaidParticipant.id)
    )
    if participant_id is None:
        raise _JoinRace()
    return participant_id, position
