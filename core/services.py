"""All core services over one database, clock, settings and event bus: what adapters are handed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from core.clock import Clock, SystemClock
from core.config import Settings
from core.events import EventBus
from core.storage.db import Database


@dataclass
class Services:
    db: Database
    clock: Clock
    settings: Settings
    bus: EventBus
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from core.badges import BadgeService
        from core.commands.service import CommandService
        from core.communities import CommunityService
        from core.community_settings import CommunitySettingsService
        from core.context import ContextService
        from core.leaderboards import LeaderboardService
        from core.locks import LockService
        from core.member_links.service import MemberLinkService
        from core.moderation import ModerationService
        from core.outbox import Outbox
        from core.partners import PartnerService
        from core.raids.service import RaidService
        from core.schedules import ScheduleService
        from core.sessions.service import SessionService
        from core.verification.links import RecordingLinkService

        self.sessions = SessionService(self.db, self.clock, self.settings, self.bus)
        self.raids = RaidService(self.db, self.clock, self.settings, self.bus)
        self.boards = LeaderboardService(self.db, self.clock, self.settings)
        self.moderation = ModerationService(self.db, self.clock, self.bus)
        self.schedules = ScheduleService(self.db, self.clock, self.bus)
        self.community_settings = CommunitySettingsService(self.db, self.clock, self.settings)
        self.locks = LockService(
            self.db, self.clock, self.bus, grace=timedelta(minutes=self.settings.raids.lock_grace_minutes)
        )
        self.outbox = Outbox(self.db, self.clock)
        self.badges = BadgeService(self.db)
        self.communities = CommunityService(self.db, self.clock, self.boards.close_windows)
        self.links = RecordingLinkService(self.db, self.clock)
        self.member_links = MemberLinkService(self.db, self.clock, self.boards.close_windows)
        self.partners = PartnerService(self.db, self.clock)
        self.context = ContextService(self.db, self.clock, self.raids, self.boards, self.sessions)
        self.commands = CommandService(self)
        # Optional hooks the X-API verification installs: link_challenge(member, handle), link_verifier(member).
        self.link_challenge = None
        self.link_verifier = None


def build_services(settings: Settings, *, clock: Clock | None = None, db: Database | None = None) -> Services:
    database = db or Database(
        settings.database.url,
        group_commit=settings.database.group_commit_for(settings.database.url),
        batch_contended=settings.database.batch_contended(),
        row_level_security=settings.database.row_level_security,
        pool_size=settings.database.pool_size,
    )
    return Services(database, clock or SystemClock(), settings, EventBus())
