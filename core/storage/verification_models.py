"""Tables of claim verification through the X API: link proofs, claim checks, sweeps and read spend.

Kept apart from models.py so the verification feature owns its schema; core.storage.models imports
this module so Alembic (migrations/env.py) sees one metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base, RaidAction
from .types import BigIntPK, JSONType, UTCDateTime


class XLink(Base):
    """A member's X link proof: the pending one-time code, and what the API said about the account."""

    __tablename__ = "x_links"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    handle: Mapped[str] = mapped_column(String(32))
    code: Mapped[str | None] = mapped_column(String(16))
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    proven_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    x_user_id: Mapped[str | None] = mapped_column(String(32))
    account_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    followers: Mapped[int | None] = mapped_column(Integer)


class XLinkConflict(Base):
    """A member asked for a handle that belongs to someone else: moderators settle these."""

    __tablename__ = "x_link_conflicts"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    handle: Mapped[str] = mapped_column(String(32), index=True)
    owner_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    claimant_member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class ClaimCheck(Base):
    """Why a claim is in its state: the last verifier outcome, a flag for moderators, or an audit pick.

    Keyed like a claim ((raid, member, action) is unique), so an audit pick can be noted in the
    claim's own transaction before the claim row has an id.
    """

    __tablename__ = "claim_checks"
    __table_args__ = (Index("ix_claim_checks_raid_text", "raid_id", "text_hash"),)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    action_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16))  # verified | rejected | flagged
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    post_id: Mapped[str | None] = mapped_column(String(32))
    text_hash: Mapped[str | None] = mapped_column(String(40))
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class XSweep(Base):
    """Sweep state per raid, so deferrals, incremental windows and the final sweep survive restarts."""

    __tablename__ = "x_sweeps"
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"), primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    last_reads: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deferred_reason: Mapped[str | None] = mapped_column(String(32))
    final_parts: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metrics_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class XReadUsage(Base):
    """Reads spent per raid (scope 'raid', key raid id) and per UTC day (scope 'day', key 2026-01-05)."""

    __tablename__ = "x_read_usage"
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    reads: Mapped[int] = mapped_column(Integer, default=0)


# The per-member claim rate limit counts a member's recent claims; this keeps that an index range scan.
Index("ix_raid_actions_member_claimed", RaidAction.member_id, RaidAction.claimed_at)
