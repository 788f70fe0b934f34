"""Request and response models of the raid and community API: camelCase on the wire, checked at the edge.

Limits come from core (durations, actions, adjustments) so the API and the chat commands refuse the
same things; a refused body never reaches a service, so nothing is written.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from core.config import ACTION_NAMES
from core.errors import ValidationError
from core.moderation import MAX_ADJUSTMENT
from core.raids.service import MAX_DURATION, MIN_DURATION
from core.raids.urls import normalize_target

# Database ids are signed 64-bit integers: a larger id cannot exist (and must not reach the driver).
MAX_DB_ID = 2**63 - 1
DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID)]

Platform = Literal["telegram", "discord", "web", "console"]
Action = Literal["like", "repost", "reply", "quote", "bookmark", "follow"]
Verification = Literal["honor", "proof_link", "x_api", "review"]
RaidStatus = Literal["active", "completed", "timeout", "failed", "cancelled"]
EndCause = Literal["objectives_met", "time_up", "ended_by_moderator", "cancelled_by_moderator", "replaced"]
ClaimState = Literal["verified", "accepted", "unverifiable", "pending", "rejected"]
Window = Literal["day", "week", "month", "all"]
# A scheduled board: the last completed window by default, or the running one ("week-so-far").
AnnouncedWindow = Literal["day", "week", "month", "all", "day-so-far", "week-so-far", "month-so-far"]
NUBI_ACTIONS = {**{a: a for a in ACTION_NAMES}, "retweet": "repost"}  # the original's word for a repost
T = TypeVar("T")


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class Body(Model):
    """A request body: unknown keys are refused, so a misspelt option is an error, not a silent default."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _target(url: str) -> str:
    try:
        return normalize_target(url)
    except ValidationError as exc:
        raise ValueError(exc.message) from exc


def _https(url: str | None) -> str | None:
    if url is not None and not url.startswith("https://"):
        raise ValueError("must be an https:// URL")
    return url


# -- identities -------------------------------------------------------------------------------------


class CommunityRef(Body):
    """A community as its platform knows it: a Telegram chat is {"platform": "telegram", "id": "-100123"}."""

    platform: Platform
    id: str = Field(min_length=1, max_length=128, pattern=r"^\S+$")
    title: str | None = Field(None, max_length=256)
    channel: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^\S+$",
        description="Discord: the channel of the server (`id` is the server) where the raid runs and posts",
    )


class MemberIn(Body):
    platform: Platform
    id: str = Field(min_length=1, max_length=128, pattern=r"^\S+$")
    name: str = Field("", max_length=128)
    username: str | None = Field(None, max_length=128)


# -- requests ---------------------------------------------------------------------------------------


class RaidCreate(Body):
    community: CommunityRef
    target_url: str = Field(max_length=512, description="https URL; X/Twitter links are normalized")
    objectives: dict[str, int] = Field(default_factory=dict, description="action -> target count")
    points: dict[str, int] = Field(default_factory=dict, description="action -> points per action")
    duration_seconds: int | None = Field(None, ge=MIN_DURATION, le=MAX_DURATION)
    max_participants: int | None = Field(None, ge=1, le=100_000)
    lock: bool = False
    pin: bool | None = Field(None, description="pin the raid post while the raid runs; null: the community's "
                                               "`pin` setting")
    replace: bool = Field(False, description="end the chat's running raid (cancelled) and start this one")
    partners: bool | None = Field(None, description="post the raid in every chat linked to this one as well "
                                                    "(`/raid start ... partners`); null: the community's "
                                                    "`partners` setting")
    verification: Verification | None = None
    started_by: MemberIn | None = None

    _url = field_validator("target_url")(_target)

    @field_validator("objectives", "points")
    @classmethod
    def _actions(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(ACTION_NAMES))
        if unknown:
            raise ValueError(f"unknown action {', '.join(unknown)} (use {', '.join(ACTION_NAMES)})")
        return v


