"""The tables of partner raids (core/partners.py): linked chats, their one-time codes, a raid's partner chats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base
from .types import BigIntPK, JSONType, UTCDateTime


class ChatLink(Base):
    """One direction of a link between two chats (a link is two rows, one per side, written together).

    A chat is a community and, on Discord, a channel of it (`channel_id`, "" where the community is the
    chat). A raid started in `community_id`/`channel_id` with `partners` is also posted in the partner chat."""

    __tablename__ = "chat_links"
    __table_args__ = (
        UniqueConstraint("community_id", "channel_id", "partner_community_id", "partner_channel_id",
                         name="uq_chat_links_pair"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    partner_community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    partner_channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatLinkCode(Base):
    """A one-time code `/community link` gave a chat; only its SHA-256 is stored. The one conditional
    UPDATE that sets `used_at` wins, so a code links once however many moderators send it."""

    __tablename__ = "chat_link_codes"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RaidChat(Base):
    """A partner chat a raid is posted in (written with the raid's start): where its post is
    (`progress_ref`, set once the post went up). The raid's own chat is the raid row's."""

    __tablename__ = "raid_chats"
    __table_args__ = (
        UniqueConstraint("raid_id", "community_id", "channel_id", name="uq_raid_chats_chat"),
        Index("ix_raid_chats_chat", "community_id", "channel_id"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"))
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    progress_ref: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
