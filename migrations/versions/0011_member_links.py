"""Account-link codes: one member across Telegram, Discord and the web

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

member_link_codes holds the one-time codes of `/link account` (hashed, bound to the identity that
asked, ten minutes), which redemption used each one, and links refused because both members hold
points in one community (a moderator approves those with `/member merge`). Linking itself needs no
new column: two identities are linked when member_identities points them at one members row.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('member_link_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('redeemer_platform', sa.String(length=16), nullable=True),
    sa.Column('redeemer_external_id', sa.String(length=128), nullable=True),
    sa.Column('refused_at', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('merged_at', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_link_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_member_link_codes_code_hash'))
    )
    op.create_index('ix_member_link_codes_identity', 'member_link_codes', ['platform', 'external_id'], unique=False)


def downgrade() -> None:
    """Drops the codes. Accounts linked stay linked: a merged member cannot be split back."""
    op.drop_index('ix_member_link_codes_identity', table_name='member_link_codes')
    op.drop_table('member_link_codes')
