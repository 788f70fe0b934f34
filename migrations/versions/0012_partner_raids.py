"""Partner raids: linked chats, their one-time codes, and the partner chats of a raid

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

chat_links holds both directions of each link between two chats (`/community link` in one,
`/community join CODE` in the other); chat_link_codes the one-time codes (hashed, ten minutes);
raid_chats the partner chats a raid is posted in, with where its post is there.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.storage.types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

# Row-level security (0003) covers every table that belongs to a community.
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"
POLICY = "nubi_community_scope"
POLICIES = {
    "chat_links": f"community_id = {SCOPE}",
    "chat_link_codes": f"community_id = {SCOPE}",
    # a raid's partner chats belong to the raid's community (its start writes them)
    "raid_chats": f"raid_id IN (SELECT r.id FROM raid_sessions r WHERE r.community_id = {SCOPE})",
}


def upgrade() -> None:
    op.create_table('chat_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('partner_community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_channel_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('created_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_chat_links_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['partner_community_id'], ['communities.id'], name=op.f('fk_chat_links_partner_community_id_communities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_links')),
    sa.UniqueConstraint('community_id', 'channel_id', 'partner_community_id', 'partner_channel_id', name='uq_chat_links_pair')
    )
    op.create_table('chat_link_codes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('created_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_chat_link_codes_community_id_communities'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_link_codes')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_chat_link_codes_code_hash'))
    )
    op.create_table('raid_chats',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('raid_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('channel_id', sa.String(length=128), server_default='', nullable=False),
    sa.Column('progress_ref', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_raid_chats_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['raid_id'], ['raid_sessions.id'], name=op.f('fk_raid_chats_raid_id_raid_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_raid_chats')),
    sa.UniqueConstraint('raid_id', 'community_id', 'channel_id', name='uq_raid_chats_chat')
    )
    op.create_index('ix_raid_chats_chat', 'raid_chats', ['community_id', 'channel_id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for table, rows in POLICIES.items():
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({SCOPE} IS NULL OR {rows})")


def downgrade() -> None:
    """Drops the links and the partner chats of past raids (their posts stay where they are)."""
    op.drop_index('ix_raid_chats_chat', table_name='raid_chats')
    op.drop_table('raid_chats')
    op.drop_table('chat_link_codes')
    op.drop_table('chat_links')  # their policies go with them
