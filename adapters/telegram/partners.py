"""A raid's posts in the partner chats on Telegram (core/partners.py): one per chat, edited in place.

A raid started with `partners` in a linked chat (Telegram or Discord) is owed a post in each partner
chat: an outbox row per chat (`raid:<raid>:<row>`), written with the raid's start, and at the end a
report row per chat (`report:<raid>:<row>`). Each is delivered the way the raid's own post is (claim,
send, mark; retried by the sweep), so every chat gets its post and its report once, whichever platform
fails. Edits go through the adapter's one Coalescer per chat, so a partner chat's edits share the chat's
budget with its own raids. Posts are written in the partner community's language; their buttons act
on the raid (core/commands `_raid_in_chat` knows the raid's partner chats).

A raid started with `lock` locks each partner chat too, right before its post goes up: one lock row
per chat (LockService, with that chat's community), released with the raid's end like the raid's own
lock and retried by the sweep until the chat has its permissions back. A raid started with `pin` pins
each partner chat's post once it is up (`pinned` saved in the row's ref first) and unpins it at the
end through the row's own outbox row (`unpin:<raid>:<row>`), finished by the sweep or a restart; a
refused pin or lock leaves a notice in that chat (a reply to its post) and the raid runs unpinned or
unlocked there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

from telegram.error import BadRequest, Forbidden, TelegramError

from core.events import PostDue, ProgressChanged, RaidEnded, RaidStarted, ReportChanged
from core.i18n import _, use_language
from core.outbox import Delivery, partner_raid_key, partner_report_key, partner_row, partner_unpin_key
from core.partners import RaidChatRef
from core.raids.model import RaidProgress
from core.services import Services
from core.throttle import RetryLater
from core.views import raid_view, report_view

from .chats import PLATFORM
from .locks import NO_RIGHTS_NOTICE, ChatLocks, Spawn
from .outbox import Outbox, Rendered
from .render import escape, keyboard, render_html

log = logging.getLogger(__name__)
REMEMBERED = 1000  # raids whose partner chats this process keeps in mind


@dataclass
class PartnerPost:
    row: RaidChatRef
    message_id: int | None = None
    posting: asyncio.Task[None] | None = None
    stale: bool = False  # progress changed while the post was still being sent

    @property
    def chat_id(self) -> int:
        return int(self.row.chat.external_id)


class PartnerPosts:
    def __init__(self, services: Services, outbox: Outbox, locks: ChatLocks, spawn: Spawn,
                 redraw: Callable[[int, Hashable], None]) -> None:
        self._s = services
        self._outbox = outbox
        self._locks = locks
        self._spawn = spawn
        self._redraw = redraw  # (chat id, item) into the adapter's Coalescer, which calls `edit` back
        self._raids: dict[int, list[PartnerPost]] = {}  # raid id -> its partner posts on Telegram
        self._rows: dict[int, PartnerPost] = {}  # raid_chats row id -> its post (the Coalescer names rows)

    @staticmethod
    def item(row_id: int) -> tuple[str, int]:
        """What a partner post is in the Coalescer's set of things to redraw in a chat."""
        return ("partner", row_id)

    async def _of(self, raid_id: int) -> list[PartnerPost]:
        if raid_id not in self._raids:
            rows = await self._s.partners.raid_chats(raid_id, PLATFORM)
            self._raids[raid_id] = [PartnerPost(r, (r.progress_ref or {}).get("message_id")) for r in rows]
            self._rows.update((p.row.id, p) for p in self._raids[raid_id])
            while len(self._raids) > REMEMBERED:
                for gone in self._raids.pop(next(iter(self._raids))):
                    self._rows.pop(gone.row.id, None)
        return self._raids[raid_id]

    async def _by_row(self, row_id: int) -> PartnerPost | None:
        if row_id in self._rows:
            return self._rows[row_id]
        row = await self._s.partners.raid_chat(row_id)
        if row is None:
            return None
        return next((p for p in await self._of(row.raid_id) if p.row.id == row_id), None)

    # -- events ------------------------------------------------------------------------------------

    async def on_raid_started(self, event: RaidStarted) -> None:
        for post in await self._of(event.raid_id):
            self._start(post)

    def _start(self, post: PartnerPost) -> None:
        if post.posting is not None and not post.posting.done():
            return  # this process is sending it right now
        post.posting = self._spawn(self._post(post), "partner raid post")

    async def on_post_due(self, event: PostDue) -> bool:
        """A partner chat's post or report the sweep found owed; False when the row is not a partner's."""
        row_id = partner_row(event.key)
        if row_id is None:
            return False
        if event.platform != PLATFORM:
            return True
        post = await self._by_row(row_id)
        if post is not None:
            if event.kind == "raid":
                self._start(post)
            elif event.kind == "report":
                self._spawn(self._finish(post), "partner raid report")
            elif event.kind == "unpin":
                self._spawn(self._unpin(post), "partner raid unpin")
        return True

    async def on_progress_changed(self, event: ProgressChanged) -> None:
        for post in await self._of(event.raid_id):
            if post.message_id is not None:
                self._redraw(post.chat_id, self.item(post.row.id))
            elif post.posting is not None and not post.posting.done():
                post.stale = True

    async def on_raid_ended(self, event: RaidEnded) -> None:
        for post in await self._of(event.raid_id):
            self._spawn(self._finish(post), "partner raid report")
            self._spawn(self._unpin(post), "partner raid unpin")  # owed only if the raid was pinned

    async def on_report_changed(self, event: ReportChanged) -> None:
        for post in await self._of(event.raid_id):
            self._spawn(self._report(post), "partner report edit")

    # -- work --------------------------------------------------------------------------------------

    async def _here(self, post: PartnerPost, *, top: int = 5) -> RaidProgress:
        """The raid as this partner chat sees it: its chat, its language, its own lock."""
        progress = await self._s.raids.progress(post.row.raid_id, top=top)
        language = await self._s.community_settings.language_of_chat(post.row.chat)
        return replace(progress, community_id=post.row.community_id, chat=post.row.chat, thread=None,
                       language=language)

    async def _render(self, post: PartnerPost) -> Rendered:
        view = raid_view(await self._locks.shown(await self._here(post)))
        return render_html(view), keyboard(view.buttons)

    async def _post(self, post: PartnerPost) -> None:
        key = partner_raid_key(post.row.raid_id, post.row.id)
        pinned = locked = True
        language: str | None = None

        async def send(_d: Delivery) -> dict[str, Any] | None:
            nonlocal pinned, locked, language
            here = await self._here(post, top=0)
            if not here.active:
                return None  # it ended before its post went out: the report tells the story
            language = here.language
            if here.lock and not await self._locks.lock_for_raid(here):
                log.warning("raid %s runs unlocked in partner chat %s", here.id, post.chat_id)
                locked = False
            text, markup = await self._render(post)
            message = await self._outbox.send(post.chat_id, text, markup=markup)
            post.message_id = message.message_id
            ref: dict[str, Any] = {"chat_id": post.chat_id, "message_id": message.message_id}
            if here.pin:
                ref["pinned"] = True  # saved before pinning: the unpin owed at the end finds it, whatever happens
            await self._s.partners.set_progress_ref(post.row.id, ref)
            if here.pin:
                pinned = await self._pin(post, ref)
            return ref

        with contextlib.suppress(RetryLater):  # released with its wait: the sweep brings it back then
            await self._s.outbox.deliver(key, send)
        if post.message_id is None:  # sent by another process (or not at all): its ref says where
            row = await self._s.partners.raid_chat(post.row.id)
            post.message_id = ((row.progress_ref if row else None) or {}).get("message_id")
        if post.stale and post.message_id is not None:
            post.stale = False
            self._redraw(post.chat_id, self.item(post.row.id))
        notices = []
        with use_language(language):
            if not locked:
                notices.append(_(NO_RIGHTS_NOTICE))
            if not pinned:
                notices.append(_("I couldn't pin the raid post: I need to be an admin allowed to pin messages. "
                                 "The raid runs unpinned."))
        for notice in notices if post.message_id is not None else []:
            with contextlib.suppress(TelegramError):
                await self._outbox.send(post.chat_id, escape(notice), reply_to=post.message_id)

    async def _pin(self, post: PartnerPost, ref: dict[str, Any]) -> bool:
        """Pin the raid post in this partner chat. False when Telegram refused (no right to pin here): it
        runs unpinned there and nothing is unpinned at the end. Never raises, so the post stays sent."""
        assert post.message_id is not None
        try:
            await self._outbox.pin(post.chat_id, post.message_id)
        except (BadRequest, Forbidden) as exc:
            log.warning("could not pin raid %s post in partner chat %s: %s", post.row.raid_id, post.chat_id,
                        exc.message)
            await self._s.partners.set_progress_ref(post.row.id, {k: v for k, v in ref.items() if k != "pinned"})
            return False
        except TelegramError as exc:  # it may have been pinned all the same: the unpin at the end tidies up
            log.warning("pinning raid %s post in partner chat %s failed: %s", post.row.raid_id, post.chat_id, exc)
        return True

    async def _unpin(self, post: PartnerPost) -> None:
        """Unpin this chat's post of an ended raid, through its outbox row: a failure leaves it owed."""
        if post.posting is not None:
            await asyncio.wait({post.posting})

        async def send(_d: Delivery) -> None:
            row = await self._s.partners.raid_chat(post.row.id)
            ref = (row.progress_ref if row else None) or {}
            if ref.get("pinned") and ref.get("message_id"):
                if not await self._outbox.unpin(int(ref["chat_id"]), int(ref["message_id"])):
                    log.info("raid %s post in partner chat %s is gone: nothing to unpin", post.row.raid_id,
                             post.chat_id)
            return None

        with contextlib.suppress(RetryLater):  # released with its wait: the sweep brings it back then
            await self._s.outbox.deliver(partner_unpin_key(post.row.raid_id, post.row.id), send)

    async def finish_unpin(self, row_id: int) -> None:
        """An unpin owed from before a restart (the adapter's start finishes them)."""
        post = await self._by_row(row_id)
        if post is not None:
            await self._unpin(post)

    async def edit(self, row_id: int) -> None:
        """The Coalescer's flush of one partner post: the raid as it is now."""
        post = await self._by_row(row_id)
        if post is None or post.message_id is None:
            return
        try:
            await self._outbox.edit_latest(post.chat_id, post.message_id, lambda: self._render(post))
        except BadRequest as exc:  # deleted or no longer editable: stop trying, never re-send it
            log.warning("raid %s post in partner chat %s cannot be edited: %s", post.row.raid_id, post.chat_id,
                        exc.message)
            post.message_id = None
        except TelegramError as exc:
            log.warning("editing raid %s post in partner chat %s failed: %s", post.row.raid_id, post.chat_id, exc)

    async def _finish(self, post: PartnerPost) -> None:
        if post.posting is not None:
            await asyncio.wait({post.posting})
        if post.message_id is not None:
            self._redraw(post.chat_id, self.item(post.row.id))  # final state: status, no claim buttons
        await self._report(post)

    async def _report(self, post: PartnerPost) -> None:
        """Send this chat's report once, or redraw the one sent (its numbers settled later)."""
        raid_id = post.row.raid_id

        async def send(d: Delivery) -> dict[str, Any] | None:
            report = await self._s.raids.report(raid_id)
            if report is None:
                raise LookupError(f"raid {raid_id} has no report yet")
            with use_language(await self._s.community_settings.language_of_chat(post.row.chat)):
                text = render_html(report_view(report))
            if d.edit and d.ref:
                with contextlib.suppress(BadRequest):  # deleted: nothing more to redraw
                    await self._outbox.edit_latest(int(d.ref["chat_id"]), int(d.ref["message_id"]), _fixed(text))
                return None
            message = await self._outbox.send(post.chat_id, text, reply_to=post.message_id)
            return {"chat_id": post.chat_id, "message_id": message.message_id}

        with contextlib.suppress(RetryLater):
            await self._s.outbox.deliver(partner_report_key(raid_id, post.row.id), send)


def _fixed(text: str) -> Callable[[], Any]:
    async def render() -> Rendered:
        return text, None

    return render
