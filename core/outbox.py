"""The outbox of chat posts: what nubi owes a chat (raid posts, reports), delivered at least once.

A post is written as a row in the transaction that makes it due (`enqueue`: raid start, raid end),
so nothing the database committed can be forgotten. Delivering is one rule for every adapter
(`deliver`): claim the row with a lease only one process wins, send, then mark it sent. A failure of
any kind (a 429, a 5xx, a dropped connection, a refusal) releases the row with a later `due_at`, and
the scheduler sweep republishes due rows (`due` -> PostDue) until one is sent. A crash between the
send and the mark leaves the lease to expire, so the post goes out again: one repeat, never a loss.
Each row carries a `nonce` for platforms that deduplicate a repeat (Discord's enforce_nonce).

The same rule undoes a pinned raid post when the raid ends (kind `unpin`, written with the end): an
unpin that meets a transient error is retried by the sweep, after a restart too, until the chat took it.

A partner raid (core/partners.py) owes each partner chat its own post and report: rows keyed
`raid:<raid>:<row>` and `report:<raid>:<row>` (the raid_chats row), with the partner chat's community, so
the sweep hands each to its platform's adapter and each chat gets its post once; a pinned raid owes each
partner chat its unpin too (`unpin:<raid>:<row>`).

A sent report is marked `stale` when its numbers settle later (a final sweep, a moderator's review,
the verification window closing): delivering it again edits the message in place.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.events import PostDue
from core.storage.db import Database
from core.storage.models import Community
from core.storage.outbox_models import ChatPost
from core.storage.upsert import insert
from core.throttle import RetryLater

log = logging.getLogger(__name__)

CHAT_PLATFORMS = ("telegram", "discord")
LEASE = timedelta(minutes=2)  # longer than a send may take (discord.py waits out 429s up to 30 s)
FIRST_RETRY = 5.0  # seconds after a failure that named no wait; doubled per attempt
MAX_RETRY = 600.0
GIVE_UP_AFTER = timedelta(days=1)  # a post still unsent a day later is stale news: the sweep stops


@dataclass(frozen=True)
class Delivery:
    """A claimed row: what to send (or, `edit`, which sent message to redraw)."""

    post_id: int
    key: str
    kind: str
    community_id: int
    raid_id: int | None
    nonce: str
    attempt: int
    edit: bool
    ref: dict[str, Any] | None


Send = Callable[[Delivery], Awaitable[dict[str, Any] | None]]


def raid_key(raid_id: int) -> str:
    return f"raid:{raid_id}"


def report_key(raid_id: int) -> str:
    return f"report:{raid_id}"


def partner_raid_key(raid_id: int, chat_row: int) -> str:
    """The raid post owed to a partner chat of the raid (core/partners.py: its raid_chats row)."""
    return f"raid:{raid_id}:{chat_row}"


def partner_report_key(raid_id: int, chat_row: int) -> str:
    return f"report:{raid_id}:{chat_row}"


def partner_unpin_key(raid_id: int, chat_row: int) -> str:
    """The unpin a pinned raid post in a partner chat is owed when the raid ends."""
    return f"unpin:{raid_id}:{chat_row}"


def partner_row(key: str) -> int | None:
    """The raid_chats row a partner post's key names (None for every other post)."""
    kind, _sep, rest = key.partition(":")
    _raid, sep, row = rest.partition(":")
    return int(row) if kind in ("raid", "report", "unpin") and sep and row.isdigit() else None


def unpin_key(raid_id: int) -> str:
    """The unpin a pinned raid post is owed when the raid ends (kind "unpin"): repeating it is harmless."""
    return f"unpin:{raid_id}"


async def enqueue(s: AsyncSession, kind: str, key: str, community_id: int, raid_id: int | None, now: datetime) -> None:
    """Owe a post to a community's chat, inside the caller's transaction; twice is once. Only chats
    (Telegram, Discord) get posts: web and console communities have nowhere to post."""
    platform = await s.scalar(select(Community.platform).where(Community.id == community_id))
    if platform not in CHAT_PLATFORMS:
        return
    await s.execute(
        insert(s, ChatPost)
        .values(key=key, community_id=community_id, raid_id=raid_id, kind=kind, nonce=secrets.token_hex(12),
                created_at=now, due_at=now, attempts=0, stale=False)
        .on_conflict_do_nothing(index_elements=["key"])
    )


