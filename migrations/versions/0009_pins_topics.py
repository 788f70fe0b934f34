"""Raids remember whether their post is pinned and the Telegram forum topic they run in

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

`raid_sessions.pin_post`: the raid post is pinned while the raid runs (unpinned at its end through
an outbox row, retried until done). `raid_sessions.thread_id`: the Telegram forum topic
(message_thread_id) a raid was started in, so its post, edits, report and lock stay in that topic
after a restart; on Discord the thread made for a raid started with `thread` (`in_thread`), which
then also becomes the raid's `channel_id`. Existing raids get none of these. The outbox (`chat_posts.kind`) gains the kind `unpin`;
downgrading drops unpins still owed (the old code could not deliver them).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


KINDS_BEFORE = "kind IN ('raid', 'report', 'announcement')"
KINDS = "kind IN ('raid', 'report', 'announcement', 'unpin')"


def _kinds(check: str) -> None:
    with op.batch_alter_table('chat_posts', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_chat_posts_kind'), type_='check')
        batch_op.create_check_constraint('kind', check)


def upgrade() -> None:
    _kinds(KINDS)
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pin_post', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('thread_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('in_thread', sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    op.execute("DELETE FROM chat_posts WHERE kind = 'unpin'")
    _kinds(KINDS_BEFORE)
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.drop_column('in_thread')
        batch_op.drop_column('thread_id')
        batch_op.drop_column('pin_post')
