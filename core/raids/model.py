"""Plain values the raid service returns; adapters render them, the API serializes them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from core.directory import ChatRef
from core.i18n import N_, _

ACTION_LABELS = {
    "like": ("like", "likes"),
    "repost": ("repost", "reposts"),
    "reply": ("reply", "replies"),
    "quote": ("quote", "quotes"),
    "bookmark": ("bookmark", "bookmarks"),
    "follow": ("follow", "follows"),
}
PLURALS = {plural: single for single, (_word, plural) in ACTION_LABELS.items()}
# The same words as members read them (ACTION_LABELS stay the command language's English names).
ACTION_WORDS = {
    "like": (N_("like"), N_("likes")),
    "repost": (N_("repost"), N_("reposts")),
    "reply": (N_("reply"), N_("replies")),
    "quote": (N_("quote"), N_("quotes")),
    "bookmark": (N_("bookmark"), N_("bookmarks")),
    "follow": (N_("follow"), N_("follows")),
}
# Claims the X API can never confirm: likes are private, bookmarks are the user's own.
NEVER_VERIFIABLE = {"like", "bookmark"}
# Claim states that earn points: seen by a machine, approved by a moderator, or on the member's word.
COUNTED = ("verified", "accepted", "unverifiable")
CLAIM_STATES = ("verified", "accepted", "unverifiable", "pending", "rejected")
# Why a raid ended (raid_sessions.end_cause), in words for reports.
END_CAUSES = {
    "objectives_met": N_("objectives met"),
    "time_up": N_("time ran out"),
    "ended_by_moderator": N_("ended by a moderator"),
    "cancelled_by_moderator": N_("cancelled by a moderator"),
    "replaced": N_("replaced by a new raid"),
}


def action_word(action: str, *, plural: bool = False) -> str:
    """An action's name in the current language ("like", "likes"); unknown actions as they are."""
    words = ACTION_WORDS.get(action)
    if words is None:
        return action + ("s" if plural else "")
    return _(words[1] if plural else words[0])


@dataclass(frozen=True)
class RaidSpec:
    target_url: str
    objectives: dict[str, int] = field(default_factory=dict)  # action -> target count
    points: dict[str, int] = field(default_factory=dict)  # action -> points, overriding the defaults
    duration_seconds: int | None = None
    max_participants: int | None = None
    lock: bool = False
    replace: bool = False
    verification: str | None = None
    pin: bool | None = None  # None: the community's `pin` setting
    # Telegram: the forum topic the raid was started in (its posts, replies and lock stay there).
    thread: str | None = None
    in_thread: bool = False  # Discord: the raid runs in a new thread of the channel it was started in
    # Posted in every chat linked to this one (core/partners.py) too; None: the community's `partners` setting.
    partners: bool | None = None


@dataclass(frozen=True)
class ObjectiveProgress:
    action: str
    target: int
    points: int
    count: int

    @property
    def met(self) -> bool:
        return self.count >= self.target

    @property
    def fraction(self) -> float:
        return min(1.0, self.count / self.target) if self.target else 1.0


@dataclass(frozen=True)
class BoardEntry:
    rank: int
    member_id: int
    name: str
    points: int
    claims: int = 0
    badge: str | None = None  # the member's highest milestone badge in the community (core/badges.py)
    platforms: tuple[str, ...] = ()  # where the member has accounts, where a board marks them (badges.marked)


@dataclass(frozen=True)
class RaidProgress:
    id: int
    community_id: int
    chat: ChatRef
    target_url: str
    status: str
    started_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    participants: int
    max_participants: int
    actions: int
    points_awarded: int
    pending: int
    lock: bool
    verification: str
    objectives: list[ObjectiveProgress]
    top: list[BoardEntry]
    now: datetime
    progress_ref: dict[str, Any] | None = None
    session_id: str | None = None
    end_cause: str | None = None  # END_CAUSES key once ended
    pin: bool = False
    thread: str | None = None  # Telegram forum topic id the raid runs in; on Discord the thread made for it
    in_thread: bool = False  # Discord: runs in a thread of its own (made when its post goes up)
    language: str = "en"  # the community's: what its raid post is written in (core/i18n.py)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def time_left_seconds(self) -> int:
        if not self.active:
            return 0
        return max(0, int((self.ends_at - self.now).total_seconds()))

    @property
    def completion_pct(self) -> float:
        if not self.objectives:
            return 0.0
        return round(100 * sum(o.fraction for o in self.objectives) / len(self.objectives), 1)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "communityId": self.community_id,
            "chat": {"platform": self.chat.platform, "id": self.chat.external_id, "title": self.chat.title},
            "targetUrl": self.target_url,
            "status": self.status,
            "startedAt": self.started_at.isoformat(),
            "endsAt": self.ends_at.isoformat(),
            "endedAt": self.ended_at.isoformat() if self.ended_at else None,
            "participants": self.participants,
            "maxParticipants": self.max_participants,
            "actions": self.actions,
            "pointsAwarded": self.points_awarded,
            "pendingClaims": self.pending,
            "lock": self.lock,
            "pin": self.pin,
            "verification": self.verification,
            "timeLeftSeconds": self.time_left_seconds,
            "completionPct": self.completion_pct,
            "objectives": [
                {"action": o.action, "target": o.target, "points": o.points, "count": o.count, "met": o.met}
                for o in self.objectives
            ],
            "top": [asdict(e) for e in self.top],
            "sessionId": self.session_id,
            "endCause": self.end_cause,
            "language": self.language,
        }


@dataclass(frozen=True)
class JoinResult:
    raid_id: int
    member_id: int
    position: int
    already: bool
    bonus: int
    community_id: int = 0


@dataclass(frozen=True)
class ClaimResult:
    raid_id: int
    member_id: int
    action: str
    verification: str
    points: int
    already: bool
    claim_id: int
    completion_bonus: int = 0
    raid_completed: bool = False
    community_id: int = 0


@dataclass(frozen=True)
class ReviewItem:
    claim_id: int
    raid_id: int
    member_id: int
    name: str
    action: str
    proof_url: str | None
    claimed_at: datetime
