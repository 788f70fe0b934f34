"""The join and claim hot path as statements built once.

Join and claim run as SQL text on the driver (`Database.write_sql`, core/storage/driver.py): the texts
below, one round trip each. The few SQLAlchemy statements left here serve the slower paths that share
the raid's facts (metrics, moderators' ops), built at import, bound by name, and found in SQLAlchemy's
compiled cache every time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select

from core.storage.models import Raid, RaidObjective, SessionActivity

R = Raid.__table__
O = RaidObjective.__table__  # noqa: E741
SA = SessionActivity.__table__

RAID_FACTS = select(
    R.c.id, R.c.community_id, R.c.status, R.c.started_at, R.c.ends_at, R.c.max_participants, R.c.scoring,
    R.c.session_id, R.c.verification_tier,
).where(R.c.id == bindparam("raid_id"))

OBJECTIVES = select(O.c.action_type, O.c.target, O.c.points).where(O.c.raid_id == bindparam("raid_id"))

ACTIVITY = insert(SA).values(
    session_id=bindparam("b_session_id"), activity_type=bindparam("b_kind"), at=bindparam("b_at"), data=bindparam("b_data")
)


def dml(**params: Any) -> dict[str, Any]:
    """Parameters for the INSERT/UPDATE statements here, whose bind names carry a b_ prefix
    (SQLAlchemy reserves a column's own name for its VALUES/SET clause)."""
    return {f"b_{k}": v for k, v in params.items()}


# -- the same hot path as SQL text for `Database.write_sql` (core/storage/driver.py) --------------
# asyncpg's `$n` placeholders; SQLite reads them as `?n`. bench/burst_sql.py runs these same texts
# for its baselines.

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
    "r.participant_count, (SELECT c.settings FROM communities c WHERE c.id = r.community_id) "
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

# A claim's reads in one statement: the raid's facts, the member's participation (NULL if they have
# not joined), a ban, and the abuse screen's facts (core.verification.abuse.screen_columns): $1 raid, $2 platform, $3 external id,
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