class JoinIn(Body):
    member: MemberIn


class ClaimIn(Body):
    member: MemberIn
    action: Action
    proof_url: str | None = Field(None, max_length=512)

    _proof = field_validator("proof_url")(_https)


class EndIn(Body):
    cancel: bool = Field(False, description="stop the raid as cancelled instead of scoring its final status")
    reason: str = Field("", max_length=64)


class ReviewIn(Body):
    decision: Literal["accept", "reject"]


class RevokeIn(Body):
    reason: str | None = Field(None, max_length=500, description="why the points are taken back (audited)")


class RevokeOut(Model):
    claim_id: int
    verification: str
    points_revoked: int = Field(description="every point the claim earned, bonuses included, now taken back")


class PointsIn(Body):
    member_id: int = Field(ge=1, le=MAX_DB_ID)
    points: int = Field(ge=-MAX_ADJUSTMENT, le=MAX_ADJUSTMENT, description="non-zero; negative removes")
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S")

    @field_validator("points")
    @classmethod
    def _non_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must not be zero")
        return v


class ScheduleIn(Body):
    cron: str = Field(max_length=64, description='5 fields, e.g. "0 12 * * mon"')
    window: AnnouncedWindow = Field(description="day, week, month: the last completed one at each slot, "
                                    "in the schedule's time zone; *-so-far: the running one; all: all time")
    top: int = Field(10, ge=1, le=50)
    tz: str | None = Field(None, max_length=64, description="Default: the community's timezone setting (UTC)")


class BanIn(Body):
    member_id: int = Field(ge=1, le=MAX_DB_ID)
    reason: str | None = Field(None, max_length=500)


# -- responses --------------------------------------------------------------------------------------


class ChatOut(Model):
    platform: str
    id: str
    title: str | None


class PartnerChatOut(Model):
    """A chat linked to the raid's chat (docs/partners.md) that the raid is posted in too."""

    platform: str
    id: str = Field(description="the platform's chat id (on Discord: the server)")
    title: str | None
    channel: str | None = Field(description="Discord: the channel of the server; null elsewhere")
    posted: bool = Field(description="the raid's post went up in this chat (it is owed until then)")


class ObjectiveOut(Model):
    action: str
    target: int
    points: int
    count: int
    met: bool


class BoardEntryOut(Model):
    rank: int
    member_id: int
    name: str
    points: int
    claims: int = 0
    badge: str | None = Field(None, description="The member's highest milestone badge in the community, if any")
    platforms: list[str] = []  # community boards: where the member has accounts (linked ones once)


class RaidOut(Model):
    id: int
    community_id: int
    chat: ChatOut
    target_url: str
    status: str
    started_at: str
    ends_at: str
    ended_at: str | None
    participants: int
    max_participants: int
    actions: int
    points_awarded: int
    pending_claims: int
    lock: bool
    pin: bool = Field(False, description="the raid post is pinned while the raid runs (where the bot may pin)")
    verification: str
    time_left_seconds: int
    completion_pct: float
    objectives: list[ObjectiveOut]
    top: list[BoardEntryOut]
    session_id: str | None
    end_cause: EndCause | None = Field(None, description="why the raid ended; null while it runs")
    partner_chats: list[PartnerChatOut] = Field(
        default_factory=list, description="the linked chats the raid is posted in besides its own (started with "
                                          "`partners`); empty for a raid of one chat")
    language: str = Field("en", description="the community's language (en, es, ru): what its raid posts are written in")


class RaidList(Model):
    raids: list[RaidOut]


class JoinOut(Model):
    raid_id: int
    member_id: int
    position: int
    already: bool = Field(description="the member had joined before; nothing changed")
    bonus: int


