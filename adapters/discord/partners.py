"""A raid's posts in the partner channels on Discord (core/partners.py): one per channel, edited in place.

A raid started with `partners` in a linked chat (Telegram or Discord) is owed a post in each partner
chat: an outbox row per chat (`raid:<raid>:<row>`), written with the raid's start, and at the end a
report row per chat (`report:<raid>:<row>`). Each is delivered the way the raid's own post is (claim,
send with the row's nonce and enforce_nonce, mark; retried by the sweep), so every channel gets its post
and its report once, whichever platform fails. Edits go through the adapter's Coalescer (one key per
partner post, like one per raid post), so each post sees at most one edit per interval. Posts are
written in the partner community's language; their buttons act on the raid (core/commands
`_raid_in_chat` knows the raid's partner chats).

A raid started with `lock` locks each partner channel too (ChannelLocks, with that channel's community),
right before its post goes up: one lock row per channel, released with the raid's end like the raid's
own lock and retried by the sweep until Discord has the overwrites back. A raid started with `pin`
pins each partner channel's post once it is up (`pinned` saved in the row's ref first) and unpins it at
the end through the row's own outbox row (`unpin:<raid>:<row>`), finished by the sweep or a restart; a
refused pin leaves a notice in that channel and the raid runs unpinned there.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any

import discord

from core.events import PostDue, ProgressChanged, RaidEnded, RaidStarted, ReportChanged
from core.i18n import _, use_language
from core.outbox import Delivery, partner_raid_key, partner_report_key, partner_row, partner_unpin_key
from core.partners import RaidChatRef
from core.raids.model import RaidProgress
from core.services import Services
from core.throttle import RetryLater
from core.views import raid_view, report_view

from . import render
from .chat_lock import ChannelLocks

log = logging.getLogger(__name__)
PLATFORM = "discord"
REMEMBERED = 1000  # raids whose partner channels this process keeps in mind


class PartnerPosts:
    def __init__(self, services: Services, client: Callable[[], discord.Client], poke: Callable[[Hashable], None],
                 later: Callable[[float, Callable[[], Awaitable[None]]], None],
                 sent: Callable[[Awaitable[Any]], Awaitable[Any]], fingerprint: Callable[[dict[str, Any]], str]) -> None:
        self.s = services
        self._client = client
        self._poke = poke  # into the adapter's Coalescer, which calls `refresh` back
        self._later = later
        self._sent = sent  # Discord's "later" answers as RetryLater
        self._fingerprint = fingerprint
        self._raids: dict[int, list[int]] = {}  # raid id -> its partner rows on Discord
        self._refs: dict[int, dict[str, Any] | None] = {}  # row id -> where its post is
        self._rows: dict[int, RaidChatRef] = {}
        self._drawn: dict[int, str] = {}  # row id -> what the post shows now (skip no-op edits)
        self._gone: set[int] = set()  # posts deleted or out of reach: no more edits
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self.chat_locks: ChannelLocks | None = None  # set by the adapter, which makes it after the posts

    @staticmethod
    def item(row_id: int) -> tuple[str, int]:
        """A partner post's key in the Coalescer (the raids' own posts are keyed by raid id)."""
        return ("partner", row_id)

    def _lock(self, row_id: int) -> asyncio.Lock:
        lock = self._locks.get(row_id)
        if lock is None:
            lock = self._locks[row_id] = asyncio.Lock()
        return lock

    async def _of(self, raid_id: int) -> list[int]:
        if raid_id not in self._raids:
            rows = await self.s.partners.raid_chats(raid_id, PLATFORM)
            for row in rows:
                self._rows[row.id] = row
                self._refs.setdefault(row.id, row.progress_ref)
            self._raids[raid_id] = [r.id for r in rows]
            while len(self._raids) > REMEMBERED:
                for gone in self._raids.pop(next(iter(self._raids))):
                    for known in (self._rows, self._refs, self._drawn):
                        known.pop(gone, None)
        return self._raids[raid_id]

    async def _row(self, row_id: int) -> RaidChatRef | None:
        if row_id not in self._rows:
            row = await self.s.partners.raid_chat(row_id)
            if row is None:
                return None
            await self._of(row.raid_id)
        return self._rows.get(row_id)

    # -- events ------------------------------------------------------------------------------------

    async def on_raid_started(self, event: RaidStarted) -> None:
        for row_id in await self._of(event.raid_id):
            await self.post(row_id)

    async def on_post_due(self, event: PostDue) -> bool:
        """A partner chat's post or report the sweep found owed; False when the row is not a partner's."""
        row_id = partner_row(event.key)
        if row_id is None:
            return False
        if event.platform == PLATFORM:
            if event.kind == "raid":
                await self.post(row_id)
            elif event.kind == "report":
                await self.report(row_id)
            elif event.kind == "unpin":
                await self.unpin(row_id)
        return True

    async def on_progress_changed(self, event: ProgressChanged) -> None:
        for row_id in await self._of(event.raid_id):
            self._poke(self.item(row_id))

    async def on_raid_ended(self, event: RaidEnded) -> None:
        for row_id in await self._of(event.raid_id):
            try:
                await self.refresh(row_id)  # the final edit: no claim buttons any more
            except RetryLater:
                self._poke(self.item(row_id))
            await self.report(row_id)
            await self.unpin(row_id)  # owed only if the raid was pinned

    async def on_report_changed(self, event: ReportChanged) -> None:
        for row_id in await self._of(event.raid_id):
            await self.report(row_id)  # the outbox row is stale: this edits the sent report

    # -- work --------------------------------------------------------------------------------------

    async def _here(self, row: RaidChatRef, *, top: int = 5) -> RaidProgress:
        """The raid as this partner channel sees it: its chat, its language, its own lock."""
        progress = await self.s.raids.progress(row.raid_id, top=top)
        language = await self.s.community_settings.language_of_chat(row.chat)
        return replace(progress, community_id=row.community_id, chat=row.chat, thread=None, in_thread=False,
                       language=language)

    async def _parts(self, row: RaidChatRef) -> dict[str, Any]:
        progress = await self._here(row)
        if progress.lock and progress.active:  # "locked" only while this raid's lock of this channel holds
            lock = await self.s.locks.active(row.community_id, row.chat.channel_key)
            progress = progress if lock is not None and lock.raid_id == progress.id else replace(progress, lock=False)
        return render.message(raid_view(progress))

    async def post(self, row_id: int) -> None:
        """Deliver the raid's post to this partner channel (once: the outbox row decides who sends)."""
        row = await self._row(row_id)
        if row is None:
            return
        async with self._lock(row_id):
            async def send(d: Delivery) -> dict[str, Any] | None:
                here = await self._here(row, top=0)
                if not here.active:
                    return None  # it ended before its post went out: the report tells the story
                if here.lock and self.chat_locks is not None and not await self.chat_locks.lock(here):
                    log.warning("raid #%s runs unlocked in partner channel %s", here.id, row.chat.destination)
                parts = await self._parts(row)
                channel = self._client().get_partial_messageable(int(row.chat.destination))
                message = await self._sent(channel.send(**parts, nonce=d.nonce))
                ref: dict[str, Any] = {"channel_id": str(channel.id), "message_id": str(message.id),
                                       "guild_id": row.chat.external_id}
                if here.pin:
                    ref["pinned"] = True  # saved before pinning: the unpin owed at the end finds it, whatever happens
                await self.s.partners.set_progress_ref(row_id, ref)
                if here.pin:
                    ref = await self._pin(row, message, ref)
                self._refs[row_id] = ref
                self._drawn[row_id] = self._fingerprint(parts)
                return ref

            try:
                await self.s.outbox.deliver(partner_raid_key(row.raid_id, row_id), send)
            except RetryLater as exc:
                self._later(exc.seconds, lambda: self.post(row_id))
                return
        if self._refs.get(row_id) is None:  # sent by another process (or not at all): its ref says where
            fresh = await self.s.partners.raid_chat(row_id)
            self._refs[row_id] = fresh.progress_ref if fresh else None
        self._poke(self.item(row_id))  # changes made while it was being sent

    async def _pin(self, row: RaidChatRef, message: discord.Message, ref: dict[str, Any]) -> dict[str, Any]:
        """Pin the raid post in this partner channel; the ref as it stands after. A refusal (no Pin Messages
        there, the channel's pins full) leaves it unpinned there, with a notice in the channel; never
        raises, so the post stays sent."""
        try:
            await self._sent(message.pin(reason=f"raid #{row.raid_id} is running"))
        except RetryLater as exc:  # Discord busy: it may be pinned all the same; the unpin at the end tidies up
            log.warning("pinning raid #%s post in partner channel %s failed: %s", row.raid_id, row.chat.destination, exc)
        except discord.HTTPException as exc:
            log.warning("Discord refused to pin raid #%s post in partner channel %s: %s", row.raid_id,
                        row.chat.destination, exc)
            ref = {k: v for k, v in ref.items() if k != "pinned"}
            await self.s.partners.set_progress_ref(row.id, ref)
            with use_language(await self.s.community_settings.language_of_chat(row.chat)):
                notice = _("I couldn't pin the raid post: I need the Pin Messages permission in this channel. "
                           "The raid runs unpinned here.")
            try:
                await self._sent(message.channel.send(
                    notice, reference=discord.MessageReference(message_id=message.id, channel_id=message.channel.id,
                                                               fail_if_not_exists=False)))
            except (discord.HTTPException, RetryLater) as failed:
                log.warning("could not tell partner channel %s its post is unpinned: %s", row.chat.destination, failed)
        return ref

    async def unpin(self, row_id: int) -> None:
        """Unpin this channel's post of an ended raid through its outbox row: a failure leaves it owed."""
        row = await self._row(row_id)
        if row is None:
            return
        async with self._lock(row_id):
            async def send(_d: Delivery) -> None:
                fresh = await self.s.partners.raid_chat(row_id)
                ref = (fresh.progress_ref if fresh else None) or {}
                if ref.get("pinned") and ref.get("message_id"):
                    channel = self._client().get_partial_messageable(int(ref["channel_id"]))
                    try:
                        await self._sent(channel.get_partial_message(int(ref["message_id"])).unpin(
                            reason=f"raid #{row.raid_id} ended"))
                    except discord.NotFound:
                        log.info("raid #%s post in partner channel %s is gone: nothing to unpin", row.raid_id,
                                 ref["channel_id"])
                return None

            try:
                await self.s.outbox.deliver(partner_unpin_key(row.raid_id, row_id), send)
            except RetryLater as exc:
                self._later(exc.seconds, lambda: self.unpin(row_id))

    async def refresh(self, row_id: int) -> None:
        """The Coalescer's flush of one partner post: edit it in place to the raid as it is now."""
        row = await self._row(row_id)
        if row is None or row_id in self._gone:
            return
        async with self._lock(row_id):
            ref = self._refs.get(row_id)
            if ref is None:
                return  # not up yet: its delivery draws the newest state
            parts = await self._parts(row)
            drawn = self._fingerprint(parts)
            if self._drawn.get(row_id) == drawn:
                return
            channel = self._client().get_partial_messageable(int(ref["channel_id"]))
            try:
                await self._sent(channel.get_partial_message(int(ref["message_id"])).edit(**{"view": None, **parts}))
            except (discord.NotFound, discord.Forbidden) as exc:
                log.warning("raid #%s post in partner channel %s is out of reach, no more edits: %s", row.raid_id,
                            ref["channel_id"], exc)
                self._gone.add(row_id)
                return
            self._drawn[row_id] = drawn

    async def report(self, row_id: int) -> None:
        """Send this channel's report once, or edit the one sent when its numbers settled later."""
        row = await self._row(row_id)
        if row is None:
            return
        async with self._lock(row_id):
            async def send(d: Delivery) -> dict[str, Any] | None:
                report = await self.s.raids.report(row.raid_id)
                if report is None:
                    raise LookupError(f"raid {row.raid_id} has no report yet")
                with use_language(await self.s.community_settings.language_of_chat(row.chat)):
                    parts = render.message(report_view(report))
                channel = self._client().get_partial_messageable(int(row.chat.destination))
                if d.edit and d.ref:
                    try:
                        await self._sent(channel.get_partial_message(int(d.ref["message_id"])).edit(**parts))
                    except (discord.NotFound, discord.Forbidden) as exc:
                        log.warning("the report of raid #%s in partner channel %s is out of reach: %s", row.raid_id,
                                    row.chat.destination, exc)
                    return None
                ref = self._refs.get(row_id) or {}
                if ref.get("message_id"):
                    parts["reference"] = discord.MessageReference(
                        message_id=int(ref["message_id"]), channel_id=int(ref["channel_id"]), fail_if_not_exists=False)
                message = await self._sent(channel.send(**parts, nonce=d.nonce))
                return {"channel_id": str(channel.id), "message_id": str(message.id)}

            try:
                await self.s.outbox.deliver(partner_report_key(row.raid_id, row_id), send)
            except RetryLater as exc:
                self._later(exc.seconds, lambda: self.report(row_id))
