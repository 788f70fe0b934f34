"""Scheduled leaderboard announcements: cron per chat, each slot claimed once in the database.

A claimed slot owes its chat a post: the claim and the outbox row (core/outbox.py, key
`announce:<schedule>:<slot>`) are written in one transaction, so an announcement a failed send or a
crash interrupted is delivered later by the sweep, never lost and never posted twice for one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import outbox
from core.clock import Clock
from core.errors import ValidationError
from core.events import AnnouncementDue, EventBus
from core.i18n import _
from core.storage.db import Database
from core.storage.models import AnnouncementRun, ScheduledAnnouncement
from core.storage.upsert import insert
from core.windows import ANNOUNCED_WINDOWS, SO_FAR, split_option

SCHEDULE_WINDOWS = ANNOUNCED_WINDOWS  # day, week, month, all: the last completed one; <window>-so-far: the running one


@dataclass(frozen=True)
class Schedule:
    id: int
    community_id: int
    cron: str
    timezone: str
    window: str  # as the moderator wrote it: "week" or "week-so-far"
    top_n: int
    channel: str = ""  # the Discord channel it posts in; "" where the community is the chat


def _schedule(r: ScheduledAnnouncement) -> Schedule:
    return Schedule(r.id, r.community_id, r.cron, r.timezone, r.window + (SO_FAR if r.so_far else ""), r.top_n,
                    r.channel_id)


def announcement_key(schedule_id: int, slot: datetime) -> str:
    """The outbox key of one slot's post."""
    return f"announce:{schedule_id}:{int(slot.timestamp())}"


def _due(sched: Schedule, slot: datetime) -> AnnouncementDue:
    return AnnouncementDue(sched.id, sched.community_id, sched.window, sched.top_n, slot.isoformat(), sched.timezone,
                           channel=sched.channel, key=announcement_key(sched.id, slot))


def check_cron(expr: str) -> str:
    expr = " ".join(expr.split())
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValidationError(
            _("cron must have 5 fields: minute hour day month weekday, e.g. \"0 12 * * mon\""), field="cron"
        )
    return expr


def check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(_("unknown time zone '{zone}' (use a name like UTC or Europe/Berlin)").format(zone=name[:60]),
                              field="tz") from exc
    return name


def last_slot(cron: str, zone: str, now: datetime) -> datetime:
    """The latest slot at or before `now`, in UTC."""
    local = now.astimezone(ZoneInfo(zone)).replace(second=0, microsecond=0)
    if croniter.match(cron, local):
        return local.astimezone(UTC)
    return croniter(cron, local).get_prev(datetime).astimezone(UTC)


def next_slot(cron: str, zone: str, now: datetime) -> datetime:
    """The first slot strictly after `now`, in UTC."""
    local = now.astimezone(ZoneInfo(zone))
    return croniter(cron, local).get_next(datetime).astimezone(UTC)


class ScheduleService:
    def __init__(self, db: Database, clock: Clock, bus: EventBus) -> None:
        self.db = db
        self.clock = clock
        self.bus = bus

    async def add(
        self, community_id: int, cron: str, window: str, *, top_n: int = 10, tz: str = "UTC", created_by: int | None = None,
        channel: str = "",
    ) -> Schedule:
        cron = check_cron(cron)
        tz = check_zone(tz)
        if window not in SCHEDULE_WINDOWS:
            raise ValidationError(_("window must be one of {windows}").format(windows=", ".join(SCHEDULE_WINDOWS)),
                                  field="window")
        base, so_far = split_option(window)
        if not 1 <= top_n <= 50:
            raise ValidationError(_("top must be between 1 and 50"), field="top")
        now = self.clock.now()

        async def op(s: AsyncSession) -> Schedule:
            row = ScheduledAnnouncement(
                community_id=community_id, channel_id=channel, cron=cron, timezone=tz, window=base, so_far=so_far, top_n=top_n,
                created_by=created_by, created_at=now, enabled=True,
            )
            s.add(row)
            await s.flush()
            return _schedule(row)

        return await self.db.write(op)

    async def list(self, community_id: int | None = None) -> list[Schedule]:
        async def op(s: AsyncSession) -> list[Schedule]:
            q = select(ScheduledAnnouncement).where(ScheduledAnnouncement.enabled.is_(True)).order_by(ScheduledAnnouncement.id)
            if community_id is not None:
                q = q.where(ScheduledAnnouncement.community_id == community_id)
            return [_schedule(r) for r in (await s.scalars(q)).all()]

        return await self.db.read(op)

    async def remove(self, community_id: int, schedule_id: int) -> bool:
        async def op(s: AsyncSession) -> bool:
            res = await s.execute(
                delete(ScheduledAnnouncement).where(
                    ScheduledAnnouncement.id == schedule_id, ScheduledAnnouncement.community_id == community_id
                )
            )
            return bool(res.rowcount)

        return await self.db.write(op)

    async def fire(self, schedule_id: int, slot: datetime) -> bool:
        """Claim `slot` for the schedule; only the claimer announces. True when this call won."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> Schedule | None:
            row = await s.get(ScheduledAnnouncement, schedule_id)
            if row is None or not row.enabled or slot < row.created_at.replace(second=0, microsecond=0):
                return None
            res = await s.execute(
                insert(s, AnnouncementRun)
                .values(schedule_id=schedule_id, slot=slot, claimed_at=now)
                .on_conflict_do_nothing(index_elements=["schedule_id", "slot"])
            )
            if not res.rowcount:
                return None
            await outbox.enqueue(s, "announcement", announcement_key(schedule_id, slot), row.community_id, None, now)
            return _schedule(row)

        won = await self.db.write(op)
        if won is None:
            return False
        await self.bus.publish(_due(won, slot))
        return True

    async def owed(self, key: str) -> AnnouncementDue | None:
        """The announcement an outbox row owes (`announce:<schedule>:<slot>`), to deliver it again."""
        try:
            _kind, schedule_id, stamp = key.split(":")
            slot = datetime.fromtimestamp(int(stamp), UTC)
        except ValueError:
            return None

        async def op(s: AsyncSession) -> Schedule | None:
            row = await s.get(ScheduledAnnouncement, int(schedule_id))
            return _schedule(row) if row is not None else None

        sched = await self.db.read(op)
        return _due(sched, slot) if sched is not None else None

    async def run_due(self) -> int:
        """Announce each schedule's latest slot if nobody has yet (catches up after a restart)."""
        now = self.clock.now()
        fired = 0
        for sched in await self.list():
            if await self.fire(sched.id, last_slot(sched.cron, sched.timezone, now)):
                fired += 1
        return fired
