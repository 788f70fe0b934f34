"""Who may run moderator commands in a chat: its administrators and creator, plus configured ids.

Telegram is asked (getChatMember) once per member and chat per minute; the answer is cached
because every button press needs it and admin lists change rarely.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from telegram import Bot, Chat, ChatMember, User
from telegram.error import TelegramError

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0
_PRUNE_AT = 10_000
_STAFF = (ChatMember.ADMINISTRATOR, ChatMember.OWNER)


class Moderators:
    def __init__(self, bot: Bot, moderator_ids: Iterable[int], *, ttl: float = CACHE_SECONDS) -> None:
        self._bot = bot
        self._ids = frozenset(moderator_ids)
        self._ttl = ttl
        self._cache: dict[tuple[int, int], tuple[float, bool]] = {}

    async def check(self, chat: Chat, user: User, sender_chat: Chat | None = None) -> bool:
        if user.id in self._ids:
            return True
        if chat.type == Chat.PRIVATE:
            return False
        if sender_chat is not None and sender_chat.id == chat.id:
            return True  # an anonymous administrator, speaking as the group
        now = asyncio.get_running_loop().time()
        key = (chat.id, user.id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            member = await self._bot.get_chat_member(chat.id, user.id)
        except TelegramError as exc:
            log.warning("could not look up member %s in chat %s: %s", user.id, chat.id, exc)
            return False
        staff = member.status in _STAFF
        if len(self._cache) >= _PRUNE_AT:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
        self._cache[key] = (now + self._ttl, staff)
        return staff
