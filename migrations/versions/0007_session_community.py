"""A session belongs to exactly one community, stored with it: nubi_sessions.community

Who may see a session was guessed per entry point (a raid session without `metadata.community` was
taken for the agent's web community). Now the session row says it, "<platform>:<external id>":
raid and chat sessions take their community's name, conversations their web community
(`metadata.community`, else `agent:<agent id>`), exactly as core/sessions/service.py writes new rows.

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-06
"""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _web_community(metadata: Any, agent_id: str) -> str:
    """The same rule as core.sessions.service.web_community, frozen here as this migration's."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            metadata = {}
    community = metadata.get("community") if isinstance(metadata, dict) else None
    if not isinstance(community, str) or not community.strip() or len(community) > 128:
        community = f"agent:{agent_id}"
    return f"web:{community}"


def upgrade() -> None:
    with op.batch_alter_table('nubi_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('community', sa.String(length=160), nullable=True))
    bind = op.get_bind()
    bind.execute(sa.text(
        "UPDATE nubi_sessions SET community = (SELECT c.platform || ':' || c.external_id FROM communities c "
        "WHERE c.id = nubi_sessions.community_id) WHERE community_id IS NOT NULL"
    ))
    bind.execute(sa.text(  # a raid's session whose community_id was lost: the raid row still knows
        "UPDATE nubi_sessions SET community = (SELECT c.platform || ':' || c.external_id FROM raid_sessions r "
        "JOIN communities c ON c.id = r.community_id WHERE r.session_id = nubi_sessions.id) "
        "WHERE community IS NULL AND EXISTS (SELECT 1 FROM raid_sessions r WHERE r.session_id = nubi_sessions.id)"
    ))
    rows = bind.execute(sa.text("SELECT id, agent_id, metadata FROM nubi_sessions WHERE community IS NULL")).all()
    update = sa.text("UPDATE nubi_sessions SET community = :community WHERE id = :id")
    for session_id, agent_id, metadata in rows:
        bind.execute(update, {"id": session_id, "community": _web_community(metadata, agent_id)})
    with op.batch_alter_table('nubi_sessions', schema=None) as batch_op:
        batch_op.alter_column('community', existing_type=sa.String(length=160), nullable=False)
        batch_op.create_index(batch_op.f('ix_nubi_sessions_community'), ['community'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('nubi_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nubi_sessions_community'))
        batch_op.drop_column('community')
