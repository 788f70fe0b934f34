"""The points ledger table: one row per change of a member's points (core/ledger.py writes it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, _in
from .types import BigIntPK, UTCDateTime

LEDGER_KINDS = ("join_bonus", "claim", "speed_bonus", "completion_bonus", "manual", "revoke", "backfill")


class PointsEntry(Base):
    """One change of points, never updated or deleted: a revoke adds rows reversing earlier ones.

    `effective_at` places the change in its leaderboard windows (a reversal keeps the time of the
    row it reverses, so each window loses exactly what was earned in it); `reverses_id` is unique,
    so a row is reversed at most once.
    """

    __tablename__ = "points_ledger"
    __table_args__ = (
        CheckConstraint(_in("kind", LEDGER_KINDS), name="kind"),
        Index("ix_points_ledger_community_effective", "community_id", "effective_at"),
        Index("ix_points_ledger_raid_member", "raid_id", "member_id"),
        Index("ix_points_ledger_claim", "claim_id"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    raid_id: Mapped[int | None] = mapped_column(ForeignKey("raid_sessions.id", ondelete="SET NULL"))
    claim_id: Mapped[int | None] = mapped_column(ForeignKey("raid_actions.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(24))
    points: Mapped[int] = mapped_column(Integer)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reverses_id: Mapped[int | None] = mapped_column(
        ForeignKey("points_ledger.id", ondelete="SET NULL"), unique=True
    )
    actor_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
