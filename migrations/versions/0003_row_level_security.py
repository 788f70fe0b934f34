"""Row-level security on PostgreSQL: the nubi_app role and one community policy per scoped table

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Defence in depth for `database.row_level_security = true` (docs/rls.md). The app connects as a
login role that is a member of `nubi_app` and does not own the tables; each transaction of a
community-scoped request sets `nubi.community` (core/storage/rls.py). A policy keeps every
community-scoped table to that community's rows; with the setting unset or empty (global work: the
scheduler, admin keys, chat adapters) every row stays visible, so turning the setting off changes
nothing.

RLS is ENABLEd, not FORCEd: the owner (who runs `nubi migrate`, pg_dump and maintenance) stays
exempt. FORCE would add nothing for the documented setup, since the app is not the owner, and it
would make pg_dump as the owner fail (pg_dump runs with row_security off and refuses tables whose
policies would apply). An app misconfigured to connect as the owner is refused at its first
transaction instead (core/storage/rls.py), rather than silently running without policies.

SQLite has no row-level security: there this revision does nothing.
"""
from __future__ import annotations

import logging

from alembic import op
from sqlalchemy import text

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

ROLE = "nubi_app"
POLICY = "nubi_community_scope"
EXISTS_FN = "nubi_community_exists"
log = logging.getLogger("alembic.runtime.migration")

# Every nubi table at this revision; tables of later migrations get the default privileges below.
TABLES = (
    "communities", "members", "member_identities", "community_members", "nubi_sessions", "session_messages",
    "session_activity_log", "raid_sessions", "raid_objectives", "raid_participants", "raid_actions",
    "raid_metrics", "raid_reports", "member_scores", "leaderboard_windows", "scheduled_announcements",
    "announcement_runs", "chat_locks", "bans", "moderation_audit_log", "x_links", "x_link_conflicts",
    "claim_checks", "x_sweeps", "x_read_usage",
)

# The scope, read once per statement (an InitPlan, not a call per row); NULL when unset or empty.
# After the first set_config on a connection the setting reads back as '' outside a scope, not NULL.
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"
IN_RAID = f"raid_id IN (SELECT r.id FROM raid_sessions r WHERE r.community_id = {SCOPE})"

# table -> the rows a scoped transaction may see and write (besides every row when unscoped).
SCOPED: dict[str, str] = {
    # Starting a raid runs INSERT ... ON CONFLICT DO NOTHING RETURNING id on the community's own row,
    # and PostgreSQL checks the proposed row (with a fresh id) against this policy before it finds the
    # conflict. A row not stored yet passes, so that insert works inside a scope; every stored row but
    # the scope's own stays hidden and unwritable. (The function reads past the policy as the owner;
    # a subquery on communities here would recurse into this same policy.)
    "communities": f"id = {SCOPE} OR NOT {EXISTS_FN}(id)",
    "community_members": f"community_id = {SCOPE}",
    "raid_sessions": f"community_id = {SCOPE}",
    "member_scores": f"community_id = {SCOPE}",
    "leaderboard_windows": f"community_id = {SCOPE}",
    "scheduled_announcements": f"community_id = {SCOPE}",
    "chat_locks": f"community_id = {SCOPE}",
    "bans": f"community_id = {SCOPE}",
    "moderation_audit_log": f"community_id = {SCOPE}",
    # Conversation sessions of the Sessions API belong to no community: they stay visible.
    "nubi_sessions": f"community_id IS NULL OR community_id = {SCOPE}",
    "session_messages": (
        "EXISTS (SELECT 1 FROM nubi_sessions s WHERE s.id = session_id"
        f" AND (s.community_id IS NULL OR s.community_id = {SCOPE}))"
    ),
    "session_activity_log": (
        "EXISTS (SELECT 1 FROM nubi_sessions s WHERE s.id = session_id"
        f" AND (s.community_id IS NULL OR s.community_id = {SCOPE}))"
    ),
    "raid_objectives": IN_RAID,
    "raid_participants": IN_RAID,
    "raid_actions": IN_RAID,
    "raid_metrics": IN_RAID,
    "raid_reports": IN_RAID,
    "claim_checks": IN_RAID,
    "x_sweeps": IN_RAID,
    "announcement_runs": (
        f"schedule_id IN (SELECT a.id FROM scheduled_announcements a WHERE a.community_id = {SCOPE})"
    ),
}

GRANTS = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'nubi: no CREATEROLE, so role {ROLE} was not created or granted anything (docs/rls.md)';
                RETURN;
            WHEN duplicate_object THEN
                NULL;  -- another migrator created it meanwhile
        END;
    END IF;
    IF NOT has_schema_privilege('{ROLE}', current_schema(), 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', current_schema());
    END IF;
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {", ".join(TABLES)} TO {ROLE};
    -- Read only: `nubi run` checks that the database is at the latest migration.
    GRANT SELECT ON TABLE alembic_version TO {ROLE};
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO {ROLE}', current_schema());
    -- Tables and sequences that later migrations create (as this same user) get the same grants.
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}',
                   current_schema());
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO {ROLE}',
                   current_schema());
END
$$;
"""


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _postgresql():
        return
    bind = op.get_bind()
    op.execute(GRANTS)
    if bind.scalar(text(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'")) == 0:
        log.warning("this user may not create roles, so role %s was not created and nothing was granted: "
                    "see docs/rls.md (a superuser creates it, then migrate to 0002 and back to head)", ROLE)
    # Schema-qualified, with the caller's temporary schema last: a temp table named communities
    # must not stand in for the real one in a function that runs as the owner.
    schema = bind.dialect.identifier_preparer.quote_identifier(bind.scalar(text("SELECT current_schema()")))
    op.execute(
        f"CREATE FUNCTION {EXISTS_FN}(community bigint) RETURNS boolean"
        " LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
        f" AS $fn$ SELECT EXISTS (SELECT 1 FROM {schema}.communities WHERE id = community) $fn$"
    )
    for table, rows in SCOPED.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        # Without WITH CHECK the USING expression also checks new and updated rows: a scoped
        # transaction can neither write another community's rows nor move a row into one.
        op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({SCOPE} IS NULL OR {rows})")


def downgrade() -> None:
    # The role and its grants stay: the role is shared by the cluster's databases, and an app
    # connecting as one of its members keeps working at the previous revision.
    if not _postgresql():
        return
    for table in SCOPED:
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"DROP FUNCTION IF EXISTS {EXISTS_FN}(bigint)")
