"""A local fake of the Telegram Bot API for offline end-to-end tests.

The real python-telegram-bot library is pointed at it with
``ApplicationBuilder().token(fake.token).base_url(fake.base_url).base_file_url(fake.base_file_url)``,
so the adapter is exercised through PTB's real HTTP, parsing and error mapping instead of mocks.
The fake keeps the server-side state the adapter depends on (chats, members, permissions, messages,
callback queries, commands, the update queue), answers with the real response shapes and error
descriptions, records every call, and can inject failures and flood limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import html
import itertools
import json
import math
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, Self

from aiohttp import web

JSONDict = dict[str, Any]
ChatType = Literal["private", "group", "supergroup", "channel"]
MemberStatus = Literal["creator", "administrator", "member", "restricted", "left", "kicked"]

PERMISSION_FIELDS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
    "can_send_polls",
    "can_send_other_messages",
    "can_add_web_page_previews",
    "can_react_to_messages",
    "can_change_info",
    "can_invite_users",
    "can_pin_messages",
    "can_manage_topics",
    "can_edit_tag",
)
_MEDIA_PERMISSIONS = (
    "can_send_messages",
    "can_send_audios",
    "can_send_documents",
    "can_send_photos",
    "can_send_videos",
    "can_send_video_notes",
    "can_send_voice_notes",
)
# What a fresh group allows its members; owner-only powers stay off.
DEFAULT_PERMISSIONS: dict[str, bool] = {
    name: name not in ("can_change_info", "can_pin_messages", "can_manage_topics", "can_edit_tag")
    for name in PERMISSION_FIELDS
}
# PTB refuses to build a ChatMemberAdministrator without every one of these.
_ADMIN_REQUIRED = (
    "can_be_edited",
    "is_anonymous",
    "can_manage_chat",
    "can_delete_messages",
    "can_manage_video_chats",
    "can_restrict_members",
    "can_promote_members",
    "can_change_info",
    "can_invite_users",
    "can_post_stories",
    "can_edit_stories",
    "can_delete_stories",
)
_MEMBER_FIELDS: dict[str, frozenset[str]] = {
    "creator": frozenset({"is_anonymous", "custom_title"}),
    "administrator": frozenset(
        {*_ADMIN_REQUIRED, "can_post_messages", "can_edit_messages", "can_pin_messages", "can_manage_topics"}
        | {"custom_title"}
    ),
    "member": frozenset({"until_date"}),
    "restricted": frozenset({*PERMISSION_FIELDS, "is_member", "until_date"}),
    "left": frozenset(),
    "kicked": frozenset({"until_date"}),
}

# Parameters that PTB sends as raw strings; everything else arrives JSON-encoded.
_STRING_PARAMS = frozenset(
    {
        "text",
        "caption",
        "parse_mode",
        "callback_query_id",
        "inline_message_id",
        "url",
        "secret_token",
        "language_code",
        "ip_address",
        "photo",
        "document",
        "file_id",
        "business_connection_id",
        "message_effect_id",
        "title",
        "description",
        "short_description",
        "name",
        "emoji",
        "custom_title",
    }
)
# Update types that getUpdates withholds unless explicitly requested via allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_FLOOD_WINDOW = 60.0
WAIT_LIMIT = 5.0
_MAX_TEXT = 4096
_MAX_CAPTION = 1024


class _ApiError(Exception):
    """An error answer of the Bot API, raised inside handlers and turned into a response."""

    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after


@dataclass
class UploadedFile:
    """A file that arrived as a multipart upload, kept so tests can check what was sent."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedCall:
    """One Bot API request as the fake saw it, with its answer."""

    method: str
    params: JSONDict
    chat_id: int | str | None
    at: float
    ok: bool
    result: Any = None
    error_code: int | None = None
    description: str | None = None


@dataclass
class MessageVersion:
    """The state of a message before an edit replaced it."""

    text: str | None
    entities: list[JSONDict] | None
    reply_markup: JSONDict | None
    at: float


@dataclass
class FakeMessage:
    """A message stored in a fake chat; ``entities`` belong to the text or, for media, the caption."""

    chat_id: int
    message_id: int
    from_user: JSONDict
    date: int
    text: str | None = None
    entities: list[JSONDict] | None = None
    caption: str | None = None
    reply_markup: JSONDict | None = None
    photo: list[JSONDict] | None = None
    document: JSONDict | None = None
    reply_to_message_id: int | None = None
    message_thread_id: int | None = None  # the forum topic it was sent in (None: General / no forum)
    edit_date: int | None = None
    deleted: bool = False
    history: list[MessageVersion] = field(default_factory=list)


@dataclass
class FakeTopic:
    """A forum topic; its id is the id of the service message that created it, as on Telegram."""

    message_thread_id: int
    name: str
    closed: bool = False
    created_by: int | None = None


