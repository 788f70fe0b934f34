"""The raid chat lock on Discord: deny Send Messages to @everyone through a channel overwrite, or, for
a raid in a thread of its own, lock that thread.

Discord applies the @everyone overwrite to the bot too (only Administrator, or an overwrite for the
bot's own role or member, lifts it), so before denying, nubi gives its own member an overwrite that
allows what it needs to keep posting there (`permissions.SPEAKING`); a lock never silences the raid post,
its edits or the report. On release both overwrites are put back exactly as they were (or deleted when
there was none), every other overwrite untouched; permission bits are kept as Python ints, never
truncated to 32 bits.

Both overwrites as they were (allow/deny bits, or "none") are saved through core's LockService *before*
the channel is touched, so a crash in between can only leave a lock record that restores what is
already there. Release is confirmed only once Discord has both back; unconfirmed releases are retried
on ready and by the scheduler sweep. REST only, no cache: any process may end a raid, whichever shard holds the guild.

A thread has no overwrites of its own (it takes its parent's), and denying Send Messages in Threads
on the parent would mute every thread of the channel. The raid's place is its thread, so the lock
locks that thread (Modify Channel, `locked: true`), Discord's own way to mute one: in a locked thread
only members with Manage Threads may send or edit messages, and only they may lock it. nubi holds
Manage Threads (checked before such a raid starts), so it keeps posting and editing there. The
thread's `locked` state is saved before, and put back exactly at the end, through the same record,
release and retries as a channel lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import discord

from core.errors import Conflict
from core.events import LockReleased
from core.i18n import N_, _, use_language
from core.raids.model import RaidProgress
from core.services import Services

from .permissions import SPEAKING

log = logging.getLogger(__name__)

SEND_MESSAGES = discord.Permissions(send_messages=True).value
ROLE_OVERWRITE = 0
MEMBER_OVERWRITE = 1
NO_PERMISSION_NOTE = N_(
    "I couldn't lock this channel: I need the Manage Permissions (Manage Roles) permission here. "
    "The raid runs unlocked."
)
FAILED_NOTE = N_("I couldn't lock this channel right now. The raid runs unlocked.")
NO_THREAD_PERMISSION_NOTE = N_(
    "I couldn't lock this thread: I need the Manage Threads permission in its channel. The raid runs unlocked."
)
FAILED_THREAD_NOTE = N_("I couldn't lock this thread right now. The raid runs unlocked.")
THREAD = "thread"  # the `kind` of a lock record that locked a raid's thread
THREAD_ARCHIVED = 50083  # Discord's error code: the operation needs an active (unarchived) thread


class ChannelLocks:
    def __init__(
        self, services: Services, client: Callable[[], discord.Client], changed: Callable[[int], None]
    ) -> None:
        self.s = services
        self._client = client
        self._changed = changed  # the raid post shows the lock: redraw it
        self._unapplied: set[int] = set()  # lock records whose overwrite never reached Discord

    @property
    def http(self) -> Any:
        return self._client().http

    async def lock(self, progress: RaidProgress) -> bool:
        """Lock the raid's channel; False (and the member told, in the community's language) when it
        cannot be done."""
        with use_language(progress.language):
            return await self._lock(progress)

    async def _lock(self, progress: RaidProgress) -> bool:
        if progress.in_thread:
            return await self._lock_thread(progress)
        channel_id = int(progress.chat.destination)
        channel = await self._read_to_lock(channel_id, "channel", FAILED_NOTE)
        if channel is None:
            return False
        guild_id = channel.get("guild_id")
        me = self._client().user
        if guild_id is None or me is None:
            return False
        overwrites = channel.get("permission_overwrites") or []
        everyone = _overwrite_state(overwrites, str(guild_id), ROLE_OVERWRITE)
        mine = _overwrite_state(overwrites, str(me.id), MEMBER_OVERWRITE)
        saved = {
            "platform": "discord",
            "channel_id": str(channel_id),
            "guild_id": str(guild_id),
            "raid_id": progress.id,
            "everyone": everyone,
            "bot_id": str(me.id),
            "bot": mine,
        }
        lock_id = await self._record(progress, saved)
        if lock_id is None:
            return False
        allow, deny = _bits(everyone)
        my_allow, my_deny = _bits(mine)
        reason = f"nubi: chat lock for raid #{progress.id}"
        voiced = False
        try:
            # first nubi's own voice in the channel, then the lock: never a moment where it is muted
            await self.http.edit_channel_permissions(
                channel_id, me.id, str(my_allow | SPEAKING.value), str(my_deny & ~SPEAKING.value), MEMBER_OVERWRITE,
                reason=reason,
            )
            voiced = True
            await self.http.edit_channel_permissions(
                channel_id, guild_id, str(allow & ~SEND_MESSAGES), str(deny | SEND_MESSAGES), ROLE_OVERWRITE,
                reason=reason,
            )
        except discord.Forbidden:
            # Refused, so @everyone is as it was; only nubi's own overwrite may need putting back.
            if not voiced or await self._put_back(channel_id, me.id, MEMBER_OVERWRITE, mine):
                self._unapplied.add(lock_id)
            return await self._give_up(progress, "missing permissions", channel_id, NO_PERMISSION_NOTE)
        except (discord.HTTPException, discord.RateLimited) as exc:
            # It may or may not have been applied: releasing restores the saved state either way.
            log.warning("locking channel %s failed: %s", channel_id, exc)
            return await self._give_up(progress, "lock failed", channel_id, FAILED_NOTE)
        return True

    async def _read_to_lock(self, channel_id: int, what: str, note: str) -> Any:
        """The channel or thread about to be locked, or None (logged, and said there) when Discord
        would not show it."""
        try:
            return await self.http.get_channel(channel_id)
        except discord.HTTPException as exc:
            log.warning("cannot read %s %s to lock it: %s", what, channel_id, exc)
            await self._say(channel_id, _(note))
            return None

    async def _lock_thread(self, progress: RaidProgress) -> bool:
        """Lock the thread a raid runs in; its `locked` state as it was is recorded first."""
        if progress.thread is None:
            return False  # no thread (Discord refused it): the raid is cancelled, nothing to lock
        thread_id = int(progress.thread)
        thread = await self._read_to_lock(thread_id, "thread", FAILED_THREAD_NOTE)
        if thread is None:
            return False
        guild_id = thread.get("guild_id")
        if guild_id is None:
            return False
        was_locked = bool((thread.get("thread_metadata") or {}).get("locked"))
        saved = {
            "platform": "discord",
            "kind": THREAD,
            "channel_id": str(thread_id),
            "guild_id": str(guild_id),
            "parent_id": str(thread.get("parent_id")),
            "raid_id": progress.id,
            "locked": was_locked,
        }
        lock_id = await self._record(progress, saved)
        if lock_id is None:
            return False
        if was_locked:
            return True  # locked already (a moderator did): the end puts back just that
        try:
            await self.http.edit_channel(thread_id, locked=True, reason=f"nubi: chat lock for raid #{progress.id}")
        except discord.Forbidden:
            self._unapplied.add(lock_id)  # refused: the thread is as it was
            return await self._give_up(progress, "missing permissions", thread_id, NO_THREAD_PERMISSION_NOTE)
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("locking thread %s failed: %s", thread_id, exc)
            return await self._give_up(progress, "lock failed", thread_id, FAILED_THREAD_NOTE)
        return True

    async def _record(self, progress: RaidProgress, saved: dict[str, Any]) -> int | None:
        """Save what the lock will change, before touching anything; None when the raid's place is
        locked already (that lock stays, and this raid adds none)."""
        deadline = self.s.locks.raid_deadline(progress.ends_at)
        try:
            return await self.s.locks.lock(progress.community_id, saved, deadline, raid_id=progress.id,
                                           channel=progress.chat.channel_key)
        except Conflict:
            log.info("%s is already locked; raid #%s adds no lock", progress.chat.channel_key, progress.id)
            return None

    async def _give_up(self, progress: RaidProgress, reason: str, where: int, note: str) -> bool:
        """The lock did not happen: release its record (restoring whatever may have been applied) and
        tell the raid's place, in the community's language. Always False."""
        await self.s.locks.unlock(progress.community_id, reason, channel=progress.chat.channel_key)
        await self._say(where, _(note))
        return False

    async def on_released(self, event: LockReleased) -> None:
        saved = event.saved_permissions
        if saved.get("platform") != "discord":
            return
        if event.lock_id in self._unapplied:
            self._unapplied.discard(event.lock_id)
        elif not await self._restore(saved):
            return  # stays requested-but-unconfirmed: retried on the next ready
        await self.s.locks.confirm_released(event.lock_id)
        if isinstance(saved.get("raid_id"), int):
            self._changed(saved["raid_id"])

    async def restore_pending(self) -> int:
        """Finish releases another run requested but never confirmed (e.g. it crashed in between)."""
        restored = 0
        for info in await self.s.locks.pending_releases("discord"):
            if await self._restore(info.saved_permissions):
                await self.s.locks.confirm_released(info.id)
                restored += 1
        return restored

    async def _restore(self, saved: dict[str, Any]) -> bool:
        """Put @everyone's overwrite back exactly as saved, then nubi's own; True when Discord has both
        (or nothing is left to fix)."""
        if "channel_id" not in saved or "guild_id" not in saved:
            return True  # not a record this adapter wrote: nothing it could restore
        channel_id = int(saved["channel_id"])
        if saved.get("kind") == THREAD:
            return await self._put_back_thread(channel_id, bool(saved.get("locked")))
        targets = [(int(saved["guild_id"]), ROLE_OVERWRITE, saved.get("everyone", "none"))]
        if saved.get("bot_id"):  # records written before nubi gave itself an overwrite have none
            targets.append((int(saved["bot_id"]), MEMBER_OVERWRITE, saved.get("bot", "none")))
        for target_id, kind, state in targets:
            if not await self._put_back(channel_id, target_id, kind, state):
                return False
        return True

    async def _put_back(self, channel_id: int, target_id: int, kind: int, state: Any) -> bool:
        reason = "nubi: raid chat lock released"
        try:
            if isinstance(state, dict):
                allow, deny = _bits(state)
                await self.http.edit_channel_permissions(
                    channel_id, target_id, str(allow), str(deny), kind, reason=reason
                )
            else:
                await self.http.delete_channel_permissions(channel_id, target_id, reason=reason)
        except discord.NotFound:
            return True  # the overwrite (or the channel) is already gone
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("restoring channel %s permissions failed, the next sweep retries: %s", channel_id, exc)
            return False
        return True

    async def _put_back_thread(self, thread_id: int, locked: bool) -> bool:
        """The thread's `locked` as it was before the raid (idempotent: a retry sets the same value).

        Discord changes an archived thread only in a request that unarchives it (a quiet thread archives
        itself after a day), so one that archived meanwhile is unarchived with its `locked` put back, and
        left active: the raid's final edit and its report go there next (posting would unarchive it
        anyway, and an archived thread's messages cannot be edited)."""
        reason = "nubi: raid chat lock released"
        try:
            try:
                await self.http.edit_channel(thread_id, locked=locked, reason=reason)
            except discord.HTTPException as exc:
                if exc.code != THREAD_ARCHIVED:
                    raise
                await self.http.edit_channel(thread_id, archived=False, locked=locked, reason=reason)
        except discord.NotFound:
            return True  # the thread is gone: nothing is locked any more
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("unlocking thread %s failed, the next sweep retries: %s", thread_id, exc)
            return False
        return True

    async def _say(self, channel_id: int, text: str) -> None:
        try:
            await self._client().get_partial_messageable(channel_id).send(text)
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("could not tell channel %s: %s", channel_id, exc)


def _overwrite_state(overwrites: list[dict[str, Any]], target_id: str, kind: int) -> dict[str, int] | str:
    """One overwrite as saved in the lock record: its exact bits, or "none" when the channel has none."""
    found = next((o for o in overwrites if o["id"] == target_id and int(o["type"]) == kind), None)
    return {"allow": int(found["allow"]), "deny": int(found["deny"])} if found else "none"


def _bits(state: Any) -> tuple[int, int]:
    return (int(state["allow"]), int(state["deny"])) if isinstance(state, dict) else (0, 0)
