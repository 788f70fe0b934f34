"""Honest claim states (accepted apart from verified), why a raid ended, and the chat-post outbox

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06

- raid_actions.verification may be `accepted` (a moderator approved the claim). Claims a moderator
  settled, and likes and bookmarks (never machine-checkable), were stored as `verified`: they move
  to `accepted`; a downgrade folds them back.
- raid_sessions.end_cause: objectives_met | time_up | ended_by_moderator | cancelled_by_moderator |
  replaced. Older raids are filled in from their free-text end_reason where it says.
- chat_posts: the outbox of raid posts and reports (claimed, sent, then marked). Raids already
  posted are not copied in: their posts are made.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import core.storage.types

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OLD_STATES = "verification IN ('verified', 'pending', 'rejected', 'unverifiable')"
NEW_STATES = "verification IN ('verified', 'accepted', 'pending', 'rejected', 'unverifiable')"
CAUSES = {
    "every objective met": "objectives_met",
    "time is up": "time_up",
    "ended by a moderator": "ended_by_moderator",
    "cancelled by a moderator": "cancelled_by_moderator",
    "replaced by a new raid": "replaced",
}
# Row-level security (0003) covers every table that belongs to a community.
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"
POLICY = "nubi_community_scope"


def _verification_check(check: str) -> None:
    with op.batch_alter_table('raid_actions', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_raid_actions_verification'), type_='check')
        batch_op.create_check_constraint('verification', check)


def upgrade() -> None:
    _verification_check(NEW_STATES)
    op.execute(
        "UPDATE raid_actions SET verification = 'accepted' WHERE verification = 'verified'"
        " AND (reviewed_by IS NOT NULL OR action_type IN ('like', 'bookmark'))"
    )
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('end_cause', sa.String(length=24), nullable=True))
    for reason, cause in CAUSES.items():
        op.execute(sa.text("UPDATE raid_sessions SET end_cause = :c WHERE end_reason = :r").bindparams(c=cause, r=reason))

    op.create_table('chat_posts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('community_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('raid_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('nonce', sa.String(length=25), nullable=False),
    sa.Column('created_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('due_at', core.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('sent_at', core.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stale', sa.Boolean(), nullable=False),
    sa.Column('ref', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=True),
    sa.Column('last_error', sa.String(length=200), nullable=True),
    sa.CheckConstraint("kind IN ('raid', 'report', 'announcement')", name=op.f('ck_chat_posts_kind')),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_chat_posts_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['raid_id'], ['raid_sessions.id'], name=op.f('fk_chat_posts_raid_id_raid_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chat_posts')),
    sa.UniqueConstraint('key', name=op.f('uq_chat_posts_key'))
    )
    op.create_index('ix_chat_posts_due', 'chat_posts', ['sent_at', 'due_at'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE chat_posts ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON chat_posts USING ({SCOPE} IS NULL OR community_id = {SCOPE})")


def downgrade() -> None:
    op.drop_index('ix_chat_posts_due', table_name='chat_posts')
    op.drop_table('chat_posts')  # its policy goes with it
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.drop_column('end_cause')
    op.execute("UPDATE raid_actions SET verification = 'verified' WHERE verification = 'accepted'")
    _verification_check(OLD_STATES)
