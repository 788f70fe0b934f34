"""The fake Bot API must behave like Telegram for the real python-telegram-bot, or adapter tests lie."""

from __future__ import annotations

import asyncio
import datetime as dtm
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from telegram import (
    BotCommand,
    BotCommandScopeAllChatAdministrators,
    ChatPermissions,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter
from telegram.ext import Application, ApplicationBuilder, CallbackQueryHandler, CommandHandler, ContextTypes

from tests.fakes.telegram_api import (
    FakeTelegramAPI,
    make_callback_update,
    make_command_update,
    make_text_update,
)

GROUP = -1001
USER = 42


class FakeClock:
    """Lets flood-limit tests move time without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(clock=clock) as server:
        server.add_chat(GROUP, title="Raid Group")
        yield server


@pytest.fixture
async def app(fake: FakeTelegramAPI) -> AsyncIterator[Application]:
    application = (
        ApplicationBuilder()
        .token(fake.token)
        .base_url(fake.base_url)
        .base_file_url(fake.base_file_url)
        .build()
    )
    await application.initialize()
    yield application
    await application.shutdown()


async def start_polling(app: Application) -> None:
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)


async def stop_polling(app: Application) -> None:
    assert app.updater is not None
    await app.updater.stop()
    await app.stop()


async def test_initialize_talks_to_the_fake(app: Application, fake: FakeTelegramAPI) -> None:
    assert app.bot.username == "nubi_test_bot"
    assert app.bot.id == 123
    assert [c.method for c in fake.calls] == ["getMe"]


async def test_command_through_get_updates_reaches_handler_and_reply_is_recorded(
    app: Application, fake: FakeTelegramAPI
) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"hello {' '.join(context.args or [])}")

    app.add_handler(CommandHandler("start", start))
    await start_polling(app)
    try:
        pushed = fake.push_update(make_command_update(GROUP, USER, "/start@nubi_test_bot raid now"))
        [call] = await fake.wait_for_calls("sendMessage", chat_id=GROUP)
    finally:
        await stop_polling(app)

    command_id = pushed["message"]["message_id"]
    assert call.ok
    assert call.params["reply_parameters"]["message_id"] == command_id
    [reply] = fake.sent_messages(GROUP)
    assert reply.text == "hello raid now"
    assert reply.message_id == command_id + 1
    assert reply.reply_to_message_id == command_id
    assert fake.pending_updates == []


async def test_callback_query_is_answered_and_message_edited(app: Application, fake: FakeTelegramAPI) -> None:
    seen_texts: list[str | None] = []

    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.message is not None
        seen_texts.append(getattr(query.message, "text", None))
        await query.answer("Counted")
        await query.edit_message_text(f"Joined: {query.data}")

    app.add_handler(CallbackQueryHandler(on_button))
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Join", callback_data="join:7")]])
    sent = await app.bot.send_message(GROUP, "Raid starts!", reply_markup=keyboard)

    await start_polling(app)
    try:
        pushed = fake.push_update(make_callback_update(GROUP, USER, sent.message_id, "join:7"))
        await fake.wait_for_calls("editMessageText", chat_id=GROUP)
    finally:
        await stop_polling(app)

    assert seen_texts == ["Raid starts!"]
    [answer] = fake.calls_for("answerCallbackQuery")
    assert answer.ok
    assert answer.params == {"callback_query_id": pushed["callback_query"]["id"], "text": "Counted"}
    stored = fake.message(GROUP, sent.message_id)
    assert stored.text == "Joined: join:7"
    assert stored.reply_markup is None  # an edit without reply_markup drops the keyboard
    assert [v.text for v in stored.history] == ["Raid starts!"]
    assert stored.history[0].reply_markup == keyboard.to_dict()


async def test_answering_a_callback_twice_fails_like_telegram(
    app: Application, fake: FakeTelegramAPI
) -> None:
    pushed = fake.push_update(make_callback_update(GROUP, USER, 99, "x"))
    query_id = pushed["callback_query"]["id"]
    assert await app.bot.answer_callback_query(query_id)
    with pytest.raises(BadRequest, match="(?i)Query is too old"):
        await app.bot.answer_callback_query(query_id)


async def test_edit_errors_match_the_real_api(app: Application, fake: FakeTelegramAPI) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Join", callback_data="join")]])
    sent = await app.bot.send_message(GROUP, "Raid", reply_markup=keyboard)

    with pytest.raises(BadRequest, match="(?i)not modified"):
        await app.bot.edit_message_text(
            "Raid", chat_id=GROUP, message_id=sent.message_id, reply_markup=keyboard
        )
    with pytest.raises(BadRequest, match="(?i)message to edit not found"):
        await app.bot.edit_message_text("Raid", chat_id=GROUP, message_id=sent.message_id + 50)

    # Same text but a different keyboard is a real modification.
    other = InlineKeyboardMarkup([[InlineKeyboardButton("Leave", callback_data="leave")]])
    edited = await app.bot.edit_message_reply_markup(GROUP, sent.message_id, reply_markup=other)
    assert edited.reply_markup == other
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await app.bot.edit_message_reply_markup(GROUP, sent.message_id, reply_markup=other)

    user_message = fake.push_update(make_text_update(GROUP, USER, "hi"))["message"]
    with pytest.raises(BadRequest, match="(?i)message can't be edited"):
        await app.bot.edit_message_text("hacked", chat_id=GROUP, message_id=user_message["message_id"])
    assert [c.ok for c in fake.calls_for("editMessageText")] == [False, False, False]


async def test_injected_429_raises_retry_after_then_recovers(
    app: Application, fake: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake.fail_next("sendMessage", retry_after=7)

    with pytest.raises(RetryAfter) as caught:
        await app.bot.send_message(GROUP, "first")
    assert caught.value.retry_after == dtm.timedelta(seconds=7)
    failed = fake.calls_for("sendMessage")[0]
    assert (failed.ok, failed.error_code, failed.description) == (
        False,
        429,
        "Too Many Requests: retry after 7",
    )
    assert fake.sent_messages(GROUP) == []

    await app.bot.send_message(GROUP, "second")
    assert [m.text for m in fake.sent_messages(GROUP)] == ["second"]


async def test_injected_5xx_raises_network_error(app: Application, fake: FakeTelegramAPI) -> None:
    fake.fail_next("editMessageText", error_code=502, times=2)
    sent = await app.bot.send_message(GROUP, "a")
    for _ in range(2):
        with pytest.raises(NetworkError, match="(?i)Bad Gateway"):
            await app.bot.edit_message_text("b", chat_id=GROUP, message_id=sent.message_id)
    await app.bot.edit_message_text("b", chat_id=GROUP, message_id=sent.message_id)
    assert fake.message(GROUP, sent.message_id).text == "b"


async def test_flood_limit_uses_a_rolling_minute_per_chat(
    app: Application, fake: FakeTelegramAPI, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake.flood_limit(per_chat_per_minute=2)
    first = await app.bot.send_message(GROUP, "1")
    clock.now += 20
    await app.bot.edit_message_text("1b", chat_id=GROUP, message_id=first.message_id)

    clock.now += 10
    with pytest.raises(RetryAfter) as caught:
        await app.bot.send_message(GROUP, "3")
    assert caught.value.retry_after == dtm.timedelta(seconds=30)  # until the first send leaves the window

    fake.add_chat(-2002)
    await app.bot.send_message(-2002, "other chats are not limited")

    clock.now += 30
    await app.bot.send_message(GROUP, "3")
    assert [m.text for m in fake.sent_messages(GROUP)] == ["1b", "3"]


async def test_set_chat_permissions_needs_rights_and_get_chat_returns_them(
    app: Application, fake: FakeTelegramAPI
) -> None:
    locked = ChatPermissions.no_permissions()
    with pytest.raises(BadRequest, match="(?i)not enough rights to change chat permissions"):
        await app.bot.set_chat_permissions(GROUP, locked)
    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=False)
    with pytest.raises(BadRequest, match="(?i)not enough rights"):
        await app.bot.set_chat_permissions(GROUP, locked)
    assert fake.chat(GROUP).permissions["can_send_messages"] is True

    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)
    assert await app.bot.set_chat_permissions(
        GROUP, ChatPermissions(can_send_messages=True), use_independent_chat_permissions=True
    )

    assert fake.chat(GROUP).permissions["can_send_messages"] is True
    assert fake.chat(GROUP).permissions["can_send_photos"] is False
    chat = await app.bot.get_chat(GROUP)
    assert chat.permissions is not None
    assert chat.permissions.can_send_messages is True
    assert chat.permissions.can_send_photos is False
    assert chat.title == "Raid Group"


async def test_dependent_permissions_follow_the_documented_implications(
    app: Application, fake: FakeTelegramAPI
) -> None:
    fake.set_member(GROUP, fake.bot_id, "creator")
    await app.bot.set_chat_permissions(GROUP, ChatPermissions(can_send_polls=True))
    permissions = fake.chat(GROUP).permissions
    assert permissions["can_send_polls"] and permissions["can_send_messages"]
    assert not permissions["can_send_photos"]


async def test_chat_members_parse_in_ptb(app: Application, fake: FakeTelegramAPI) -> None:
    fake.set_member(GROUP, 7, "creator", first_name="Owner")
    fake.set_member(GROUP, 8, "administrator", can_restrict_members=True)
    fake.set_member(GROUP, 9, "restricted", can_send_messages=False)
    fake.push_update(make_text_update(GROUP, USER, "hi"))

    admins = await app.bot.get_chat_administrators(GROUP)
    assert sorted((m.user.id, m.status) for m in admins) == [(7, "creator"), (8, "administrator")]
    admin = await app.bot.get_chat_member(GROUP, 8)
    assert admin.can_restrict_members is True and admin.can_delete_messages is False
    assert (await app.bot.get_chat_member(GROUP, 9)).status == "restricted"
    assert (await app.bot.get_chat_member(GROUP, USER)).status == "member"
    with pytest.raises(BadRequest, match="(?i)user not found"):
        await app.bot.get_chat_member(GROUP, 555)
    with pytest.raises(ValueError, match="can_restrict_memberz"):
        fake.set_member(GROUP, 8, "administrator", can_restrict_memberz=True)


async def test_set_my_commands_records_the_decoded_scope(app: Application, fake: FakeTelegramAPI) -> None:
    scope = BotCommandScopeAllChatAdministrators()
    commands = [BotCommand("raid", "Start a raid"), BotCommand("stop", "Stop the raid")]
    assert await app.bot.set_my_commands(commands, scope=scope)

    [call] = fake.calls_for("setMyCommands")
    assert call.params["scope"] == {"type": "all_chat_administrators"}
    assert call.params["commands"] == [
        {"command": "raid", "description": "Start a raid"},
        {"command": "stop", "description": "Stop the raid"},
    ]
    assert await app.bot.get_my_commands(scope=scope) == tuple(commands)
    assert await app.bot.get_my_commands() == ()
    with pytest.raises(BadRequest, match="(?i)BOT_COMMAND_INVALID"):
        await app.bot.set_my_commands([BotCommand("Raid", "uppercase is rejected")])
    await app.bot.delete_my_commands(scope=scope)
    assert fake.my_commands({"type": "all_chat_administrators"}) == []


async def test_html_is_parsed_and_bad_html_rejected(app: Application, fake: FakeTelegramAPI) -> None:
    sent = await app.bot.send_message(GROUP, "<b>Raid</b> &lt;now&gt;", parse_mode=ParseMode.HTML)
    assert sent.text == "Raid <now>"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 4)]
    with pytest.raises(BadRequest, match='(?i)Unsupported start tag "user" at byte offset 6'):
        await app.bot.send_message(GROUP, "hello <user>", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match="(?i)message text is empty"):
        await app.bot.send_message(GROUP, "<b></b>", parse_mode=ParseMode.HTML)


async def test_document_upload_is_stored_and_downloadable(app: Application, fake: FakeTelegramAPI) -> None:
    sent = await app.bot.send_document(GROUP, b"rank,name\n1,alice\n", filename="board.csv", caption="Top")
    [call] = fake.calls_for("sendDocument")
    assert call.params["document"].data == b"rank,name\n1,alice\n"
    assert sent.document is not None and sent.document.file_name == "board.csv"
    assert sent.caption == "Top"

    photo = await app.bot.send_photo(GROUP, b"\x89PNG fake", caption="card")
    assert photo.photo[0].file_size == len(b"\x89PNG fake")

    file = await app.bot.get_file(sent.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"rank,name\n1,alice\n"


async def test_delete_message_rules(app: Application, fake: FakeTelegramAPI) -> None:
    own = await app.bot.send_message(GROUP, "bye")
    assert await app.bot.delete_message(GROUP, own.message_id)
    assert fake.message(GROUP, own.message_id).deleted
    with pytest.raises(BadRequest, match="(?i)message to delete not found"):
        await app.bot.delete_message(GROUP, own.message_id)

    theirs = fake.push_update(make_text_update(GROUP, USER, "spam"))["message"]["message_id"]
    with pytest.raises(BadRequest, match="(?i)message can't be deleted"):
        await app.bot.delete_message(GROUP, theirs)
    fake.set_member(GROUP, fake.bot_id, "administrator", can_delete_messages=True)
    assert await app.bot.delete_message(GROUP, theirs)


async def test_unknown_chat_and_kicked_bot(app: Application, fake: FakeTelegramAPI) -> None:
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await app.bot.send_message(-999, "hello?")
    fake.set_member(GROUP, fake.bot_id, "kicked")
    with pytest.raises(Forbidden, match="(?i)bot was kicked from the supergroup chat"):
        await app.bot.send_message(GROUP, "hello?")


async def test_raw_protocol_details(fake: FakeTelegramAPI) -> None:
    """Shapes PTB hides: unknown methods, bad tokens, JSON bodies, GET and webhook conflicts."""
    async with aiohttp.ClientSession() as http:
        unknown = await http.post(f"{fake.base_url}{fake.token}/frobnicate")
        assert unknown.status == 404
        assert await unknown.json() == {"ok": False, "error_code": 404, "description": "Not Found"}

        bad_token = await http.get(f"{fake.base_url}1:WRONG/getMe")
        assert bad_token.status == 401

        sent = await http.post(
            f"{fake.base_url}{fake.token}/SENDMESSAGE",
            json={"chat_id": GROUP, "text": "123", "reply_markup": '{"inline_keyboard": []}'},
        )
        body = await sent.json()
        assert body["ok"] and body["result"]["text"] == "123"
        assert fake.calls[-1].method == "sendMessage"
        assert fake.calls[-1].params["reply_markup"] == {"inline_keyboard": []}

        hooked = await http.get(
            f"{fake.base_url}{fake.token}/setWebhook", params={"url": "https://x.test/hook"}
        )
        assert (await hooked.json())["result"] is True
        conflict = await http.get(f"{fake.base_url}{fake.token}/getUpdates")
        assert conflict.status == 409
        info = await (await http.get(f"{fake.base_url}{fake.token}/getWebhookInfo")).json()
        assert info["result"]["url"] == "https://x.test/hook"


async def test_get_updates_honours_offset_timeout_and_stop(fake: FakeTelegramAPI) -> None:
    url = f"{fake.base_url}{fake.token}/getUpdates"
    async with aiohttp.ClientSession() as http:
        first = fake.push_update(make_text_update(GROUP, USER, "a"))
        second = fake.push_update(make_text_update(GROUP, USER, "b"))
        got = (await (await http.post(url, data={"offset": "0"})).json())["result"]
        assert [u["update_id"] for u in got] == [first["update_id"], second["update_id"]]

        got = (await (await http.post(url, data={"offset": str(second["update_id"])})).json())["result"]
        assert [u["message"]["text"] for u in got] == ["b"]

        confirmed = str(second["update_id"] + 1)
        empty = await (await http.post(url, data={"offset": confirmed, "timeout": "0.2"})).json()
        assert empty == {"ok": True, "result": []}
        assert fake.pending_updates == []


async def test_stop_releases_a_waiting_long_poll_quickly() -> None:
    fake = FakeTelegramAPI(max_poll_wait=30)
    await fake.start()
    async with aiohttp.ClientSession() as http:
        poll = asyncio.create_task(
            http.post(f"{fake.base_url}{fake.token}/getUpdates", data={"timeout": "30"})
        )
        await asyncio.sleep(0.1)  # let the request reach the server
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 1.0
        response = await poll
        assert await response.json() == {"ok": True, "result": []}


async def test_pins_need_an_admin_with_can_pin_messages_in_a_supergroup(
    app: Application, fake: FakeTelegramAPI
) -> None:
    bot = app.bot
    message = await bot.send_message(GROUP, "raid")
    with pytest.raises(BadRequest, match="(?i)not enough rights to manage pinned messages"):
        await bot.pin_chat_message(GROUP, message.message_id)
    fake.set_member(GROUP, fake.bot_id, "administrator")  # an admin, but without the right
    with pytest.raises(BadRequest, match="(?i)not enough rights to manage pinned messages"):
        await bot.pin_chat_message(GROUP, message.message_id)
    fake.set_member(GROUP, fake.bot_id, "administrator", can_pin_messages=True)
    assert await bot.pin_chat_message(GROUP, message.message_id, disable_notification=True)
    assert fake.chat(GROUP).pinned == [message.message_id]
    with pytest.raises(BadRequest, match="(?i)message to pin not found"):
        await bot.pin_chat_message(GROUP, 9999)
    assert await bot.unpin_chat_message(GROUP, message_id=message.message_id)
    assert fake.chat(GROUP).pinned == []
    with pytest.raises(BadRequest, match="(?i)message to unpin not found"):
        await bot.unpin_chat_message(GROUP, message_id=9999)


async def test_forum_topics_take_messages_only_where_they_exist_and_closed_ones_only_from_admins(
    app: Application, fake: FakeTelegramAPI
) -> None:
    bot = app.bot
    with pytest.raises(BadRequest, match="(?i)message thread not found"):
        await bot.send_message(GROUP, "hi", message_thread_id=5)  # not a forum at all
    topic = fake.add_topic(GROUP, "Raids").message_thread_id
    with pytest.raises(BadRequest, match="(?i)message thread not found"):
        await bot.send_message(GROUP, "hi", message_thread_id=topic + 100)
    sent = await bot.send_message(GROUP, "hi", message_thread_id=topic)
    assert sent.message_thread_id == topic and sent.is_topic_message
    reply = await bot.send_message(GROUP, "re", reply_to_message_id=sent.message_id)  # follows its target
    assert reply.message_thread_id == topic

    with pytest.raises(BadRequest, match="(?i)not enough rights to manage topics"):
        await bot.close_forum_topic(GROUP, topic)
    with pytest.raises(BadRequest, match="(?i)not enough rights to create a topic"):
        await bot.create_forum_topic(GROUP, "Mine")
    fake.set_member(GROUP, fake.bot_id, "administrator", can_manage_topics=True)
    assert await bot.close_forum_topic(GROUP, topic)
    with pytest.raises(BadRequest, match="(?i)topic_not_modified"):
        await bot.close_forum_topic(GROUP, topic)
    assert (await bot.send_message(GROUP, "admins may", message_thread_id=topic)).message_thread_id == topic
    fake.set_member(GROUP, fake.bot_id, "member")
    with pytest.raises(BadRequest, match="(?i)topic_closed"):
        await bot.send_message(GROUP, "members may not", message_thread_id=topic)
    fake.set_member(GROUP, fake.bot_id, "administrator", can_manage_topics=True)
    assert await bot.reopen_forum_topic(GROUP, topic)
    with pytest.raises(BadRequest, match="(?i)topic_not_modified"):
        await bot.reopen_forum_topic(GROUP, topic)
    made = await bot.create_forum_topic(GROUP, "Mine")
    assert made.name == "Mine" and made.message_thread_id in fake.chat(GROUP).topics
