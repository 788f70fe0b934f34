"""Milestone badges: member_badges, and outbox posts of kind badge and badge_role

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A community names milestones on its members' all-time points (`/settings set badges ...`, kept in
communities.settings). A member who crosses one gets a member_badges row, written in the transaction
of the ledger change that crossed it; its announcement (`badge`) and, on Discord, its role grant
(`badge_role`) are outbox rows written in that same transaction (core/badges.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

OLD_KINDS = "kind IN ('raid', 'report', 'announcement', 'unpin')"
NEW_KINDS = "kind IN ('raid', 'report', 'announcement', 'unpin', 'badge', 'badge_role')"
# Row-level security (0003) covers every table that belongs to a community.
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"
POLICY = "nubi_community_scope"


def _kinds(check: str) -> None:
    with op.batch_alter_table('chat_posts', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_chat_posts_kind'), type_='check')
        batch_op.create_check_constraint('kind', check)


def upgrade() -> None:
    op.create_table('member_badges',
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('threshold', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('role_id', sa.String(length=32), nullable=True),
    sa.Column('awarded_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_member_badges_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_badges_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('community_id', 'member_id', 'threshold', name=op.f('pk_member_badges'))
    )
    _kinds(NEW_KINDS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE member_badges ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON member_badges USING ({SCOPE} IS NULL OR community_id = {SCOPE})")


def downgrade() -> None:
    op.execute("DELETE FROM chat_posts WHERE kind IN ('badge', 'badge_role')")
    _kinds(OLD_KINDS)
    op.drop_table('member_badges')  # its policy goes with it
