"""The table of account-link codes (core/member_links/): one row per `/link account` request."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base
from .types import BigIntPK, UTCDateTime


class LinkCode(Base):
    """A one-time code bound to the platform identity that asked for it.

    Only the code's SHA-256 is stored. `used_at` is set by the one redemption that wins (a conditional
    UPDATE); `redeemer_*` name the identity that redeemed it. A redemption refused because both
    members hold points in the same community sets `refused_at`: that refused link is what a
    moderator's `/member merge` approves (`merged_at`), within a week.
    """

    __tablename__ = "member_link_codes"
    __table_args__ = (Index("ix_member_link_codes_identity", "platform", "external_id"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redeemer_platform: Mapped[str | None] = mapped_column(String(16))
    redeemer_external_id: Mapped[str | None] = mapped_column(String(128))
    refused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    merged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
