"""The posts events drive: the live raid post, its edits, the completion report, scheduled boards.

One raid post per raid, edited in place. Edits are coalesced per chat (core.throttle.Coalescer):
however many members press buttons, a chat sees at most one edit per `edit_interval_seconds`, the
edit carries the newest state, and a flood answer from Telegram defers it instead of dropping it.
Event handlers return quickly (they run inside the core call that published the event); the
Telegram work happens in background tasks. The raid post and the report go through core's outbox
(core/outbox.py): claimed, sent, then marked, and retried by the scheduler sweep until sent; a report
whose numbers settle later is edited in place.

A raid with `pin` has its post pinned once it is up and unpinned when it ends; the unpin is an outbox
row written with the raid's end, so a transient failure (or a restart) leaves it owed until it lands.
A raid started in a forum topic (`progress.thread`) posts, reports and notices in that topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from telegram.error import BadRequest, Forbidden, TelegramError

from core.badges import announcement_text
from core.events import AnnouncementDue, PostDue, ProgressChanged, RaidEnded, RaidStarted, ReportChanged
from core.i18n import _, use_language
from core.outbox import Delivery, partner_row, raid_key, report_key, unpin_key
from core.raids.model import RaidProgress
from core.services import Services
from core.throttle import Coalescer, RetryLater
from core.views import raid_view, report_view

from .chats import PLATFORM, ChatDirectory
from .locks import NO_RIGHTS_NOTICE, ChatLocks, Spawn
from .outbox import Outbox, Rendered
from .partners import PartnerPosts
from .render import escape, keyboard, render_html

log = logging.getLogger(__name__)


@dataclass
class RaidPost:
    """Where a raid's live post is; `message_id` is None while it is being sent or if that failed."""

    chat_id: int
    thread: int | None = None  # the forum topic it lives in
    message_id: int | None = None
    posting: asyncio.Task[None] | None = None
    stale: bool = False  # progress changed while the post was still being sent


