"""The points ledger: one row per change of points; existing scores backfilled into it

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

Backfill, so every board keeps its totals: each raid participant's points become one row of that
raid (at the participant's last scoring time); then, per member and day, a row holds what the day's
score has beyond those raid rows (manual points, and raid points scored on other days), so the
ledger's day sums equal the stored day scores, and with them the week, month and all-time sums
(every score change wrote all four windows at one time). Whatever the all-time score still has
beyond the day rows goes in one row at the epoch. The stored scores are left as they are.

On PostgreSQL the table gets the same community policy as the other community tables (0003).
Downgrade drops the table; the stored scores stay, so boards read the same.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import core.storage.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

POLICY = "nubi_community_scope"
SCOPE = "(SELECT nullif(current_setting('nubi.community', true), '')::bigint)"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KINDS = "kind IN ('join_bonus', 'claim', 'speed_bonus', 'completion_bonus', 'manual', 'revoke', 'backfill')"
BIGINT = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
UTC_TIME = core.storage.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table('points_ledger',
    sa.Column('id', BIGINT, autoincrement=True, nullable=False),
    sa.Column('community_id', BIGINT, nullable=False),
    sa.Column('member_id', BIGINT, nullable=False),
    sa.Column('raid_id', BIGINT, nullable=True),
    sa.Column('claim_id', BIGINT, nullable=True),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('effective_at', UTC_TIME, nullable=False),
    sa.Column('recorded_at', UTC_TIME, nullable=False),
    sa.Column('reverses_id', BIGINT, nullable=True),
    sa.Column('actor_member_id', BIGINT, nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.CheckConstraint(KINDS, name=op.f('ck_points_ledger_kind')),
    sa.ForeignKeyConstraint(['actor_member_id'], ['members.id'], name=op.f('fk_points_ledger_actor_member_id_members'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['claim_id'], ['raid_actions.id'], name=op.f('fk_points_ledger_claim_id_raid_actions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['community_id'], ['communities.id'], name=op.f('fk_points_ledger_community_id_communities'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], name=op.f('fk_points_ledger_member_id_members'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['raid_id'], ['raid_sessions.id'], name=op.f('fk_points_ledger_raid_id_raid_sessions'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reverses_id'], ['points_ledger.id'], name=op.f('fk_points_ledger_reverses_id_points_ledger'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_points_ledger')),
    sa.UniqueConstraint('reverses_id', name=op.f('uq_points_ledger_reverses_id'))
    )
    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.create_index('ix_points_ledger_claim', ['claim_id'], unique=False)
        batch_op.create_index('ix_points_ledger_community_effective', ['community_id', 'effective_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_points_ledger_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_points_ledger_raid_member', ['raid_id', 'member_id'], unique=False)
    _backfill()
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE points_ledger ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {POLICY} ON points_ledger USING ({SCOPE} IS NULL OR community_id = {SCOPE})")


def _backfill() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    ledger = sa.table('points_ledger', sa.column('community_id', BIGINT), sa.column('member_id', BIGINT),
                      sa.column('raid_id', BIGINT), sa.column('kind', sa.String), sa.column('points', sa.Integer),
                      sa.column('effective_at', UTC_TIME), sa.column('recorded_at', UTC_TIME),
                      sa.column('reason', sa.Text))
    p = sa.table('raid_participants', sa.column('raid_id', BIGINT), sa.column('member_id', BIGINT),
                 sa.column('points', sa.Integer), sa.column('last_scored_at', UTC_TIME), sa.column('joined_at', UTC_TIME))
    r = sa.table('raid_sessions', sa.column('id', BIGINT), sa.column('community_id', BIGINT))
    ms = sa.table('member_scores', sa.column('community_id', BIGINT), sa.column('member_id', BIGINT),
                  sa.column('window', sa.String), sa.column('window_start', UTC_TIME), sa.column('points', sa.Integer))
    rows: list[dict[str, object]] = []
    in_days: dict[tuple[int, int, datetime], int] = defaultdict(int)
    in_all: dict[tuple[int, int], int] = defaultdict(int)

    def add(community: int, member: int, raid: int | None, points: int, at: datetime) -> None:
        rows.append({"community_id": community, "member_id": member, "raid_id": raid, "kind": "backfill",
                     "points": points, "effective_at": at, "recorded_at": now, "reason": "scores before the ledger"})
        in_days[(community, member, at.replace(hour=0, minute=0, second=0, microsecond=0))] += points
        in_all[(community, member)] += points

    for community, member, raid, points, at in bind.execute(
        sa.select(r.c.community_id, p.c.member_id, p.c.raid_id, p.c.points,
                  sa.func.coalesce(p.c.last_scored_at, p.c.joined_at))
        .select_from(p.join(r, r.c.id == p.c.raid_id)).where(p.c.points != 0)
    ):
        add(community, member, raid, points, at)
    raid_days = dict(in_days)
    for community, member, day, points in bind.execute(
        sa.select(ms.c.community_id, ms.c.member_id, ms.c.window_start, ms.c.points).where(ms.c.window == "day")
    ):
        rest = points - raid_days.get((community, member, day), 0)
        if rest:
            add(community, member, None, rest, day + timedelta(hours=12))
    for (community, member, day), points in raid_days.items():
        if not bind.execute(sa.select(sa.func.count()).select_from(ms).where(
            ms.c.community_id == community, ms.c.member_id == member, ms.c.window == "day", ms.c.window_start == day
        )).scalar():
            add(community, member, None, -points, day + timedelta(hours=12))  # raid points no day score holds
    for community, member, points in bind.execute(
        sa.select(ms.c.community_id, ms.c.member_id, ms.c.points).where(ms.c.window == "all")
    ):
        rest = points - in_all.get((community, member), 0)
        if rest:
            add(community, member, None, rest, EPOCH)
    for start in range(0, len(rows), 1000):
        bind.execute(sa.insert(ledger), rows[start:start + 1000])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP POLICY IF EXISTS {POLICY} ON points_ledger")
    with op.batch_alter_table('points_ledger', schema=None) as batch_op:
        batch_op.drop_index('ix_points_ledger_raid_member')
        batch_op.drop_index(batch_op.f('ix_points_ledger_member_id'))
        batch_op.drop_index('ix_points_ledger_community_effective')
        batch_op.drop_index('ix_points_ledger_claim')
    op.drop_table('points_ledger')
