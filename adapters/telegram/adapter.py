"""nubi on Telegram: a thin python-telegram-bot layer over the core.

Text commands go whole to `services.commands.handle_text` (the one parser lives in core), raid-post
buttons to `services.commands.press`; the adapter only decides who is a moderator, draws replies
as HTML, and turns core events into posts, edits and chat locks (progress.py, locks.py).

Lifecycle, for the composition root: `TelegramAdapter(services, config)`, `await start()` (polling,
or webhook with `webhook_app` to mount), `await stop()`. It never calls run_polling/run_webhook,
which would take over the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from telegram import (
    BotCommandScopeAllChatAdministrators,
    BotCommandScopeDefault,
    Chat,
    ChatMember,
    Message,
    MessageEntity,
    Update,
    User,
)
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from core.commands.parser import MEMBER_COMMANDS, MODERATOR_COMMANDS
from core.commands.service import ChatContext, Reply
from core.config import ConfigError, TelegramConfig
from core.directory import ChatRef, MemberRef
from core.events import (
    AnnouncementDue,
    Event,
    LockReleased,
    PostDue,
    ProgressChanged,
    RaidEnded,
    RaidStarted,
    ReportChanged,
)
from core.i18n import N_, _, use_language
from core.partners import Lacking
from core.services import Services
from core.targets import Mention
from core.views import View

from .chats import PLATFORM, ChatDirectory
from .locks import ChatLocks
from .moderators import Moderators
from .outbox import Outbox
from .progress import RaidPosts
from .render import bot_commands, escape, keyboard, render_html, toast
from .webhook import webhook_app

log = logging.getLogger(__name__)

SORRY = N_("Something went wrong, try again.")
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
STOP_GRACE_SECONDS = 5.0


class TelegramAdapter:
    def __init__(self, services: Services, config: TelegramConfig, *, request: BaseRequest | None = None) -> None:
        if config.token is None:
            raise ConfigError(["telegram.token: required to run the Telegram adapter"])
        secret = config.webhook_secret.get_secret_value() if config.webhook_secret else ""
        if config.mode == "webhook" and not (secret and config.webhook_url):
            raise ConfigError(["telegram.webhook_url and telegram.webhook_secret: required in webhook mode"])
        self.services = services
        self.config = config
        self._secret = secret
        builder = (
            ApplicationBuilder()
            .token(config.token.get_secret_value())
            .base_url(config.api_base_url)
            .concurrent_updates(True)  # a slow reply must not hold up everyone's button presses
        )
        if request is not None:
            builder = builder.request(request)
        if config.mode == "webhook":
            builder = builder.updater(None)
        self.application = builder.build()
        bot = self.application.bot
        self._tasks: set[asyncio.Task[None]] = set()
        self._outbox = Outbox(bot, config.messages_per_minute, config.edit_interval_seconds)
        self._moderators = Moderators(bot, config.moderator_ids)
        chats = ChatDirectory(services.db)
        self._locks = ChatLocks(services, bot, chats, self._spawn)
        self._posts = RaidPosts(services, self._outbox, self._locks, chats, self._spawn, config.edit_interval_seconds)
        services.partners.checkers[PLATFORM] = self.check_partner
        self._subscriptions: list[tuple[type[Event], Any]] = [
            (RaidStarted, self._posts.on_raid_started),
            (ProgressChanged, self._posts.on_progress_changed),
            (RaidEnded, self._posts.on_raid_ended),
            (AnnouncementDue, self._posts.on_announcement_due),
            (LockReleased, self._locks.on_lock_released),
            (PostDue, self._posts.on_post_due),
            (ReportChanged, self._posts.on_report_changed),
            # the raid's posts in its partner chats on Telegram (core/partners.py)
            (RaidStarted, self._posts.partners.on_raid_started),
            (ProgressChanged, self._posts.partners.on_progress_changed),
            (RaidEnded, self._posts.partners.on_raid_ended),
            (ReportChanged, self._posts.partners.on_report_changed),
        ]
        # The ASGI app the HTTP server mounts (at /telegram/webhook) in webhook mode; None when polling.
        self.webhook_app = webhook_app(self.application, secret) if config.mode == "webhook" else None
        self.application.add_handler(MessageHandler(filters.COMMAND & filters.UpdateType.MESSAGE, self._on_command))
        self.application.add_handler(CallbackQueryHandler(self._on_press))
        self.application.add_error_handler(self._on_error)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, publish the command menus, start taking updates, then finish pending unlocks."""
        app = self.application
        await app.initialize()
        await self._set_commands()
        for event_type, handler in self._subscriptions:
            self.services.bus.subscribe(event_type, handler)
        await app.start()
        if self.config.webhook_url and self.config.mode == "webhook":
            await app.bot.set_webhook(self.config.webhook_url, secret_token=self._secret, allowed_updates=ALLOWED_UPDATES)
        elif app.updater is not None:
            await app.updater.start_polling(allowed_updates=ALLOWED_UPDATES)
        await self._locks.restore_pending()
        await self._posts.finish_unpins()

    async def stop(self) -> None:
        """Stop taking updates, give in-flight posts and edits a moment, then close the connection.
        The webhook stays registered: other processes behind the same URL may still be serving."""
        app = self.application
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()  # waits for the handlers still running
        for event_type, handler in self._subscriptions:
            self.services.bus.unsubscribe(event_type, handler)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), STOP_GRACE_SECONDS)
        for task in set(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._posts.coalescer.close()
        if self.services.partners.checkers.get(PLATFORM) == self.check_partner:
            del self.services.partners.checkers[PLATFORM]
        await app.shutdown()

    async def check_partner(self, chat: ChatRef, lock: bool, pin: bool) -> list[Lacking]:
        """What the bot lacks in a partner group of a raid (core/partners.py): to post and edit there, to
        lock it (restrict members) and to pin the raid post, as Telegram says it stands now."""
        bot = self.application.bot
        try:
            me = await bot.get_chat_member(int(chat.external_id), bot.id)
        except (BadRequest, Forbidden) as exc:  # not in the group (left, removed) or the group is gone
            log.info("partner group %s: %s", chat.external_id, exc.message)
            return [Lacking(_("membership of the group"))]
        if me.status in (ChatMember.LEFT, ChatMember.BANNED):
            return [Lacking(_("membership of the group"))]
        admin = me.status == ChatMember.OWNER or me.status == ChatMember.ADMINISTRATOR
        lacking = []
        if me.status == ChatMember.RESTRICTED and not getattr(me, "can_send_messages", True):
            lacking.append(Lacking(_("the right to send messages")))
        if lock and not (me.status == ChatMember.OWNER or getattr(me, "can_restrict_members", False)):
            lacking.append(Lacking(_("the admin right to restrict members"), "lock"))
        if pin and not (me.status == ChatMember.OWNER or (admin and getattr(me, "can_pin_messages", False))):
            lacking.append(Lacking(_("the admin right to pin messages"), "pin"))
        return lacking

    async def drain(self) -> None:
        """Wait until every background post, edit and unlock has run (tests, orderly shutdown)."""
        while True:
            await asyncio.sleep(0)
            tasks = {t for t in self._tasks if not t.done()}
            if not tasks and not self._posts.coalescer.pending():
                return
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._posts.coalescer.drain()

    async def _set_commands(self) -> None:
        bot = self.application.bot
        try:
            await bot.set_my_commands(bot_commands(MEMBER_COMMANDS), scope=BotCommandScopeDefault())
            await bot.set_my_commands(
                bot_commands(MEMBER_COMMANDS + MODERATOR_COMMANDS), scope=BotCommandScopeAllChatAdministrators()
            )
        except TelegramError as exc:
            log.error("could not set the Telegram command menus: %s", exc)

    @property
    def posts(self) -> RaidPosts:
        """The raid posts and their edit coalescer (tests read how many edits wait for the budget)."""
        return self._posts

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._logged(coro, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _logged(coro: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telegram %s failed", what)

    # -- updates -------------------------------------------------------------------------------------

    async def _context(
        self, chat: Chat, user: User, sender_chat: Chat | None = None, *,
        mentions: tuple[Mention, ...] = (), reply_to: MemberRef | None = None, thread: int | None = None,
    ) -> ChatContext:
        return ChatContext(
            chat=ChatRef(PLATFORM, str(chat.id), chat.title),
            member=_member(user),
            is_moderator=await self._moderators.check(chat, user, sender_chat),
            private=chat.type == Chat.PRIVATE,
            mentions=mentions,
            reply_to=reply_to,
            thread=str(thread) if thread is not None else None,
        )

    def _addressed_to_us(self, text: str) -> bool:
        """`/cmd@otherbot` belongs to another bot in the group; `/cmd` and `/cmd@us` are ours."""
        _, at, name = text.split(maxsplit=1)[0].partition("@")
        return not at or name.lower() == (self.application.bot.username or "").lower()

    async def _on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        if message is None or user is None or chat is None or not message.text:
            return
        if not self._addressed_to_us(message.text):
            return
        text, mentions = _with_mentions(message)
        replied = message.reply_to_message
        author = replied.from_user if replied is not None and not message.is_topic_message else None
        thread = _topic(message)
        ctx = await self._in_language(await self._context(
            chat, user, message.sender_chat, mentions=mentions,
            reply_to=_member(author) if author is not None and not author.is_bot else None, thread=thread))
        with use_language(ctx.language):
            reply = await self.services.commands.handle_text(ctx, text)
            notes = reply.extra.get("partner_notes") if reply is not None and reply.quiet else None
            if isinstance(notes, View):  # what the partner chats lack (core/partners.py): the raid post can't say it
                reply = Reply(notes)
            if reply is None or reply.quiet:  # quiet: the raid post or report the event draws is the answer
                return
            if reply.private and chat.type != Chat.PRIVATE:
                await self._answer_privately(chat.id, message.message_id, user.id, reply)
                return
            text = render_html(reply.view)
        if text:
            await self._outbox.send(chat.id, text, markup=keyboard(reply.view.buttons), reply_to=message.message_id,
                                    thread=thread)

    async def _answer_privately(self, chat_id: int, message_id: int, user_id: int, reply: Reply) -> None:
        """A group has no messages for one member's eyes: the answer goes to the member's private chat
        with the bot, and the group reads only where it went. Telegram lets a bot write there once the
        member has started it; otherwise the group reads how to."""
        try:
            await self._outbox.send(user_id, render_html(reply.view))
            note = reply.extra.get("sent_privately")
        except TelegramError as exc:
            log.info("could not answer user %s privately: %s", user_id, exc)
            note = reply.extra.get("not_sent_privately")
        if isinstance(note, View):
            await self._outbox.send(chat_id, render_html(note), reply_to=message_id)

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        message = query.message
        if message is None:
            await query.answer(_("That button is no longer valid."))
            return
        # core reads the community's language with the raid's chat (one read per press); the reply says which
        reply = await self.services.commands.press(await self._context(message.chat, query.from_user), query.data or "")
        with use_language(reply.language):
            await query.answer(toast(reply))

    async def _in_language(self, ctx: ChatContext) -> ChatContext:
        """The context with its community's language: the adapter's own words are in it too."""
        return replace(ctx, language=await self.services.commands.language(ctx.chat))

    async def _sorry(self, update: Update) -> str:
        chat = update.effective_chat
        language = None
        if chat is not None:
            with contextlib.suppress(Exception):  # the apology must go out even when the database is down
                language = await self.services.commands.language(ChatRef(PLATFORM, str(chat.id)))
        with use_language(language):
            return _(SORRY)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Errors of ours: the log gets the details, the member a short apology."""
        log.error("telegram update failed: %s", _describe(update), exc_info=context.error)
        if not isinstance(update, Update):
            return
        sorry = await self._sorry(update)
        with contextlib.suppress(TelegramError):
            if update.callback_query is not None:
                await update.callback_query.answer(sorry)
            elif update.effective_message is not None and update.effective_chat is not None:
                await self._outbox.send(
                    update.effective_chat.id, escape(sorry), reply_to=update.effective_message.message_id,
                    thread=_topic(update.effective_message),
                )


def _topic(message: Message) -> int | None:
    """The forum topic a message was sent in; None in the General topic and outside forums (where
    message_thread_id may name a reply thread, not a topic)."""
    return message.message_thread_id if message.is_topic_message else None


def _member(user: User) -> MemberRef:
    return MemberRef(PLATFORM, str(user.id), user.full_name, user.username)


def _with_mentions(message: Message) -> tuple[str, tuple[Mention, ...]]:
    """The command text with each `text_mention` (a name Telegram links to a user without a
    username, spaces and all) replaced by that user's id, and the users Telegram resolved."""
    text = message.text or ""
    found = [e for e in message.entities if e.type == MessageEntity.TEXT_MENTION and e.user is not None]
    if not found:
        return text, ()
    units = text.encode("utf-16-le")
    mentions: list[Mention] = []
    for entity in sorted(found, key=lambda e: e.offset, reverse=True):  # offsets count UTF-16 code units
        assert entity.user is not None
        token = str(entity.user.id)
        start, end = entity.offset * 2, (entity.offset + entity.length) * 2
        units = units[:start] + f" {token} ".encode("utf-16-le") + units[end:]
        mentions.append(Mention(token, _member(entity.user)))
    return units.decode("utf-16-le"), tuple(mentions)


def _describe(update: object) -> str:
    if not isinstance(update, Update):
        return repr(update)[:200]
    chat, user = update.effective_chat, update.effective_user
    message: Message | None = update.effective_message
    what = update.callback_query.data if update.callback_query else (message.text if message else None)
    return (
        f"update {update.update_id} chat={chat.id if chat else None} user={user.id if user else None} "
        f"input={(what or '')[:100]!r}"
    )