class RaidPosts:
    def __init__(
        self,
        services: Services,
        outbox: Outbox,
        locks: ChatLocks,
        chats: ChatDirectory,
        spawn: Spawn,
        edit_interval: float,
    ) -> None:
        self._s = services
        self._outbox = outbox
        self._locks = locks
        self._chats = chats
        self._spawn = spawn
        self._posts: dict[int, RaidPost | None] = {}  # raid id -> post; None: not a Telegram raid
        # chat id -> what to redraw there: raid ids (their own posts), PartnerPosts.item(row) (partner posts)
        self._dirty: defaultdict[int, set[Hashable]] = defaultdict(set)
        self.coalescer = Coalescer(edit_interval, self._flush)
        self.partners = PartnerPosts(services, outbox, locks, spawn, self._redraw)

    # -- events ------------------------------------------------------------------------------------

    async def on_raid_started(self, event: RaidStarted) -> None:
        progress = await self._s.raids.progress(event.raid_id)
        if progress.chat.platform != PLATFORM:
            self._posts[event.raid_id] = None
            return
        known = self._posts.get(event.raid_id)
        if known is not None and known.posting is not None and not known.posting.done():
            return  # this process is sending it right now
        if not await self._s.outbox.pending(raid_key(event.raid_id)):
            return  # sent already (here or by another process): edits find it through progress_ref
        post = RaidPost(int(progress.chat.external_id), _thread(progress))
        self._posts[event.raid_id] = post
        post.posting = self._spawn(self._post_raid(progress, post), "raid post")

    async def on_post_due(self, event: PostDue) -> None:
        """An outbox row the sweep found owed: the raid post, a report, or a report to redraw."""
        if await self.partners.on_post_due(event):
            return  # a partner chat's post or report (core/partners.py)
        if event.platform != PLATFORM:
            return
        if event.kind == "raid":
            await self.on_raid_started(RaidStarted(event.raid_id, event.community_id))
        elif event.kind == "report":
            self._spawn(self._finish(event.raid_id), "raid report")
        elif event.kind == "unpin":
            self._spawn(self._unpin(event.raid_id), "raid unpin")
        elif event.kind == "announcement":
            owed = await self._s.schedules.owed(event.key)
            if owed is not None:
                await self.on_announcement_due(owed)
        elif event.kind == "badge":
            chat_id = await self._chats.chat_id(event.community_id)
            if chat_id is not None:
                self._spawn(self._badge(chat_id, event.key), "badge announcement")

    async def on_report_changed(self, event: ReportChanged) -> None:
        if await self._post(event.raid_id) is not None:
            self._spawn(self._deliver_report(event.raid_id, None), "report edit")

    async def on_progress_changed(self, event: ProgressChanged) -> None:
        post = await self._post(event.raid_id)
        if post is None:
            return
        if post.message_id is None:
            if post.posting is not None and not post.posting.done():
                post.stale = True
            return
        self._redraw(post.chat_id, event.raid_id)

    async def on_raid_ended(self, event: RaidEnded) -> None:
        """The final edit, and the report: claimed in the database, so it is posted once."""
        if await self._post(event.raid_id) is not None:
            self._spawn(self._finish(event.raid_id), "raid report")
            self._spawn(self._unpin(event.raid_id), "raid unpin")

    async def on_announcement_due(self, event: AnnouncementDue) -> None:
        chat_id = await self._chats.chat_id(event.community_id)
        if chat_id is not None:
            self._spawn(self._announce(chat_id, event), "leaderboard announcement")

    # -- work ------------------------------------------------------------------------------------------

    async def _post(self, raid_id: int) -> RaidPost | None:
        """The raid's post, known from this process or, after a restart, from the raid's progress_ref."""
        known = self._posts.get(raid_id)
        if known is not None and known.message_id is None and known.posting is None:
            del self._posts[raid_id]  # posted by another process: look for its progress_ref again
        if raid_id not in self._posts:
            progress = await self._s.raids.progress(raid_id, top=0)
            post = None
            if progress.chat.platform == PLATFORM:
                post = RaidPost(int(progress.chat.external_id), _thread(progress))
                ref = progress.progress_ref or {}
                if ref.get("chat_id") == post.chat_id:
                    post.message_id = ref.get("message_id")
            self._posts[raid_id] = post
        return self._posts[raid_id]

    async def _post_raid(self, progress: RaidProgress, post: RaidPost) -> None:
        locked = pinned = True

        async def send(_d: Delivery) -> dict[str, Any] | None:
            nonlocal locked, pinned
            if not progress.active:
                return None  # it ended before its post went out: the report tells the story
            if progress.lock and progress.active:
                locked = await self._locks.lock_for_raid(progress)
            text, markup = await self._render(progress.id)
            message = await self._outbox.send(post.chat_id, text, markup=markup, thread=post.thread)
            post.message_id = message.message_id
            ref: dict[str, Any] = {"chat_id": post.chat_id, "message_id": message.message_id}
            if post.thread is not None:
                ref["thread_id"] = post.thread
            if progress.pin:
                ref["pinned"] = True  # saved before pinning: the unpin owed at the end finds it, whatever happens
            await self._s.raids.set_progress_ref(progress.id, ref)
            if progress.pin:
                pinned = await self._pin(progress.id, post, ref)
            return ref

        if not await self._s.outbox.deliver(raid_key(progress.id), send):
            post.posting = None  # not sent by us (sent already, another process, or failed): read its ref later
            return
        if post.stale:
            self._redraw(post.chat_id, progress.id)
        if not locked and post.message_id is not None:
            with use_language(progress.language):
                notice = _(NO_RIGHTS_NOTICE) if post.thread is None else _(
                    "I couldn't close this topic for the raid: I need to be an admin allowed to manage topics. "
                    "The raid runs unlocked.")
            await self._outbox.send(post.chat_id, escape(notice), reply_to=post.message_id, thread=post.thread)
        if not pinned and post.message_id is not None:
            with use_language(progress.language):
                notice = _("I couldn't pin the raid post: I need to be an admin allowed to pin messages. "
                           "The raid runs unpinned.")
            await self._outbox.send(post.chat_id, escape(notice), reply_to=post.message_id, thread=post.thread)

    async def _pin(self, raid_id: int, post: RaidPost, ref: dict[str, Any]) -> bool:
        """Pin the raid post. False when Telegram refused (the bot may not pin here): the raid runs
        unpinned and no unpin is attempted at its end. Never raises, so the post stays sent."""
        assert post.message_id is not None
        try:
            await self._outbox.pin(post.chat_id, post.message_id)
        except (BadRequest, Forbidden) as exc:
            log.warning("could not pin raid %s post in chat %s: %s", raid_id, post.chat_id, exc.message)
            await self._s.raids.set_progress_ref(raid_id, {k: v for k, v in ref.items() if k != "pinned"})
            return False
        except TelegramError as exc:  # it may have been pinned all the same: the unpin at the end tidies up
            log.warning("pinning raid %s post in chat %s failed: %s", raid_id, post.chat_id, exc)
        return True

    async def _unpin(self, raid_id: int) -> None:
        """Unpin an ended raid's post, through its outbox row: a failure leaves it owed for the sweep."""
        post = await self._post(raid_id)
        if post is not None and post.posting is not None:
            await asyncio.wait({post.posting})

        async def send(_d: Delivery) -> None:
            ref = (await self._s.raids.progress(raid_id, top=0)).progress_ref or {}
            if ref.get("pinned") and ref.get("message_id"):
                if not await self._outbox.unpin(int(ref["chat_id"]), int(ref["message_id"])):
                    log.info("raid %s post is gone: nothing to unpin", raid_id)
            return None

        with contextlib.suppress(RetryLater):  # released with its wait: the sweep brings it back then
            await self._s.outbox.deliver(unpin_key(raid_id), send)

    async def finish_unpins(self) -> None:
        """Unpins owed from before a restart (no need to wait for the first sweep)."""
        for due in await self._s.outbox.due():
            if due.platform == PLATFORM and due.kind == "unpin":
                row = partner_row(due.key)
                if row is not None:  # a partner chat's post (core/partners.py)
                    await self.partners.finish_unpin(row)
                else:
                    await self._unpin(due.raid_id)

    async def _render(self, raid_id: int) -> Rendered:
        progress = await self._locks.shown(await self._s.raids.progress(raid_id))
        view = raid_view(progress)
        return render_html(view), keyboard(view.buttons)

    def _redraw(self, chat_id: int, item: Hashable) -> None:
        self._dirty[chat_id].add(item)
        self.coalescer.poke(chat_id)

    async def _flush(self, chat_id: int) -> None:
        raids = self._dirty.pop(chat_id, set())
        try:
            for item in sorted(raids, key=_redraw_order):
                if isinstance(item, tuple):
                    await self.partners.edit(item[1])
                else:
                    await self._edit(int(item))  # type: ignore[call-overload]
        except RetryLater:
            self._dirty[chat_id].update(raids)
            raise

    async def _edit(self, raid_id: int) -> None:
        post = self._posts.get(raid_id)
        if post is None or post.message_id is None:
            return
        try:
            await self._outbox.edit_latest(post.chat_id, post.message_id, lambda: self._render(raid_id))
        except BadRequest as exc:
            # The post was deleted or can no longer be edited: stop trying, never re-send it.
            log.warning("raid %s post in chat %s cannot be edited: %s", raid_id, post.chat_id, exc.message)
            post.message_id = None
        except TelegramError as exc:
            log.warning("editing raid %s post in chat %s failed: %s", raid_id, post.chat_id, exc)

    async def _finish(self, raid_id: int) -> None:
        post = await self._post(raid_id)
        if post is None:
            return
        if post.posting is not None:
            await asyncio.wait({post.posting})
        if post.message_id is not None:
            self._redraw(post.chat_id, raid_id)  # final state: status, no claim buttons
        await self._deliver_report(raid_id, post)

    async def _deliver_report(self, raid_id: int, post: RaidPost | None) -> None:
        """Send the report, or redraw the one sent (its numbers settled after the raid ended)."""

        async def send(d: Delivery) -> dict[str, int] | None:
            report = await self._s.raids.report(raid_id)
            if report is None:
                raise LookupError(f"raid {raid_id} has no report yet")
            with use_language(await self._s.community_settings.language_of_raid(raid_id)):
                text = render_html(report_view(report))
            if d.edit and d.ref:
                try:
                    await self._outbox.edit_latest(d.ref["chat_id"], d.ref["message_id"], _fixed(text))
                except BadRequest as exc:
                    log.warning("report of raid %s cannot be edited: %s", raid_id, exc.message)  # deleted: stop
                return None
            chat_id = post.chat_id if post else await self._chat_of_raid(raid_id)
            thread = post.thread if post else None
            message = await self._outbox.send(chat_id, text, reply_to=post.message_id if post else None,
                                              thread=thread)
            return {"chat_id": chat_id, "message_id": message.message_id}

        await self._s.outbox.deliver(report_key(raid_id), send)

    async def _chat_of_raid(self, raid_id: int) -> int:
        return int((await self._s.raids.progress(raid_id, top=0)).chat.external_id)

    async def _announce(self, chat_id: int, event: AnnouncementDue) -> None:
        """A scheduled board, delivered through the outbox (its row was written with the slot's claim):
        a failure leaves it owed, and the sweep brings it back until it is sent."""
        async def send(d: Delivery) -> dict[str, int] | None:
            message = await self._outbox.send(chat_id, render_html(await self._s.boards.announcement(event)))
            return {"chat_id": chat_id, "message_id": message.message_id}

        with contextlib.suppress(RetryLater):  # released with its wait: the sweep delivers it then
            await self._s.outbox.deliver(event.key, send)

    async def _badge(self, chat_id: int, key: str) -> None:
        """A milestone badge someone earned (core/badges.py), announced once through the outbox."""
        async def send(d: Delivery) -> dict[str, int] | None:
            award = await self._s.badges.award_of(key)
            if award is None:
                return None  # the community or member is gone: nothing to say
            message = await self._outbox.send(chat_id, escape(announcement_text(award)))
            return {"chat_id": chat_id, "message_id": message.message_id}

        with contextlib.suppress(RetryLater):  # released with its wait: the sweep delivers it then
            await self._s.outbox.deliver(key, send)


def _redraw_order(item: Hashable) -> tuple[int, int]:
    """Raids' own posts first, by raid; then partner posts, by row."""
    return (1, item[1]) if isinstance(item, tuple) else (0, int(item))  # type: ignore[call-overload]


def _thread(progress: RaidProgress) -> int | None:
    return int(progress.thread) if progress.thread else None


def _fixed(text: str) -> Callable[[], Awaitable[Rendered]]:
    async def render() -> Rendered:
        return text, None

    return render
