"""Partner chats: linking two chats (of one community or of two) so a raid runs in both.

`/community link` in chat A gives a one-time code (8 letters and digits, ten minutes, SHA-256 stored,
bound to chat A; a new one replaces A's unused code). `/community join CODE` from a moderator of chat
B, on any platform, redeems it: the one conditional UPDATE that sets `used_at` wins, so a code links
once. A link is two rows (A -> B, B -> A) written in that transaction. A raid started in a linked chat
with `partners` gets a `raid_chats` row per partner chat, written in the raid's start transaction with
an outbox row per chat (core/outbox.py `partner_raid_key`), so each chat is owed its post, and at the
end its report, exactly once; each adapter delivers the rows of its platform.

Joins and claims from a partner chat count for the one raid: the raid's community keeps its board,
its bans apply, and the partner platform's word on who moderates is not written into it.

A pinned raid (`pin`) is pinned in each partner chat too, its unpin owed there through the outbox
(`unpin:<raid>:<row>`, written with the raid's end). Before the moderator is answered, each partner
chat on a platform whose adapter runs in this process is checked for the rights the raid needs there
(`checkers`, one per platform, registered by the adapter): the raid starts all the same, and the
answer names each chat that lacks a right and what the raid skips there (lock, pin), or that a chat
could not be checked because its platform does not run here (`start_notes`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.codes import CODE_TTL, Issued, code_hash, new_code, parsed, shown
from core.directory import ChatRef, ensure_community
from core.errors import Conflict, NotFound, ValidationError
from core.i18n import _
from core.storage.db import Database
from core.storage.models import Community, Raid
from core.storage.partner_models import ChatLink, ChatLinkCode, RaidChat
from core.storage.upsert import insert

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lacking:
    """A right the bot lacks in a partner chat: its name as the platform shows it (translated), and what
    the raid skips there without it: "lock", "pin", or None when the post itself is at stake."""

    right: str
    skips: str | None = None


# An adapter's check of a chat on its platform: (chat, lock wanted, pin wanted) -> what it lacks there.
PartnerCheck = Callable[[ChatRef, bool, bool], Awaitable[list[Lacking]]]


class ChatLinkRefused(Conflict):
    code = "CHAT_LINK_REFUSED"


@dataclass(frozen=True)
class PartnerChat:
    """A chat linked to this one: `link_id` names the link here (for `/community unlink`)."""

    link_id: int
    chat: ChatRef

    @property
    def shown(self) -> str:
        name = self.chat.title or self.chat.external_id
        return f"{name} ({self.chat.platform}" + (f", <#{self.chat.channel}>" if self.chat.channel else "") + ")"


@dataclass(frozen=True)
class RaidChatRef:
    """A partner chat of a raid and where the raid's post is there (None until it went up)."""

    id: int
    raid_id: int
    community_id: int
    chat: ChatRef
    progress_ref: dict[str, Any] | None


async def linked_chats(s: AsyncSession, community_id: int, channel: str) -> list[tuple[int, str]]:
    """The partner chats of a chat: (community id, channel) pairs, in link order."""
    rows = (await s.execute(
        select(ChatLink.partner_community_id, ChatLink.partner_channel_id)
        .where(ChatLink.community_id == community_id, ChatLink.channel_id == channel).order_by(ChatLink.id))).all()
    return [(r[0], r[1]) for r in rows]


async def add_raid_chats(s: AsyncSession, raid_id: int, community_id: int, channel: str) -> list[tuple[int, int]]:
    """In a raid's start transaction: a row per partner chat of its chat. (row id, community id) pairs."""
    added = []
    for partner_community, partner_channel in await linked_chats(s, community_id, channel):
        row = RaidChat(raid_id=raid_id, community_id=partner_community, channel_id=partner_channel)
        s.add(row)
        await s.flush()
        added.append((row.id, partner_community))
    return added


async def raid_chats_in_tx(s: AsyncSession, raid_id: int) -> list[tuple[int, int]]:
    """A raid's partner chats: (row id, community id) pairs."""
    rows = (await s.execute(select(RaidChat.id, RaidChat.community_id).where(RaidChat.raid_id == raid_id)
                            .order_by(RaidChat.id))).all()
    return [(r[0], r[1]) for r in rows]


def _partner_raids(chat: ChatRef) -> Any:
    """Raids this chat takes part in as a partner chat."""
    return (select(RaidChat.raid_id)
            .join(Community, Community.id == RaidChat.community_id)
            .where(Community.platform == chat.platform, Community.external_id == chat.external_id,
                   RaidChat.channel_id == chat.channel_key))


