"""Offline Discord: a fake REST API (v10) on 127.0.0.1 plus a harness for the real discord.py client.

Why this exists: the Discord adapter must be tested against the *real* library (its ``CommandTree``,
option conversion, checks, error handlers, persistent views, HTTP retry logic) without network access.
Mocking discord.py objects would only test our assumptions about it, so instead:

* everything the library sends goes over HTTP to :class:`FakeDiscordAPI`, which answers with realistic
  JSON, records every call and keeps server-side state (channels, overwrites, messages with edit history,
  interaction callbacks, synced commands);
* everything Discord would push over the gateway (READY, GUILD_CREATE, INTERACTION_CREATE, and the
  CHANNEL_UPDATE / MESSAGE_* echoes of REST writes) is fed through the client's own connection-state
  parsers by :class:`DiscordHarness`, exactly as the websocket reader would.

Clients reach the fake through discord.py's two address settings, ``discord.http.Route.BASE`` (REST,
including the interaction webhooks) and ``DiscordWebSocket.DEFAULT_GATEWAY`` (a real gateway websocket,
see ``discord_gateway.py``), which nubi sets from ``[discord] api_base_url`` / ``gateway_url``: use
:attr:`FakeDiscordAPI.base_url` and :attr:`FakeDiscordAPI.gateway_url` there. The harness patches nothing.

The fake enforces Discord's documented permission computation for the bot (``discord_permissions.py``)
on reading a channel, creating and editing messages, pinning (Pin Messages, at most MAX_PINS per
channel: 400 30003) and editing or deleting overwrites: 403 with 50001
Missing Access without View Channel, 50013 Missing Permissions otherwise. Threads follow the "Threads"
topic: they take their parent's permissions, Send Messages in Threads stands in for Send Messages; in
a locked thread only Manage Threads may create or edit messages (403 160005 otherwise), and only it
may lock or unlock one (Modify Channel); an archived thread is modified only by a request that
unarchives it and its messages cannot be edited (400 50083), and a message sent there unarchives it. Interaction responses and
followups go through the interaction's webhook and need no channel permission, as on Discord.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from http import HTTPStatus
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import discord
from aiohttp import web

from tests.fakes import discord_permissions as perms
from tests.fakes.discord_gateway import FakeGateway

__all__ = [
    "ALL_PERMISSIONS",
    "APPLICATION_ID",
    "BOT_USER_ID",
    "DEFAULT_MEMBER_PERMISSIONS",
    "DEFAULT_TOKEN",
    "CallbackType",
    "DiscordHarness",
    "FakeDiscordAPI",
    "InteractionCallback",
    "InteractionType",
    "MessageFlags",
    "OptionType",
    "Press",
    "RecordedCall",
    "StoredMessage",
    "UploadedFile",
    "UserArg",
    "autocomplete_interaction",
    "component_interaction",
    "guild_create_payload",
    "member_payload",
    "modal_submit_interaction",
    "new_snowflake",
    "overwrite_payload",
    "role_payload",
    "slash_command_interaction",
    "text_channel_payload",
    "user_payload",
]

_log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
_GATEWAY_PATH = "/gateway"
DEFAULT_TOKEN = "fake-bot-token"
# Bot users share their application's id on real Discord; mirroring that keeps payloads self-consistent.
APPLICATION_ID = 1_180_000_000_000_000_001
BOT_USER_ID = APPLICATION_ID
ALL_PERMISSIONS = discord.Permissions.all().value
DEFAULT_MEMBER_PERMISSIONS = discord.Permissions(
    create_instant_invite=True,
    change_nickname=True,
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    read_message_history=True,
    use_external_emojis=True,
    use_application_commands=True,
    connect=True,
    speak=True,
).value
_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
NONCE_WINDOW_SECONDS = 300.0  # enforce_nonce: "checked for uniqueness in the past few minutes"
PUBLIC_THREAD, PRIVATE_THREAD = 11, 12
THREAD_TYPES = (PUBLIC_THREAD, PRIVATE_THREAD)
MAX_PINS = 250  # pinned messages per channel (the limit the pins endpoints document; 50 before them)
_DISCORD_EPOCH_MS = 1_420_070_400_000


class InteractionType(IntEnum):
    """Discord interaction types (kept independent of discord.py so the fake is an oracle, not a mirror)."""

    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class CallbackType(IntEnum):
    """Interaction callback (response) types accepted by POST /interactions/{id}/{token}/callback."""

    PONG = 1
    CHANNEL_MESSAGE = 4
    DEFERRED_CHANNEL_MESSAGE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    AUTOCOMPLETE_RESULT = 8
    MODAL = 9


class OptionType(IntEnum):
    """Application command option types as they appear in interaction data."""

    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


class MessageFlags(IntEnum):
    """The message flag bits the fake interprets."""

    EPHEMERAL = 64
    LOADING = 128


# Which callbacks Discord accepts for which interaction type; anything else is a 400 there too.
_ALLOWED_CALLBACKS: dict[int, frozenset[int]] = {
    InteractionType.APPLICATION_COMMAND: frozenset({4, 5, 9}),
    InteractionType.MESSAGE_COMPONENT: frozenset({4, 5, 6, 7, 9}),
    InteractionType.AUTOCOMPLETE: frozenset({8}),
    InteractionType.MODAL_SUBMIT: frozenset({4, 5, 6, 7}),
}


# --------------------------------------------------------------------------------------------- snowflakes


class SnowflakeGenerator:
    """Time-based, strictly increasing snowflakes, so ordering by id matches creation order like on Discord."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """Return a fresh snowflake greater than every one handed out before."""
        now_ms = int(time.time() * 1000)
        candidate = (now_ms - _DISCORD_EPOCH_MS) << 22
        self._last = max(candidate, self._last + 1)
        return self._last


_SNOWFLAKES = SnowflakeGenerator()


def new_snowflake() -> int:
    """A new unique id; shared by builders and the fake so ids never collide within a test run."""
    return _SNOWFLAKES.next()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _perm_str(value: int | str | discord.Permissions) -> str:
    """Discord transports permission bitsets as decimal strings."""
    if isinstance(value, discord.Permissions):
        return str(value.value)
    return str(int(value))


# ------------------------------------------------------------------------------------------- payload builders


def user_payload(user_id: int, username: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    """A Discord user object (post-pomelo: discriminator "0")."""
    return {
        "id": str(user_id),
        "username": username or f"user{user_id % 100_000}",
        "discriminator": "0",
        "global_name": None,
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
    }


def member_payload(
    user_id: int,
    *,
    username: str | None = None,
    roles: Sequence[int] = (),
    nick: str | None = None,
    permissions: int | str | discord.Permissions | None = None,
    bot: bool = False,
) -> dict[str, Any]:
    """A guild member object; ``permissions`` is only present in interaction payloads (resolved per channel)."""
    member: dict[str, Any] = {
        "user": user_payload(user_id, username, bot=bot),
        "roles": [str(r) for r in roles],
        "nick": nick,
        "avatar": None,
        "joined_at": _now_iso(),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "communication_disabled_until": None,
    }
    if permissions is not None:
        member["permissions"] = _perm_str(permissions)
    return member


def role_payload(
    role_id: int,
    name: str,
    *,
    permissions: int | str | discord.Permissions = 0,
    position: int = 0,
    managed: bool = False,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A role object. The @everyone role has the guild's id."""
    role: dict[str, Any] = {
        "id": str(role_id),
        "name": name,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": _perm_str(permissions),
        "managed": managed,
        "mentionable": False,
        "flags": 0,
    }
    if tags is not None:
        role["tags"] = dict(tags)
    return role


def overwrite_payload(target_id: int, *, type: int, allow: int = 0, deny: int = 0) -> dict[str, Any]:
    """A permission overwrite; ``type`` 0 targets a role, 1 a member."""
    return {"id": str(target_id), "type": type, "allow": str(allow), "deny": str(deny)}


def text_channel_payload(
    channel_id: int,
    *,
    guild_id: int,
    name: str | None = None,
    position: int = 0,
    permission_overwrites: Sequence[Mapping[str, Any]] = (),
    parent_id: int | None = None,
    topic: str | None = None,
) -> dict[str, Any]:
    """A guild text channel object (type 0)."""
    return {
        "id": str(channel_id),
        "type": 0,
        "guild_id": str(guild_id),
        "name": name or f"channel-{channel_id % 100_000}",
        "position": position,
        "permission_overwrites": [dict(o) for o in permission_overwrites],
        "parent_id": str(parent_id) if parent_id is not None else None,
        "topic": topic,
        "nsfw": False,
        "last_message_id": None,
        "rate_limit_per_user": 0,
        "flags": 0,
    }


