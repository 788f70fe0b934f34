"""Joining a raid and claiming actions: the hot path, the cap held by a conditional UPDATE."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from core import badges
from core.directory import MemberRef
from core.errors import Banned, NotParticipant, RaidFull, UnknownObjective
from core.events import ClaimRecorded, MemberJoined, ProgressChanged
from core.i18n import _
from core.ledger import Entry, record_sql
from core.storage.driver import SessionSql, Sql
from core.verification.abuse import claim_rate_since, screen_claim

from . import scoring
from . import statements as st
from .common import OBJECTIVES_CACHED, _initial_state, _open_raid, _ordered_names
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

        async def op(q: Sql) -> JoinResult:
            ctx = await q.row(st.JOIN_CONTEXT_SQL, raid_id, member.platform, member.external_id)
            raid = _open_raid(_raid_facts(q, ctx), raid_id, now)
            assert ctx is not None
            member_id, username, existing, is_banned = ctx[9], ctx[10], ctx[11], ctx[12]
            if existing is None and not is_banned and ctx[13] >= raid.max_participants:
                # Refused before anything is written (what BUMP below would refuse, the writes
                # before it rolled back with the op): a batch goes on without it.
                raise RaidFull(_("Raid #{id} is full ({max} raiders).").format(id=raid_id, max=raid.max_participants))
            if member_id is None:
                member_id, raced = await _first_sight(q, member, now)
                if raced:  # the member another command created: their joins and bans count
                    existing, is_banned = await q.row(st.JOINED_OR_BANNED_SQL, raid_id, member_id, raid.community_id)
            elif member.username and username != member.username:
                await q.run(st.RENAME_IDENTITY_SQL, member.platform, member.external_id, member.username)
            touch = st.TOUCH_MEMBER_SQL if is_moderator is not None else st.TOUCH_MEMBER_KEEP_FLAG_SQL
            await q.run(touch, raid.community_id, member_id, bool(is_moderator), False, q.ts(now))
            if existing is not None:
                return JoinResult(raid_id, member_id, existing, True, 0, raid.community_id)
            if is_banned:
                raise Banned(_("You are banned from raids in this community."))
            rules = scoring.ScoringRules.from_dict(raid.scoring)
            position = await q.value(st.BUMP_SQL, raid_id, rules.early_joiners, rules.early_joiner_points)
            if position is None:
                raise RaidFull(_("Raid #{id} is full ({max} raiders).").format(id=raid_id, max=raid.max_participants))
            bonus = scoring.early_joiner_bonus(rules, position)
            inserted = await q.value(st.INSERT_PARTICIPANT_SQL, raid_id, member_id, position, q.ts(now), bonus, False,
                                     q.ts(now) if bonus else None)
            if inserted is None:
                raise _AlreadyJoined()
            if bonus:
                await record_sql(q, [Entry(raid.community_id, member_id, bonus, "join_bonus", now, raid_id=raid_id)],
                                 now=now, settings={raid.community_id: q.doc(ctx[14])})
            if raid.session_id:
                await _activity_sql(q, raid.session_id, "raid_joined", now, {"memberId": member_id, "position": position})
            return JoinResult(raid_id, member_id, position, False, bonus, raid.community_id)

        with badges.collecting() as earned:
            try:
                result = await self.db.write_sql(op, contended=True)
            except _AlreadyJoined:
                result = await self.db.write_sql(op, contended=True)
        if not result.already:
            community_id = result.community_id
            await self.bus.publish(MemberJoined(raid_id, community_id, result.member_id, result.position))
            await self.bus.publish(ProgressChanged(raid_id, community_id))
            await badges.publish(self.bus, earned)
        return result

    async def claim(
        self, raid_id: int, member: MemberRef, action: str, *, proof_url: str | None = None
    ) -> ClaimResult:
        now = self.clock.now()

        async def op(q: Sql) -> ClaimResult:
            ctx = await q.row(st.CLAIM_CONTEXT_SQL, raid_id, member.platform, member.external_id, action,
                              q.ts(claim_rate_since(now)))
            raid = _open_raid(_claim_facts(q, ctx), raid_id, now)
            if raid.participant_id is None:
                raise NotParticipant(_("Join the raid first, then claim your actions."))
            participant_id, member_id = raid.participant_id, raid.member_id
            if raid.banned:
                raise Banned(_("You are banned from raids in this community."))
            objectives = self._objectives.get(raid_id) or {
                a: (t, p) for a, t, p in await q.rows(st.OBJECTIVES_SQL, raid_id)
            }
            seen_objectives.append(objectives)
            if action not in objectives:
                raise UnknownObjective(
                    _("This raid does not ask for {actions}. It asks for: {wanted}.").format(
                        actions=action_word(action, plural=True),
                        wanted=", ".join(action_word(a, plural=True) for a in _ordered_names(objectives)))
                )
            verification = await screen_claim(
                _LazySession(q), self.settings, raid, member_id, participant_id, action, proof_url, now,
                _initial_state(raid.verification_tier, action), facts=raid,
            )
            accepted = verification in COUNTED
            rules = scoring.ScoringRules.from_dict(raid.scoring)
            points = scoring.claim_points(rules, objectives[action][1], raid.started_at, now) if accepted else 0
            claim_id = await q.value(st.INSERT_CLAIM_SQL, raid_id, participant_id, member_id, action, verification,
                                     points, proof_url, q.ts(now))
            if claim_id is None:
                prior = await q.row(st.PRIOR_CLAIM_SQL, participant_id, action)
                assert prior is not None
                return ClaimResult(raid_id, member_id, action, prior[1], prior[2], True, prior[0],
                                   community_id=raid.community_id)
            if raid.session_id:
                await _activity_sql(q, raid.session_id, "raid_action", now,
                                    {"memberId": member_id, "action": action, "verification": verification})
            bonus, completed = 0, False
            if accepted:
                bonus, completed = await _credit(q, raid, participant_id, member_id, claim_id, action, points,
                                                 objectives, now, rules)
            return ClaimResult(raid_id, member_id, action, verification, points, False, claim_id, bonus, completed,
                               raid.community_id)

        seen_objectives: list[dict[str, tuple[int, int]]] = []
        with badges.collecting() as earned:
            result = await self.db.write_sql(op, contended=True)
        self._remember_objectives(raid_id, seen_objectives[-1])
        if not result.already:
            community_id = result.community_id
            await self.bus.publish(
                ClaimRecorded(raid_id, community_id, result.member_id, action, result.verification, result.points)
            )
            await self.bus.publish(ProgressChanged(raid_id, community_id))
            await badges.publish(self.bus, earned)
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
        """`_credit` for an op holding a session (a moderator's review)."""
        return await _credit(SessionSql(s), raid, participant_id, member_id, claim_id, action, points, objectives, now)


async def _credit(
    q: Sql,
    raid: Any,
    participant_id: int,
    member_id: int,
    claim_id: int,
    action: str,
    points: int,
    objectives: dict[str, tuple[int, int]],
    now: datetime,
    rules: scoring.ScoringRules | None = None,
) -> tuple[int, bool]:
    """Credit an accepted claim: participant, ledger and boards, then the raid's shared counters.
    Returns (bonus, raid now complete). `points` is the objective's points plus the speed bonus;
    the ledger keeps them (and the completion bonus) apart, each tied to the claim, so a revoke
    finds exactly what this claim earned.

    Every claim of a raid updates the same objective row and raid row, and holds their locks until
    its transaction ends (on PostgreSQL other claims wait for them; on SQLite the batch is one
    writer anyway): they are updated last, right before the commit.
    """
    if rules is None:
        rules = scoring.ScoringRules.from_dict(raid.scoring)
    claims = await q.value(st.SCORE_PARTICIPANT_SQL, participant_id, points, q.ts(now))
    bonus = 0
    if claims == len(objectives) and rules.completion_points:
        done = await q.value(st.COMPLETE_PARTICIPANT_SQL, participant_id, rules.completion_points, True, False)
        bonus = rules.completion_points if done else 0
    base = min(points, objectives[action][1])
    await record_sql(q, [
        Entry(raid.community_id, member_id, base, "claim", now, raid_id=raid.id, claim_id=claim_id),
        Entry(raid.community_id, member_id, points - base, "speed_bonus", now, raid_id=raid.id, claim_id=claim_id),
        Entry(raid.community_id, member_id, bonus, "completion_bonus", now, raid_id=raid.id, claim_id=claim_id),
    ], now=now, settings={raid.community_id: raid.settings} if isinstance(raid, _ClaimFacts) else None)
    # This UPDATE takes the raid row's lock: claims of one raid serialize from here, so the
    # completion check below sees every objective count committed before it (PostgreSQL too). It comes
    # before the objective's row, as a join's takes it first too: every transaction on a raid, alone or
    # a batch of several commands (which two workers may run at once), takes the raid's row before any
    # of its objectives' rows, so they cannot wait for each other in a circle.
    await q.run(st.SCORE_RAID_SQL, raid.id, points + bonus)
    count = await q.value(st.COUNT_UP_SQL, raid.id, action)
    completed = False
    if raid.status == "active" and count == objectives[action][0]:  # this claim met its objective
        completed = await q.value(st.UNMET_SQL, raid.id) == 0
    return bonus, completed


class _RaidFacts(NamedTuple):
    id: int
    community_id: int
    status: str
    started_at: datetime
    ends_at: datetime
    max_participants: int
    scoring: dict[str, Any]
    session_id: str | None
    verification_tier: str


class _ClaimFacts(NamedTuple):
    """CLAIM_CONTEXT_SQL's row: the raid's facts, the participation, and the abuse screen's facts."""

    id: int
    community_id: int
    status: str
    started_at: datetime
    ends_at: datetime
    max_participants: int
    scoring: dict[str, Any]
    session_id: str | None
    verification_tier: str
    participant_id: int | None
    member_id: int | None
    banned: bool
    repeated: int | None
    settings: dict[str, Any] | None
    recent: int
    handle: str | None
    proven: bool | None


def _raid_facts(q: Sql, row: Any) -> _RaidFacts | None:
    if row is None:
        return None
    return _RaidFacts(row[0], row[1], row[2], q.when(row[3]), q.when(row[4]), row[5], q.doc(row[6]), row[7], row[8])  # type: ignore[arg-type]


def _claim_facts(q: Sql, row: Any) -> _ClaimFacts | None:
    if row is None:
        return None
    return _ClaimFacts(
        row[0], row[1], row[2], q.when(row[3]), q.when(row[4]), row[5], q.doc(row[6]), row[7], row[8],  # type: ignore[arg-type]
        row[9], row[10], bool(row[11]), row[12], q.doc(row[13]), row[14] or 0, row[15],
        None if row[16] is None else bool(row[16]),
    )


async def _first_sight(q: Sql, member: MemberRef, now: datetime) -> tuple[int, bool]:
    """core.directory.ensure_member for an identity not found: (member id, whether a concurrent first
    sight of the same identity won, so the member is theirs)."""
    name = member.display_name or member.username or f"{member.platform}:{member.external_id}"
    member_id = await q.value(st.NEW_MEMBER_SQL, name[:128], False, q.ts(now))
    claimed = await q.value(st.NEW_IDENTITY_SQL, member_id, member.platform, member.external_id, member.username)
    if claimed is None:
        await q.run(st.DROP_MEMBER_SQL, member_id)
        return await q.value(st.IDENTITY_SQL, member.platform, member.external_id), True
    return member_id, False


async def _activity_sql(q: Sql, session_id: str, kind: str, at: datetime, data: dict[str, Any]) -> None:
    await q.run(st.ACTIVITY_SQL, session_id, kind, q.ts(at), q.json(data))


class _LazySession:
    """The session the abuse screen writes through on its rare paths (an audit pick), made on first use."""

    __slots__ = ("_q",)

    def __init__(self, q: Sql) -> None:
        self._q = q

    async def execute(self, *args: Any, **kw: Any) -> Any:
        return await self._q.session().execute(*args, **kw)

    async def scalar(self, *args: Any, **kw: Any) -> Any:
        return await self._q.session().scalar(*args, **kw)

    def get_bind(self, *args: Any, **kw: Any) -> Any:
        return self._q.session().get_bind(*args, **kw)
