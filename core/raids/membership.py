"""Joining a raid and claiming actions: the hot path, the cap held by a conditional UPDATE."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.directory import MemberRef, ensure_member
from core.errors import Banned, NotParticipant, RaidFull, UnknownObjective
from core.events import ClaimRecorded, MemberJoined, ProgressChanged
from core.i18n import _
from core.ledger import Entry, record
from core.verification.abuse import claim_rate_since, screen_claim

from . import scoring
from . import statements as st
from .common import (
    OBJECTIVES_CACHED,
    _activity,
    _initial_state,
    _objectives,
    _open_raid,
    _open_raid_facts,
    _ordered_names,
)
from .ending import EndingMixin
from .model import COUNTED, ClaimResult, JoinResult, action_word


class _AlreadyJoined(Exception):
    """Rolls back a join that lost the race to the same member's concurrent join."""


class MembershipMixin(EndingMixin):
    """Joining raids and claiming actions."""

    # -- joining and claiming ----------------------------------------------------------------------

    async def join(self, raid_id: int, member: MemberRef, *, is_moderator: bool | None = None) -> JoinResult:
        """`is_moderator` is the chat platform's word on the member in the raid's community; None
        (REST, MCP, Socket.IO, the Sessions API) leaves the recorded flag as it is."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> JoinResult:
            raid = await _open_raid_facts(s, raid_id, now)
            member_id = await ensure_member(s, member, now)
            dialect = s.get_bind().dialect.name
            touch = st.TOUCH_MEMBER if is_moderator is not None else st.TOUCH_MEMBER_KEEP_FLAG
            await s.execute(touch[dialect], st.dml(community_id=raid.community_id, member_id=member_id,
                                                   is_moderator=bool(is_moderator), now=now))
            existing, is_banned = (
                await s.execute(st.JOINED_OR_BANNED,
                                {"raid_id": raid_id, "member_id": member_id, "community_id": raid.community_id})
            ).one()
            if existing is not None:
                return JoinResult(raid_id, member_id, existing, True, 0, raid.community_id)
            if is_banned:
                raise Banned(_("You are banned from raids in this community."))
            rules = scoring.ScoringRules.from_dict(raid.scoring)
            bumped = (
                await s.execute(st.BUMP, st.dml(raid_id=raid_id, early_joiners=rules.early_joiners,
                                          early_points=rules.early_joiner_points))
            ).first()
            if bumped is None:
                raise RaidFull(_("Raid #{id} is full ({max} raiders).").format(id=raid_id, max=raid.max_participants))
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
                await record(s, [Entry(raid.community_id, member_id, bonus, "join_bonus", now, raid_id=raid_id)], now=now)
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
                raise NotParticipant(_("Join the raid first, then claim your actions."))
            participant_id, member_id = raid.participant_id, raid.member_id
            if raid.banned:
                raise Banned(_("You are banned from raids in this community."))
            objectives = self._objectives.get(raid_id) or await _objectives(s, raid_id)
            seen_objectives.append(objectives)
            if action not in objectives:
                raise UnknownObjective(
                    _("This raid does not ask for {actions}. It asks for: {wanted}.").format(
                        actions=action_word(action, plural=True),
                        wanted=", ".join(action_word(a, plural=True) for a in _ordered_names(objectives)))
                )
            verification = await screen_claim(
                s, self.settings, raid, member_id, participant_id, action, proof_url, now,
                _initial_state(raid.verification_tier, action), facts=raid,
            )
            accepted = verification in COUNTED
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
                    s, raid, participant_id, member_id, claim_id, action, points, objectives, now
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
                await self.end(raid_id, reason="every objective met", cause="objectives_met")
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
        claim_id: int,
        action: str,
        points: int,
        objectives: dict[str, tuple[int, int]],
        now: datetime,
    ) -> tuple[int, bool]:
        """Credit an accepted claim: participant, ledger and boards, then the raid's shared counters.
        Returns (bonus, raid now complete). `points` is the objective's points plus the speed bonus;
        the ledger keeps them (and the completion bonus) apart, each tied to the claim, so a revoke
        finds exactly what this claim earned.

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
        base = min(points, objectives[action][1])
        await record(s, [
            Entry(raid.community_id, member_id, base, "claim", now, raid_id=raid.id, claim_id=claim_id),
            Entry(raid.community_id, member_id, points - base, "speed_bonus", now, raid_id=raid.id, claim_id=claim_id),
            Entry(raid.community_id, member_id, bonus, "completion_bonus", now, raid_id=raid.id, claim_id=claim_id),
        ], now=now)
        count = await s.scalar(st.COUNT_UP, st.dml(raid_id=raid.id, action=action))
        # This UPDATE takes the raid row's lock: claims of one raid serialize from here, so the
        # completion check below sees every objective count committed before it (PostgreSQL too).
        await s.execute(st.SCORE_RAID, st.dml(raid_id=raid.id, points=points + bonus))
        completed = False
        if raid.status == "active" and count == objectives[action][0]:  # this claim met its objective
            completed = await s.scalar(st.UNMET, {"raid_id": raid.id}) == 0
        return bonus, completed