async def active_partner_raid(s: AsyncSession, chat: ChatRef) -> int | None:
    """The newest active raid this chat takes part in as a partner chat."""
    return await s.scalar(
        select(Raid.id).where(Raid.id.in_(_partner_raids(chat)), Raid.status == "active")
        .order_by(Raid.id.desc()).limit(1))


async def is_partner_chat(s: AsyncSession, raid_id: int, chat: ChatRef) -> bool:
    return await s.scalar(_partner_raids(chat).where(RaidChat.raid_id == raid_id).limit(1)) is not None


class PartnerService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock
        self.checkers: dict[str, PartnerCheck] = {}  # platform -> its adapter's rights check (when it runs here)

    async def issue(self, chat: ChatRef) -> Issued:
        """A one-time code that links another chat to this one."""
        now = self.clock.now()
        code = new_code()

        async def op(s: AsyncSession) -> None:
            community_id = await ensure_community(s, chat, now)
            await s.execute(delete(ChatLinkCode).where(or_(
                and_(ChatLinkCode.community_id == community_id, ChatLinkCode.channel_id == chat.channel_key,
                     ChatLinkCode.used_at.is_(None)),
                ChatLinkCode.expires_at < now - CODE_TTL)))
            s.add(ChatLinkCode(code_hash=code_hash(code), community_id=community_id, channel_id=chat.channel_key,
                               created_at=now, expires_at=now + CODE_TTL))

        await self.db.write(op)
        return Issued(shown(code), now + CODE_TTL)

    async def join(self, chat: ChatRef, code: str) -> PartnerChat:
        """Link this chat with the chat that asked for `code`. Returns that chat, as linked here."""
        norm = parsed(code)
        now = self.clock.now()

        async def op(s: AsyncSession) -> PartnerChat:
            won = (await s.execute(
                update(ChatLinkCode)
                .where(ChatLinkCode.code_hash == code_hash(norm), ChatLinkCode.used_at.is_(None),
                       ChatLinkCode.expires_at > now)
                .values(used_at=now)
                .returning(ChatLinkCode.community_id, ChatLinkCode.channel_id))).first()
            if won is None:
                used = await s.scalar(select(ChatLinkCode.used_at).where(ChatLinkCode.code_hash == code_hash(norm)))
                if used is not None:
                    raise ChatLinkRefused(_("That code has been used already. Ask for a new one with /community link."))
                raise NotFound(_("I don't know that code, or it has expired (codes last {minutes} minutes). Ask for "
                                 "a new one with /community link.").format(minutes=CODE_TTL.seconds // 60))
            here = await ensure_community(s, chat, now)
            there, there_channel = won[0], won[1]
            if (here, chat.channel_key) == (there, there_channel):
                raise ValidationError(_("Send this code in the other chat, not in the one that asked for it."),
                                      field="code")
            for a, a_channel, b, b_channel in ((here, chat.channel_key, there, there_channel),
                                               (there, there_channel, here, chat.channel_key)):
                await s.execute(
                    insert(s, ChatLink)
                    .values(community_id=a, channel_id=a_channel, partner_community_id=b, partner_channel_id=b_channel,
                            created_at=now)
                    .on_conflict_do_nothing(index_elements=["community_id", "channel_id", "partner_community_id",
                                                            "partner_channel_id"]))
            link_id = await s.scalar(select(ChatLink.id).where(
                ChatLink.community_id == here, ChatLink.channel_id == chat.channel_key,
                ChatLink.partner_community_id == there, ChatLink.partner_channel_id == there_channel))
            return PartnerChat(link_id or 0, await _chat(s, there, there_channel))

        return await self.db.write(op)

    async def chats(self, chat: ChatRef) -> list[PartnerChat]:
        async def op(s: AsyncSession) -> list[PartnerChat]:
            community_id = await _community_id(s, chat)
            if community_id is None:
                return []
            rows = (await s.execute(
                select(ChatLink.id, ChatLink.partner_community_id, ChatLink.partner_channel_id)
                .where(ChatLink.community_id == community_id, ChatLink.channel_id == chat.channel_key)
                .order_by(ChatLink.id))).all()
            return [PartnerChat(r[0], await _chat(s, r[1], r[2])) for r in rows]

        return await self.db.read(op)

    async def unlink(self, chat: ChatRef, link_id: int) -> bool:
        """Remove a link of this chat (both directions). False when this chat has no such link."""
        async def op(s: AsyncSession) -> bool:
            community_id = await _community_id(s, chat)
            row = (await s.execute(
                delete(ChatLink)
                .where(ChatLink.id == link_id, ChatLink.community_id == community_id,
                       ChatLink.channel_id == chat.channel_key)
                .returning(ChatLink.partner_community_id, ChatLink.partner_channel_id))).first()
            if row is None:
                return False
            await s.execute(delete(ChatLink).where(
                ChatLink.community_id == row[0], ChatLink.channel_id == row[1],
                ChatLink.partner_community_id == community_id, ChatLink.partner_channel_id == chat.channel_key))
            return True

        return await self.db.write(op)

    # -- a raid's partner chats (adapters post there) --------------------------------------------------

    async def raid_chats(self, raid_id: int, platform: str | None = None) -> list[RaidChatRef]:
        async def op(s: AsyncSession) -> list[RaidChatRef]:
            rows = (await s.execute(
                select(RaidChat.id, RaidChat.community_id, RaidChat.channel_id, RaidChat.progress_ref,
                       Community.platform, Community.external_id, Community.title)
                .join(Community, Community.id == RaidChat.community_id)
                .where(RaidChat.raid_id == raid_id).order_by(RaidChat.id))).all()
            return [RaidChatRef(r.id, raid_id, r.community_id, ChatRef(r.platform, r.external_id, r.title,
                                                                          r.channel_id or None), r.progress_ref)
                    for r in rows if platform is None or r.platform == platform]

        return await self.db.read(op)

    async def raid_chat(self, row_id: int) -> RaidChatRef | None:
        async def op(s: AsyncSession) -> int | None:
            return await s.scalar(select(RaidChat.raid_id).where(RaidChat.id == row_id))

        raid_id = await self.db.read(op)
        if raid_id is None:
            return None
        return next((c for c in await self.raid_chats(raid_id) if c.id == row_id), None)

    async def start_notes(self, raid_id: int, *, lock: bool, pin: bool) -> list[str]:
        """What the moderator who started a partner raid should know about its partner chats: a line per
        chat that lacks a right (and what the raid skips there), or that cannot be checked from here.
        Never raises: a check that fails is a note too, and the raid runs all the same."""
        notes = []
        for row in await self.raid_chats(raid_id):
            name = PartnerChat(row.id, row.chat).shown
            check = self.checkers.get(row.chat.platform)
            if check is None:
                notes.append(_("Partner chat {chat}: I can't check my rights there, because my {platform} side "
                               "does not run in this process.").format(chat=name, platform=row.chat.platform))
                continue
            try:
                lacking = await check(row.chat, lock, pin)
            except Exception as exc:  # the platform did not answer: say so, the raid goes on
                log.warning("checking partner chat %s of raid %s failed: %r", name, raid_id, exc)
                notes.append(_("Partner chat {chat}: I couldn't check my rights there just now.").format(chat=name))
                continue
            if lacking:
                notes.append(gap_note(name, lacking))
        return notes

    async def set_progress_ref(self, row_id: int, ref: dict[str, Any]) -> None:
        """Where the adapter posted the raid in this partner chat, so edits survive a restart."""
        async def op(s: AsyncSession) -> None:
            await s.execute(update(RaidChat).where(RaidChat.id == row_id).values(progress_ref=ref))

        await self.db.write(op)


def gap_note(name: str, lacking: list[Lacking]) -> str:
    """One partner chat's missing rights and what the raid skips there, in one line."""
    rights = ", ".join(dict.fromkeys(item.right for item in lacking))
    text = _("Partner chat {chat}: I'm missing {rights} there.").format(chat=name, rights=rights)
    skips = {item.skips for item in lacking}
    if None in skips:
        text += " " + _("Its raid post there may not go up or stay up to date.")
    if "lock" in skips:
        text += " " + _("The raid runs unlocked there.")
    if "pin" in skips:
        text += " " + _("Its raid post there won't be pinned.")
    return text


async def _community_id(s: AsyncSession, chat: ChatRef) -> int | None:
    return await s.scalar(select(Community.id).where(Community.platform == chat.platform,
                                                     Community.external_id == chat.external_id))


async def _chat(s: AsyncSession, community_id: int, channel: str) -> ChatRef:
    row = (await s.execute(select(Community.platform, Community.external_id, Community.title)
                           .where(Community.id == community_id))).one()
    return ChatRef(row[0], row[1], row[2], channel or None)
