"""The outbox table: the chat posts nubi owes (core/outbox.py writes and delivers it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .models import POST_KINDS, Base, _in
from .types import BigIntPK, JSONType, UTCDateTime


class ChatPost(Base):
    """The outbox: one row per chat post nubi owes (a raid post, a report, an announcement).

    Written in the transaction that makes the post due, so a crash cannot forget it. A sender claims
    it (a lease only one process wins), sends, then marks it sent: a crash between send and mark
    repeats one post after the lease, never loses one. `nonce` makes the repeat a no-op where the
    platform deduplicates (Discord's enforce_nonce). `stale` asks for an edit of a sent post (a
    report whose numbers settled after it went out).
    """

    __tablename__ = "chat_posts"
    __table_args__ = (
        CheckConstraint(_in("kind", POST_KINDS), name="kind"),
        Index("ix_chat_posts_due", "sent_at", "due_at"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)  # e.g. raid:12, report:12
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    raid_id: Mapped[int | None] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    nonce: Mapped[str] = mapped_column(String(25))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stale: Mapped[bool] = mapped_column(Boolean, default=False)
    ref: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_error: Mapped[str | None] = mapped_column(String(200))