class ClaimOut(Model):
    claim_id: int
    raid_id: int
    member_id: int
    action: str
    verification: ClaimState = Field(description=(
        "verified: a machine check saw the action; accepted: a moderator approved it; unverifiable: "
        "counted on the member's word, or left unsettled when the verification window closed"))
    points: int
    completion_bonus: int
    already: bool = Field(description="claimed (or settled) before; nothing changed")
    raid_completed: bool


class EndOut(Model):
    raid_id: int
    ended: bool = Field(description="true only for the call that ended the raid")
    status: str


class RaidBoardOut(Model):
    raid_id: int
    entries: list[BoardEntryOut]


class MetricOut(Model):
    taken_at: str
    participants: int
    actions: int
    completion_pct: float
    engagement_score: float
    time_left_seconds: int


class MetricsOut(Model):
    raid_id: int
    snapshots: list[MetricOut]


class ReportObjective(Model):
    action: str
    target: int
    count: int
    met: bool


class Winner(Model):
    rank: int
    member_id: int
    name: str
    points: int


class ReportOut(Model):
    raid_id: int
    status: str
    end_cause: EndCause | None = Field(None, description="why the raid ended")
    ended_because: str = Field("", description="end_cause in words, as the chat report says it")
    target_url: str
    started_at: str
    ended_at: str
    duration_seconds: int
    participants: int
    actions: int
    claims_by_state: dict[ClaimState, int]
    unsettled_at_close: int = Field(0, description="of the unverifiable claims: still pending when the "
                                    "verification window closed (they earn no points)")
    final: bool = Field(True, description="false while claims are pending: the report changes when they settle")
    objectives: list[ReportObjective]
    objectives_met: int
    points_awarded: int
    completion_pct: float
    top_raiders: list[Winner]


class CommunityOut(Model):
    id: int
    platform: str
    external_id: str
    title: str | None
    created_at: str


class CommunityList(Model):
    communities: list[CommunityOut]


class CommunityBoardOut(Model):
    community_id: int
    window: str
    window_start: str
    entries: list[BoardEntryOut]


class ClosedWindow(Model):
    window: str
    window_start: str
    window_end: str
    closed_at: str
    winners: list[Winner]


class HistoryOut(Model):
    community_id: int
    windows: list[ClosedWindow]


class ReviewItemOut(Model):
    claim_id: int
    raid_id: int
    member_id: int
    name: str
    action: str
    proof_url: str | None
    claimed_at: str


class ReviewQueueOut(Model):
    community_id: int
    items: list[ReviewItemOut]


class LinkConflictOut(Model):
    id: int
    handle: str = Field(description="the X handle, lower-case, without @")
    claimant_member_id: int = Field(description="the member whose /link was refused")
    claimant_name: str
    owner_member_id: int | None = Field(description="the member who holds the handle (null: nobody any more)")
    owner_name: str | None
    at: str


class LinkConflictsOut(Model):
    community_id: int
    conflicts: list[LinkConflictOut]


class PointsOut(Model):
    community_id: int
    member_id: int
    points: int
    reason: str
    total_points: int = Field(description="the member's all-time points here after the change")
    rank: int | None


class AuditEntryOut(Model):
    id: int
    action: str
    actor_member_id: int | None
    target_member_id: int | None
    raid_id: int | None
    amount: int | None
    reason: str | None
    at: str
    data: dict[str, Any]


class AuditOut(Model):
    community_id: int
    entries: list[AuditEntryOut]


class ScheduleOut(Model):
    id: int
    community_id: int
    cron: str
    tz: str
    window: str
    top: int


class ScheduleList(Model):
    schedules: list[ScheduleOut]


class BanOut(Model):
    member_id: int
    name: str
    reason: str | None
    banned_by: int | None
    created_at: str


class BanList(Model):
    community_id: int
    bans: list[BanOut]


class BanResult(Model):
    community_id: int
    member_id: int
    already: bool = Field(description="the member was banned before; nothing changed")


