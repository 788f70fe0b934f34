"""The verifier seam: what a verification tier is, what it reads from X, and what it decides.

Core never talks HTTP: a verifier reads X through the small `XReader` protocol (adapters/x implements
it over XClient) and returns plain outcomes that the runner applies through RaidService, so points,
counters, bonuses and leaderboards move exactly as they do for a moderator's review.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from core.events import Event

# What a sweep reads, one "part" each; likes and bookmarks cannot be read (private / the user's own).
PARTS = ("repost", "quote", "reply")

# Per tier, the actions something settles: a machine check (x_api, proof_link) or a moderator (review).
# A claim of any other action has nothing that could ever settle it: it is `unverifiable` from the start
# (counted on the member's word), never a `pending` that waits forever.
SETTLED_BY = {
    "honor": frozenset[str](),
    "review": frozenset(("like", "repost", "reply", "quote", "bookmark", "follow")),
    "proof_link": frozenset(("reply", "quote")),
    "x_api": frozenset(PARTS),
}


# ClaimCheck.reason of a claim still pending when its raid's verification window closed.
WINDOW_CLOSED = "window_closed"


def initial_state(tier: str, action: str) -> str:
    """The state a new claim starts in: `pending` only when its tier has something that settles it."""
    return "pending" if action in SETTLED_BY.get(tier, ()) else "unverifiable"


class Deferred(Exception):
    """X cannot be read now (rate limit, usage cap, read budget, outage): try again later, never fail.

    `retry_at` is when trying again makes sense, None when unknown.
    """

    def __init__(self, reason: str, retry_at: datetime | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.retry_at = retry_at
        self.detail = detail


@dataclass(frozen=True)
class XAccount:
    id: str
    handle: str
    created_at: datetime | None
    followers: int | None


@dataclass(frozen=True)
class XPost:
    id: str
    author_id: str | None
    author_handle: str | None
    text: str
    created_at: datetime | None
    conversation_id: str | None
    referenced: tuple[tuple[str, str], ...] = ()

    def refers(self, kind: str, post_id: str) -> bool:
        return (kind, post_id) in self.referenced

    @property
    def handle(self) -> str:
        return (self.author_handle or "").lower()


@dataclass(frozen=True)
class Fetched:
    posts: list[XPost]
    complete: bool  # False when pagination stopped early: absence from `posts` proves nothing


class XReader(Protocol):
    """The X reads verification needs. Every method may raise `Deferred`."""

    reads: int  # requests made so far, for the cost log and the read budget

    async def posts(self, ids: Sequence[str]) -> list[XPost]:
        """Look up posts by id (batched 100 a request); unknown or deleted ids are left out."""
        ...

    async def reposts(self, post_id: str, since: datetime) -> Fetched: ...

    async def quotes(self, post_id: str) -> Fetched: ...

    async def replies(self, post_id: str, since: datetime) -> Fetched: ...

    async def metrics(self, post_id: str) -> dict[str, int]: ...

    async def account(self, handle: str) -> XAccount | None: ...

    async def find_code(self, handle: str, code: str, since: datetime) -> list[XPost]:
        """Recent posts by `handle` containing `code`."""
        ...


# Opens a reader allowed at most `reads` requests (the share of the read budget reserved for the job).
OpenReader = Callable[[int], AbstractAsyncContextManager[XReader]]


@dataclass(frozen=True)
class RaidInfo:
    id: int
    community_id: int
    tier: str
    target_url: str
    post_id: str | None  # the X status id of the target, None for other targets
    status: str
    started_at: datetime
    ends_at: datetime
    ended_at: datetime | None

    @property
    def window_end(self) -> datetime:
        """Actions count until the raid ended, or its deadline if it is still running."""
        return min(self.ends_at, self.ended_at) if self.ended_at else self.ends_at

    def in_window(self, at: datetime | None) -> bool:
        return at is not None and self.started_at <= at <= self.window_end


@dataclass(frozen=True)
class ClaimInfo:
    claim_id: int
    member_id: int
    action: str
    state: str
    proof_url: str | None
    claimed_at: datetime
    flag: str | None = None  # why moderators hold it (an audit pick, a duplicate text...): verifiers keep off


@dataclass(frozen=True)
class Raider:
    """A member a sweep can match: linked handle, proof status, account facts, may be credited."""

    member_id: int
    handle: str
    proven: bool
    eligible: bool  # a participant or a member of the raid's community, and not banned
    account_created_at: datetime | None = None
    followers: int | None = None


@dataclass(frozen=True)
class Gates:
    """Optional minimums on a linked X account; zero means no gate."""

    min_account_age_days: int = 0
    min_followers: int = 0

    @property
    def active(self) -> bool:
        return self.min_account_age_days > 0 or self.min_followers > 0

    def failure(self, raider: Raider, now: datetime) -> str | None:
        """None if the account passes; else a reason code (gate_unknown when the facts are missing)."""
        if not self.active:
            return None
        if self.min_account_age_days:
            if raider.account_created_at is None:
                return "gate_unknown"
            if (now - raider.account_created_at).days < self.min_account_age_days:
                return "gate_age"
        if self.min_followers:
            if raider.followers is None:
                return "gate_unknown"
            if raider.followers < self.min_followers:
                return "gate_followers"
        return None


@dataclass
class VerifyContext:
    raid: RaidInfo
    claims: list[ClaimInfo]
    raiders: dict[int, Raider]
    fingerprints: dict[str, set[int]]  # text hash -> members whose accepted reply/quote had it
    gates: Gates
    now: datetime
    final: bool
    since: datetime  # searches of an interval sweep start here; a final sweep reads the whole window
    done_parts: frozenset[str] = frozenset()  # parts the final sweep already finished before a deferral

    def by_handle(self) -> dict[str, Raider]:
        return {r.handle: r for r in self.raiders.values()}


@dataclass(frozen=True)
class Outcome:
    """A verifier's word on one claim: verified, rejected, or flagged (left pending for moderators)."""

    claim_id: int
    member_id: int
    action: str
    state: str
    reason: str
    detail: str = ""
    post_id: str | None = None
    text_hash: str | None = None


