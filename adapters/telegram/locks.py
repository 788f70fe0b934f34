"""Chat lock for raids: save the group's permissions, silence members, hand the permissions back.

The saved permissions go to the database (services.locks) before the chat is restricted, so a
crash between the two can only leave a record of permissions that are still in place. Releasing
makes the chat's permissions equal to the saved ones (with independent permissions, so Telegram
applies them exactly) and only then confirms the release; unconfirmed releases are retried on start
and by the scheduler sweep (core decides when).
Work on one chat is serialized so a release and the next raid's lock cannot interleave.

A raid started in a forum topic locks only that topic: it is closed (members cannot write in a
closed topic; admins with can_manage_topics can) and reopened at the release; the group's
permissions are left alone. The saved record is then `{"topic_id": <id>}`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from telegram import Bot, ChatPermissions
from telegram.error import BadRequest, RetryAfter, TelegramError

from core.errors import Conflict
from core.events import LockReleased
from core.i18n import N_
from core.raids.model import RaidProgress
from core.services import Services

from .chats import PLATFORM, ChatDirectory
from .outbox import retry_seconds

log = logging.getLogger(__name__)

# Runs a coroutine in the background, logging its failure; the task never raises.
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]
SET_ATTEMPTS = 3
NO_RIGHTS_NOTICE = N_(
    "I couldn't lock the chat for this raid: I need to be an admin allowed to restrict members. "
    "The raid runs unlocked."
)


class ChatLocks:
    def __init__(self, services: Services, bot: Bot, chats: ChatDirectory, spawn: Spawn) -> None:
        self._s = services
        self._bot = bot
        self._chats = chats
        self._spawn = spawn
        self._guards: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._releasing: set[int] = set()  # lock ids whose release is requested, not yet confirmed
        self._never_held: set[int] = set()  # topic locks whose closing failed: nothing to reopen

    async def _permissions(self, chat_id: int) -> dict[str, Any]:
        chat = await self._bot.get_chat(chat_id)
        return chat.permissions.to_dict() if chat.permissions else {}

    async def lock_for_raid(self, progress: RaidProgress) -> bool:
        """Lock the raid's chat. False when that failed (mostly: the bot lacks the right to restrict
        members): a saved record is released again and the raid runs unlocked."""
        chat_id = int(progress.chat.external_id)
        if progress.thread:
            return await self._lock_topic(progress, chat_id, int(progress.thread))
        async with self._guards[chat_id]:
            try:
                saved = await self._permissions(chat_id)
            except TelegramError as exc:
                log.warning("could not read the permissions of chat %s: %s", chat_id, exc)
                return False
            if not saved:  # not a group: there is nothing to lock
                return False
            deadline = self._s.locks.raid_deadline(progress.ends_at)
            try:
                await self._s.locks.lock(progress.community_id, saved, deadline, raid_id=progress.id)
            except Conflict:
                log.warning("chat %s is still locked by an earlier lock; raid %s keeps it", chat_id, progress.id)
                return True
            try:
                await self._set(chat_id, ChatPermissions.no_permissions())
            except TelegramError as exc:
                log.warning("could not lock chat %s for raid %s: %s", chat_id, progress.id, exc)
                await self._s.locks.unlock(progress.community_id, "lock failed")
                return False
        return True

    async def _lock_topic(self, progress: RaidProgress, chat_id: int, topic: int) -> bool:
        """Close the raid's forum topic; the group's permissions stay as they are."""
        async with self._guards[chat_id]:
            deadline = self._s.locks.raid_deadline(progress.ends_at)
            try:
                lock_id = await self._s.locks.lock(progress.community_id, {"topic_id": topic}, deadline,
                                                   raid_id=progress.id)
            except Conflict:
                log.warning("chat %s is still locked by an earlier lock; raid %s keeps it", chat_id, progress.id)
                return True
            try:
                await self._bot.close_forum_topic(chat_id, topic)
            except BadRequest as exc:
                if "topic_not_modified" in exc.message.lower():  # closed already: it stays closed after the raid too
                    self._never_held.add(lock_id)
                else:
                    log.warning("could not close topic %s of chat %s for raid %s: %s", topic, chat_id,
                                progress.id, exc.message)
                    self._never_held.add(lock_id)
                    await self._s.locks.unlock(progress.community_id, "lock failed")
                    return False
            except TelegramError as exc:  # it may have closed all the same: the release reopens it if so
                log.warning("could not close topic %s of chat %s for raid %s: %s", topic, chat_id, progress.id, exc)
                await self._s.locks.unlock(progress.community_id, "lock failed")
                return False
        return True

    async def shown(self, progress: RaidProgress) -> RaidProgress:
        """The progress as the raid post should tell it: "locked" only while this raid's lock holds."""
        if not (progress.lock and progress.active):
            return progress
        releasing = set(self._releasing)  # before the read: a release may be confirmed meanwhile
        info = await self._s.locks.active(progress.community_id)
        if info is not None and info.raid_id == progress.id and info.id not in releasing:
            return progress
        return replace(progress, lock=False)

    async def on_lock_released(self, event: LockReleased) -> None:
        chat_id = await self._chats.chat_id(event.community_id)
        if chat_id is not None:
            self._releasing.add(event.lock_id)
            self._spawn(self.restore(event.lock_id, chat_id, event.saved_permissions), "lock release")

    async def restore_pending(self) -> None:
        """Releases requested but never confirmed (a crash, Telegram down): finish them now."""
        for info in await self._s.locks.pending_releases(PLATFORM):
            try:
                await self.restore(info.id, int(info.chat_id), info.saved_permissions)
            except TelegramError as exc:
                log.error("could not restore permissions of chat %s (lock %s): %s", info.chat_id, info.id, exc)

    async def restore(self, lock_id: int, chat_id: int, saved: dict[str, Any]) -> None:
        """Give the chat its saved permissions back exactly, then confirm the release. A chat that
        already has them (the lock never took hold) is only confirmed."""
        try:
            async with self._guards[chat_id]:
                if "topic_id" in saved:
                    if lock_id not in self._never_held:
                        await self._reopen(chat_id, int(saved["topic_id"]))
                elif saved and await self._permissions(chat_id) != saved:
                    await self._set(chat_id, ChatPermissions.de_json(saved, self._bot))
                await self._s.locks.confirm_released(lock_id)
        finally:
            self._releasing.discard(lock_id)  # on failure the lock still holds, and the post says so
            self._never_held.discard(lock_id)
        log.info("chat %s has its permissions back (lock %s)", chat_id, lock_id)

    async def _reopen(self, chat_id: int, topic: int) -> None:
        try:
            await self._bot.reopen_forum_topic(chat_id, topic)
        except BadRequest as exc:
            if "topic_not_modified" not in exc.message.lower():  # open already (reopened by an admin): done
                raise

    async def _set(self, chat_id: int, permissions: ChatPermissions) -> None:
        attempts = 0
        while True:
            try:
                await self._bot.set_chat_permissions(chat_id, permissions, use_independent_chat_permissions=True)
                return
            except RetryAfter as exc:
                attempts += 1
                if attempts >= SET_ATTEMPTS:
                    raise
                await asyncio.sleep(retry_seconds(exc))
