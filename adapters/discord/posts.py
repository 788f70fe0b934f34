"""Posts driven by core events: the live raid post, its completion report, scheduled leaderboards.

The raid post is created once (its location saved with `set_progress_ref`, so edits survive a
restart) and then edited in place through core's Coalescer: any number of changes per raid become
at most one edit per `edit_interval_seconds`. Edits of one raid are serialized by a lock, so a late
progress edit can never overwrite the final one. Discord's 429s are waited out by discord.py up to
the client's `max_ratelimit_timeout`; longer ones come back as RateLimited and become RetryLater.
Edits are PATCHes of one known message, so retrying never duplicates a post. The raid post and the
report go through core's outbox (claimed, sent, then marked; retried by the scheduler sweep until
sent), each sent with the row's nonce and Discord's enforce_nonce, so a repeat after a lost answer
returns the message already made instead of making a second one.

A raid with `pin` has its post pinned right after it is sent (the ref records `pinned` first, so the
unpin owed at the end always finds it); the unpin is an outbox row written with the raid's end, so a
refusal or an outage leaves it owed for the sweep, and the next ready finishes what a restart left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import discord

from core.directory import ChatRef, community_chat
from core.events import AnnouncementDue, ProgressChanged, RaidEnded, ReportChanged
from core.i18n import _, use_language
from core.outbox import Delivery, partner_row, raid_key, report_key, unpin_key
from core.raids.model import RaidProgress
from core.services import Services
from core.throttle import Coalescer, RetryLater
from core.views import raid_view, report_view

from . import render
from .partners import PartnerPosts

log = logging.getLogger(__name__)
SERVER_ERROR_RETRY = 1.0  # seconds before an edit or post that met a Discord 5xx is tried again

PLATFORM = "discord"
MAX_DRAWN = 1000


def jump_url(ref: dict[str, Any] | None, key: str = "message_id") -> str | None:
    if not ref or not ref.get("guild_id") or not ref.get(key):
        return None
    return f"https://discord.com/channels/{ref['guild_id']}/{ref['channel_id']}/{ref[key]}"


class RaidPosts:
    def __init__(self, services: Services, client: Callable[[], discord.Client], interval: float) -> None:
        self.s = services
        self._client = client
        self.coalescer = Coalescer(interval, self._flush)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._drawn: dict[int, str] = {}  # raid id -> what the post shows now (skip no-op edits)
        self._gone: set[int] = set()  # posts deleted or out of reach: stop editing them
        self._owed: set[int] = set()  # raid posts this process is delivering (refresh may create them)
        self.refused: dict[int, str] = {}  # raid id -> why Discord refused its first post (it never went up)
        self.unpinned: dict[int, str] = {}  # raid id -> why Discord refused to pin its post (it runs unpinned)
        self._chats: dict[int, ChatRef | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # the raid's posts in its partner channels (core/partners.py), keyed PartnerPosts.item(row) in the Coalescer
        self.partners = PartnerPosts(services, client, self.coalescer.poke, self._later, _sent, _fingerprint)

    # -- event handlers --------------------------------------------------------------------------

    async def chat_of(self, community_id: int) -> ChatRef | None:
        """The community's chat if it is a Discord channel (cached: a community never moves)."""
        if community_id not in self._chats:
            self._chats[community_id] = await self.s.db.read(lambda s: community_chat(s, community_id))
        chat = self._chats[community_id]
        return chat if chat is not None and chat.platform == PLATFORM else None

    async def on_progress_changed(self, event: ProgressChanged) -> None:
        if await self.chat_of(event.community_id) is not None:
            self.poke(event.raid_id)

    async def owe(self, raid_id: int) -> bool:
        """Should this process deliver the raid post now? False when it is sent, or this process or
        another one is on it (the outbox's lease decides who sends)."""
        if raid_id in self._owed or not await self.s.outbox.pending(raid_key(raid_id)):
            return False
        self._owed.add(raid_id)
        return True

    def poke(self, raid_id: int) -> None:
        self.coalescer.poke(raid_id)

    async def post_now(self, raid_id: int) -> None:
        """Create or update the post right away (raid start, raid end); a long 429 defers to the Coalescer."""
        try:
            await self.refresh(raid_id)
        except RetryLater:
            self.poke(raid_id)

    async def on_raid_ended(self, event: RaidEnded) -> None:
        if await self.chat_of(event.community_id) is None:
            return
        await self.awaken_thread(event.raid_id)
        await self.post_now(event.raid_id)  # the final edit: no claim buttons any more
        await self.post_report(event.raid_id)
        await self.unpin(event.raid_id)

    async def on_report_changed(self, event: ReportChanged) -> None:
        if await self.chat_of(event.community_id) is not None:
            await self.awaken_thread(event.raid_id)
            await self.post_report(event.raid_id)  # the outbox row is stale: this edits the sent report

    async def on_announcement(self, event: AnnouncementDue) -> None:
        """A scheduled board, delivered through the outbox (its row was written with the slot's claim):
        a failure leaves it owed, and the sweep brings it back until it is sent."""
        chat = await self.chat_of(event.community_id)
        if chat is None:
            return
        channel_id = int(event.channel or chat.external_id)

        async def send(d: Delivery) -> dict[str, Any] | None:
            parts = render.message(await self.s.boards.announcement(event))
            channel = self._client().get_partial_messageable(channel_id)
            message = await _sent(channel.send(**parts, nonce=d.nonce))
            return {"channel_id": str(channel_id), "message_id": str(message.id)}

        try:
            await self.s.outbox.deliver(event.key, send)
        except RetryLater as exc:
            self._later(exc.seconds, lambda: self.on_announcement(event))

    # -- the live post -----------------------------------------------------------------------------

    def _lock(self, raid_id: int) -> asyncio.Lock:
        lock = self._locks.get(raid_id)
        if lock is None:
            lock = self._locks[raid_id] = asyncio.Lock()
        return lock

    async def _flush(self, key: int | tuple[str, int]) -> None:
        if isinstance(key, tuple):
            await self.partners.refresh(key[1])
            return
        await self.refresh(key)  # a poke during it makes the Coalescer flush again afterwards

    async def refresh(self, raid_id: int) -> None:
        """Draw the raid as it is now: post it if it has no post yet, else edit the post in place."""
        async with self._lock(raid_id):
            if raid_id in self._gone:
                return
            progress = await self.s.raids.progress(raid_id)
            if progress.chat.platform != PLATFORM:
                return
            parts = render.message(raid_view(await self._with_lock_state(progress)))
            drawn = _fingerprint(parts)
            ref = progress.progress_ref
            if ref is None:
                if raid_id in self._owed:  # an ended raid's post is settled without a message
                    await self._deliver_raid_post(raid_id, int(progress.chat.destination),
                                                  parts if progress.active else None, drawn, pin=progress.pin)
                return  # else: not posted yet, and another process (or the sweep) delivers it
            if self._drawn.get(raid_id) == drawn:
                return
            try:
                channel = self._client().get_partial_messageable(int(progress.chat.destination))
                await channel.get_partial_message(int(ref["message_id"])).edit(**{"view": None, **parts})
            except discord.RateLimited as exc:
                raise RetryLater(exc.retry_after) from exc
            except discord.DiscordServerError as exc:  # a 5xx: nothing changed on Discord's side, try later
                raise RetryLater(SERVER_ERROR_RETRY) from exc
            except (discord.NotFound, discord.Forbidden) as exc:
                log.warning("raid #%s post is out of reach, no more edits: %s", raid_id, exc)
                self._gone.add(raid_id)
                return
            self._remember(raid_id, drawn)

    def _remember(self, raid_id: int, drawn: str) -> None:
        self._drawn.pop(raid_id, None)
        self._drawn[raid_id] = drawn
        if len(self._drawn) > MAX_DRAWN:  # forget the longest-untouched post
            self._drawn.pop(next(iter(self._drawn)))

    async def _deliver_raid_post(
        self, raid_id: int, channel_id: int, parts: dict[str, Any] | None, drawn: str, *, pin: bool = False
    ) -> None:
        async def send(d: Delivery) -> dict[str, Any] | None:
            if parts is None:
                return None  # it ended before its post went out: the report tells the story
            channel = self._client().get_partial_messageable(channel_id)
            try:
                message = await _sent(channel.send(**parts, nonce=d.nonce))
            except (discord.NotFound, discord.Forbidden) as exc:  # never went up: the raid is cancelled
                self.refused[raid_id] = exc.text or "refused"
                self._gone.add(raid_id)
                raise
            guild_id = message.guild.id if message.guild else await self._guild_of(channel.id)
            ref = {"channel_id": str(channel.id), "message_id": str(message.id),
                   "guild_id": str(guild_id) if guild_id else None}
            if pin:
                ref["pinned"] = True  # saved before pinning: the unpin owed at the end finds it, whatever happens
            await self.s.raids.set_progress_ref(raid_id, ref)
            if pin:
                await self._pin(raid_id, message, ref)
            return ref

        try:
            if await self.s.outbox.deliver(raid_key(raid_id), send):
                self._remember(raid_id, drawn)
        except RetryLater:
            raise  # still owed by this process: the Coalescer tries again soon
        except BaseException:
            self._owed.discard(raid_id)
            raise
        # Sent, or failed (the sweep brings it back as PostDue), or someone else sent it.
        self._owed.discard(raid_id)

    async def open_thread(self, progress: RaidProgress) -> bool:
        """Start the thread a raid started with `thread` runs in; the raid moves there (its post, report,
        buttons and commands). Refused: the raid never gets a post, like a refused post. False when
        Discord was busy (a 5xx, a long 429): the raid post stays owed and the sweep tries again."""
        channel = self._client().get_channel(int(progress.chat.destination))
        name = _("Raid #{id}").format(id=progress.id)
        try:
            if not isinstance(channel, discord.TextChannel):
                raise LookupError(f"channel {progress.chat.destination} cannot hold a thread")
            thread = await channel.create_thread(name=name, type=discord.ChannelType.public_thread,
                                                 auto_archive_duration=1440, reason=f"raid #{progress.id}")
        except (discord.Forbidden, discord.NotFound, LookupError) as exc:
            reason = exc.text if isinstance(exc, discord.HTTPException) else str(exc)
            log.warning("raid #%s: Discord refused its thread: %s", progress.id, reason)
            self.refused[progress.id] = reason or "refused"
            self._gone.add(progress.id)
            return True
        except (discord.DiscordServerError, discord.RateLimited) as exc:
            log.warning("raid #%s: starting its thread failed, the sweep tries again: %s", progress.id, exc)
            self._owed.discard(progress.id)
            return False
        await self.s.raids.move_to_thread(progress.id, str(thread.id))
        return True

    async def awaken_thread(self, raid_id: int) -> None:
        """A thread raid's thread that archived itself (Discord does after a quiet day) takes no edit:
        unarchive it before the final edit and the report. Only an unlocked thread: Discord lets anyone
        who may talk there unarchive it, and a locked one is the lock's to reopen (chat_lock.py, which
        unarchives it with the lock put back). Never raises: the edit and report go on either way."""
        progress = await self.s.raids.progress(raid_id, top=0)
        if progress.chat.platform != PLATFORM or not progress.in_thread or progress.thread is None:
            return
        thread_id = int(progress.thread)
        http = self._client().http
        try:
            meta = (await http.get_channel(thread_id)).get("thread_metadata") or {}
            if meta.get("archived") and not meta.get("locked"):
                await http.edit_channel(thread_id, archived=False, reason=f"nubi: the end of raid #{raid_id}")
        except (discord.HTTPException, discord.RateLimited) as exc:
            log.warning("raid #%s: could not unarchive its thread %s: %s", raid_id, thread_id, exc)

    async def _pin(self, raid_id: int, message: discord.Message, ref: dict[str, Any]) -> None:
        """Pin the raid post. A refusal (no Pin Messages here, the channel's pins full) leaves the raid
        running unpinned, remembered for the moderator's answer; never raises, so the post stays sent."""
        try:
            await message.pin(reason=f"raid #{raid_id} is running")
        except (discord.DiscordServerError, discord.RateLimited) as exc:  # the unpin at the end tidies up
            log.warning("pinning raid #%s post failed: %s", raid_id, exc)
        except discord.HTTPException as exc:
            log.warning("Discord refused to pin raid #%s post: %s", raid_id, exc)
            self.unpinned[raid_id] = exc.text or "refused"
            await self.s.raids.set_progress_ref(raid_id, {k: v for k, v in ref.items() if k != "pinned"})

    async def unpin(self, raid_id: int) -> None:
        """Unpin an ended raid's post through its outbox row: a failure leaves it owed for the sweep."""
        async with self._lock(raid_id):
            async def send(_d: Delivery) -> None:
                ref = (await self.s.raids.progress(raid_id, top=0)).progress_ref or {}
                if ref.get("pinned") and ref.get("message_id"):
                    channel = self._client().get_partial_messageable(int(ref["channel_id"]))
                    try:
                        await _sent(channel.get_partial_message(int(ref["message_id"])).unpin(
                            reason=f"raid #{raid_id} ended"))
                    except discord.NotFound:
                        log.info("raid #%s post is gone: nothing to unpin", raid_id)
                return None

            try:
                await self.s.outbox.deliver(unpin_key(raid_id), send)
            except RetryLater as exc:
                self._later(exc.seconds, lambda: self.unpin(raid_id))

    async def finish_unpins(self) -> int:
        """Unpins owed from before a restart, without waiting for the first sweep."""
        owed = [d for d in await self.s.outbox.due() if d.platform == PLATFORM and d.kind == "unpin"]
        for due in owed:
            row = partner_row(due.key)
            if row is not None:  # a partner channel's post (core/partners.py)
                await self.partners.unpin(row)
            else:
                await self.unpin(due.raid_id)
        return len(owed)

    async def _with_lock_state(self, progress: RaidProgress) -> RaidProgress:
        """The post says the chat is locked only while this raid's lock really holds."""
        if not (progress.lock and progress.active):
            return progress
        lock = await self.s.locks.active(progress.community_id, progress.chat.channel_key)
        return progress if lock is not None and lock.raid_id == progress.id else replace(progress, lock=False)

    async def _guild_of(self, channel_id: int) -> int | None:
        channel = self._client().get_channel(channel_id)
        guild = getattr(channel, "guild", None)
        return guild.id if guild is not None else None

    # -- the completion report -------------------------------------------------------------------------

    async def post_report(self, raid_id: int) -> None:
        """Send the report, or edit the sent one when its numbers settled later (outbox row stale)."""
        if raid_id in self.refused:
            return  # the raid never had a post to report on (and Discord refuses nubi there)
        async with self._lock(raid_id):
            progress = await self.s.raids.progress(raid_id, top=0)
            channel_id = int(progress.chat.destination)

            async def send(d: Delivery) -> dict[str, Any] | None:
                report = await self.s.raids.report(raid_id)
                if report is None:
                    raise LookupError(f"raid {raid_id} has no report yet")
                with use_language(await self.s.community_settings.language_of_raid(raid_id)):
                    parts = render.message(report_view(report))
                channel = self._client().get_partial_messageable(channel_id)
                if d.edit and d.ref:
                    try:
                        await _sent(channel.get_partial_message(int(d.ref["message_id"])).edit(**parts))
                    except (discord.NotFound, discord.Forbidden) as exc:
                        log.warning("the report of raid #%s is out of reach, no more edits: %s", raid_id, exc)
                    return None
                ref = progress.progress_ref or {}
                if ref.get("message_id"):
                    parts["reference"] = discord.MessageReference(
                        message_id=int(ref["message_id"]), channel_id=int(ref["channel_id"]), fail_if_not_exists=False
                    )
                message = await _sent(channel.send(**parts, nonce=d.nonce))
                if ref:
                    await self.s.raids.set_progress_ref(raid_id, {**ref, "report_message_id": str(message.id)})
                return {"channel_id": str(channel_id), "message_id": str(message.id)}

            try:
                await self.s.outbox.deliver(report_key(raid_id), send)
            except RetryLater as exc:
                self._later(exc.seconds, lambda: self.post_report(raid_id))

    def _later(self, seconds: float, work: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            await asyncio.sleep(seconds)
            await work()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle ------------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait for every scheduled edit (tests, orderly shutdown)."""
        while True:
            await asyncio.sleep(0)  # let a poke from a task that is just finishing land first
            if not self.coalescer.pending():
                return
            await self.coalescer.drain()

    async def close(self) -> None:
        await self.coalescer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _fingerprint(parts: dict[str, Any]) -> str:
    embed = parts.get("embed")
    view = parts.get("view")
    return json.dumps(
        [parts.get("content"), embed.to_dict() if embed else None, view.to_components() if view else None],
        sort_keys=True,
    )


async def _sent(call: Awaitable[Any]) -> Any:
    """Discord's answers that mean "later" become RetryLater, for the outbox and the Coalescer."""
    try:
        return await call
    except discord.RateLimited as exc:
        raise RetryLater(exc.retry_after) from exc
    except discord.DiscordServerError as exc:
        raise RetryLater(SERVER_ERROR_RETRY) from exc