class ContextOut(Model):
    """A member's (or a session's) compact context for an agent; `text` is ready for a prompt."""

    member: dict[str, Any] | None
    session: dict[str, Any] | None
    recent_messages: list[dict[str, Any]]
    communities: list[dict[str, Any]] = []
    standings: list[dict[str, Any]]
    active_raids: list[RaidOut]
    recent_raids: list[dict[str, Any]]
    streak_days: int
    week_starts_at: str | None = None
    text: str


# -- the original NUBI routes, in its {success, data} envelope ---------------------------------------


class Envelope(Model, Generic[T]):
    success: bool = True
    data: T


class NubiObjective(Model):
    type: str
    count: int = Field(ge=1, le=1_000_000)
    points: int | None = Field(None, ge=0, le=10_000)

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NUBI_ACTIONS:
            raise ValueError(f"unknown action {v} (use {', '.join(NUBI_ACTIONS)})")
        return NUBI_ACTIONS[v]


class NubiRaidCreate(Model):
    """The original's body: extra keys it sent (raidId, metadata, userId) are accepted and ignored."""

    agent_id: str | None = None
    target_url: str = Field(max_length=512)
    objectives: list[NubiObjective] = Field(default_factory=list)
    max_participants: int | None = Field(None, ge=1, le=100_000)
    duration: int | None = Field(None, ge=MIN_DURATION, le=MAX_DURATION, description="seconds")
    community: CommunityRef | None = None
    verification: Verification | None = None
    replace: bool = False

    _url = field_validator("target_url")(_target)

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, v: list[NubiObjective]) -> list[NubiObjective]:
        if len({o.type for o in v}) != len(v):
            raise ValueError("each action may appear once")
        return v


class NubiJoin(Model):
    """Either the original's Telegram identity or a `member`."""

    telegram_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^\S+$")
    telegram_username: str | None = Field(None, max_length=128)
    member: MemberIn | None = None

    @model_validator(mode="after")
    def _someone(self) -> NubiJoin:
        if self.member is None and self.telegram_id is None:
            raise ValueError("telegramId or member is required")
        return self


class NubiAction(Model):
    participant_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^\S+$",
                                       description="the participant's Telegram id")
    member: MemberIn | None = None
    action_type: str
    proof_url: str | None = Field(None, max_length=512)

    _proof = field_validator("proof_url")(_https)

    @field_validator("action_type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NUBI_ACTIONS:
            raise ValueError(f"unknown action {v} (use {', '.join(NUBI_ACTIONS)})")
        return NUBI_ACTIONS[v]

    @model_validator(mode="after")
    def _someone(self) -> NubiAction:
        if self.member is None and self.participant_id is None:
            raise ValueError("participantId or member is required")
        return self


class NubiProgress(Model):
    status: str
    participant_count: int
    total_actions: int
    completion_rate: float
    time_remaining: int = Field(description="seconds")


class NubiObjectiveOut(Model):
    type: str
    count: int
    points: int
    completed: int


class RaidSessionOut(Model):
    session_id: str | None
    raid_id: int
    community_id: int
    target_url: str
    objectives: list[NubiObjectiveOut]
    max_participants: int
    duration: int = Field(description="seconds")
    created_at: str
    expires_at: str
    progress: NubiProgress


class RaidSessionList(Model):
    sessions: list[RaidSessionOut]
    total: int


class NubiJoinOut(Model):
    session_id: str
    raid_id: int
    participant: JoinOut


class NubiActionOut(Model):
    recorded: bool
    claim: ClaimOut


class NubiBoardEntry(Model):
    rank: int
    member_id: int
    name: str
    points_earned: int
    actions_completed: int


class NubiBoard(Model):
    leaderboard: list[NubiBoardEntry]


class NubiMetrics(Model):
    raid_id: int
    status: str
    participant_count: int
    total_actions: int
    completion_rate: float
    time_remaining: int
    objectives: list[NubiObjectiveOut]
    target_url: str


class NubiMetricsOut(Model):
    metrics: NubiMetrics
    snapshots: list[MetricOut]