def guild_create_payload(
    guild_id: int,
    *,
    name: str = "Nubi Test Guild",
    channels: Sequence[int | Mapping[str, Any]] = (),
    roles: Sequence[int | Mapping[str, Any]] = (),
    members: Sequence[int | Mapping[str, Any]] = (),
    owner_id: int | None = None,
    bot_user_id: int = BOT_USER_ID,
    bot_permissions: int | str | discord.Permissions = ALL_PERMISSIONS,
) -> dict[str, Any]:
    """A GUILD_CREATE gateway payload including the bot's own member and managed role.

    Ints in ``channels``/``roles``/``members`` are expanded with default payloads. ``member_count`` equals
    the number of members sent, which makes discord.py consider the guild chunked; otherwise a client
    with the members intent would try to request chunks over the (absent) websocket.
    """
    channel_payloads = [
        text_channel_payload(c, guild_id=guild_id, position=i)
        if isinstance(c, int)
        else {**c, "guild_id": str(guild_id)}
        for i, c in enumerate(channels)
    ]
    role_payloads = [role_payload(r, f"role-{r % 100_000}") if isinstance(r, int) else dict(r) for r in roles]
    if not any(r["id"] == str(guild_id) for r in role_payloads):
        role_payloads.insert(0, role_payload(guild_id, "@everyone", permissions=DEFAULT_MEMBER_PERMISSIONS))
    bot_role_id = new_snowflake()
    role_payloads.append(
        role_payload(
            bot_role_id,
            "nubi",
            permissions=bot_permissions,
            position=len(role_payloads),
            managed=True,
            tags={"bot_id": str(bot_user_id)},
        )
    )
    member_payloads = [member_payload(m) if isinstance(m, int) else dict(m) for m in members]
    member_payloads.append(member_payload(bot_user_id, username="nubi", roles=[bot_role_id], bot=True))
    if owner_id is None:
        owner_id = int(member_payloads[0]["user"]["id"])
    return {
        "id": str(guild_id),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "owner_id": str(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": role_payloads,
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "system_channel_id": None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "preferred_locale": "en-US",
        "premium_tier": 0,
        "nsfw_level": 0,
        "premium_progress_bar_enabled": False,
        "joined_at": _now_iso(),
        "large": False,
        "unavailable": False,
        "member_count": len(member_payloads),
        "voice_states": [],
        "members": member_payloads,
        "channels": channel_payloads,
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


@dataclass(frozen=True)
class UserArg:
    """A user picked in a USER option: Discord sends only the id as value and the objects in ``resolved``."""

    user_id: int
    username: str | None = None
    roles: Sequence[int] = ()
    permissions: int | str | discord.Permissions = DEFAULT_MEMBER_PERMISSIONS
    in_guild: bool = True


OptionValue = bool | int | float | str | UserArg | Mapping[str, Any]


def _leaf_options(
    options: Mapping[str, OptionValue] | None, focused: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turn ``{name: value}`` into Discord option objects, inferring the option type from the Python value."""
    rendered: list[dict[str, Any]] = []
    resolved: dict[str, Any] = {}
    for name, value in (options or {}).items():
        option: dict[str, Any]
        if isinstance(value, UserArg):
            option = {"name": name, "type": OptionType.USER, "value": str(value.user_id)}
            user = user_payload(value.user_id, value.username)
            resolved.setdefault("users", {})[str(value.user_id)] = user
            if value.in_guild:
                member = member_payload(value.user_id, roles=value.roles, permissions=value.permissions)
                del member["user"]
                resolved.setdefault("members", {})[str(value.user_id)] = member
        elif isinstance(value, Mapping):
            option = {"name": name, **value}
        elif isinstance(value, bool):
            option = {"name": name, "type": OptionType.BOOLEAN, "value": value}
        elif isinstance(value, int):
            option = {"name": name, "type": OptionType.INTEGER, "value": value}
        elif isinstance(value, float):
            option = {"name": name, "type": OptionType.NUMBER, "value": value}
        else:
            option = {"name": name, "type": OptionType.STRING, "value": value}
        if name == focused:
            option["focused"] = True
        rendered.append(option)
    if focused is not None and not any(o.get("focused") for o in rendered):
        raise ValueError(f"focused option {focused!r} is not among the options")
    return rendered, resolved


def _command_data(
    name: str,
    options: Mapping[str, OptionValue] | None,
    *,
    command_id: int | None,
    command_guild_id: int | None,
    focused: str | None = None,
) -> dict[str, Any]:
    """Build ``interaction.data`` for a chat-input command; "raid start" nests SUB_COMMAND(_GROUP) options."""
    path = name.split()
    if not 1 <= len(path) <= 3:
        raise ValueError(f"command path must have 1-3 parts, got {name!r}")
    leaf, resolved = _leaf_options(options, focused)
    nested = leaf
    if len(path) == 3:
        sub = {"type": OptionType.SUB_COMMAND, "name": path[2], "options": leaf}
        nested = [{"type": OptionType.SUB_COMMAND_GROUP, "name": path[1], "options": [sub]}]
    elif len(path) == 2:
        nested = [{"type": OptionType.SUB_COMMAND, "name": path[1], "options": leaf}]
    data: dict[str, Any] = {
        "id": str(command_id or new_snowflake()),
        "name": path[0],
        "type": 1,
        "options": nested,
    }
    if resolved:
        data["resolved"] = resolved
    if command_guild_id is not None:
        data["guild_id"] = str(command_guild_id)
    return data


def _interaction_payload(
    type_: InteractionType,
    data: dict[str, Any],
    *,
    guild_id: int,
    channel_id: int,
    user_id: int,
    username: str | None,
    permissions: int | str | discord.Permissions,
    roles: Sequence[int],
    app_permissions: int | str | discord.Permissions,
    locale: str,
    application_id: int,
    message: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The INTERACTION_CREATE envelope shared by all interaction kinds (guild context only)."""
    interaction_id = new_snowflake()
    payload: dict[str, Any] = {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": int(type_),
        "data": data,
        "guild_id": str(guild_id),
        "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
        "channel_id": str(channel_id),
        "channel": text_channel_payload(channel_id, guild_id=guild_id),
        "member": member_payload(user_id, username=username, roles=roles, permissions=permissions),
        "token": f"fake-interaction-token-{interaction_id}",
        "version": 1,
        "app_permissions": _perm_str(app_permissions),
        "locale": locale,
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(guild_id)},
        "context": 0,
        "attachment_size_limit": _ATTACHMENT_SIZE_LIMIT,
    }
    if message is not None:
        payload["message"] = copy.deepcopy(dict(message))
    return payload


def slash_command_interaction(
    name: str,
    options: Mapping[str, OptionValue] | None = None,
    *,
    guild_id: int,
    channel_id: int,
    user_id: int,
    username: str | None = None,
    permissions: int | str | discord.Permissions = DEFAULT_MEMBER_PERMISSIONS,
    roles: Sequence[int] = (),
    app_permissions: int | str | discord.Permissions = ALL_PERMISSIONS,
    command_id: int | None = None,
    command_guild_id: int | None = None,
    locale: str = "en-US",
    application_id: int = APPLICATION_ID,
) -> dict[str, Any]:
    """INTERACTION_CREATE for a slash command.

    ``name`` may be a path ("raid start", "raid admin reset"). ``options`` maps option names to values:
    bool/int/float/str infer BOOLEAN/INTEGER/NUMBER/STRING, :class:`UserArg` yields a USER option with
    ``resolved`` data, and a mapping is used verbatim (e.g. ``{"type": 7, "value": "123"}``).
    Pass ``command_guild_id`` when the command was registered as a guild command: discord.py looks the
    command up in the guild scope only when ``data.guild_id`` is present.
    """
    data = _command_data(name, options, command_id=command_id, command_guild_id=command_guild_id)
    return _interaction_payload(
        InteractionType.APPLICATION_COMMAND,
        data,
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        username=username,
        permissions=permissions,
        roles=roles,
        app_permissions=app_permissions,
        locale=locale,
        application_id=application_id,
    )


def autocomplete_interaction(
    name: str,
    options: Mapping[str, OptionValue],
    *,
    focused: str,
    guild_id: int,
    channel_id: int,
    user_id: int,
    username: str | None = None,
    permissions: int | str | discord.Permissions = DEFAULT_MEMBER_PERMISSIONS,
    roles: Sequence[int] = (),
    app_permissions: int | str | discord.Permissions = ALL_PERMISSIONS,
    command_id: int | None = None,
    command_guild_id: int | None = None,
    locale: str = "en-US",
    application_id: int = APPLICATION_ID,
) -> dict[str, Any]:
    """INTERACTION_CREATE (type 4) while the user types into option ``focused`` (partial value as given)."""
    data = _command_data(
        name, options, command_id=command_id, command_guild_id=command_guild_id, focused=focused
    )
    return _interaction_payload(
        InteractionType.AUTOCOMPLETE,
        data,
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        username=username,
        permissions=permissions,
        roles=roles,
        app_permissions=app_permissions,
        locale=locale,
        application_id=application_id,
    )


def component_interaction(
    custom_id: str,
    message: Mapping[str, Any],
    *,
    guild_id: int,
    channel_id: int,
    user_id: int,
    component_type: int = 2,
    values: Sequence[str] | None = None,
    username: str | None = None,
    permissions: int | str | discord.Permissions = DEFAULT_MEMBER_PERMISSIONS,
    roles: Sequence[int] = (),
    app_permissions: int | str | discord.Permissions = ALL_PERMISSIONS,
    locale: str = "en-US",
    application_id: int = APPLICATION_ID,
) -> dict[str, Any]:
    """INTERACTION_CREATE (type 3) for a click on ``custom_id`` in ``message`` (a full message object,
    e.g. ``fake.messages[mid].json``). ``values`` is for select menus (component types 3, 5-8)."""
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        data["values"] = list(values)
    return _interaction_payload(
        InteractionType.MESSAGE_COMPONENT,
        data,
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        username=username,
        permissions=permissions,
        roles=roles,
        app_permissions=app_permissions,
        locale=locale,
        application_id=application_id,
        message=message,
    )


def modal_submit_interaction(
    custom_id: str,
    values: Mapping[str, str],
    *,
    guild_id: int,
    channel_id: int,
    user_id: int,
    message: Mapping[str, Any] | None = None,
    username: str | None = None,
    permissions: int | str | discord.Permissions = DEFAULT_MEMBER_PERMISSIONS,
    roles: Sequence[int] = (),
    app_permissions: int | str | discord.Permissions = ALL_PERMISSIONS,
    locale: str = "en-US",
    application_id: int = APPLICATION_ID,
) -> dict[str, Any]:
    """INTERACTION_CREATE (type 5) submitting modal ``custom_id`` with text inputs ``{custom_id: value}``.

    Pass ``message`` when the modal was opened from a component, so UPDATE_MESSAGE responses have a target.
    """
    rows = [
        {"type": 1, "components": [{"type": 4, "custom_id": input_id, "value": value}]}
        for input_id, value in values.items()
    ]
    return _interaction_payload(
        InteractionType.MODAL_SUBMIT,
        {"custom_id": custom_id, "components": rows},
        guild_id=guild_id,
        channel_id=channel_id,
        user_id=user_id,
        username=username,
        permissions=permissions,
        roles=roles,
        app_permissions=app_permissions,
        locale=locale,
        application_id=application_id,
        message=message,
    )


# ------------------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (``field`` is e.g. "files[0]")."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RecordedCall:
    """One HTTP request the library made, in arrival order.

    ``path`` is relative to the API base ("/channels/1/messages"); ``json`` is the JSON body or, for
    multipart requests, the parsed ``payload_json`` part; ``form`` holds the raw non-file form fields.
    ``status`` is what the fake answered and ``route`` the matched route template (None: unimplemented).
    """

    method: str
    path: str
    query: dict[str, str]
    json: Any
    form: dict[str, str] | None
    files: list[UploadedFile]
    at: float
    status: int = 0
    route: str | None = None


@dataclass
class InteractionCallback:
    """The initial response to an interaction (POST .../callback) as received by the fake."""

    interaction_id: int
    interaction_type: int
    type: int
    data: dict[str, Any] | None
    files: list[UploadedFile]
    message_id: int | None
    at: float

    @property
    def flags(self) -> int:
        """Message flags of the response (64 = ephemeral)."""
        return int((self.data or {}).get("flags") or 0)

    @property
    def ephemeral(self) -> bool:
        """Whether the response asked for an ephemeral message."""
        return bool(self.flags & MessageFlags.EPHEMERAL)

    @property
    def content(self) -> str | None:
        """Message content of a type 4/7 response."""
        return (self.data or {}).get("content")

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Autocomplete choices of a type 8 response."""
        return list((self.data or {}).get("choices") or [])


@dataclass
class Press:
    """One interaction delivered by :meth:`DiscordHarness.press_many`, as its member experienced it.

    Times are ``time.monotonic()``, the clock of :attr:`RecordedCall.at` and :attr:`InteractionCallback.at`.
    """

    interaction_id: int
    dispatched_at: float  # just before discord.py parsed the INTERACTION_CREATE
    callback: InteractionCallback | None = None  # the initial response the fake accepted, if any
    finished_at: float | None = None  # when discord.py's tasks for it were done (None: still running)
    error: BaseException | None = None  # what escaped those tasks (the real gateway would only log it)

    @property
    def latency(self) -> float | None:
        """Seconds from dispatch to the initial response reaching Discord: what its 3-second rule times."""
        return None if self.callback is None else self.callback.at - self.dispatched_at


@dataclass
class StoredMessage:
    """A message as the fake stores it: the current API object plus every previous version."""

    json: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)
    deleted: bool = False
    interaction_id: int | None = None

    @property
    def id(self) -> int:
        """The message id."""
        return int(self.json["id"])

    @property
    def channel_id(self) -> int:
        """The channel the message lives in."""
        return int(self.json["channel_id"])

    @property
    def content(self) -> str:
        """Current content."""
        return str(self.json["content"])

    @property
    def flags(self) -> int:
        """Current message flags."""
        return int(self.json["flags"])

    @property
    def ephemeral(self) -> bool:
        """Ephemeral messages exist only for the interaction's user, never in channel history."""
        return bool(self.flags & MessageFlags.EPHEMERAL)

    @property
    def embeds(self) -> list[dict[str, Any]]:
        """Current embeds."""
        return list(self.json["embeds"])

    @property
    def components(self) -> list[dict[str, Any]]:
        """Current components (action rows etc.) as sent by the library."""
        return list(self.json["components"])


@dataclass
class _Fault:
    """A pending injected failure."""

    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    global_: bool
    remaining: int
    message: str | None
    code: int | None


@dataclass
class _Interaction:
    """Server-side view of an interaction token: what it may still do and which messages it owns."""

    id: int
    token: str
    type: int
    application_id: int
    channel_id: int
    guild_id: int | None
    message_id: int | None
    acknowledged: bool = False
    original_message_id: int | None = None
    deferred_pending: bool = False
    followup_ids: list[int] = field(default_factory=list)


def _json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """discord.py only decodes bodies whose Content-Type is exactly "application/json" (no charset), which
    is what Discord sends; aiohttp's json_response would append "; charset=utf-8" and yield strings."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


class _APIError(Exception):
    """Raised by route handlers to answer with a Discord-style JSON error."""

    def __init__(self, status: int, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def response(self) -> web.Response:
        return _json_response({"message": self.message, "code": self.code}, status=self.status)


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    """``*`` matches exactly one path segment; everything else is literal."""
    return re.compile("[^/]+".join(re.escape(part) for part in pattern.split("*")))


# Application commands (https://discord.com/developers/docs/interactions/application-commands), as
# documented: a name is 1-32 characters of letters, digits, "-", "_" and "'", lower case for slash
# commands; a slash command's and an option's description is 1-100 characters; at most 25 options and
# 25 choices, a choice's name 1-100 characters. `name_localizations` and `description_localizations`
# are keyed by Discord's locales (https://discord.com/developers/docs/reference#locales) and each value
# follows the rule of the field it localizes.
DISCORD_LOCALES = frozenset({
    "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu", "nl", "no", "pl",
    "pt-BR", "ro", "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru", "uk", "hi", "th", "zh-CN", "ja", "zh-TW",
    "ko",
})
_COMMAND_NAME = re.compile(r"[-_'\w]{1,32}")
CHAT_INPUT, SUB_COMMAND, SUB_COMMAND_GROUP = 1, 1, 2


def _invalid_command(field_path: str, why: str) -> _APIError:
    return _APIError(400, f"Invalid Form Body ({field_path}: {why})", 50035)


def _check_name(value: Any, where: str, *, slash: bool) -> None:
    """A slash command's (or option's) name by the pattern, in lower case; a user or message command's
    name is any 1-32 characters (spaces and capitals allowed)."""
    fits = isinstance(value, str) and (
        _COMMAND_NAME.fullmatch(value) is not None and value == value.lower() if slash else 1 <= len(value) <= 32)
    if not fits:
        raise _invalid_command(where, "APPLICATION_COMMAND_INVALID_NAME")


def _check_text(value: Any, where: str) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 100:
        raise _invalid_command(where, "BASE_TYPE_BAD_LENGTH (1-100)")


def _check_localizations(data: Mapping[str, Any], key: str, where: str, check: Callable[[Any, str], None]) -> None:
    localized = data.get(key)
    if localized is None:
        return
    if not isinstance(localized, dict):
        raise _invalid_command(f"{where}.{key}", "DICT_TYPE_CONVERT")
    for locale, value in localized.items():
        if locale not in DISCORD_LOCALES:
            raise _invalid_command(f"{where}.{key}.{locale}", "LOCALE_INVALID")
        check(value, f"{where}.{key}.{locale}")


def _check_command(command: Mapping[str, Any], where: str, *, slash: bool) -> None:
    """A command, subcommand group, subcommand or option, with what it holds, by the documented rules."""
    def name_rule(value: Any, at: str) -> None:
        _check_name(value, at, slash=slash)

    name_rule(command.get("name"), f"{where}.name")
    _check_localizations(command, "name_localizations", where, name_rule)
    if slash:
        _check_text(command.get("description"), f"{where}.description")
        _check_localizations(command, "description_localizations", where, _check_text)
    options = command.get("options") or []
    choices = command.get("choices") or []
    if len(options) > 25 or len(choices) > 25:
        raise _invalid_command(where, "BASE_TYPE_MAX_LENGTH (25)")
    seen_optional = False
    for i, option in enumerate(options):
        if option.get("type") not in (SUB_COMMAND, SUB_COMMAND_GROUP):
            if option.get("required"):
                if seen_optional:
                    raise _invalid_command(f"{where}.options.{i}", "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID")
            else:
                seen_optional = True
        _check_command(option, f"{where}.options.{i}", slash=True)
    for i, choice in enumerate(choices):
        _check_text(choice.get("name"), f"{where}.choices.{i}.name")
        _check_localizations(choice, "name_localizations", f"{where}.choices.{i}", _check_text)


def _snowflake(value: str) -> int:
    if not value.isdigit():
        raise _APIError(404, "404: Not Found")
    return int(value)


_Handler = Callable[..., web.Response]
_GATEWAY_ONLY_GUILD_KEYS = frozenset(
    {
        "joined_at",
        "large",
        "unavailable",
        "member_count",
        "voice_states",
        "members",
        "channels",
        "threads",
        "presences",
        "stage_instances",
        "guild_scheduled_events",
        "soundboard_sounds",
    }
)
_FILE_FIELD = re.compile(r"files\[(\d+)\]")


# --------------------------------------------------------------------------------------------- fake server


class FakeDiscordAPI:
    """A stateful imitation of the parts of Discord's REST API v10 that discord.py uses for a bot.

    Writes that Discord would echo over the gateway (CHANNEL_UPDATE, MESSAGE_CREATE/UPDATE/DELETE) are
    published to gateway listeners (see :meth:`add_gateway_listener`) and recorded in ``gateway_events``.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        application_id: int = APPLICATION_ID,
        bot_user_id: int = BOT_USER_ID,
        bot_name: str = "nubi",
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user: dict[str, Any] = {
            **user_payload(bot_user_id, bot_name, bot=True),
            "verified": True,
            "mfa_enabled": False,
            "locale": "en-US",
        }
        self.calls: list[RecordedCall] = []
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[int, dict[str, Any]]] = {}
        self.messages: dict[int, StoredMessage] = {}
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.callbacks: list[InteractionCallback] = []
        self.gateway_events: list[tuple[str, dict[str, Any]]] = []
        self._interactions: dict[int, _Interaction] = {}
        self._attachments: dict[int, bytes] = {}
        self._faults: list[_Fault] = []
        self._nonces: dict[tuple[str, str], tuple[float, int]] = {}  # (author, nonce) -> (when, message id)
        self._drops: list[tuple[str, re.Pattern[str], int]] = []
        self._gateway_listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: list[tuple[str, re.Pattern[str], str, _Handler, bool]] = []
        self.gateway = FakeGateway(lambda: self.token, self.ready_event, self._guild_creates)
        for method, template, handler, needs_auth in self._route_table():
            regex = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template))
            self._routes.append((method, regex, template, handler, needs_auth))

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Serve on a free 127.0.0.1 port."""
        app = web.Application(client_max_size=_ATTACHMENT_SIZE_LIMIT * 2)
        app.router.add_get(_GATEWAY_PATH, self.gateway.handle)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Shut the server down; state stays readable for assertions."""
        await self.gateway.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (also serves uploaded attachments, standing in for the CDN)."""
        if self._port is None:
            raise RuntimeError("FakeDiscordAPI is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """Value for ``[discord] api_base_url`` (discord.py's ``Route.BASE``)."""
        return self.origin + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """Value for ``[discord] gateway_url`` (discord.py's ``DiscordWebSocket.DEFAULT_GATEWAY``)."""
        return self.origin.replace("http://", "ws://") + _GATEWAY_PATH

    def _guild_creates(self) -> list[dict[str, Any]]:
        return [self.guild_create_event(guild_id) for guild_id in self.guilds]

    def bot_permissions(self, channel_id: int) -> int:
        """What the bot may do in a channel now, by Discord's rules (ALL outside a known guild)."""
        found = self._bot_in(self.channels[channel_id])
        return perms.ALL if found is None else perms.channel_permissions(*found)

    # ---------------------------------------------------------------- seeding & gateway payloads

    def add_guild(self, payload: Mapping[str, Any]) -> None:
        """Register a guild from a GUILD_CREATE payload (see :func:`guild_create_payload`)."""
        guild_id = int(payload["id"])
        self.guilds[guild_id] = {
            k: copy.deepcopy(v) for k, v in payload.items() if k not in ("channels", "members")
        }
        for channel in payload.get("channels", []):
            self.add_channel({**channel, "guild_id": str(guild_id)})
        self.members[guild_id] = {
            int(m["user"]["id"]): copy.deepcopy(dict(m)) for m in payload.get("members", [])
        }

    def add_channel(self, payload: Mapping[str, Any]) -> None:
        """Register a channel object (``permission_overwrites`` defaults to empty)."""
        channel = copy.deepcopy(dict(payload))
        channel.setdefault("permission_overwrites", [])
        self.channels[int(channel["id"])] = channel

    def ready_event(self) -> dict[str, Any]:
        """READY as the gateway sends it: guilds unavailable until their GUILD_CREATE arrives."""
        return {
            "v": 10,
            "user": copy.deepcopy(self.bot_user),
            "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
            "session_id": "fake-session",
            "resume_gateway_url": "wss://127.0.0.1/fake-gateway",
            "application": {"id": str(self.application_id), "flags": 0},
            "shard": [0, 1],
        }

    def guild_create_event(self, guild_id: int) -> dict[str, Any]:
        """GUILD_CREATE built from current state, so a restarted client sees e.g. overwrites set earlier."""
        guild = copy.deepcopy(self.guilds[guild_id])
        guild["channels"] = [
            copy.deepcopy(c) for c in self.channels.values()
            if c.get("guild_id") == str(guild_id) and c["type"] not in THREAD_TYPES
        ]
        guild["threads"] = [
            copy.deepcopy(c) for c in self.channels.values()
            if c.get("guild_id") == str(guild_id) and c["type"] in THREAD_TYPES
        ]
        guild["members"] = copy.deepcopy(list(self.members.get(guild_id, {}).values()))
        guild["member_count"] = len(guild["members"])
        return guild

    def register_interaction(self, payload: Mapping[str, Any]) -> None:
        """Make an INTERACTION_CREATE's token usable for callbacks/webhooks, as Discord does on dispatch.

        The component's message is imported if unknown so UPDATE_MESSAGE responses have a target.
        """
        message = payload.get("message")
        if message is not None and int(message["id"]) not in self.messages:
            defaults = {"content": "", "flags": 0, "embeds": [], "components": [], "attachments": []}
            self.messages[int(message["id"])] = StoredMessage(
                json={**defaults, **copy.deepcopy(dict(message))}
            )
        if int(payload["id"]) in self._interactions:
            return  # a redelivery must not reset the acknowledgement state
        interaction = _Interaction(
            id=int(payload["id"]),
            token=payload["token"],
            type=int(payload["type"]),
            application_id=int(payload["application_id"]),
            channel_id=int(payload["channel_id"]),
            guild_id=int(payload["guild_id"]) if payload.get("guild_id") else None,
            message_id=int(message["id"]) if message is not None else None,
        )
        self._interactions[interaction.id] = interaction

    def add_gateway_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Subscribe to gateway echoes of REST writes (event name, payload)."""
        self._gateway_listeners.append(listener)

    def remove_gateway_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Unsubscribe a listener added with :meth:`add_gateway_listener`."""
        self._gateway_listeners.remove(listener)

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 429,
        retry_after: float = 1.5,
        times: int = 1,
        global_: bool = False,
        *,
        message: str | None = None,
        code: int | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with an error instead of handling them.

        ``path_pattern`` is relative to the API base, ``*`` matching one segment ("/channels/*/messages");
        ``method`` may be "*". 429 carries Discord's body and X-RateLimit-*/Retry-After/Via headers —
        discord.py sleeps ``retry_after`` before retrying, so keep it small. 403 defaults to Missing
        Permissions (50013); other statuses get a generic body unless ``message``/``code`` are given.
        """
        self._faults.append(
            _Fault(
                method=method.upper(),
                pattern=_compile_pattern(path_pattern),
                status=status,
                retry_after=retry_after,
                global_=global_,
                remaining=times,
                message=message,
                code=code,
            )
        )

    def drop_after_handling(self, method: str, path_pattern: str, times: int = 1) -> None:
        """Handle the next ``times`` matching requests (their effects happen), then close the connection
        without an answer: what a client sees when a network path fails after Discord did the work."""
        self._drops.append((method.upper(), _compile_pattern(path_pattern), times))

    def _take_drop(self, method: str, path: str) -> bool:
        for i, (m, pattern, left) in enumerate(self._drops):
            if m in ("*", method) and pattern.fullmatch(path):
                self._drops[i] = (m, pattern, left - 1)
                if left <= 1:
                    del self._drops[i]
                return True
        return False

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.fullmatch(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        if fault.status == 429:
            body = {
                "message": fault.message or "You are being rate limited.",
                "retry_after": fault.retry_after,
                "global": fault.global_,
            }
            if fault.code is not None:
                body["code"] = fault.code
            headers = {
                "Retry-After": str(math.ceil(fault.retry_after)),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
                "X-RateLimit-Bucket": f"fake-{abs(hash(fault.pattern.pattern)):x}",
                "X-RateLimit-Scope": "global" if fault.global_ else "user",
                # discord.py treats a 429 without Via as a Cloudflare ban and raises instead of retrying.
                "Via": "1.1 google",
            }
            if fault.global_:
                headers["X-RateLimit-Global"] = "true"
            return _json_response(body, status=429, headers=headers)
        if fault.status == 403:
            default_message, default_code = "Missing Permissions", 50013
        else:
            default_message, default_code = f"{fault.status}: {HTTPStatus(fault.status).phrase}", 0
        return _json_response(
            {
                "message": fault.message or default_message,
                "code": default_code if fault.code is None else fault.code,
            },
            status=fault.status,
        )

    # ---------------------------------------------------------------- inspection helpers

    def calls_to(self, pattern: str, method: str | None = None) -> list[RecordedCall]:
        """Recorded calls whose path matches ``pattern`` (``*`` = one segment), optionally by method."""
        regex = _compile_pattern(pattern)
        return [
            c
            for c in self.calls
            if regex.fullmatch(c.path) and (method is None or c.method == method.upper())
        ]

    def unhandled_calls(self) -> list[RecordedCall]:
        """Calls to endpoints the fake does not implement (answered 404) — extend the fake if non-empty."""
        return [c for c in self.calls if c.route is None]

    def interaction_responses(self, interaction_id: int | None = None) -> list[InteractionCallback]:
        """Accepted interaction callbacks, optionally for one interaction."""
        return [c for c in self.callbacks if interaction_id is None or c.interaction_id == interaction_id]

    def interaction_response(self, interaction_id: int) -> InteractionCallback | None:
        """The accepted initial response to ``interaction_id``, if any."""
        responses = self.interaction_responses(interaction_id)
        return responses[0] if responses else None

    def original_response(self, interaction_id: int) -> StoredMessage | None:
        """The message behind ``@original`` (after any edits)."""
        interaction = self._interactions.get(interaction_id)
        if interaction is None or interaction.original_message_id is None:
            return None
        return self.messages.get(interaction.original_message_id)

    def followups(self, interaction_id: int) -> list[StoredMessage]:
        """Followup messages created through the interaction's webhook, oldest first."""
        interaction = self._interactions[interaction_id]
        return [self.messages[mid] for mid in interaction.followup_ids]

    def channel_messages(
        self, channel_id: int, *, include_ephemeral: bool = False, include_deleted: bool = False
    ) -> list[StoredMessage]:
        """Messages in a channel, oldest first; by default what other members would actually see."""
        return [
            m
            for m in self.messages.values()
            if m.channel_id == channel_id
            and (include_ephemeral or not m.ephemeral)
            and (include_deleted or not m.deleted)
        ]

    def channel(self, channel_id: int) -> dict[str, Any]:
        """Current channel object, including ``permission_overwrites``."""
        return copy.deepcopy(self.channels[channel_id])

    # ---------------------------------------------------------------- HTTP plumbing

    def _route_table(self) -> list[tuple[str, str, _Handler, bool]]:
        return [
            ("GET", "/users/@me", self._get_me, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/{application_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/commands", self._put_commands, True),
            ("GET", "/applications/{application_id}/guilds/{guild_id}/commands", self._get_commands, True),
            ("PUT", "/applications/{application_id}/guilds/{guild_id}/commands", self._put_commands, True),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._interaction_callback, False),
            ("POST", "/webhooks/{application_id}/{token}", self._post_followup, False),
            (
                "GET",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._get_webhook_message,
                False,
            ),
            (
                "PATCH",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._patch_webhook_message,
                False,
            ),
            (
                "DELETE",
                "/webhooks/{application_id}/{token}/messages/{message_id}",
                self._delete_webhook_message,
                False,
            ),
            ("GET", "/channels/{channel_id}", self._get_channel, True),
            ("PATCH", "/channels/{channel_id}", self._patch_channel, True),
            ("POST", "/channels/{channel_id}/messages", self._post_message, True),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message, True),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message, True),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message, True),
            ("PUT", "/channels/{channel_id}/messages/pins/{message_id}", self._pin_message, True),
            ("POST", "/channels/{channel_id}/threads", self._start_thread, True),
            ("DELETE", "/channels/{channel_id}/messages/pins/{message_id}", self._unpin_message, True),
            ("PUT", "/channels/{channel_id}/permissions/{overwrite_id}", self._put_overwrite, True),
            ("DELETE", "/channels/{channel_id}/permissions/{overwrite_id}", self._delete_overwrite, True),
            ("GET", "/guilds/{guild_id}", self._get_guild, True),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member, True),
            ("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self._put_member_role, True),
            ("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}", self._delete_member_role, True),
        ]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and request.path.startswith("/attachments/"):
            return self._serve_attachment(request.path)
        if not request.path.startswith(API_PREFIX + "/"):
            return _APIError(404, "404: Not Found").response()
        json_body, form, files = await self._read_body(request)
        call = RecordedCall(
            method=request.method,
            path=request.path[len(API_PREFIX) :],
            query=dict(request.query),
            json=json_body,
            form=form,
            files=files,
            at=time.monotonic(),
        )
        self.calls.append(call)
        response = self._respond(call, request.headers.get("Authorization"))
        call.status = response.status
        if self._take_drop(call.method, call.path) and request.transport is not None:
            call.status = 0  # no answer reached the client
            request.transport.abort()  # the work is done; the answer never arrives
        return response

    def _respond(self, call: RecordedCall, authorization: str | None) -> web.Response:
        route = next(
            (
                (template, handler, needs_auth, match)
                for method, regex, template, handler, needs_auth in self._routes
                if method == call.method and (match := regex.fullmatch(call.path)) is not None
            ),
            None,
        )
        if route is not None:
            call.route = route[0]
        fault = self._take_fault(call.method, call.path)
        if fault is not None:
            return self._fault_response(fault)
        if route is None:
            return _APIError(404, "404: Not Found").response()
        _, handler, needs_auth, match = route
        if needs_auth and authorization != f"Bot {self.token}":
            return _APIError(401, "401: Unauthorized").response()
        try:
            return handler(call, **match.groupdict())
        except _APIError as error:
            return error.response()

    @staticmethod
    async def _read_body(request: web.Request) -> tuple[Any, dict[str, str] | None, list[UploadedFile]]:
        if request.content_type == "multipart/form-data":
            form: dict[str, str] = {}
            files: list[UploadedFile] = []
            for name, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    files.append(UploadedFile(name, value.filename, value.content_type, value.file.read()))
                else:
                    form[name] = str(value)
            payload = json.loads(form["payload_json"]) if "payload_json" in form else None
            return payload, form, files
        raw = await request.read()
        if raw and request.content_type == "application/json":
            return json.loads(raw), None, []
        return None, None, []

    def _serve_attachment(self, path: str) -> web.Response:
        parts = path.split("/")
        data = self._attachments.get(int(parts[3])) if len(parts) > 3 and parts[3].isdigit() else None
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        self.gateway_events.append((event, payload))
        self.gateway.echo(event, copy.deepcopy(payload))
        for listener in list(self._gateway_listeners):
            listener(event, copy.deepcopy(payload))

    # ---------------------------------------------------------------- messages (shared logic)

    def _build_attachments(
        self,
        channel_id: int,
        payload: Mapping[str, Any],
        files: list[UploadedFile],
        existing: Sequence[dict[str, Any]] = (),
    ) -> list[dict[str, Any]]:
        """Resolve ``attachments`` entries: ids of existing attachments are kept, small ints index new files."""
        by_index: dict[int, UploadedFile] = {}
        for position, upload in enumerate(files):
            match = _FILE_FIELD.fullmatch(upload.field)
            by_index[int(match.group(1)) if match else position] = upload
        declared = payload.get("attachments")
        if declared is None:
            declared = [{"id": a["id"]} for a in existing] + [{"id": i} for i in sorted(by_index)]
        existing_by_id = {a["id"]: a for a in existing}
        result: list[dict[str, Any]] = []
        for entry in declared:
            if str(entry["id"]) in existing_by_id:
                result.append(existing_by_id[str(entry["id"])])
                continue
            upload = by_index.get(int(entry["id"]))
            if upload is None:
                raise _APIError(400, "Invalid Form Body", 50035)
            attachment_id = new_snowflake()
            filename = entry.get("filename") or upload.filename
            self._attachments[attachment_id] = upload.data
            url = f"{self.origin}/attachments/{channel_id}/{attachment_id}/{filename}"
            attachment = {
                "id": str(attachment_id),
                "filename": filename,
                "size": len(upload.data),
                "url": url,
                "proxy_url": url,
                "content_type": upload.content_type,
            }
            if entry.get("description"):
                attachment["description"] = entry["description"]
            result.append(attachment)
        return result

    def _create_message(
        self,
        channel_id: int,
        payload: Mapping[str, Any],
        files: list[UploadedFile],
        *,
        interaction: _Interaction | None = None,
        loading: bool = False,
    ) -> StoredMessage:
        content = payload.get("content") or ""
        if len(content) > 2000:
            raise _APIError(400, "Invalid Form Body", 50035)
        has_body = content or payload.get("embeds") or files or payload.get("components")
        if not loading and not (has_body or payload.get("sticker_ids") or payload.get("poll")):
            raise _APIError(400, "Cannot send an empty message", 50006)
        attachments = self._build_attachments(channel_id, payload, files)
        flags = int(payload.get("flags") or 0) | (MessageFlags.LOADING if loading else 0)
        message_type = 0
        if interaction is not None and interaction.type == InteractionType.APPLICATION_COMMAND:
            message_type = 20
        elif payload.get("message_reference"):
            message_type = 19
        message: dict[str, Any] = {
            "id": str(new_snowflake()),
            "channel_id": str(channel_id),
            "type": message_type,
            "content": content,
            "author": copy.deepcopy(self.bot_user),
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "mention_channels": [],
            "attachments": attachments,
            "embeds": [{"type": "rich", **e} for e in payload.get("embeds") or []],
            "components": copy.deepcopy(payload.get("components") or []),
            "reactions": [],
            "pinned": False,
            "flags": flags,
        }
        if payload.get("nonce") is not None:
            message["nonce"] = payload["nonce"]
        if payload.get("message_reference"):
            message["message_reference"] = copy.deepcopy(payload["message_reference"])
        if interaction is not None:
            message["webhook_id"] = str(interaction.application_id)
            message["application_id"] = str(interaction.application_id)
        stored = StoredMessage(
            json=message, files=list(files), interaction_id=interaction.id if interaction else None
        )
        self.messages[stored.id] = stored
        if not stored.ephemeral:
            self._emit("MESSAGE_CREATE", self._gateway_message(stored))
        return stored

    def _edit_message(
        self, stored: StoredMessage, payload: Mapping[str, Any], files: list[UploadedFile]
    ) -> StoredMessage:
        if len(payload.get("content") or "") > 2000:
            raise _APIError(400, "Invalid Form Body", 50035)
        stored.history.append(copy.deepcopy(stored.json))
        current = stored.json
        if "content" in payload:
            current["content"] = payload["content"] or ""
        if "embeds" in payload:
            current["embeds"] = [{"type": "rich", **e} for e in payload["embeds"] or []]
        if "components" in payload:
            current["components"] = copy.deepcopy(payload["components"] or [])
        if payload.get("flags") is not None:
            sticky = current["flags"] & MessageFlags.EPHEMERAL
            current["flags"] = sticky | (
                int(payload["flags"]) & ~(MessageFlags.EPHEMERAL | MessageFlags.LOADING)
            )
        current["flags"] &= ~MessageFlags.LOADING  # any edit fills a deferred "thinking" message
        if "attachments" in payload or files:
            current["attachments"] = self._build_attachments(
                stored.channel_id, payload, files, existing=current["attachments"]
            )
            stored.files.extend(files)
        current["edited_timestamp"] = _now_iso()
        if not stored.ephemeral:
            self._emit("MESSAGE_UPDATE", self._gateway_message(stored))
        return stored

    def _delete(self, stored: StoredMessage) -> None:
        stored.deleted = True
        if not stored.ephemeral:
            event = {"id": str(stored.id), "channel_id": str(stored.channel_id)}
            guild_id = self.channels.get(stored.channel_id, {}).get("guild_id")
            if guild_id is not None:
                event["guild_id"] = guild_id
            self._emit("MESSAGE_DELETE", event)

    def _gateway_message(self, stored: StoredMessage) -> dict[str, Any]:
        """Gateway message events carry ``guild_id``, which REST message objects do not."""
        payload = copy.deepcopy(stored.json)
        guild_id = self.channels.get(stored.channel_id, {}).get("guild_id")
        if guild_id is not None:
            payload["guild_id"] = guild_id
        return payload

    def _live_message(self, message_id: int, channel_id: int | None = None) -> StoredMessage:
        stored = self.messages.get(message_id)
        if stored is None or stored.deleted or (channel_id is not None and stored.channel_id != channel_id):
            raise _APIError(404, "Unknown Message", 10008)
        return stored

    # ---------------------------------------------------------------- users / application / commands

    def _get_me(self, call: RecordedCall) -> web.Response:
        return _json_response(self.bot_user)

    def _get_application(self, call: RecordedCall) -> web.Response:
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "icon": None,
                "description": "",
                "summary": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "bot": self.bot_user,
                "owner": user_payload(1, "owner"),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
            }
        )

    def _command_scope(self, application_id: str, guild_id: str | None) -> int | None:
        if _snowflake(application_id) != self.application_id:
            raise _APIError(403, "Missing Access", 50001)
        if guild_id is None:
            return None
        scope = _snowflake(guild_id)
        if scope not in self.guilds:
            raise _APIError(403, "Missing Access", 50001)
        return scope

    def _get_commands(
        self, call: RecordedCall, application_id: str, guild_id: str | None = None
    ) -> web.Response:
        return _json_response(self.commands.get(self._command_scope(application_id, guild_id), []))

    def _put_commands(
        self, call: RecordedCall, application_id: str, guild_id: str | None = None
    ) -> web.Response:
        """Bulk overwrite: same (name, type) keeps its id like on Discord; the rest is replaced."""
        scope = self._command_scope(application_id, guild_id)
        if not isinstance(call.json, list):
            raise _APIError(400, "Invalid Form Body", 50035)
        previous = {(c["name"], c["type"]): c["id"] for c in self.commands.get(scope, [])}
        stored: list[dict[str, Any]] = []
        for index, command in enumerate(call.json):
            kind = int(command.get("type", 1))
            _check_command(command, str(index), slash=kind == CHAT_INPUT)
            if any((c["name"], c["type"]) == (command["name"], kind) for c in stored):
                raise _APIError(400, "Invalid Form Body", 50035)
            if command.get("default_member_permissions") is not None:
                # discord.py sends an int; Discord stores and returns the bitset as a string
                command = {
                    **command,
                    "default_member_permissions": str(command["default_member_permissions"]),
                }
            entry = {
                "default_member_permissions": None,
                "nsfw": False,
                "options": [],
                "description": "",
                **copy.deepcopy(command),
                "id": previous.get((command["name"], kind)) or str(new_snowflake()),
                "application_id": str(self.application_id),
                "type": kind,
                "version": str(new_snowflake()),
            }
            if scope is not None:
                entry["guild_id"] = str(scope)
            stored.append(entry)
        self.commands[scope] = stored
        return _json_response(stored)

    # ---------------------------------------------------------------- interactions

    def _interaction_for_webhook(self, application_id: str, token: str) -> _Interaction:
        """Webhook routes only work for acknowledged interactions of this application."""
        app_id = _snowflake(application_id)
        for interaction in self._interactions.values():
            if (
                interaction.token == token
                and interaction.application_id == app_id
                and interaction.acknowledged
            ):
                return interaction
        raise _APIError(404, "Unknown Webhook", 10015)

    def _interaction_callback(self, call: RecordedCall, interaction_id: str, token: str) -> web.Response:
        interaction = self._interactions.get(_snowflake(interaction_id))
        if interaction is None or interaction.token != token:
            raise _APIError(404, "Unknown interaction", 10062)
        if interaction.acknowledged:
            raise _APIError(400, "Interaction has already been acknowledged.", 40060)
        body = call.json if isinstance(call.json, dict) else {}
        callback_type = int(body.get("type", 0))
        data = body.get("data")
        if callback_type not in _ALLOWED_CALLBACKS.get(interaction.type, frozenset()):
            raise _APIError(400, "Invalid Form Body", 50035)
        message: StoredMessage | None = None
        if callback_type == CallbackType.CHANNEL_MESSAGE:
            message = self._create_message(
                interaction.channel_id, data or {}, call.files, interaction=interaction
            )
        elif callback_type == CallbackType.DEFERRED_CHANNEL_MESSAGE:
            message = self._create_message(
                interaction.channel_id, data or {}, [], interaction=interaction, loading=True
            )
            interaction.deferred_pending = True
        elif callback_type in (CallbackType.DEFERRED_UPDATE_MESSAGE, CallbackType.UPDATE_MESSAGE):
            if interaction.message_id is None:
                raise _APIError(400, "Invalid Form Body", 50035)
            message = self._live_message(interaction.message_id)
            if callback_type == CallbackType.UPDATE_MESSAGE:
                self._edit_message(message, data or {}, call.files)
        interaction.acknowledged = True
        if message is not None:
            interaction.original_message_id = message.id
        self.callbacks.append(
            InteractionCallback(
                interaction_id=interaction.id,
                interaction_type=interaction.type,
                type=callback_type,
                data=copy.deepcopy(data),
                files=list(call.files),
                message_id=message.id if message else None,
                at=call.at,
            )
        )
        if call.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        summary: dict[str, Any] = {"id": str(interaction.id), "type": interaction.type}
        result: dict[str, Any] = {"interaction": summary}
        if message is not None:
            summary["response_message_id"] = str(message.id)
            summary["response_message_loading"] = bool(message.flags & MessageFlags.LOADING)
            summary["response_message_ephemeral"] = message.ephemeral
            if callback_type != CallbackType.DEFERRED_UPDATE_MESSAGE:
                result["resource"] = {"type": callback_type, "message": message.json}
        return _json_response(result)

    def _post_followup(self, call: RecordedCall, application_id: str, token: str) -> web.Response:
        """Followups; the first one after a thinking defer replaces the loading message, as on Discord."""
        interaction = self._interaction_for_webhook(application_id, token)
        payload = call.json or {}
        if interaction.deferred_pending and interaction.original_message_id is not None:
            interaction.deferred_pending = False
            stored = self.messages[interaction.original_message_id]
            self._edit_message(stored, payload, call.files)
        else:
            stored = self._create_message(
                interaction.channel_id, payload, call.files, interaction=interaction
            )
            interaction.followup_ids.append(stored.id)
        if call.query.get("wait") in ("1", "true", "True"):
            return _json_response(stored.json)
        return web.Response(status=204)

    def _webhook_message(self, interaction: _Interaction, message_id: str) -> StoredMessage:
        if message_id == "@original":
            if interaction.original_message_id is None:
                raise _APIError(404, "Unknown Message", 10008)
            return self._live_message(interaction.original_message_id)
        resolved = _snowflake(message_id)
        if resolved != interaction.original_message_id and resolved not in interaction.followup_ids:
            raise _APIError(404, "Unknown Message", 10008)
        return self._live_message(resolved)

    def _get_webhook_message(
        self, call: RecordedCall, application_id: str, token: str, message_id: str
    ) -> web.Response:
        interaction = self._interaction_for_webhook(application_id, token)
        return _json_response(self._webhook_message(interaction, message_id).json)

    def _patch_webhook_message(
        self, call: RecordedCall, application_id: str, token: str, message_id: str
    ) -> web.Response:
        interaction = self._interaction_for_webhook(application_id, token)
        stored = self._webhook_message(interaction, message_id)
        if stored.id == interaction.original_message_id:
            interaction.deferred_pending = False
        return _json_response(self._edit_message(stored, call.json or {}, call.files).json)

    def _delete_webhook_message(
        self, call: RecordedCall, application_id: str, token: str, message_id: str
    ) -> web.Response:
        interaction = self._interaction_for_webhook(application_id, token)
        self._delete(self._webhook_message(interaction, message_id))
        return web.Response(status=204)

    # ---------------------------------------------------------------- channels, messages, overwrites

    def _channel_or_404(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(_snowflake(channel_id))
        if channel is None:
            raise _APIError(404, "Unknown Channel", 10003)
        return channel

    def _bot_in(self, channel: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Mapping[str, Any]] | None:
        """(guild, the bot's member, channel) when the channel is in a guild the fake knows the bot in."""
        guild_id = channel.get("guild_id")
        guild = self.guilds.get(int(guild_id)) if guild_id else None
        member = self.members.get(int(guild_id), {}).get(int(self.bot_user["id"])) if guild_id else None
        return (guild, member, channel) if guild is not None and member is not None else None

    def _require(self, channel: Mapping[str, Any], needed: int) -> None:
        """Refuse like Discord when the bot lacks `needed` in the channel. A thread has the permissions
        of its parent channel, where Send Messages in Threads stands in for Send Messages."""
        if channel.get("type") in THREAD_TYPES:
            if needed & perms.SEND_MESSAGES:
                needed = (needed & ~perms.SEND_MESSAGES) | perms.SEND_MESSAGES_IN_THREADS
            channel = self._channel_or_404(str(channel["parent_id"]))
        found = self._bot_in(channel)
        if found is None:
            return
        held = perms.channel_permissions(*found)
        if not held & perms.VIEW_CHANNEL:
            raise _APIError(403, "Missing Access", 50001)
        if needed & ~held:
            raise _APIError(403, "Missing Permissions", 50013)

    def _held_in(self, channel: Mapping[str, Any]) -> int:
        """The bot's permissions in a channel; a thread's are its parent's (ALL outside a known guild)."""
        if channel.get("type") in THREAD_TYPES:
            channel = self._channel_or_404(str(channel["parent_id"]))
        found = self._bot_in(channel)
        return perms.ALL if found is None else perms.channel_permissions(*found)

    def _thread_rules(self, channel: dict[str, Any], *, editing: bool) -> None:
        """Creating or editing a message in a thread ("Threads" > Locked Threads / Active & Archived
        Threads): a locked thread takes Manage Threads; an archived thread's messages cannot be edited,
        and sending a message there unarchives it."""
        meta = channel.get("thread_metadata")
        if channel.get("type") not in THREAD_TYPES or meta is None:
            return
        if meta.get("locked") and not self._held_in(channel) & perms.MANAGE_THREADS:
            raise _APIError(403, "Thread is locked", 160005)
        if meta.get("archived"):
            if editing:
                raise _APIError(400, "Thread is archived", 50083)
            meta["archived"] = False
            meta["archive_timestamp"] = _now_iso()
            self._emit("THREAD_UPDATE", copy.deepcopy(channel))

    # Modify Channel (https://discord.com/developers/docs/resources/channel#modify-channel) and, for a
    # thread, "Threads" > Editing & Deleting Threads: `locked` and `rate_limit_per_user` need Manage
    # Threads; `name`, `archived: true` and `auto_archive_duration` need Manage Threads or being the
    # thread's creator. Unarchiving ("When setting archived to false, when locked is also false, only the
    # SEND_MESSAGES permission is required", in a thread Send Messages in Threads) is open to anyone who
    # may talk in the thread while it stays unlocked; a locked one takes Manage Threads. An archived
    # thread takes no change unless the request unarchives it ("Requires the thread to have archived set
    # to false or be set to false in the request": 400 50083). A guild channel needs Manage Channels.
    THREAD_FIELDS = ("name", "archived", "auto_archive_duration", "locked", "rate_limit_per_user", "invitable")
    ARCHIVE_DURATIONS = (60, 1440, 4320, 10080)

    def _patch_channel(self, call: RecordedCall, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        body = call.json if isinstance(call.json, dict) else None
        if body is None:
            raise _APIError(400, "Invalid Form Body", 50035)
        self._require(channel, perms.VIEW_CHANNEL)
        held = self._held_in(channel)
        if channel.get("type") not in THREAD_TYPES:
            if not held & perms.MANAGE_CHANNELS:
                raise _APIError(403, "Missing Permissions", 50013)
            for key in ("name", "topic", "nsfw", "rate_limit_per_user"):
                if key in body:
                    channel[key] = body[key]
            self._emit("CHANNEL_UPDATE", copy.deepcopy(channel))
            return _json_response(channel)
        meta = channel["thread_metadata"]
        if set(body) - set(self.THREAD_FIELDS):
            raise _APIError(400, "Invalid Form Body", 50035)
        for flag in ("archived", "locked", "invitable"):
            if flag in body and not isinstance(body[flag], bool):
                raise _APIError(400, "Invalid Form Body", 50035)
        if "name" in body and not 1 <= len(str(body["name"])) <= 100:
            raise _APIError(400, "Invalid Form Body", 50035)
        if "auto_archive_duration" in body and body["auto_archive_duration"] not in self.ARCHIVE_DURATIONS:
            raise _APIError(400, "Invalid Form Body", 50035)
        if meta.get("archived") and body.get("archived") is not False:
            raise _APIError(400, "Thread is archived", 50083)
        moderator = bool(held & perms.MANAGE_THREADS)
        creator = channel.get("owner_id") == str(self.bot_user["id"])
        changes = {k: v for k, v in body.items()
                   if (meta.get(k) if k in ("archived", "locked", "auto_archive_duration", "invitable") else channel.get(k))
                   != v}
        if ("locked" in changes or "rate_limit_per_user" in changes) and not moderator:
            raise _APIError(403, "Missing Permissions", 50013)
        if {"name", "auto_archive_duration"} & set(changes) or changes.get("archived") is True:
            if not (moderator or creator):
                raise _APIError(403, "Missing Permissions", 50013)
        if changes.get("archived") is False:
            if changes.get("locked", meta.get("locked")):
                if not moderator:  # unarchiving a thread that is (or stays) locked
                    raise _APIError(403, "Missing Permissions", 50013)
            elif not (moderator or creator or held & perms.SEND_MESSAGES_IN_THREADS):
                raise _APIError(403, "Missing Permissions", 50013)
        for key, value in changes.items():
            if key in ("archived", "locked", "auto_archive_duration", "invitable"):
                meta[key] = value
            else:
                channel[key] = value
        if "archived" in changes or "auto_archive_duration" in changes:
            meta["archive_timestamp"] = _now_iso()
        self._emit("THREAD_UPDATE", copy.deepcopy(channel))
        return _json_response(channel)

    def archive_thread(self, thread_id: int) -> None:
        """The thread archives itself after inactivity, as Discord does (test-side)."""
        meta = self.channels[thread_id]["thread_metadata"]
        meta["archived"] = True
        meta["archive_timestamp"] = _now_iso()
        self._emit("THREAD_UPDATE", copy.deepcopy(self.channels[thread_id]))

    def member_can_send(self, channel_id: int, user_id: int) -> bool:
        """Whether a member may post in a channel or thread now, by Discord's rules (test-side): in a
        thread Send Messages in Threads from its parent, and Manage Threads while it is locked."""
        channel = self.channels[channel_id]
        thread = channel.get("type") in THREAD_TYPES
        where = self.channels[int(channel["parent_id"])] if thread else channel
        guild = self.guilds[int(where["guild_id"])]
        member = self.members[int(where["guild_id"])][user_id]
        held = perms.channel_permissions(guild, member, where)
        if not thread:
            return bool(held & perms.SEND_MESSAGES)
        if channel["thread_metadata"].get("locked") and not held & perms.MANAGE_THREADS:
            return False
        return bool(held & perms.SEND_MESSAGES_IN_THREADS)

    def _get_channel(self, call: RecordedCall, channel_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        self._require(channel, perms.VIEW_CHANNEL)
        return _json_response(channel)

    def _post_message(self, call: RecordedCall, channel_id: str) -> web.Response:
        """Create Message, with Discord's nonce rules: a nonce is an integer or a string of up to 25
        characters; with ``enforce_nonce: true`` a nonce the same author used in the past few minutes
        returns that message and creates none (https://discord.com/developers/docs/resources/message)."""
        channel = self._channel_or_404(channel_id)
        payload = call.json or {}
        reply = isinstance(payload, dict) and payload.get("message_reference")
        self._require(channel, perms.SEND_MESSAGES | (perms.READ_MESSAGE_HISTORY if reply else 0))
        self._thread_rules(channel, editing=False)
        nonce = payload.get("nonce")
        if nonce is not None and (not isinstance(nonce, (int, str)) or len(str(nonce)) > 25):
            raise _APIError(400, "Invalid Form Body", 50035)
        key = (str(self.bot_user["id"]), str(nonce))
        if nonce is not None and payload.get("enforce_nonce"):
            seen = self._nonces.get(key)
            if seen is not None and time.monotonic() - seen[0] < NONCE_WINDOW_SECONDS:
                earlier = self.messages.get(seen[1])
                if earlier is not None and not earlier.deleted:
                    return _json_response(earlier.json)
        stored = self._create_message(_snowflake(channel_id), payload, call.files)
        if nonce is not None:
            self._nonces[key] = (time.monotonic(), stored.id)
        return _json_response(stored.json)

    def _get_message(self, call: RecordedCall, channel_id: str, message_id: str) -> web.Response:
        self._channel_or_404(channel_id)
        return _json_response(self._live_message(_snowflake(message_id), _snowflake(channel_id)).json)

    def _patch_message(self, call: RecordedCall, channel_id: str, message_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        self._require(channel, perms.SEND_MESSAGES)
        stored = self._live_message(_snowflake(message_id), _snowflake(channel_id))
        self._thread_rules(channel, editing=True)
        return _json_response(self._edit_message(stored, call.json or {}, call.files).json)

    def _delete_message(self, call: RecordedCall, channel_id: str, message_id: str) -> web.Response:
        self._channel_or_404(channel_id)
        self._delete(self._live_message(_snowflake(message_id), _snowflake(channel_id)))
        return web.Response(status=204)

    # Pins (https://discord.com/developers/docs/resources/message#pin-message): the bot needs Pin
    # Messages in the channel (split from Manage Messages, which stopped granting it on 2026-01-12;
    # discord.py 2.7 documents pin_messages); a channel holds at most MAX_PINS pinned messages.
    def _pin_message(self, call: RecordedCall, channel_id: str, message_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        self._require(channel, perms.PIN_MESSAGES)
        stored = self._live_message(_snowflake(message_id), _snowflake(channel_id))
        if not stored.json.get("pinned"):
            pinned = [m for m in self.messages.values()
                      if m.channel_id == stored.channel_id and not m.deleted and m.json.get("pinned")]
            if len(pinned) >= MAX_PINS:
                raise _APIError(400, f"Maximum number of pins reached ({MAX_PINS})", 30003)
            stored.json["pinned"] = True
        return web.Response(status=204)

    # Threads (https://discord.com/developers/docs/resources/channel#start-thread-without-message): a
    # public thread needs Create Public Threads in its parent text channel (a private one Create Private
    # Threads); `type` defaults to a private thread in v10; the name is 1-100 characters.
    def _start_thread(self, call: RecordedCall, channel_id: str) -> web.Response:
        parent = self._channel_or_404(channel_id)
        body = call.json if isinstance(call.json, dict) else {}
        if parent.get("type") not in (0, 5):  # text and announcement channels hold threads
            raise _APIError(400, "Cannot execute action on this channel type", 50024)
        kind = int(body.get("type") or PRIVATE_THREAD)
        name = str(body.get("name") or "")
        if kind not in THREAD_TYPES or not 1 <= len(name) <= 100:
            raise _APIError(400, "Invalid Form Body", 50035)
        self._require(parent, perms.CREATE_PUBLIC_THREADS if kind == PUBLIC_THREAD else perms.CREATE_PRIVATE_THREADS)
        thread: dict[str, Any] = {
            "id": str(new_snowflake()), "type": kind, "guild_id": parent.get("guild_id"), "parent_id": str(parent["id"]),
            "owner_id": str(self.bot_user["id"]), "name": name, "last_message_id": None, "rate_limit_per_user": 0,
            "message_count": 0, "member_count": 1, "total_message_sent": 0, "flags": 0,
            "thread_metadata": {"archived": False, "locked": False, "archive_timestamp": _now_iso(),
                                "auto_archive_duration": int(body.get("auto_archive_duration") or 4320)},
            "permission_overwrites": [],
        }
        self.channels[int(thread["id"])] = thread
        self._emit("THREAD_CREATE", {**copy.deepcopy(thread), "newly_created": True})
        return _json_response(thread, status=201)

    def threads_of(self, channel_id: int) -> list[dict[str, Any]]:
        """Threads started in a channel (test-side inspection)."""
        return [copy.deepcopy(c) for c in self.channels.values()
                if c["type"] in THREAD_TYPES and c.get("parent_id") == str(channel_id)]

    def _unpin_message(self, call: RecordedCall, channel_id: str, message_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        self._require(channel, perms.PIN_MESSAGES)
        stored = self._live_message(_snowflake(message_id), _snowflake(channel_id))
        stored.json["pinned"] = False
        return web.Response(status=204)

    def pinned(self, channel_id: int) -> list[int]:
        """Ids of the channel's pinned messages (test-side inspection)."""
        return [m.id for m in self.messages.values() if m.channel_id == channel_id and not m.deleted
                and m.json.get("pinned")]

    def _put_overwrite(self, call: RecordedCall, channel_id: str, overwrite_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        body = call.json if isinstance(call.json, dict) else {}
        if body.get("type") not in (0, 1):
            raise _APIError(400, "Invalid Form Body", 50035)
        overwrite = overwrite_payload(
            _snowflake(overwrite_id),
            type=body["type"],
            allow=int(body.get("allow") or 0),
            deny=int(body.get("deny") or 0),
        )
        found = self._bot_in(channel)
        if found is not None:
            self._require(channel, 0)
            if perms.overwrite_edit_refused(*found, overwrite["id"], int(overwrite["allow"]), int(overwrite["deny"])):
                raise _APIError(403, "Missing Permissions", 50013)
        others = [o for o in channel["permission_overwrites"] if o["id"] != overwrite["id"]]
        channel["permission_overwrites"] = [*others, overwrite]
        self._emit("CHANNEL_UPDATE", copy.deepcopy(channel))
        return web.Response(status=204)

    def _delete_overwrite(self, call: RecordedCall, channel_id: str, overwrite_id: str) -> web.Response:
        channel = self._channel_or_404(channel_id)
        target = str(_snowflake(overwrite_id))
        found = self._bot_in(channel)
        if found is not None:
            self._require(channel, 0)
            if perms.overwrite_delete_refused(*found):
                raise _APIError(403, "Missing Permissions", 50013)
        if not any(o["id"] == target for o in channel["permission_overwrites"]):
            raise _APIError(404, "Unknown Overwrite", 10009)
        channel["permission_overwrites"] = [o for o in channel["permission_overwrites"] if o["id"] != target]
        self._emit("CHANNEL_UPDATE", copy.deepcopy(channel))
        return web.Response(status=204)

    # ---------------------------------------------------------------- guilds & members

    def _get_guild(self, call: RecordedCall, guild_id: str) -> web.Response:
        guild = self.guilds.get(_snowflake(guild_id))
        if guild is None:
            raise _APIError(404, "Unknown Guild", 10004)
        rest = {k: v for k, v in guild.items() if k not in _GATEWAY_ONLY_GUILD_KEYS}
        if call.query.get("with_counts") in ("1", "true", "True"):
            rest["approximate_member_count"] = len(self.members.get(int(guild_id), {}))
            rest["approximate_presence_count"] = 0
        return _json_response(rest)

    def _get_member(self, call: RecordedCall, guild_id: str, user_id: str) -> web.Response:
        if _snowflake(guild_id) not in self.guilds:
            raise _APIError(404, "Unknown Guild", 10004)
        member = self.members[int(guild_id)].get(_snowflake(user_id))
        if member is None:
            raise _APIError(404, "Unknown Member", 10007)
        return _json_response(member)

    def _member_role(self, guild_id: str, user_id: str, role_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the member, the role) of Add/Remove Guild Member Role, refused as Discord refuses it:
        404 for an unknown server, member or role; 403 50013 without Manage Roles or above the bot."""
        guild = self.guilds.get(_snowflake(guild_id))
        if guild is None:
            raise _APIError(404, "Unknown Guild", 10004)
        member = self.members[int(guild_id)].get(_snowflake(user_id))
        if member is None:
            raise _APIError(404, "Unknown Member", 10007)
        role = next((r for r in guild.get("roles", []) if r["id"] == str(_snowflake(role_id))), None)
        if role is None:
            raise _APIError(404, "Unknown Role", 10011)
        bot = self.members[int(guild_id)].get(int(self.bot_user["id"]))
        if bot is not None and perms.role_grant_refused(guild, bot, role):
            raise _APIError(403, "Missing Permissions", 50013)
        return member, role

    def _put_member_role(self, call: RecordedCall, guild_id: str, user_id: str, role_id: str) -> web.Response:
        """Add Guild Member Role (https://discord.com/developers/docs/resources/guild): 204, also when the
        member has the role already."""
        member, role = self._member_role(guild_id, user_id, role_id)
        if role["id"] not in member["roles"]:
            member["roles"] = [*member["roles"], role["id"]]
        return web.Response(status=204)

    def _delete_member_role(self, call: RecordedCall, guild_id: str, user_id: str, role_id: str) -> web.Response:
        member, role = self._member_role(guild_id, user_id, role_id)
        member["roles"] = [r for r in member["roles"] if r != role["id"]]
        return web.Response(status=204)

    def member_roles(self, guild_id: int, user_id: int) -> list[int]:
        """The roles a member holds now (test assertions)."""
        return [int(r) for r in self.members[guild_id][user_id]["roles"]]


# ------------------------------------------------------------------------------------------------- harness

ClientT = TypeVar("ClientT", bound=discord.Client)

# Gateway events are only delivered when the matching intent is enabled; emulate that filter.
_EVENT_INTENTS: dict[str, str] = {
    "CHANNEL_UPDATE": "guilds",
    "THREAD_CREATE": "guilds",
    "THREAD_UPDATE": "guilds",
    "MESSAGE_CREATE": "guild_messages",
    "MESSAGE_UPDATE": "guild_messages",
    "MESSAGE_DELETE": "guild_messages",
}


class DiscordHarness(Generic[ClientT]):
    """Runs a real discord.py client against :class:`FakeDiscordAPI` without a gateway connection.

    Boot sequence (also used by :meth:`restart`): ``client_factory()`` → ``await client.login(token)``
    (GET /users/@me, GET /oauth2/applications/@me, then ``setup_hook``) → READY → one GUILD_CREATE per
    guild known to the fake → ``wait_until_ready``. READY is parsed for real so ``on_ready`` and
    ``wait_until_ready`` behave; its guild-streaming window (``guild_ready_timeout``, 2 s by default) is
    shortened to keep tests fast.

    ``token`` defaults to the fake's (a different one makes login fail with ``LoginFailure``).
    The harness does not point discord.py anywhere: ``client_factory`` builds a client configured for
    the fake (nubi's adapter with ``api_base_url=fake.base_url``, or any client after
    ``use_endpoints``), so pass the started ``fake`` it was configured for. Those addresses are
    process-wide in discord.py, so only one harness may be active at a time.
    """

    def __init__(
        self,
        client_factory: Callable[[], ClientT],
        *,
        guilds: Sequence[Mapping[str, Any]] = (),
        fake: FakeDiscordAPI | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        guild_ready_timeout: float | None = 0.01,
    ) -> None:
        self.fake = fake or FakeDiscordAPI()
        self._owns_fake = fake is None
        self._factory = client_factory
        self._guilds = list(guilds)
        self.token = token
        self.timeout = timeout
        self._guild_ready_timeout = guild_ready_timeout
        self._client: ClientT | None = None
        self._listening = False
        self.gateway_errors: list[tuple[str, BaseException]] = []

    @property
    def client(self) -> ClientT:
        """The currently running client (replaced by :meth:`restart`)."""
        if self._client is None:
            raise RuntimeError("DiscordHarness is not started")
        return self._client

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        if exc_type is None and self.gateway_errors:
            event, error = self.gateway_errors[0]
            raise RuntimeError(f"discord.py failed to handle gateway event {event}") from error

    async def start(self) -> None:
        """Start the fake (if owned) and boot a client."""
        if self._owns_fake:
            await self.fake.start()
        for guild in self._guilds:
            self.fake.add_guild(guild)
        self.fake.add_gateway_listener(self._on_gateway_event)
        self._listening = True
        try:
            self._client = await self._boot()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the client and stop an owned fake."""
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._listening:
            self.fake.remove_gateway_listener(self._on_gateway_event)
            self._listening = False
        if self._owns_fake:
            await self.fake.stop()

    async def restart(self) -> ClientT:
        """Simulate a process restart: close the client and boot a fresh one against the same fake state."""
        await self.client.close()
        self._client = await self._boot()
        return self._client

    async def _boot(self) -> ClientT:
        client = self._factory()
        try:
            await client.login(self.token or self.fake.token)
            state = client._connection
            if self._guild_ready_timeout is not None:
                state.guild_ready_timeout = self._guild_ready_timeout
            state.parsers["READY"](self.fake.ready_event())
            for guild_id in self.fake.guilds:
                state.parsers["GUILD_CREATE"](self.fake.guild_create_event(guild_id))
            await asyncio.wait_for(client.wait_until_ready(), self.timeout)
        except BaseException:
            await client.close()
            raise
        return client

    def _on_gateway_event(self, event: str, payload: dict[str, Any]) -> None:
        """Deliver REST echoes like the gateway would; failures are collected and re-raised on exit."""
        client = self._client
        if client is None or client.is_closed() or not getattr(client.intents, _EVENT_INTENTS[event]):
            return
        try:
            client._connection.parsers[event](payload)
        except Exception as error:  # the real gateway reader would only log this
            _log.exception("discord.py failed to parse %s", event)
            self.gateway_errors.append((event, error))

    async def dispatch_event(self, event: str, payload: Mapping[str, Any]) -> None:
        """Feed a gateway event (e.g. "MESSAGE_CREATE") and wait up to ``self.timeout`` for the tasks it
        spawned synchronously (tree invoker, view dispatch, event listeners) to finish.

        Exceptions escaping those tasks (e.g. an error handler that itself raised) are re-raised here;
        on the real gateway they would only be logged.
        """
        spawned = self._parse(event, payload)
        if not spawned:
            return
        done, pending = await asyncio.wait(spawned, timeout=self.timeout)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            names = sorted(task.get_name() for task in pending)
            raise TimeoutError(f"{event} handling did not finish within {self.timeout}s: {names}")
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def dispatch_interaction(self, payload: Mapping[str, Any]) -> InteractionCallback | None:
        """Deliver INTERACTION_CREATE, wait until discord.py finished handling it and return the initial
        response the fake recorded (None if the library never responded, e.g. an unknown custom_id)."""
        self.fake.register_interaction(payload)
        await self.dispatch_event("INTERACTION_CREATE", payload)
        return self.fake.interaction_response(int(payload["id"]))

    async def press_many(self, payloads: Iterable[Mapping[str, Any]], *, give_up_after: float = 60.0) -> list[Press]:
        """Deliver many INTERACTION_CREATEs as one burst, the way a busy gateway hands them over, and wait
        until discord.py finished handling each one (so its initial response, if any, has reached the
        fake) or until ``give_up_after`` seconds have passed.

        Load-safe where :meth:`dispatch_interaction` is not: it cancels nothing and raises nothing on
        behalf of a press. A press still running when it gives up is left to finish (``finished_at`` is
        None, ``callback`` None if it had not been answered yet); what a press's tasks raised is in
        ``error``. Work the presses merely set off (e.g. throttled edits of a raid post) is not waited
        for: the only tasks it looks at are the ones discord.py spawned for each press.
        """
        presses: list[tuple[Press, set[asyncio.Task[Any]]]] = []
        ended: dict[asyncio.Task[Any], float] = {}
        for payload in payloads:
            self.fake.register_interaction(payload)
            press = Press(int(payload["id"]), time.monotonic())
            tasks = self._parse("INTERACTION_CREATE", payload)
            for task in tasks:
                task.add_done_callback(lambda t: ended.setdefault(t, time.monotonic()))
            presses.append((press, tasks))
        everything = set().union(*(tasks for _, tasks in presses))
        if everything:
            await asyncio.wait(everything, timeout=give_up_after)
        responses: dict[int, InteractionCallback] = {}
        for callback in self.fake.callbacks:
            responses.setdefault(callback.interaction_id, callback)
        for press, tasks in presses:
            press.callback = responses.get(press.interaction_id)
            if all(task.done() for task in tasks):
                press.finished_at = max((ended.get(t, time.monotonic()) for t in tasks), default=press.dispatched_at)
            failed = [t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None]
            press.error = failed[0].exception() if failed else None
        return [press for press, _ in presses]

    def _parse(self, event: str, payload: Mapping[str, Any]) -> set[asyncio.Task[Any]]:
        """Run discord.py's parser for a gateway event; returns the tasks it spawned (synchronously, so
        nothing else can have started a task in between)."""
        before = asyncio.all_tasks()
        self.client._connection.parsers[event](copy.deepcopy(dict(payload)))  # discord.py mutates payloads
        return asyncio.all_tasks() - before
