"""Domain events and the in-process bus adapters subscribe to (progress edits, posts, Socket.IO)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class RaidStarted(Event):
    raid_id: int
    community_id: int


@dataclass(frozen=True)
class MemberJoined(Event):
    raid_id: int
    community_id: int
    member_id: int
    position: int


@dataclass(frozen=True)
class ClaimRecorded(Event):
    raid_id: int
    community_id: int
    member_id: int
    action_type: str
    verification: str
    points: int


@dataclass(frozen=True)
class ClaimVerified(Event):
    raid_id: int
    community_id: int
    member_id: int
    action_type: str
    verification: str  # verified or rejected
    points_delta: int


@dataclass(frozen=True)
class ProgressChanged(Event):
    raid_id: int
    community_id: int


@dataclass(frozen=True)
class RaidEnded(Event):
    raid_id: int
    community_id: int
    status: str


@dataclass(frozen=True)
class BadgeEarned(Event):
    """A member crossed one of the community's milestones (core/badges.py); published after the commit
    that recorded the badge, by the service whose points crossed it. Its announcement in chat is the
    outbox's (kind `badge`); this event is for live views (the dashboard)."""

    community_id: int
    member_id: int
    threshold: int
    name: str
    raid_id: int | None = None


@dataclass(frozen=True)
class PostDue(Event):
    """A chat post of the outbox (core/outbox.py) still owed: never sent, or a sent report to redraw.

    Republished by every process's scheduler sweep; the adapter serving the chat's platform delivers
    it through Outbox.deliver, whose lease lets one process at a time send it.
    """

    raid_id: int
    community_id: int
    platform: str
    kind: str = "raid"  # raid (the live post) | report | announcement | unpin (a pinned raid post)
    key: str = ""


@dataclass(frozen=True)
class ReportChanged(Event):
    """An ended raid's report was rebuilt (a sweep, a review, the verification window closing)."""

    raid_id: int
    community_id: int


@dataclass(frozen=True)
class LockReleased(Event):
    lock_id: int
    community_id: int
    saved_permissions: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class SessionCreated(Event):
    session_id: str
    session_type: str


@dataclass(frozen=True)
class SessionExpired(Event):
    session_id: str


@dataclass(frozen=True)
class SessionMessageStored(Event):
    session_id: str
    message: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnnouncementDue(Event):
    schedule_id: int
    community_id: int
    window: str  # an announced window: day, week, month, all, or <window>-so-far
    top_n: int
    slot: str
    timezone: str = "UTC"
    channel: str = ""  # the Discord channel to post in; "" where the community is the chat
    key: str = ""  # its outbox row (core/outbox.py): deliver through Outbox.deliver


Handler = Callable[[Any], Awaitable[None]]


class EventBus:
    """Handlers run after the writing transaction committed; a failing handler never undoes a write."""

    def __init__(self) -> None:
        self._handlers: dict[type[Event], list[Handler]] = defaultdict(list)
        self._all: list[Handler] = []

    def subscribe(self, event_type: type[Event] | None, handler: Handler) -> None:
        if event_type is None:
            self._all.append(handler)
        else:
            self._handlers[event_type].append(handler)

    def unsubscribe(self, event_type: type[Event] | None, handler: Handler) -> None:
        target = self._all if event_type is None else self._handlers[event_type]
        if handler in target:
            target.remove(handler)

    async def publish(self, event: Event) -> None:
        for handler in [*self._handlers.get(type(event), ()), *self._all]:
            try:
                await handler(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event handler %r failed on %r", handler, event)


class EventRecorder:
    """Collects every event; tests and the demo use it to see what happened."""

    def __init__(self, bus: EventBus) -> None:
        self.events: list[Event] = []
        bus.subscribe(None, self._record)

    async def _record(self, event: Event) -> None:
        self.events.append(event)

    def of(self, event_type: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, event_type)]
