"""The join and claim hot path as statements built once, on the tables (not the ORM entities).

Building a statement per call (operators, coercion, cache keys) and the ORM's bulk-DML path were
most of a command's CPU; these are built at import, bound by name, and found in SQLAlchemy's
compiled cache every time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.storage.models import (
    Ban,
    CommunityMember,
    MemberIdentity,
    Raid,
    RaidAction,
    RaidObjective,
    RaidParticipant,
    SessionActivity,
)
from core.verification.abuse import screen_columns

R = Raid.__table__
P = RaidParticipant.__table__
A = RaidAction.__table__
O = RaidObjective.__table__  # noqa: E741
B = Ban.__table__
MI = MemberIdentity.__table__
CM = CommunityMember.__table__
SA = SessionActivity.__table__

RAID_FACTS = select(
    R.c.id, R.c.community_id, R.c.status, R.c.started_at, R.c.ends_at, R.c.max_participants, R.c.scoring,
    R.c.session_id, R.c.verification_tier,
).where(R.c.id == bindparam("raid_id"))

JOINED_OR_BANNED = select(
    select(P.c.join_position)
    .where(P.c.raid_id == bindparam("raid_id"), P.c.member_id == bindparam("member_id"))
    .scalar_subquery(),
    select(B.c.id)
    .where(B.c.community_id == bindparam("community_id"), B.c.member_id == bindparam("member_id"))
    .exists(),
)

# The cap, the position and the early-bird points in one conditional UPDATE of the raid row.
BUMP = (
    update(R)
    .where(R.c.id == bindparam("b_raid_id"), R.c.status == "active", R.c.participant_count < R.c.max_participants)
    .values(
        participant_count=R.c.participant_count + 1,
        points_awarded=R.c.points_awarded
        + case((R.c.participant_count < bindparam("b_early_joiners"), bindparam("b_early_points")), else_=0),
    )
    .returning(R.c.participant_count)
)

# Everything a claim reads before it writes, in one round trip: the raid's facts, the member's
# participation (NULL if they have not joined), a ban, and the abuse screen's facts.
_JOINED = P.join(MI, and_(MI.c.member_id == P.c.member_id, MI.c.platform == bindparam("platform"),
                          MI.c.external_id == bindparam("external_id")))
CLAIM_CONTEXT = (
    select(
        *RAID_FACTS.selected_columns,
        P.c.id.label("participant_id"), P.c.member_id.label("member_id"),
        exists().where(B.c.community_id == R.c.community_id, B.c.member_id == P.c.member_id).label("banned"),
        *screen_columns(P.c.id, P.c.member_id, R.c.community_id),
    )
    .select_from(R.outerjoin(_JOINED, P.c.raid_id == R.c.id))
    .where(R.c.id == bindparam("raid_id"))
)

OBJECTIVES = select(O.c.action_type, O.c.target, O.c.points).where(O.c.raid_id == bindparam("raid_id"))

PRIOR_CLAIM = select(A.c.id, A.c.verification, A.c.points).where(
    A.c.participant_id == bindparam("participant_id"), A.c.action_type == bindparam("action")
)

COUNT_UP = (
    update(O)
    .where(O.c.raid_id == bindparam("b_raid_id"), O.c.action_type == bindparam("b_action"))
    .values(count=O.c.count + 1)
    .returning(O.c.count)
)

SCORE_PARTICIPANT = (
    update(P)
    .where(P.c.id == bindparam("b_participant_id"))
    .values(points=P.c.points + bindparam("b_points"), claims_count=P.c.claims_count + 1,
            last_scored_at=bindparam("b_now"))
    .returning(P.c.claims_count)
)

COMPLETE_PARTICIPANT = (
    update(P)
    .where(P.c.id == bindparam("b_participant_id"), P.c.completed_all.is_(False))
    .values(completed_all=True, points=P.c.points + bindparam("b_bonus"))
    .returning(P.c.id)
)

SCORE_RAID = (
    update(R)
    .where(R.c.id == bindparam("b_raid_id"))
    .values(action_count=R.c.action_count + 1, points_awarded=R.c.points_awarded + bindparam("b_points"))
)

UNMET = select(func.count()).select_from(O).where(O.c.raid_id == bindparam("raid_id"), O.c.count < O.c.target)

ACTIVITY = insert(SA).values(
    session_id=bindparam("b_session_id"), activity_type=bindparam("b_kind"), at=bindparam("b_at"), data=bindparam("b_data")
)


def dml(**params: Any) -> dict[str, Any]:
    """Parameters for the INSERT/UPDATE statements here, whose bind names carry a b_ prefix
    (SQLAlchemy reserves a column's own name for its VALUES/SET clause)."""
    return {f"b_{k}": v for k, v in params.items()}


def _per_dialect(build: Any) -> dict[str, Any]:
    return {"sqlite": build(sqlite.insert), "postgresql": build(postgresql.insert)}


INSERT_PARTICIPANT = _per_dialect(
    lambda ins: ins(P)
    .values(
        raid_id=bindparam("b_raid_id"), member_id=bindparam("b_member_id"), join_position=bindparam("b_position"),
        joined_at=bindparam("b_now"), points=bindparam("b_points"), claims_count=0, completed_all=False,
        last_scored_at=bindparam("b_scored_at"),
    )
    .on_conflict_do_nothing(index_elements=["raid_id", "member_id"])
    .returning(P.c.id)
)

INSERT_CLAIM = _per_dialect(
    lambda ins: ins(A)
    .values(
        raid_id=bindparam("b_raid_id"), participant_id=bindparam("b_participant_id"), member_id=bindparam("b_member_id"),
        action_type=bindparam("b_action"), verification=bindparam("b_verification"), points=bindparam("b_points"),
        proof_url=bindparam("b_proof_url"), source="claim", claimed_at=bindparam("b_now"),
    )
    .on_conflict_do_nothing(index_elements=["participant_id", "action_type"])
    .returning(A.c.id)
)


def _touch(ins: Any, *, platform_says: bool = True) -> Any:
    stmt = ins(CM).values(
        community_id=bindparam("b_community_id"), member_id=bindparam("b_member_id"),
        is_moderator=bindparam("b_is_moderator"), excluded=False, last_seen_at=bindparam("b_now"),
    )
    changes = {"last_seen_at": stmt.excluded.last_seen_at}
    if platform_says:
        changes["is_moderator"] = stmt.excluded.is_moderator
    return stmt.on_conflict_do_update(index_elements=["community_id", "member_id"], set_=changes)


# A join from a chat platform records what the platform says of the member's moderator rights; a
# join through REST, MCP or Socket.IO says nothing of them, and keeps the flag the platform set.
TOUCH_MEMBER = _per_dialect(_touch)
TOUCH_MEMBER_KEEP_FLAG = _per_dialect(lambda ins: _touch(ins, platform_says=False))
