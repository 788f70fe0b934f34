"""Which Telegram chat a community is, for events that only carry a community id."""

from __future__ import annotations

from core import catalog
from core.storage.db import Database

PLATFORM = "telegram"


class ChatDirectory:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: dict[int, int | None] = {}

    async def chat_id(self, community_id: int) -> int | None:
        """The Telegram chat id of a community, or None when the community lives elsewhere."""
        if community_id not in self._known:
            rows = await catalog.communities(self._db, community_id=community_id)
            chat = next((r["externalId"] for r in rows if r["platform"] == PLATFORM), None)
            self._known[community_id] = int(chat) if chat is not None else None
        return self._known[community_id]
