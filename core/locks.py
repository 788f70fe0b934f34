"""Chat locks: the chat's previous permissions are saved before locking and handed back on release.

Release is two-phase so a crash cannot lose it: a release is first *requested* (a conditional
UPDATE only one process wins, which publishes LockReleased), then *confirmed* by the adapter once
the platform accepted the restored permissions. Requested-but-unconfirmed locks are retried on start
and by the scheduler's sweep (`retry_releases`) until a release is confirmed: one transient error at
a raid's end must not leave a chat muted until someone restarts the bot.

The deadline rule lives here too (`raid_deadline`): a raid's lock is lifted `grace` after the raid
ends, whatever adapter locked it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.errors import Conflict
from core.events import EventBus, LockReleased
from core.i18n import _
from core.storage.db import Database
from core.storage.models import ChatLock, Community


@dataclass(frozen=True)
class LockInfo:
    id: int
    community_id: int
    platform: str
    chat_id: str  # the community's platform id
    channel: str  # the channel locked (Discord); "" where the community is the chat
    raid_id: int | None
    saved_permissions: dict[str, Any]
    deadline: datetime


# A release requested this recently may still be under way in the process that requested it.
RELEASE_RETRY_AFTER = timedelta(seconds=10)


class LockService:
    def __init__(self, db: Database, clock: Clock, bus: EventBus, *, grace: timedelta = timedelta(minutes=5)) -> None:
        self.db = db
        self.clock = clock
        self.bus = bus
        self.grace = grace

    def raid_deadline(self, ends_at: datetime) -> datetime:
        """When a raid's chat lock is lifted even if nothing else lifts it: `grace` after the raid ends."""
        return ends_at + self.grace

    async def lock(
        self, community_id: int, saved_permissions: dict[str, Any], deadline: datetime, *, raid_id: int | None = None,
        channel: str = "",
    ) -> int:
        """Record a lock of the community's chat (`channel` of it, on Discord) before touching the chat;
        Conflict when that chat is locked already."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> int:
            row = ChatLock(
                community_id=community_id, channel_id=channel, raid_id=raid_id, saved_permissions=saved_permissions,
                locked_at=now, deadline=deadline,
            )
            s.add(row)
            await s.flush()
            return row.id

        try:
            return await self.db.write(op)
        except IntegrityError as exc:
            raise Conflict(_("This chat is already locked.")) from exc

    async def _request_release(self, where: Any, reason: str) -> list[LockInfo]:
        now = self.clock.now()

        async def op(s: AsyncSession) -> list[LockInfo]:
            rows = (
                await s.execute(
                    update(ChatLock)
                    .where(where, ChatLock.released_at.is_(None), ChatLock.release_requested_at.is_(None))
                    .values(release_requested_at=now, release_reason=reason)
                    .returning(ChatLock.id)
                )
            ).all()
            return await self._infos(s, [r[0] for r in rows])

        released = await self.db.write(op)
        for info in released:
            await self.bus.publish(LockReleased(info.id, info.community_id, info.saved_permissions, reason))
        return released

    async def unlock(self, community_id: int, reason: str = "unlocked", *, channel: str = "") -> list[LockInfo]:
        """Release the lock of one chat of the community (`channel` on Discord)."""
        where = (ChatLock.community_id == community_id) & (ChatLock.channel_id == channel)
        return await self._request_release(where, reason)

    async def unlock_here(self, community_id: int, reason: str, *, channel: str = "") -> list[LockInfo]:
        """`/unlock` typed in a chat: its own lock, else the locks of the threads that belong to it. A
        Discord raid started with `thread` runs (and locks) in a thread of the channel it was started in;
        its lock record names that channel as `parent_id`, so the channel's moderators find it there."""
        released = await self.unlock(community_id, reason, channel=channel)
        if released or not channel:
            return released

        async def op(s: AsyncSession) -> list[int]:
            rows = (await s.execute(
                select(ChatLock.id, ChatLock.saved_permissions).where(
                    ChatLock.community_id == community_id, ChatLock.channel_id != "",
                    ChatLock.channel_id != channel, ChatLock.released_at.is_(None))
            )).all()
            return [lock_id for lock_id, saved in rows if (saved or {}).get("parent_id") == channel]

        ids = await self.db.read(op)
        return await self._request_release(ChatLock.id.in_(ids), reason) if ids else []

    async def release_overdue(self) -> list[LockInfo]:
        return await self._request_release(ChatLock.deadline <= self.clock.now(), "deadline")

    async def confirm_released(self, lock_id: int) -> None:
        now = self.clock.now()

        async def op(s: AsyncSession) -> None:
            await s.execute(
                update(ChatLock).where(ChatLock.id == lock_id, ChatLock.released_at.is_(None)).values(released_at=now)
            )

        await self.db.write(op)

    async def retry_releases(self) -> list[LockInfo]:
        """Ask the adapters again for every release requested a while ago and still not confirmed.

        Each adapter restores the permissions it saved and confirms; restoring is idempotent, so a
        retry that meets a release still under way (here or in another process) does no harm."""
        cutoff = self.clock.now() - RELEASE_RETRY_AFTER

        async def op(s: AsyncSession) -> list[LockInfo]:
            ids = (await s.scalars(select(ChatLock.id).where(
                ChatLock.released_at.is_(None), ChatLock.release_requested_at <= cutoff))).all()
            return await self._infos(s, list(ids))

        pending = await self.db.read(op)
        for info in pending:
            await self.bus.publish(LockReleased(info.id, info.community_id, info.saved_permissions, "retry"))
        return pending

    async def pending_releases(self, platform: str | None = None) -> list[LockInfo]:
        """Locks whose release was requested but not confirmed: an adapter restores these on start."""

        async def op(s: AsyncSession) -> list[LockInfo]:
            ids = (
                await s.scalars(
                    select(ChatLock.id).where(ChatLock.released_at.is_(None), ChatLock.release_requested_at.is_not(None))
                )
            ).all()
            infos = await self._infos(s, list(ids))
            return [i for i in infos if platform is None or i.platform == platform]

        return await self.db.read(op)

    async def active(self, community_id: int, channel: str = "") -> LockInfo | None:
        async def op(s: AsyncSession) -> LockInfo | None:
            lock_id = await s.scalar(
                select(ChatLock.id).where(ChatLock.community_id == community_id, ChatLock.channel_id == channel,
                                          ChatLock.released_at.is_(None))
            )
            infos = await self._infos(s, [lock_id] if lock_id else [])
            return infos[0] if infos else None

        return await self.db.read(op)

    @staticmethod
    async def _infos(s: AsyncSession, ids: list[int]) -> list[LockInfo]:
        if not ids:
            return []
        rows = (
            await s.execute(
                select(ChatLock, Community.platform, Community.external_id)
                .join(Community, Community.id == ChatLock.community_id)
                .where(ChatLock.id.in_(ids))
            )
        ).all()
        return [
            LockInfo(r.id, r.community_id, platform, chat, r.channel_id, r.raid_id, r.saved_permissions, r.deadline)
            for r, platform, chat in rows
        ]