async def mark_stale(s: AsyncSession, key: str, now: datetime) -> bool:
    """A sent post shows old numbers: deliver it again as an edit. True if there was a sent post."""
    row = await s.scalar(
        update(ChatPost).where(ChatPost.key == key, ChatPost.sent_at.is_not(None))
        .values(stale=True, due_at=now).returning(ChatPost.id)
    )
    return row is not None


class Outbox:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def due(self) -> list[PostDue]:
        """Rows to deliver now (unsent or stale, not leased, due), oldest first, for the sweep."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> list[PostDue]:
            rows = (await s.execute(
                select(ChatPost.key, ChatPost.kind, ChatPost.raid_id, ChatPost.community_id, Community.platform)
                .join(Community, Community.id == ChatPost.community_id)
                .where(or_(ChatPost.sent_at.is_(None), ChatPost.stale.is_(True)))
                .where(ChatPost.due_at <= now, ChatPost.created_at >= now - GIVE_UP_AFTER)
                .where(or_(ChatPost.lease_until.is_(None), ChatPost.lease_until <= now))
                .order_by(ChatPost.id)
            )).all()
            return [PostDue(r.raid_id or 0, r.community_id, r.platform, kind=r.kind, key=r.key) for r in rows]

        return await self.db.read(op)

    async def pending(self, key: str) -> bool:
        """Is there still something to deliver for `key` (unsent, or a stale edit)?"""
        async def op(s: AsyncSession) -> bool:
            row = (await s.execute(select(ChatPost.sent_at, ChatPost.stale).where(ChatPost.key == key))).first()
            return row is not None and (row.sent_at is None or row.stale)

        return await self.db.read(op)

    async def deliver(self, key: str, send: Send) -> bool:
        """The one rule: claim, send, mark. True when this call delivered it. A RetryLater from `send`
        is passed on (after releasing the row) so the caller may also retry in-process sooner."""
        claimed = await self._claim(key)
        if claimed is None:
            return False  # sent already, not owed, or another process is on it
        try:
            ref = await send(claimed)
        except RetryLater as exc:
            await self._release(claimed, exc.seconds, f"retry after {exc.seconds:g}s")
            raise
        except Exception as exc:  # any failure, even one the platform library does not name: try later
            wait = min(FIRST_RETRY * 2 ** (claimed.attempt - 1), MAX_RETRY)
            log.warning("delivering %s failed (attempt %d), again in %.0fs: %r", key, claimed.attempt, wait, exc)
            await self._release(claimed, wait, repr(exc))
            return False
        await self._sent(claimed, ref)
        return True

    async def _claim(self, key: str) -> Delivery | None:
        now = self.clock.now()

        async def op(s: AsyncSession) -> Delivery | None:
            row = (await s.execute(
                update(ChatPost)
                .where(ChatPost.key == key, or_(ChatPost.sent_at.is_(None), ChatPost.stale.is_(True)))
                .where(or_(ChatPost.lease_until.is_(None), ChatPost.lease_until <= now))
                .values(lease_until=now + LEASE, attempts=ChatPost.attempts + 1)
                .returning(ChatPost.id, ChatPost.kind, ChatPost.community_id, ChatPost.raid_id, ChatPost.nonce,
                           ChatPost.attempts, ChatPost.sent_at, ChatPost.ref)
            )).first()
            if row is None:
                return None
            return Delivery(row.id, key, row.kind, row.community_id, row.raid_id, row.nonce, row.attempts,
                            row.sent_at is not None, row.ref)

        return await self.db.write(op)

    async def _sent(self, d: Delivery, ref: dict[str, Any] | None) -> None:
        now = self.clock.now()

        async def op(s: AsyncSession) -> None:
            # An edit drew the report as it was when `send` read it; one that changed later marks it again.
            values: dict[str, Any] = {"lease_until": None, "last_error": None, "stale": False}
            if not d.edit:
                values |= {"sent_at": now, "ref": ref}
            await s.execute(update(ChatPost).where(ChatPost.id == d.post_id).values(**values))

        await self.db.write(op)

    async def _release(self, d: Delivery, wait: float, error: str) -> None:
        now = self.clock.now()

        async def op(s: AsyncSession) -> None:
            await s.execute(
                update(ChatPost).where(ChatPost.id == d.post_id)
                .values(lease_until=None, due_at=now + timedelta(seconds=wait), last_error=error[:200])
            )

        await self.db.write(op)


__all__ = ["Delivery", "Outbox", "enqueue", "mark_stale", "partner_raid_key", "partner_report_key", "partner_row",
           "partner_unpin_key", "raid_key", "report_key", "unpin_key"]
