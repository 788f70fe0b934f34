"""Every message and edit the adapter puts into a chat goes through here.

Telegram allows a group about 20 messages a minute and answers floods with 429 RetryAfter. The
outbox keeps each group under `messages_per_minute` (core.throttle.SendBudget) and, once Telegram
asked a chat to wait, holds every send to that chat until then. Private chats skip the group budget.

An edit that would leave a message as it is (the same text and reply markup as last delivered) is not
sent at all: Telegram would refuse it ("message is not modified") and still count it against the
chat's budget. What each message shows is remembered in memory (a digest per message, the newest
`REMEMBERED_MESSAGES`); after a restart one edit goes out, and a "not modified" answer to it counts
as delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import hashlib
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.warnings import PTBDeprecationWarning

from core.throttle import RetryLater, SendBudget

SEND_ATTEMPTS = 5
SERVER_ERROR_BACKOFF = 0.5  # seconds, doubled per attempt, after a 5xx from the Bot API
Rendered = tuple[str, InlineKeyboardMarkup | None]
REMEMBERED_MESSAGES = 10_000  # messages whose shown content the outbox keeps in mind (a digest each)


def retry_seconds(exc: RetryAfter) -> float:
    """RetryAfter.retry_after is an int or a timedelta depending on PTB_TIMEDELTA; accept both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


def shown(text: str, markup: InlineKeyboardMarkup | None) -> bytes:
    """A digest of what a message shows: its (HTML) text and its reply markup."""
    keyboard = markup.to_json() if markup is not None else ""
    return hashlib.blake2b(f"{text}\0{keyboard}".encode(), digest_size=16).digest()


class Outbox:
    def __init__(self, bot: Bot, per_minute: int, edit_gap: float) -> None:
        self._bot = bot
        self._budget = SendBudget(per_minute)
        self._edit_gap = edit_gap
        self._held_until: dict[int, float] = {}
        self._last_edit: dict[int, float] = {}
        self._shown: OrderedDict[tuple[int, int], bytes] = OrderedDict()  # (chat, message) -> shown()

    def _remember(self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None) -> None:
        key = (chat_id, message_id)
        self._shown[key] = shown(text, markup)
        self._shown.move_to_end(key)
        while len(self._shown) > REMEMBERED_MESSAGES:
            self._shown.popitem(last=False)

    def shows(self, chat_id: int, message_id: int, text: str, markup: InlineKeyboardMarkup | None) -> bool:
        """Does the message already show this text and markup (as far as this process delivered it)?"""
        return self._shown.get((chat_id, message_id)) == shown(text, markup)

    def hold(self, chat_id: int, seconds: float) -> None:
        """Telegram asked this chat to wait: nothing goes to it before then."""
        until = asyncio.get_running_loop().time() + seconds
        self._held_until[chat_id] = max(self._held_until.get(chat_id, 0.0), until)

    async def slot(self, chat_id: int) -> None:
        """Wait until the chat may receive one more message or edit, and take that place."""
        held = self._held_until.get(chat_id, 0.0) - asyncio.get_running_loop().time()
        if held > 0:
            await asyncio.sleep(held)
        if chat_id < 0:  # groups and channels; users have their own, looser limit
            await self._budget.wait(chat_id)

    def _give_back(self, chat_id: int) -> None:
        """Return the place `slot` took: nothing was sent with it."""
        if chat_id < 0:
            self._budget.give_back(chat_id)

    async def send(
        self,
        chat_id: int,
        text: str,
        *,
        markup: InlineKeyboardMarkup | None = None,
        reply_to: int | None = None,
        thread: int | None = None,
    ) -> Message:
        """Send an HTML message (into forum topic `thread`, if given), waiting out flood answers a few
        times before giving up."""
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        attempts = 0
        while True:
            await self.slot(chat_id)
            try:
                message = await self._bot.send_message(
                    chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup, reply_parameters=reply,
                    message_thread_id=thread,
                )
            except RetryAfter as exc:
                attempts += 1
                if attempts >= SEND_ATTEMPTS:
                    raise
                self.hold(chat_id, retry_seconds(exc))
            except BadRequest:
                raise
            except TimedOut:
                # Telegram may have delivered it: sending again could post it twice, so give up here.
                raise
            except NetworkError:  # a 5xx or a refused connection: nothing was delivered, try again
                attempts += 1
                if attempts >= SEND_ATTEMPTS:
                    raise
                await asyncio.sleep(SERVER_ERROR_BACKOFF * 2 ** (attempts - 1))
            else:
                self._remember(chat_id, message.message_id, text, markup)
                return message

    async def edit_latest(
        self, chat_id: int, message_id: int, render: Callable[[], Awaitable[Rendered]]
    ) -> bool:
        """Edit a message in place with what `render` returns once a slot is free, so the newest
        state is what lands. Edits to one chat leave at least `edit_gap` apart even when reading
        the state was slow for one and quick for the next. False when nothing changed: the
        message already shows it (no request is made, and the slot is given back), or Telegram said
        "not modified" (a success: the message shows what it should). A flood answer becomes
        RetryLater for the caller's Coalescer."""
        await self.slot(chat_id)
        loop = asyncio.get_running_loop()
        gap = self._last_edit.get(chat_id, -self._edit_gap) + self._edit_gap - loop.time()
        if gap > 0:
            await asyncio.sleep(gap)
        text, markup = await render()
        if self.shows(chat_id, message_id, text, markup):
            self._give_back(chat_id)
            return False
        self._last_edit[chat_id] = loop.time()
        try:
            await self._bot.edit_message_text(
                text, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML, reply_markup=markup
            )
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            self.hold(chat_id, seconds)
            raise RetryLater(seconds) from exc
        except BadRequest as exc:
            if not_modified(exc):  # it shows this already (e.g. edited before a restart): done
                self._remember(chat_id, message_id, text, markup)
                return False
            raise
        except NetworkError as exc:  # 5xx or timeout: an edit is safe to repeat, so retry it later
            raise RetryLater(SERVER_ERROR_BACKOFF * 2) from exc
        self._remember(chat_id, message_id, text, markup)
        return True

    async def pin(self, chat_id: int, message_id: int) -> None:
        """Pin a message without notifying the members (the raid post itself already did)."""
        await self._bot.pin_chat_message(chat_id, message_id, disable_notification=True)

    async def unpin(self, chat_id: int, message_id: int) -> bool:
        """Unpin one message. False when the message is gone (deleted: nothing is pinned any more); a
        flood answer becomes RetryLater; other refusals (rights taken away) are raised."""
        try:
            await self._bot.unpin_chat_message(chat_id, message_id=message_id)
        except RetryAfter as exc:
            raise RetryLater(retry_seconds(exc)) from exc
        except BadRequest as exc:
            if "not found" in exc.message.lower():
                return False
            raise
        return True