@dataclass
class FakeChat:
    """A chat with the state the Bot API keeps for it."""

    id: int
    type: ChatType
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    permissions: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))
    members: dict[int, JSONDict] = field(default_factory=dict)
    messages: dict[int, FakeMessage] = field(default_factory=dict)
    next_message_id: int = 1
    is_forum: bool = False
    topics: dict[int, FakeTopic] = field(default_factory=dict)  # message_thread_id -> topic
    pinned: list[int] = field(default_factory=list)  # pinned message ids, most recent first

    def to_api(self) -> JSONDict:
        """The Chat object as it appears inside messages."""
        data: JSONDict = {"id": self.id, "type": self.type}
        if self.is_forum:
            data["is_forum"] = True
        for key in ("title", "username", "first_name"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


@dataclass
class _Failure:
    error_code: int
    description: str
    retry_after: int | None
    remaining: int


class FakeTelegramAPI:
    """In-process Bot API server on 127.0.0.1 that the real PTB talks to over HTTP.

    ``clock`` drives flood limits and call timestamps so tests can move time without sleeping;
    ``max_poll_wait`` caps how long getUpdates really blocks, whatever timeout the client asks for.
    """

    def __init__(
        self,
        token: str = "123:ABC",
        *,
        bot_username: str = "nubi_test_bot",
        bot_first_name: str = "Nubi",
        clock: Callable[[], float] = time.monotonic,
        max_poll_wait: float = 0.5,
        privacy_mode: bool = True,
    ) -> None:
        self.token = token
        # BotFather's /setprivacy; getMe reports it as can_read_all_group_messages = not privacy_mode.
        self.privacy_mode = privacy_mode
        self.bot_id = int(token.split(":", 1)[0])
        self.bot_user: JSONDict = {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.clock = clock
        self.max_poll_wait = max_poll_wait
        self.calls: list[RecordedCall] = []
        self.chats: dict[int, FakeChat] = {}
        self.users: dict[int, JSONDict] = {self.bot_id: self.bot_user}
        self.files: dict[str, UploadedFile] = {}
        self.webhook: JSONDict | None = None
        self._commands: dict[tuple[str, str], list[JSONDict]] = {}
        self._updates: list[JSONDict] = []
        self._update_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._allowed_updates: list[str] = []
        self._open_callbacks: set[str] = set()
        self._failures: dict[str, deque[_Failure]] = {}
        self._flood_limit: int | None = None
        self._flood_log: dict[int, deque[float]] = {}
        self._poll_generation = 0
        self._updates_changed = asyncio.Event()
        self._call_recorded = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._handlers: dict[str, Callable[[JSONDict], Awaitable[Any]]] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "getChatMember": self._get_chat_member,
            "getChatAdministrators": self._get_chat_administrators,
            "getChat": self._get_chat,
            "setChatPermissions": self._set_chat_permissions,
            "pinChatMessage": self._pin_chat_message,
            "unpinChatMessage": self._unpin_chat_message,
            "createForumTopic": self._create_forum_topic,
            "closeForumTopic": self._close_forum_topic,
            "reopenForumTopic": self._reopen_forum_topic,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "getFile": self._get_file,
            "close": self._true,
            "logOut": self._true,
        }
        # The Bot API treats method names case-insensitively.
        self._method_names = {name.lower(): name for name in self._handlers}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve in the running event loop."""
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Release waiting long polls first so shutdown does not wait for their timeouts."""
        self._closing = True
        self._notify_updates()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """Value for PTB's ``base_url``; PTB appends ``{token}/{method}``."""
        return f"http://127.0.0.1:{self._require_port()}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for PTB's ``base_file_url``; files uploaded to the fake are downloadable there."""
        return f"http://127.0.0.1:{self._require_port()}/file/bot"

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeTelegramAPI is not started")
        return self._port

    # ------------------------------------------------------------------ test-side setup

    def add_chat(
        self,
        chat_id: int,
        chat_type: ChatType | None = None,
        *,
        title: str | None = None,
        username: str | None = None,
        first_name: str | None = None,
        permissions: dict[str, bool] | None = None,
    ) -> FakeChat:
        """Create a chat (private for positive ids, supergroup otherwise) or update an existing one.

        ``permissions`` overrides part of the default member permissions. The bot starts as a
        plain member of new groups; make it an admin with ``set_member(chat_id, fake.bot_id, ...)``.
        """
        chat = self.chats.get(chat_id)
        if chat is None:
            kind: ChatType = chat_type or ("private" if chat_id > 0 else "supergroup")
            chat = FakeChat(id=chat_id, type=kind)
            if kind == "private":
                chat.first_name = f"User{chat_id}"
            else:
                chat.title = f"Chat {chat_id}"
                chat.members[self.bot_id] = {"status": "member", "user": self.bot_user}
            self.chats[chat_id] = chat
        elif chat_type is not None:
            chat.type = chat_type
        for key, value in (("title", title), ("username", username), ("first_name", first_name)):
            if value is not None:
                setattr(chat, key, value)
        if permissions is not None:
            unknown = set(permissions) - set(PERMISSION_FIELDS)
            if unknown:
                raise ValueError(f"unknown chat permissions: {sorted(unknown)}")
            chat.permissions.update({key: bool(value) for key, value in permissions.items()})
        return chat

    def add_topic(self, chat_id: int, name: str, *, closed: bool = False) -> FakeTopic:
        """Make the chat a forum supergroup (if it is not one yet) and open a topic in it, created by
        a member (not the bot); returns it with its message_thread_id."""
        chat = self.chats.get(chat_id) or self.add_chat(chat_id)
        if chat.type != "supergroup":
            raise ValueError("only supergroups can be forums")
        chat.is_forum = True
        return self._new_topic(chat, name, creator=None, closed=closed)

    def set_member(
        self,
        chat_id: int,
        user_id: int,
        status: MemberStatus = "member",
        *,
        first_name: str | None = None,
        username: str | None = None,
        is_bot: bool = False,
        **fields: Any,
    ) -> JSONDict:
        """Set a user's ChatMember in a chat (creating both if needed) and return its JSON.

        ``fields`` are the status-specific ChatMember fields, e.g. ``can_restrict_members=True``
        for administrators; unknown names raise so a typo cannot silently grant nothing.
        """
        allowed = _MEMBER_FIELDS[status]
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"fields not valid for status {status!r}: {sorted(unknown)}")
        chat = self.chats.get(chat_id) or self.add_chat(chat_id)
        user = self._remember_user(user_id, first_name=first_name, username=username, is_bot=is_bot)
        member: JSONDict = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member.update(dict.fromkeys(_ADMIN_REQUIRED, False))
            member["can_manage_chat"] = True
        elif status == "restricted":
            member.update(dict.fromkeys(PERMISSION_FIELDS, False))
            member.update(is_member=True, until_date=0)
        elif status == "kicked":
            member["until_date"] = 0
        member.update(fields)
        chat.members[user_id] = member
        return member

    def push_update(self, update: JSONDict) -> JSONDict:
        """Queue an update for getUpdates and return the queued copy.

        Like the real server, the fake owns the numbering: it assigns the next ``update_id`` and
        gives incoming messages the chat's next ``message_id`` (the builders' values are only
        placeholders). Chats and senders seen here are registered, a callback query's message is
        replaced by the stored current version, and its id becomes answerable.
        """
        update = copy.deepcopy(update)
        update["update_id"] = next(self._update_ids)
        message = update.get("message")
        if message is not None:
            chat = self._remember_chat(message["chat"])
            sender = message.get("from")
            if sender is not None:
                self._remember_sender(chat, sender)
            replied = message.pop("reply_to_message_id", None)
            thread = message.get("message_thread_id") if message.get("is_topic_message") else None
            if thread is not None and thread not in chat.topics:
                raise ValueError(f"chat {chat.id} has no topic {thread}")
            stored = self._store_message(
                chat, sender or self.bot_user, text=message.get("text"), entities=message.get("entities"),
                reply_to_message_id=replied, message_thread_id=thread,
            )
            message["message_id"] = stored.message_id
            target = chat.messages.get(replied or 0)
            if target is not None and not target.deleted:  # as delivered: the replied-to message, one level deep
                message["reply_to_message"] = self._message_json(chat, target, nested=False)
        query = update.get("callback_query")
        if query is not None:
            self._remember_user(query["from"]["id"], first_name=query["from"].get("first_name"))
            self._open_callbacks.add(query["id"])
            attached = query.get("message")
            if attached is not None:
                chat = self._remember_chat(attached["chat"])
                current = chat.messages.get(attached["message_id"])
                if current is not None and not current.deleted:
                    query["message"] = self._message_json(chat, current)
        self._updates.append(update)
        self._notify_updates()
        return update

    def fail_next(
        self,
        method: str,
        error_code: int = 429,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail before touching any state.

        For 429 the description and ``retry_after`` default to the real flood answer
        ("Too Many Requests: retry after 3"); other codes default to the HTTP phrase and carry
        ``retry_after`` only when given. Several rules for one method apply in order.
        """
        name = self._canonical(method)
        if name is None:
            raise ValueError(f"unknown Bot API method {method!r}")
        if error_code == 429 and retry_after is None:
            retry_after = 3
        if description is None:
            if error_code == 429:
                description = f"Too Many Requests: retry after {retry_after}"
            else:
                description = HTTPStatus(error_code).phrase
        self._failures.setdefault(name, deque()).append(_Failure(error_code, description, retry_after, times))

    def flood_limit(self, per_chat_per_minute: int | None) -> None:
        """Answer 429 once a chat got more than N messages/edits in a rolling minute; None disables."""
        self._flood_limit = per_chat_per_minute
        self._flood_log.clear()

    # ------------------------------------------------------------------ test-side inspection

    def calls_for(self, method: str, chat_id: int | str | None = None) -> list[RecordedCall]:
        """Recorded calls of one method (case-insensitive), optionally only for one chat."""
        name = self._canonical(method) or method
        return [
            call
            for call in self.calls
            if call.method == name and (chat_id is None or call.chat_id == chat_id)
        ]

    async def wait_for_calls(
        self, method: str, *, chat_id: int | str | None = None, count: int = 1
    ) -> list[RecordedCall]:
        """Wait until at least ``count`` matching calls were recorded, since bots answer asynchronously.

        Gives up with TimeoutError after ``WAIT_LIMIT`` seconds so a missing reply fails the test
        instead of hanging it; wrap the call in ``asyncio.timeout`` for a tighter bound.
        """
        async with asyncio.timeout(WAIT_LIMIT):
            while len(matching := self.calls_for(method, chat_id)) < count:
                await self._call_recorded.wait()
        return matching

    def sent_messages(self, chat_id: int) -> list[FakeMessage]:
        """Messages the bot sent to a chat, oldest first, deleted ones included (``deleted=True``)."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return []
        return [m for m in chat.messages.values() if m.from_user["id"] == self.bot_id]

    def message(self, chat_id: int, message_id: int) -> FakeMessage:
        """A stored message; raises KeyError when the chat or message is unknown."""
        return self.chats[chat_id].messages[message_id]

    def chat(self, chat_id: int) -> FakeChat:
        """A stored chat; raises KeyError when unknown."""
        return self.chats[chat_id]

    def my_commands(self, scope: JSONDict | None = None, language_code: str = "") -> list[JSONDict]:
        """The command list currently set for a scope (default scope when None)."""
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    @property
    def pending_updates(self) -> list[JSONDict]:
        """Updates queued but not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    # ------------------------------------------------------------------ HTTP plumbing

    def _canonical(self, method: str) -> str | None:
        return self._method_names.get(method.lower())

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._read_params(request)
        name = self._canonical(method)
        try:
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            if name is None:
                raise _ApiError(404, "Not Found")
            self._inject_failure(name)
            result = await self._handlers[name](params)
        except _ApiError as error:
            self._record(name or method, params, ok=False, error=error)
            body: JSONDict = {
                "ok": False,
                "error_code": error.error_code,
                "description": error.description,
            }
            if error.retry_after is not None:
                body["parameters"] = {"retry_after": error.retry_after}
            return web.json_response(body, status=error.error_code)
        self._record(name, params, ok=True, result=result)
        return web.json_response({"ok": True, "result": result})

    async def _read_params(self, request: web.Request) -> JSONDict:
        """Accept query strings, JSON bodies, urlencoded and multipart forms like the real API."""
        raw: JSONDict = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                raw.update(await request.json())
            else:
                for key, value in (await request.post()).items():
                    if isinstance(value, web.FileField):
                        raw[key] = UploadedFile(value.filename, value.content_type, value.file.read())
                    else:
                        raw[key] = value
        return {key: _decode_param(key, value) for key, value in raw.items()}

    def _record(
        self,
        method: str,
        params: JSONDict,
        *,
        ok: bool,
        result: Any = None,
        error: _ApiError | None = None,
    ) -> None:
        self.calls.append(
            RecordedCall(
                method=method,
                params=params,
                chat_id=params.get("chat_id"),
                at=self.clock(),
                ok=ok,
                result=result,
                error_code=error.error_code if error else None,
                description=error.description if error else None,
            )
        )
        # Pulse: wake current waiters, later ones wait on a fresh event.
        recorded, self._call_recorded = self._call_recorded, asyncio.Event()
        recorded.set()

    def _notify_updates(self) -> None:
        changed, self._updates_changed = self._updates_changed, asyncio.Event()
        changed.set()

    def _inject_failure(self, method: str) -> None:
        rules = self._failures.get(method)
        if not rules:
            return
        rule = rules[0]
        rule.remaining -= 1
        if rule.remaining <= 0:
            rules.popleft()
        raise _ApiError(rule.error_code, rule.description, rule.retry_after)

    def _throttle(self, chat_id: int) -> None:
        """Apply the optional per-chat flood rule to an outgoing message or edit."""
        if self._flood_limit is None:
            return
        now = self.clock()
        sent = self._flood_log.setdefault(chat_id, deque())
        while sent and sent[0] <= now - _FLOOD_WINDOW:
            sent.popleft()
        if len(sent) >= self._flood_limit:
            retry_after = max(1, math.ceil(sent[0] + _FLOOD_WINDOW - now))
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        sent.append(now)

    async def _download(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        upload = self.files.get(path.removeprefix("files/"))
        if request.match_info["token"] != self.token or upload is None:
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        return web.Response(body=upload.data, content_type=upload.content_type or "application/octet-stream")

    # ------------------------------------------------------------------ state helpers

    def _remember_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        is_bot: bool = False,
    ) -> JSONDict:
        user = self.users.setdefault(
            user_id, {"id": user_id, "is_bot": is_bot, "first_name": first_name or f"User{user_id}"}
        )
        if first_name is not None:
            user["first_name"] = first_name
        if username is not None:
            user["username"] = username
        return user

    def _remember_chat(self, data: JSONDict) -> FakeChat:
        return self.add_chat(
            data["id"],
            data["type"],
            title=data.get("title"),
            username=data.get("username"),
            first_name=data.get("first_name"),
        )

    def _remember_sender(self, chat: FakeChat, sender: JSONDict) -> None:
        user = self._remember_user(
            sender["id"],
            first_name=sender.get("first_name"),
            username=sender.get("username"),
            is_bot=sender.get("is_bot", False),
        )
        if chat.type != "private" and sender["id"] not in chat.members:
            chat.members[sender["id"]] = {"status": "member", "user": user}

    def _store_message(self, chat: FakeChat, sender: JSONDict, **content: Any) -> FakeMessage:
        message = FakeMessage(
            chat_id=chat.id,
            message_id=chat.next_message_id,
            from_user=sender,
            date=int(time.time()),
            **content,
        )
        chat.messages[message.message_id] = message
        chat.next_message_id += 1
        return message

    def _message_json(self, chat: FakeChat, message: FakeMessage, *, nested: bool = True) -> JSONDict:
        data: JSONDict = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": chat.to_api(),
            "from": message.from_user,
        }
        entities_key = "entities"
        if message.text is not None:
            data["text"] = message.text
        if message.caption is not None:
            data["caption"] = message.caption
            entities_key = "caption_entities"
        if message.entities:
            data[entities_key] = message.entities
        if message.photo is not None:
            data["photo"] = message.photo
        if message.document is not None:
            data["document"] = message.document
        if message.reply_markup is not None:
            data["reply_markup"] = message.reply_markup
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.message_thread_id is not None:
            data["message_thread_id"] = message.message_thread_id
            data["is_topic_message"] = True
        target = chat.messages.get(message.reply_to_message_id or 0)
        if nested and target is not None:
            data["reply_to_message"] = self._message_json(chat, target, nested=False)
        return data

    def _chat_for(self, params: JSONDict) -> FakeChat:
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if isinstance(raw, str) and raw.startswith("@"):
            found = next((c for c in self.chats.values() if c.username == raw[1:]), None)
        else:
            found = self.chats.get(raw) if isinstance(raw, int) else None
        if found is None:
            raise _ApiError(400, "Bad Request: chat not found")
        return found

    def _outgoing_chat(self, params: JSONDict) -> FakeChat:
        """Resolve the chat of a message or edit: refuse it like Telegram when the bot is not in it,
        and apply the flood rule."""
        chat = self._chat_for(params)
        if chat.type != "private":
            status = chat.members.get(self.bot_id, {}).get("status", "left")
            if status == "kicked":
                raise _ApiError(403, f"Forbidden: bot was kicked from the {chat.type} chat")
            if status == "left":
                raise _ApiError(403, f"Forbidden: bot is not a member of the {chat.type} chat")
        self._throttle(chat.id)
        return chat

    def _bot_has_right(self, chat: FakeChat, right: str) -> bool:
        member = chat.members.get(self.bot_id, {})
        return member.get("status") == "creator" or (
            member.get("status") == "administrator" and bool(member.get(right))
        )

    def _own_message(self, params: JSONDict) -> tuple[FakeChat, FakeMessage]:
        if params.get("inline_message_id"):
            raise _ApiError(400, "Bad Request: invalid inline message identifier specified")
        chat = self._outgoing_chat(params)
        message = chat.messages.get(_as_int(params.get("message_id")))
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.from_user["id"] != self.bot_id:
            raise _ApiError(400, "Bad Request: message can't be edited")
        return chat, message

    def _reply_target(self, chat: FakeChat, params: JSONDict) -> int | None:
        reply = params.get("reply_parameters") or {}
        target_id = _as_int(reply.get("message_id", params.get("reply_to_message_id")))
        if target_id is None:
            return None
        target = chat.messages.get(target_id)
        if target is None or target.deleted:
            if reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply"):
                return None
            raise _ApiError(400, "Bad Request: message to be replied not found")
        return target_id

    def _file_meta(self, value: Any, kind: str) -> JSONDict:
        """Turn an upload, known file_id or URL into File fields, like the API does after storing it."""
        if value is None or value == "":
            raise _ApiError(400, f"Bad Request: there is no {kind} in the request")
        if isinstance(value, UploadedFile):
            if not value.data:
                raise _ApiError(400, "Bad Request: file must be non-empty")
            file_id = f"{kind}-{next(self._file_ids)}"
            self.files[file_id] = value
            upload: UploadedFile | None = value
        elif value in self.files:
            file_id, upload = value, self.files[value]
        elif isinstance(value, str) and value.startswith(("http://", "https://")):
            file_id, upload = f"{kind}-{next(self._file_ids)}", None
        else:
            raise _ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")
        meta: JSONDict = {"file_id": file_id, "file_unique_id": f"u{file_id}"}
        if upload is not None:
            meta["file_size"] = len(upload.data)
        return meta

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        scope = scope or {"type": "default"}
        return json.dumps(scope, sort_keys=True), language_code or ""

    # ------------------------------------------------------------------ Bot API methods

    async def _true(self, params: JSONDict) -> bool:
        return True

    async def _get_me(self, params: JSONDict) -> JSONDict:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": not self.privacy_mode,
            "supports_inline_queries": False,
        }

    async def _get_updates(self, params: JSONDict) -> list[JSONDict]:
        if self.webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _as_int(params.get("offset")) or 0
        limit = min(max(_as_int(params.get("limit")) or 100, 1), 100)
        timeout = float(params.get("timeout") or 0)
        if "allowed_updates" in params:
            self._allowed_updates = list(params["allowed_updates"] or [])
        if offset < 0:
            del self._updates[: max(len(self._updates) + offset, 0)]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        # A newer getUpdates terminates an older one still waiting, as on the real server.
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify_updates()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, self.max_poll_wait)
        while True:
            if generation != self._poll_generation:
                raise _ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            self._updates = [u for u in self._updates if self._is_allowed(u)]
            remaining = deadline - loop.time()
            if self._updates or self._closing or remaining <= 0:
                return self._updates[:limit]
            changed = self._updates_changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    def _is_allowed(self, update: JSONDict) -> bool:
        kind = next(key for key in update if key != "update_id")
        if self._allowed_updates:
            return kind in self._allowed_updates
        return kind not in _OPT_IN_UPDATES

    async def _set_webhook(self, params: JSONDict) -> bool:
        url = params.get("url") or ""
        if not url:
            self.webhook = None
            return True
        if not url.startswith("https://"):
            raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        if "allowed_updates" in params:
            self._allowed_updates = list(params["allowed_updates"] or [])
        self.webhook = {
            "url": url,
            "secret_token": params.get("secret_token"),
            "max_connections": _as_int(params.get("max_connections")) or 40,
        }
        return True

    async def _delete_webhook(self, params: JSONDict) -> bool:
        self.webhook = None
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, params: JSONDict) -> JSONDict:
        info: JSONDict = {
            "url": self.webhook["url"] if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook:
            info["max_connections"] = self.webhook["max_connections"]
        if self._allowed_updates:
            info["allowed_updates"] = list(self._allowed_updates)
        return info

    async def _set_my_commands(self, params: JSONDict) -> bool:
        commands = params.get("commands") or []
        for command in commands:
            if not _COMMAND_RE.fullmatch(str(command.get("command", ""))):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        key = self._commands_key(params.get("scope"), params.get("language_code"))
        self._commands[key] = [{"command": c["command"], "description": c["description"]} for c in commands]
        return True

    async def _get_my_commands(self, params: JSONDict) -> list[JSONDict]:
        return self.my_commands(params.get("scope"), params.get("language_code") or "")

    async def _delete_my_commands(self, params: JSONDict) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code")), None)
        return True

    async def _send_message(self, params: JSONDict) -> JSONDict:
        chat = self._outgoing_chat(params)
        text, entities = _formatted(params, "text")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > _MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        reply_to = self._reply_target(chat, params)
        message = self._store_message(
            chat,
            self.bot_user,
            text=text,
            entities=entities,
            reply_markup=_inline_markup(params),
            reply_to_message_id=reply_to,
            message_thread_id=self._thread_for(chat, params, reply_to),
        )
        return self._message_json(chat, message)

    def _thread_for(self, chat: FakeChat, params: JSONDict, reply_to: int | None) -> int | None:
        """The topic an outgoing message lands in: `message_thread_id` must name an existing topic of a
        forum supergroup; without it a reply goes to its target's topic, anything else to General.
        A closed topic takes messages only from admins with can_manage_topics (and its creator)."""
        thread = _as_int(params.get("message_thread_id"))
        if thread is None:
            target = chat.messages.get(reply_to or 0)
            thread = target.message_thread_id if target is not None else None
        elif not chat.is_forum or thread not in chat.topics:
            raise _ApiError(400, "Bad Request: message thread not found")
        if thread is None:
            return None
        topic = chat.topics[thread]
        if topic.closed and topic.created_by != self.bot_id and not self._bot_has_right(chat, "can_manage_topics"):
            raise _ApiError(400, "Bad Request: TOPIC_CLOSED")
        return thread

    async def _send_photo(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "photo")

    async def _send_document(self, params: JSONDict) -> JSONDict:
        return await self._send_media(params, "document")

    async def _send_media(self, params: JSONDict, kind: Literal["photo", "document"]) -> JSONDict:
        chat = self._outgoing_chat(params)
        caption, entities = _formatted(params, "caption")
        if _utf16_len(caption or "") > _MAX_CAPTION:
            raise _ApiError(400, "Bad Request: message caption is too long")
        meta = self._file_meta(params.get(kind), kind)
        media: JSONDict
        if kind == "photo":
            media = {"photo": [{**meta, "width": 1, "height": 1}]}
        else:
            upload = params.get(kind)
            if isinstance(upload, UploadedFile):
                meta.update(file_name=upload.filename, mime_type=upload.content_type)
            media = {"document": meta}
        message = self._store_message(
            chat,
            self.bot_user,
            caption=caption,
            entities=entities,
            reply_markup=_inline_markup(params),
            reply_to_message_id=self._reply_target(chat, params),
            **media,
        )
        return self._message_json(chat, message)

    async def _get_file(self, params: JSONDict) -> JSONDict:
        file_id = params.get("file_id")
        upload = self.files.get(file_id or "")
        if upload is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(upload.data),
            "file_path": f"files/{file_id}",
        }

    async def _edit_message_text(self, params: JSONDict) -> JSONDict:
        chat, message = self._own_message(params)
        if message.text is None:
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        text, entities = _formatted(params, "text")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > _MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        # Omitting reply_markup removes the inline keyboard, exactly as on the real API.
        self._apply_edit(message, text, entities, _inline_markup(params))
        return self._message_json(chat, message)

    async def _edit_message_reply_markup(self, params: JSONDict) -> JSONDict:
        chat, message = self._own_message(params)
        self._apply_edit(message, message.text, message.entities, _inline_markup(params))
        return self._message_json(chat, message)

    def _apply_edit(
        self,
        message: FakeMessage,
        text: str | None,
        entities: list[JSONDict] | None,
        markup: JSONDict | None,
    ) -> None:
        if (text, entities, markup) == (message.text, message.entities, message.reply_markup):
            raise _ApiError(400, _NOT_MODIFIED)
        message.history.append(
            MessageVersion(message.text, message.entities, message.reply_markup, self.clock())
        )
        message.text, message.entities, message.reply_markup = text, entities, markup
        message.edit_date = int(time.time())

    async def _delete_message(self, params: JSONDict) -> bool:
        chat = self._chat_for(params)
        message = chat.messages.get(_as_int(params.get("message_id")))
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to delete not found")
        others = message.from_user["id"] != self.bot_id
        if others and chat.type != "private" and not self._bot_has_right(chat, "can_delete_messages"):
            raise _ApiError(400, "Bad Request: message can't be deleted")
        message.deleted = True
        return True

    async def _answer_callback_query(self, params: JSONDict) -> bool:
        query_id = params.get("callback_query_id")
        if query_id not in self._open_callbacks:
            raise _ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        self._open_callbacks.discard(query_id)
        return True

    async def _get_chat(self, params: JSONDict) -> JSONDict:
        chat = self._chat_for(params)
        info: JSONDict = {
            **chat.to_api(),
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }
        if chat.type in ("group", "supergroup"):
            info["permissions"] = dict(chat.permissions)
        return info

    async def _get_chat_member(self, params: JSONDict) -> JSONDict:
        chat = self._chat_for(params)
        user_id = _as_int(params.get("user_id"))
        if user_id not in self.users:
            raise _ApiError(400, "Bad Request: user not found")
        if chat.type == "private" and user_id in (chat.id, self.bot_id):
            return {"status": "member", "user": self.users[user_id]}
        return chat.members.get(user_id) or {"status": "left", "user": self.users[user_id]}

    async def _get_chat_administrators(self, params: JSONDict) -> list[JSONDict]:
        chat = self._chat_for(params)
        if chat.type == "private":
            raise _ApiError(400, "Bad Request: there are no administrators in the private chat")
        return [m for m in chat.members.values() if m["status"] in ("creator", "administrator")]

    async def _set_chat_permissions(self, params: JSONDict) -> bool:
        chat = self._chat_for(params)
        if not self._bot_has_right(chat, "can_restrict_members"):
            raise _ApiError(400, "Bad Request: not enough rights to change chat permissions")
        given = params.get("permissions") or {}
        new = {name: bool(given.get(name, False)) for name in PERMISSION_FIELDS}
        if not params.get("use_independent_chat_permissions"):
            # Documented implications of the legacy (dependent) permission model.
            if new["can_send_other_messages"] or new["can_add_web_page_previews"]:
                new.update(dict.fromkeys(_MEDIA_PERMISSIONS, True))
            if new["can_send_polls"]:
                new["can_send_messages"] = True
        chat.permissions = new
        return True


    # Pins: https://core.telegram.org/bots/api#pinchatmessage. Outside private chats the bot must be an
    # administrator, with can_pin_messages in a supergroup.
    def _require_pin_rights(self, chat: FakeChat) -> None:
        if chat.type == "private":
            return
        member = chat.members.get(self.bot_id, {})
        admin = member.get("status") in ("creator", "administrator")
        if not admin or (chat.type == "supergroup" and not self._bot_has_right(chat, "can_pin_messages")):
            raise _ApiError(400, "Bad Request: not enough rights to manage pinned messages in the chat")

    async def _pin_chat_message(self, params: JSONDict) -> bool:
        chat = self._chat_for(params)
        self._require_pin_rights(chat)
        message_id = _as_int(params.get("message_id"))
        message = chat.messages.get(message_id or 0)
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to pin not found")
        chat.pinned = [message.message_id, *(m for m in chat.pinned if m != message.message_id)]
        return True

    async def _unpin_chat_message(self, params: JSONDict) -> bool:
        chat = self._chat_for(params)
        self._require_pin_rights(chat)
        message_id = _as_int(params.get("message_id"))
        if message_id is None:  # the most recent pinned message
            if chat.pinned:
                chat.pinned.pop(0)
            return True
        message = chat.messages.get(message_id)
        if message is None or message.deleted:
            raise _ApiError(400, "Bad Request: message to unpin not found")
        chat.pinned = [m for m in chat.pinned if m != message_id]
        return True

    # Forum topics: https://core.telegram.org/bots/api#createforumtopic and following. The bot must be
    # an administrator with can_manage_topics (closing/reopening: unless it created the topic).
    def _forum(self, params: JSONDict) -> FakeChat:
        chat = self._chat_for(params)
        if not chat.is_forum:
            raise _ApiError(400, "Bad Request: the chat is not a forum")
        return chat

    def _topic(self, chat: FakeChat, params: JSONDict) -> FakeTopic:
        topic = chat.topics.get(_as_int(params.get("message_thread_id")) or 0)
        if topic is None:
            raise _ApiError(400, "Bad Request: TOPIC_ID_INVALID")
        if topic.created_by != self.bot_id and not self._bot_has_right(chat, "can_manage_topics"):
            raise _ApiError(400, "Bad Request: not enough rights to manage topics")
        return topic

    def _new_topic(self, chat: FakeChat, name: str, *, creator: int | None, closed: bool = False) -> FakeTopic:
        author = self.users[creator] if creator is not None else _user_json(777000, None, "Telegram")
        service = self._store_message(chat, author, text=None)  # the "topic created" service message
        topic = FakeTopic(service.message_id, name, closed=closed, created_by=creator)
        chat.topics[topic.message_thread_id] = topic
        return topic

    async def _create_forum_topic(self, params: JSONDict) -> JSONDict:
        chat = self._forum(params)
        if not self._bot_has_right(chat, "can_manage_topics"):
            raise _ApiError(400, "Bad Request: not enough rights to create a topic")
        name = str(params.get("name") or "")
        if not 1 <= len(name) <= 128:
            raise _ApiError(400, "Bad Request: TOPIC_TITLE_EMPTY" if not name else "Bad Request: TOPIC_TITLE_INVALID")
        topic = self._new_topic(chat, name, creator=self.bot_id)
        return {"message_thread_id": topic.message_thread_id, "name": name, "icon_color": 7322096}

    async def _close_forum_topic(self, params: JSONDict) -> bool:
        topic = self._topic(self._forum(params), params)
        if topic.closed:
            raise _ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = True
        return True

    async def _reopen_forum_topic(self, params: JSONDict) -> bool:
        topic = self._topic(self._forum(params), params)
        if not topic.closed:
            raise _ApiError(400, "Bad Request: TOPIC_NOT_MODIFIED")
        topic.closed = False
        return True


# ---------------------------------------------------------------------- parameter helpers


def _decode_param(key: str, value: Any) -> Any:
    """PTB JSON-encodes every non-string value, so decode all but the known string parameters."""
    if not isinstance(value, str) or key in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _ApiError(400, f"Bad Request: invalid number {value!r}") from None


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _inline_markup(params: JSONDict) -> JSONDict | None:
    """The part of reply_markup the API keeps on a message, after its button checks."""
    markup = params.get("reply_markup")
    if not isinstance(markup, dict) or "inline_keyboard" not in markup:
        return None
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise _ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
    return markup


def _formatted(params: JSONDict, key: str) -> tuple[str | None, list[JSONDict] | None]:
    """Text and entities as the API stores them: HTML is parsed, other modes are kept verbatim."""
    text = params.get(key)
    if text is None:
        return None, None
    if str(params.get("parse_mode") or "").upper() == "HTML":
        return _parse_html(text)
    return text, params.get(f"{key}_entities" if key == "caption" else "entities") or None


# ---------------------------------------------------------------------- HTML parse mode

_HTML_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_HTML_ATTR_RE = re.compile(r"""([a-zA-Z][\w-]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+)))?""")
_HTML_CHAR_RE = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|lt|gt|amp|quot);")


def _parse_error(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: can't parse entities: {detail}")


def _parse_html(source: str) -> tuple[str, list[JSONDict] | None]:
    """Mirror the Bot API HTML mode: plain text plus UTF-16 entities, or its parse errors."""
    out: list[str] = []
    position = 0  # UTF-16 offset in the output
    entities: list[JSONDict] = []
    open_tags: list[tuple[str, int, JSONDict | None]] = []
    i = 0
    while i < len(source):
        char = source[i]
        if char == "&" and (match := _HTML_CHAR_RE.match(source, i)):
            decoded = html.unescape(match.group(0))
            out.append(decoded)
            position += _utf16_len(decoded)
            i = match.end()
            continue
        if char != "<":
            out.append(char)
            position += _utf16_len(char)
            i += 1
            continue
        byte_offset = len(source[:i].encode())
        end = source.find(">", i)
        closing = source.startswith("</", i)
        if end == -1:
            raise _parse_error(f"Unclosed {'end' if closing else 'start'} tag at byte offset {byte_offset}")
        if closing:
            name = source[i + 2 : end].strip().lower()
            if not open_tags:
                raise _parse_error(f"Unexpected end tag at byte offset {byte_offset}")
            open_name, start, entity = open_tags.pop()
            if name != open_name:
                raise _parse_error(
                    f'Unmatched end tag at byte offset {byte_offset}, expected "</{open_name}>", '
                    f'found "</{name}>"'
                )
            if entity is not None and position > start:
                entities.append({**entity, "offset": start, "length": position - start})
        else:
            name, _, attr_text = source[i + 1 : end].partition(" ")
            name = name.lower()
            if name not in _HTML_ENTITY_TYPES:
                raise _parse_error(f'Unsupported start tag "{name}" at byte offset {byte_offset}')
            attrs = {
                m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or m.group(4) or "")
                for m in _HTML_ATTR_RE.finditer(attr_text)
            }
            open_tags.append((name, position, _html_entity(name, attrs, byte_offset)))
        i = end + 1
    if open_tags:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities or None


def _html_entity(name: str, attrs: dict[str, str], byte_offset: int) -> JSONDict | None:
    kind = _HTML_ENTITY_TYPES[name]
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise _parse_error(f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset}')
    if name == "a":
        return {"type": kind, "url": attrs["href"]} if attrs.get("href") else None
    if name == "tg-emoji":
        return {"type": kind, "custom_emoji_id": attrs.get("emoji-id", "")}
    if name == "blockquote" and "expandable" in attrs:
        return {"type": "expandable_blockquote"}
    return {"type": kind}


# ---------------------------------------------------------------------- update builders

_builder_update_ids = itertools.count(1)
_builder_message_ids = itertools.count(1)
_builder_callback_ids = itertools.count(1)


def _user_json(user_id: int, username: str | None, first_name: str) -> JSONDict:
    user: JSONDict = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username is not None:
        user["username"] = username
    return user


def _chat_json(chat_id: int, chat_type: ChatType, chat_title: str, user: JSONDict) -> JSONDict:
    if chat_type == "private":
        return {
            "id": chat_id,
            "type": "private",
            **{k: user[k] for k in ("first_name", "username") if k in user},
        }
    return {"id": chat_id, "type": chat_type, "title": chat_title}


def make_text_update(
    chat_id: int,
    user_id: int,
    text: str,
    *,
    username: str | None = "raider",
    first_name: str = "Raider",
    chat_type: ChatType = "supergroup",
    chat_title: str = "Raid Group",
    entities: list[JSONDict] | None = None,
    reply_to: int | None = None,
    topic: int | None = None,
) -> JSONDict:
    """A message Update as the API delivers it; ids are placeholders until ``push_update``.
    ``reply_to`` is the id of a stored message in the same chat this one answers; ``topic`` the forum
    topic (message_thread_id) it is sent in."""
    user = _user_json(user_id, username, first_name)
    message: JSONDict = {
        "message_id": next(_builder_message_ids),
        "date": int(time.time()),
        "chat": _chat_json(chat_id, chat_type, chat_title, user),
        "from": user,
        "text": text,
    }
    if entities:
        message["entities"] = entities
    if reply_to is not None:  # ``push_update`` swaps in the stored message, as Telegram delivers it
        message["reply_to_message_id"] = reply_to
    if topic is not None:
        message["message_thread_id"] = topic
        message["is_topic_message"] = True
        message["chat"]["is_forum"] = True
    return {"update_id": next(_builder_update_ids), "message": message}


# The Bot API marks "@username" as a `mention` entity when it is a well-formed username (5-32 of
# [A-Za-z0-9_]); anything else (e.g. "@%") is plain text.
_MENTION = re.compile(r"(?<![A-Za-z0-9_])@[A-Za-z0-9_]{5,32}(?![A-Za-z0-9_])")


def mention_entities(text: str) -> list[JSONDict]:
    """The `mention` entities Telegram attaches to a message's text (offsets in UTF-16 code units)."""
    return [
        {"type": "mention", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
        for m in _MENTION.finditer(text)
    ]


def text_mention(text: str, name: str, user_id: int, first_name: str) -> JSONDict:
    """A `text_mention` entity for ``name`` inside ``text``: a member without a username, linked by id."""
    start = text.index(name)
    return {"type": "text_mention", "offset": _utf16_len(text[:start]), "length": _utf16_len(name),
            "user": {"id": user_id, "is_bot": False, "first_name": first_name}}


def make_command_update(
    chat_id: int,
    user_id: int,
    text: str,
    *,
    username: str | None = "raider",
    first_name: str = "Raider",
    chat_type: ChatType = "supergroup",
    chat_title: str = "Raid Group",
    entities: list[JSONDict] | None = None,
    reply_to: int | None = None,
    topic: int | None = None,
) -> JSONDict:
    """A command message ("/cmd args" or "/cmd@botname args") with the bot_command entity PTB matches on,
    the `mention` entities Telegram adds for @usernames, and any further ``entities`` (text_mention)."""
    if not text.startswith("/"):
        raise ValueError("a command must start with '/'")
    command = text.split(maxsplit=1)[0]
    found = [{"type": "bot_command", "offset": 0, "length": _utf16_len(command)},
             *mention_entities(text), *(entities or [])]
    return make_text_update(
        chat_id,
        user_id,
        text,
        username=username,
        first_name=first_name,
        chat_type=chat_type,
        chat_title=chat_title,
        entities=sorted(found, key=lambda e: (e["offset"], -e["length"])),
        reply_to=reply_to,
        topic=topic,
    )


def make_callback_update(
    chat_id: int,
    user_id: int,
    message_id: int,
    data: str,
    *,
    username: str | None = "raider",
    first_name: str = "Raider",
    chat_type: ChatType = "supergroup",
    chat_title: str = "Raid Group",
    message_text: str = "",
) -> JSONDict:
    """A button press on message ``message_id``; ``push_update`` swaps in the stored message."""
    user = _user_json(user_id, username, first_name)
    return {
        "update_id": next(_builder_update_ids),
        "callback_query": {
            "id": str(next(_builder_callback_ids)),
            "from": user,
            "chat_instance": str(chat_id),
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": _chat_json(chat_id, chat_type, chat_title, user),
                "text": message_text,
            },
        },
    }
