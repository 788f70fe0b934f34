"""A Discord community is the server (guild); raids, schedules and locks name their channel

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Until now a Discord community was one channel (`communities.external_id` = the channel id), so bans,
boards, settings and schedules stopped at the channel's edge. Now the community is the server and a
raid, a schedule and a chat lock say which channel they are in (`channel_id`; "" where the community
is the chat itself, as on Telegram and the web).

A migration cannot ask Discord which server a channel belongs to, so this one does what it can
exactly and leaves the rest to nubi's Discord adapter:
- every row that belongs to a Discord channel community gets that channel in `channel_id`
  (raids, schedules, chat locks);
- the channel community is renamed `channel:<channel id>` (its raid sessions' community name with
  it), so it can never be mistaken for a server (an old server's first channel shares its id);
- the first time the adapter sees the channel (a command, or the server's channel list when the
  gateway connects) it moves everything of `channel:<id>` into the server's community in one
  transaction: raids, ledger, score tables (summed), bans, members, schedules, locks, posts,
  audit log and settings (core/communities.py, audited as `community_merge`).

Also drops raid_sessions.posted_at and completion_posted_at, unused since the outbox (0006).
Downgrading keeps merged servers merged (a server's rows cannot be split back into channels);
channel communities not merged yet get their old names back.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

CHANNEL_TABLES = ('raid_sessions', 'scheduled_announcements', 'chat_locks')
LEGACY = "channel:"


def _lock_index(*columns: str) -> None:
    op.create_index('uq_chat_locks_active', 'chat_locks', list(columns), unique=True,
                    sqlite_where=sa.text('released_at IS NULL'), postgresql_where=sa.text('released_at IS NULL'))


def upgrade() -> None:
    for table in CHANNEL_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('channel_id', sa.String(length=128), server_default='', nullable=False))
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.drop_column('posted_at')
        batch_op.drop_column('completion_posted_at')
    op.drop_index('uq_chat_locks_active', table_name='chat_locks')
    _lock_index('community_id', 'channel_id')

    discord = "(SELECT id FROM communities WHERE platform = 'discord' AND external_id NOT LIKE 'channel:%')"
    for table in CHANNEL_TABLES:
        op.execute(
            f"UPDATE {table} SET channel_id = (SELECT c.external_id FROM communities c WHERE c.id = {table}.community_id) "
            f"WHERE community_id IN {discord}"
        )
    op.execute(
        "UPDATE nubi_sessions SET community = 'discord:channel:' || substr(community, 9) "
        f"WHERE community LIKE 'discord:%' AND community_id IN {discord}"
    )
    op.execute(f"UPDATE communities SET external_id = '{LEGACY}' || external_id WHERE id IN {discord}")


def downgrade() -> None:
    legacy = "(SELECT id FROM communities WHERE platform = 'discord' AND external_id LIKE 'channel:%')"
    op.execute(
        "UPDATE nubi_sessions SET community = 'discord:' || substr(community, 17) "
        f"WHERE community LIKE 'discord:channel:%' AND community_id IN {legacy}"
    )
    op.execute(f"UPDATE communities SET external_id = substr(external_id, 9) WHERE id IN {legacy}")
    op.drop_index('uq_chat_locks_active', table_name='chat_locks')
    _lock_index('community_id')
    with op.batch_alter_table('raid_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('posted_at', core.storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column('completion_posted_at', core.storage.types.UTCDateTime(timezone=True), nullable=True))
    for table in CHANNEL_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('channel_id')
