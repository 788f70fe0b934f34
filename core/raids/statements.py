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
from core.storage.pgfast import prebuilt
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


for _statement in (
    RAID_FACTS, JOINED_OR_BANNED, BUMP, CLAIM_CONTEXT, OBJECTIVES, PRIOR_CLAIM, COUNT_UP, SCORE_PARTICIPANT,
    COMPLETE_PARTICIPANT, SCORE_RAID, UNMET, ACTIVITY, INSERT_PARTICIPANT["postgresql"], INSERT_CLAIM["postgresql"],
    TOUCH_MEMBER["postgresql"], TOUCH_MEMBER_KEEP_FLAG["postgresql"],
):
    prebuilt(_statement)


# -- the same hot path as SQL text for `Database.write_sql` (core/storage/driver.py) --------------
# asyncpg's `$n` placeholders; SQLite reads them as `?n`. Column for column what the statements
# above select and write; bench/burst_sql.py runs these same texts for its baselines.

RAID_COLUMNS = ("id", "community_id", "status", "started_at", "ends_at", "max_participants", "scoring", "session_id",
                "verification_tier")
_R = ", ".join(f"r.{c}" for c in RAID_COLUMNS)

# A join's reads in one statement: the raid's facts; the member's identity (NULL on first sight),
# their place in this raid if they joined already, a ban in the raid's community, and the raid's
# head count (so a join to a full raid is refused before it writes; BUMP still holds the cap).
# $1 raid, $2 platform, $3 external id.
JOIN_CONTEXT_SQL = (
    f"SELECT {_R}, i.member_id, i.username, "
    "(SELECT p.join_position FROM raid_participants p WHERE p.raid_id = r.id AND p.member_id = i.member_id), "
    "EXISTS (SELECT 1 FROM bans b WHERE b.community_id = r.community_id AND b.member_id = i.member_id), "
    "r.participant_count "
    "FROM raid_sessions r LEFT JOIN member_identities i ON i.platform = $2 AND i.external_id = $3 WHERE r.id = $1"
)
# For a member whose identity this join created only after losing a race to a concurrent first sight.
JOINED_OR_BANNED_SQL = (
    "SELECT (SELECT join_position FROM raid_participants WHERE raid_id = $1 AND member_id = $2), "
    "EXISTS (SELECT 1 FROM bans WHERE community_id = $3 AND member_id = $2)"
)
# core.directory.ensure_member, statement for statement.
RENAME_IDENTITY_SQL = "UPDATE member_identities SET username = $3 WHERE platform = $1 AND external_id = $2"
NEW_MEMBER_SQL = "INSERT INTO members (display_name, x_handle_verified, created_at) VALUES ($1, $2, $3) RETURNING id"
NEW_IDENTITY_SQL = (
    "INSERT INTO member_identities (member_id, platform, external_id, username) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (platform, external_id) DO NOTHING RETURNING member_id"
)
DROP_MEMBER_SQL = "DELETE FROM members WHERE id = $1"
IDENTITY_SQL = "SELECT member_id FROM member_identities WHERE platform = $1 AND external_id = $2"
# $1 community, $2 member, $3 is_moderator, $4 excluded (false), $5 now.
_TOUCH = (
    "INSERT INTO community_members (community_id, member_id, is_moderator, excluded, last_seen_at) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (community_id, member_id) DO UPDATE SET last_seen_at = excluded.last_seen_at"
)
TOUCH_MEMBER_SQL = _TOUCH + ", is_moderator = excluded.is_moderator"
TOUCH_MEMBER_KEEP_FLAG_SQL = _TOUCH
# $1 raid, $2 early joiners, $3 early points.
BUMP_SQL = (
    "UPDATE raid_sessions SET participant_count = participant_count + 1, "
    "points_awarded = points_awarded + CASE WHEN participant_count < $2 THEN $3 ELSE 0 END "
    "WHERE id = $1 AND status = 'active' AND participant_count < max_participants RETURNING participant_count"
)
# $1 raid, $2 member, $3 position, $4 now, $5 points, $6 completed_all (false), $7 scored at.
INSERT_PARTICIPANT_SQL = (
    "INSERT INTO raid_participants (raid_id, member_id, join_position, joined_at, points, claims_count, completed_all, "
    "last_scored_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7) ON CONFLICT (raid_id, member_id) DO NOTHING RETURNING id"
)
ACTIVITY_SQL = "INSERT INTO session_activity_log (session_id, activity_type, at, data) VALUES ($1, $2, $3, $4)"

# A claim's reads in one statement (CLAIM_CONTEXT above): $1 raid, $2 platform, $3 external id,
# $4 action, $5 since (the claim-rate screen's minute).
CLAIM_CONTEXT_SQL = (
    f"SELECT {_R}, p.id, p.member_id, "
    "EXISTS (SELECT 1 FROM bans b WHERE b.community_id = r.community_id AND b.member_id = p.member_id), "
    "(SELECT a.id FROM raid_actions a WHERE a.participant_id = p.id AND a.action_type = $4), "
    "(SELECT c.settings FROM communities c WHERE c.id = r.community_id), "
    "(SELECT count(a.id) FROM raid_actions a WHERE a.member_id = p.member_id AND a.source = 'claim' "
    "AND a.claimed_at > $5), "
    "(SELECT m.x_handle FROM members m WHERE m.id = p.member_id), "
    "(SELECT m.x_handle_verified FROM members m WHERE m.id = p.member_id) "
    "FROM raid_sessions r LEFT JOIN (raid_participants p JOIN member_identities i ON i.member_id = p.member_id "
    "AND i.platform = $2 AND i.external_id = $3) ON p.raid_id = r.id WHERE r.id = $1"
)
OBJECTIVES_SQL = "SELECT action_type, target, points FROM raid_objectives WHERE raid_id = $1"
# $1 raid, $2 participant, $3 member, $4 action, $5 verification, $6 points, $7 proof url, $8 now.
INSERT_CLAIM_SQL = (
    "INSERT INTO raid_actions (raid_id, participant_id, member_id, action_type, verification, points, proof_url, "
    "source, claimed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'claim', $8) "
    "ON CONFLICT (participant_id, action_type) DO NOTHING RETURNING id"
)
PRIOR_CLAIM_SQL = "SELECT id, verification, points FROM raid_actions WHERE participant_id = $1 AND action_type = $2"
SCORE_PARTICIPANT_SQL = (
    "UPDATE raid_participants SET points = points + $2, claims_count = claims_count + 1, last_scored_at = $3 "
    "WHERE id = $1 RETURNING claims_count"
)
# $1 participant, $2 bonus, $3 true, $4 false.
COMPLETE_PARTICIPANT_SQL = (
    "UPDATE raid_participants SET completed_all = $3, points = points + $2 WHERE id = $1 AND completed_all = $4 "
    "RETURNING id"
)
COUNT_UP_SQL = "UPDATE raid_objectives SET count = count + 1 WHERE raid_id = $1 AND action_type = $2 RETURNING count"
SCORE_RAID_SQL = (
    "UPDATE raid_sessions SET action_count = action_count + 1, points_awarded = points_awarded + $2 WHERE id = $1"
)
UNMET_SQL = "SELECT count(*) FROM raid_objectives WHERE raid_id = $1 AND count < target"