@dataclass(frozen=True)
class Credit:
    """An action found on X that its member never claimed: credited as a verified claim."""

    member_id: int
    action: str
    post_id: str
    at: datetime
    text_hash: str | None = None


@dataclass
class Verdict:
    outcomes: list[Outcome] = field(default_factory=list)
    credits: list[Credit] = field(default_factory=list)
    metrics: dict[str, int] | None = None
    completed_parts: set[str] = field(default_factory=set)
    deferred: Deferred | None = None


class Verifier(Protocol):
    """One verification tier. `estimate` is the most reads a run may take (0: never reads X)."""

    tier: str

    def estimate(self, ctx: VerifyContext) -> int: ...

    async def verify(self, ctx: VerifyContext, reader: XReader | None) -> Verdict: ...


class HonorVerifier:
    """Claims count on the member's word (`unverifiable`); moderators audit and revoke."""

    tier = "honor"

    def estimate(self, ctx: VerifyContext) -> int:
        return 0

    async def verify(self, ctx: VerifyContext, reader: XReader | None) -> Verdict:
        return Verdict()


class ReviewVerifier(HonorVerifier):
    """Claims wait in the review queue for a moderator's accept or reject."""

    tier = "review"


@dataclass(frozen=True)
class SweepDeferred(Event):
    """A sweep could not read X (rate limit, usage cap, budget, outage); moderators should know."""

    raid_id: int
    community_id: int
    reason: str
    retry_at: str | None  # ISO time, None when unknown


@dataclass(frozen=True)
class SweepFinished(Event):
    """A sweep ran; `final` sweeps settle a raid after its end, so the report may have changed."""

    raid_id: int
    community_id: int
    final: bool
    verified: int
    rejected: int
    flagged: int
    credited: int
    reads: int
