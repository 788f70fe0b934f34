"""The schema. The seven tables of the original design keep their names; the rest is what the domain needs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .types import BigIntPK, JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACTION_TYPES = ("like", "repost", "reply", "quote", "bookmark", "follow")
RAID_STATUSES = ("active", "completed", "timeout", "failed", "cancelled")
# verified: a machine check saw the action; accepted: a moderator approved it; unverifiable: counted
# on the member's word (nothing can check it), or left unsettled when the verification window closed.
VERIFICATION_STATES = ("verified", "accepted", "pending", "rejected", "unverifiable")
# Why a raid ended; the status alone cannot tell a moderator's early end from time running out.
END_CAUSES = ("objectives_met", "time_up", "ended_by_moderator", "cancelled_by_moderator", "replaced")
POST_KINDS = ("raid", "report", "announcement", "unpin", "badge", "badge_role")
VERIFICATION_TIERS = ("honor", "proof_link", "x_api", "review")
SESSION_TYPES = ("conversation", "raid", "community")
SESSION_STATUSES = ("active", "expired", "ended")
WINDOWS = ("day", "week", "month", "all")
PLATFORMS = ("telegram", "discord", "web", "console")
ACTIVITY_TYPES = (
    "created",
    "message_sent",
    "message_received",
    "raid_joined",
    "raid_action",
    "renewed",
    "heartbeat",
    "timeout_changed",
    "warned",
    "expired",
    "ended",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Community(Base):
    """What users mean by "our community": a Telegram chat, a Discord server (guild), a web community.

    Bans, boards, schedules and settings are per community. Raids run in a chat of it: on Discord a
    channel of the server (`Raid.channel_id`); on Telegram and the web the community is the chat.
    """

    __tablename__ = "communities"
    __table_args__ = (
        UniqueConstraint("platform", "external_id"),
        CheckConstraint(_in("platform", PLATFORMS), name="platform"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    title: Mapped[str | None] = mapped_column(String(256))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Member(Base):
    """A person across platforms. The linked X handle is unique across the whole bot."""

    __tablename__ = "members"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    display_name: Mapped[str] = mapped_column(String(128))
    x_handle: Mapped[str | None] = mapped_column(String(32), unique=True)
    x_handle_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberIdentity(Base):
    __tablename__ = "member_identities"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(128))


class CommunityMember(Base):
    """What a community knows of a member: moderator (as last seen) and leaderboard exclusion."""

    __tablename__ = "community_members"
    __table_args__ = (
        # The few members every board leaves off: a small index the boards' anti-join can use.
        Index(
            "ix_community_members_off_board",
            "community_id",
            "member_id",
            sqlite_where=text("excluded OR is_moderator"),
            postgresql_where=text("excluded OR is_moderator"),
        ),
    )
    community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    is_moderator: Mapped[bool] = mapped_column(Boolean, default=False)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NubiSession(Base):
    __tablename__ = "nubi_sessions"
    __table_args__ = (
        CheckConstraint(_in("session_type", SESSION_TYPES), name="session_type"),
        CheckConstraint(_in("status", SESSION_STATUSES), name="status"),
        CheckConstraint("renewal_count >= 0", name="renewal_count"),
        Index("ix_nubi_sessions_status_expires", "status", "expires_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(36))
    agent_id: Mapped[str] = mapped_column(String(36))
    user_id: Mapped[str] = mapped_column(String(36), index=True)
    session_type: Mapped[str] = mapped_column(String(16), default="conversation")
    community_id: Mapped[int | None] = mapped_column(ForeignKey("communities.id", ondelete="SET NULL"))
    # The one community the session belongs to, "<platform>:<external id>" (core/access.py): a raid's or
    # chat's community, or the web community of a Sessions API conversation. Set at creation, never changed.
    community: Mapped[str] = mapped_column(String(160), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewal_count: Mapped[int] = mapped_column(Integer, default=0)
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timeout_config: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SessionMessage(Base):
    __tablename__ = "session_messages"
    __table_args__ = (Index("ix_session_messages_session_created", "session_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("nubi_sessions.id", ondelete="CASCADE"))
    author_id: Mapped[str] = mapped_column(String(36))
    is_agent: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attachments: Mapped[list[Any] | None] = mapped_column(JSONType)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)


class SessionActivity(Base):
    __tablename__ = "session_activity_log"
    __table_args__ = (
        CheckConstraint(_in("activity_type", ACTIVITY_TYPES), name="activity_type"),
        Index("ix_session_activity_log_session_at", "session_id", "at"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("nubi_sessions.id", ondelete="CASCADE"))
    activity_type: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Raid(Base):
    __tablename__ = "raid_sessions"
    __table_args__ = (
        CheckConstraint(_in("status", RAID_STATUSES), name="status"),
        CheckConstraint(_in("verification_tier", VERIFICATION_TIERS), name="verification_tier"),
        CheckConstraint("duration_seconds > 0", name="duration_positive"),
        CheckConstraint("max_participants > 0", name="max_participants_positive"),
        CheckConstraint(
            "participant_count >= 0 AND participant_count <= max_participants", name="participant_cap"
        ),
        Index("ix_raid_sessions_community_status", "community_id", "status"),
        Index("ix_raid_sessions_status_ends", "status", "ends_at"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    session_id: Mapped[str | None] = mapped_column(ForeignKey("nubi_sessions.id", ondelete="SET NULL"))
    target_url: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="active")
    started_by: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_seconds: Mapped[int] = mapped_column(Integer)
    max_participants: Mapped[int] = mapped_column(Integer)
    participant_count: Mapped[int] = mapped_column(Integer, default=0)
    action_count: Mapped[int] = mapped_column(Integer, default=0)
    points_awarded: Mapped[int] = mapped_column(Integer, default=0)
    lock_chat: Mapped[bool] = mapped_column(Boolean, default=False)
    verification_tier: Mapped[str] = mapped_column(String(16), default="honor")
    scoring: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    progress_ref: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # The chat of the community the raid runs in: a Discord channel id; "" where the community is the chat.
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    end_reason: Mapped[str | None] = mapped_column(String(64))
    end_cause: Mapped[str | None] = mapped_column(String(24))  # one of END_CAUSES
    # The raid post is pinned while the raid runs; its unpin is an outbox row written when it ends.
    pin_post: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # A Telegram forum topic (message_thread_id) the raid runs in: its posts, replies and lock stay there.
    # On Discord the thread made for an `in_thread` raid (channel_id then names that thread too).
    thread_id: Mapped[str | None] = mapped_column(String(64))
    in_thread: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RaidObjective(Base):
    """Per action type: target count, points per action, and the running count of accepted claims."""

    __tablename__ = "raid_objectives"
    __table_args__ = (
        CheckConstraint(_in("action_type", ACTION_TYPES), name="action_type"),
        CheckConstraint("target > 0", name="target_positive"),
        CheckConstraint("points >= 0", name="points_nonnegative"),
    )
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"), primary_key=True)
    action_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    target: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer, default=0)


class RaidParticipant(Base):
    __tablename__ = "raid_participants"
    __table_args__ = (
        UniqueConstraint("raid_id", "member_id"),
        CheckConstraint("join_position > 0", name="join_position_positive"),
        Index("ix_raid_participants_board", "raid_id", text("points DESC"), "last_scored_at", "join_position"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    join_position: Mapped[int] = mapped_column(Integer)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime)
    points: Mapped[int] = mapped_column(Integer, default=0)
    claims_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_all: Mapped[bool] = mapped_column(Boolean, default=False)
    last_scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RaidAction(Base):
    """A claim: (participant, action type), with an honest verification state."""

    __tablename__ = "raid_actions"
    __table_args__ = (
        UniqueConstraint("participant_id", "action_type"),
        CheckConstraint(_in("action_type", ACTION_TYPES), name="action_type"),
        CheckConstraint(_in("verification", VERIFICATION_STATES), name="verification"),
        Index("ix_raid_actions_raid_verification", "raid_id", "verification"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(ForeignKey("raid_participants.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    action_type: Mapped[str] = mapped_column(String(16))
    verification: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(Integer, default=0)
    proof_url: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str] = mapped_column(String(16), default="claim")
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))


class RaidMetric(Base):
    __tablename__ = "raid_metrics"
    __table_args__ = (UniqueConstraint("raid_id", "taken_at"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    participants: Mapped[int] = mapped_column(Integer)
    actions: Mapped[int] = mapped_column(Integer)
    completion_pct: Mapped[float] = mapped_column(Float)
    engagement_score: Mapped[float] = mapped_column(Float)
    time_left_seconds: Mapped[int] = mapped_column(Integer)


class RaidReport(Base):
    __tablename__ = "raid_reports"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    raid_id: Mapped[int] = mapped_column(ForeignKey("raid_sessions.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    report: Mapped[dict[str, Any]] = mapped_column(JSONType)


class MemberScore(Base):
    """Running points per community, member and leaderboard window, so a board is an index scan."""

    __tablename__ = "member_scores"
    __table_args__ = (
        CheckConstraint(_in('"window"', WINDOWS), name="window"),
        Index(
            "ix_member_scores_board",
            "community_id",
            "window",
            "window_start",
            text("points DESC"),
            "last_scored_at",
            "member_id",
        ),
    )
    community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), primary_key=True
    )
    window: Mapped[str] = mapped_column(String(8), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    points: Mapped[int] = mapped_column(Integer, default=0)
    last_scored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberScoreSlice(Base):
    """Points per community, member and quarter hour: a board over any time zone's day, week or
    month (a scheduled announcement's window) is the sum of the slices inside it."""

    __tablename__ = "member_score_slices"
    __table_args__ = (Index("ix_member_score_slices_range", "community_id", "slice_start"),)
    community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), primary_key=True
    )
    slice_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    points: Mapped[int] = mapped_column(Integer, default=0)
    last_scored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class MemberBadge(Base):
    """A milestone badge a member earned in a community (core/badges.py): written in the transaction
    of the ledger change that crossed it, once (the primary key), and kept when points drop again."""

    __tablename__ = "member_badges"
    community_id: Mapped[int] = mapped_column(
        ForeignKey("communities.id", ondelete="CASCADE"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    role_id: Mapped[str | None] = mapped_column(String(32))  # a Discord role granted with it
    awarded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LeaderboardWindow(Base):
    """A closed window's winners, kept as history and never wiped."""

    __tablename__ = "leaderboard_windows"
    __table_args__ = (
        UniqueConstraint("community_id", "window", "window_start"),
        CheckConstraint(_in('"window"', WINDOWS), name="window"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    window: Mapped[str] = mapped_column(String(8))
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    winners: Mapped[list[Any]] = mapped_column(JSONType)


class ScheduledAnnouncement(Base):
    __tablename__ = "scheduled_announcements"
    __table_args__ = (
        CheckConstraint(_in('"window"', WINDOWS + ("raid",)), name="window"),
        CheckConstraint("top_n BETWEEN 1 AND 50", name="top_n"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")  # where it posts
    cron: Mapped[str] = mapped_column(String(64))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    window: Mapped[str] = mapped_column(String(8))
    # False: announce the window that ended last (the default); True: the running one ("week-so-far").
    so_far: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    top_n: Mapped[int] = mapped_column(Integer, default=10)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class AnnouncementRun(Base):
    """A claimed cron slot: the primary key makes a slot post once, whichever process fires it."""

    __tablename__ = "announcement_runs"
    schedule_id: Mapped[int] = mapped_column(
        ForeignKey("scheduled_announcements.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ChatLock(Base):
    __tablename__ = "chat_locks"
    __table_args__ = (
        Index(  # one lock at a time per chat (a Discord channel; "" where the community is the chat)
            "uq_chat_locks_active",
            "community_id",
            "channel_id",
            unique=True,
            sqlite_where=text("released_at IS NULL"),
            postgresql_where=text("released_at IS NULL"),
        ),
        Index("ix_chat_locks_deadline", "released_at", "deadline"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(128), default="", server_default="")
    raid_id: Mapped[int | None] = mapped_column(ForeignKey("raid_sessions.id", ondelete="SET NULL"))
    saved_permissions: Mapped[dict[str, Any]] = mapped_column(JSONType)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    release_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    release_reason: Mapped[str | None] = mapped_column(String(32))


class Ban(Base):
    __tablename__ = "bans"
    __table_args__ = (UniqueConstraint("community_id", "member_id"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    reason: Mapped[str | None] = mapped_column(Text)
    banned_by: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    __tablename__ = "moderation_audit_log"
    __table_args__ = (Index("ix_moderation_audit_log_community_at", "community_id", "at"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    community_id: Mapped[int] = mapped_column(ForeignKey("communities.id", ondelete="CASCADE"))
    actor_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    target_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    raid_id: Mapped[int | None] = mapped_column(ForeignKey("raid_sessions.id", ondelete="SET NULL"))
    amount: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


# Tables of the X-API verification (handle proofs, claim checks, sweeps, read budgets), the points ledger,
# the outbox of chat posts, the account-link codes and the partner-chat links.
from . import ledger_models, link_models, outbox_models, partner_models, verification_models  # noqa: E402,F401
