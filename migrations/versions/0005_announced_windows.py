"""Announced windows: quarter-hour score slices and the so-far flag of scheduled announcements

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-06

A scheduled announcement shows a window by the clock of its time zone (a Berlin week starts Sunday
23:00 UTC), which the UTC window rows of member_scores cannot give: member_score_slices keeps each
member's points per quarter hour, and such a board is the sum of the slices inside it. Slices start
empty: points scored before this revision count on UTC-aligned boards only. `so_far` marks the
schedules that show the running window instead of the last completed one.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

POLICY = "nubi_community_scope"
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"


def upgrade() -> None:
    op.create_table('member_score_slices',
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('slice_start', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('last_scored_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_member_score_slices_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_member_score_slices_member_id_members'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('community_id', 'slice_start', 'member_id', name=op.f('pk_member_score_slices'))
    )
    op.create_index('ix_member_score_slices_range', 'member_score_slices', ['community_id', 'slice_start'], unique=False)
    op.add_column('scheduled_announcements',
                  sa.Column('so_far', sa.Boolean(), server_default=sa.false(), nullable=False))
    if op.get_bind().dialect.name == "postgresql":  # the community scope of 0003 covers the new table too
        op.execute("ALTER TABLE member_score_slices ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON member_score_slices USING ({SCOPE} IS NULL OR community_id = {SCOPE})")


def downgrade() -> None:
    with op.batch_alter_table('scheduled_announcements', schema=None) as batch_op:
        batch_op.drop_column('so_far')
    op.drop_index('ix_member_score_slices_range', table_name='member_score_slices')
    op.drop_table('member_score_slices')  # its policy goes with it
