"""Read-only lookups for API adapters: communities, the raid behind a session, a claim's community, bans,
a community's chat links and a raid's partner chats (core/partners.py writes them).

The services act on ids; a REST or MCP client first has to find those ids (and the API has to know
which community a claim or a raid session belongs to before it lets a scoped key touch it).
"""

from __future__ import annotations

import uuid
import weakref
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.directory import LEGACY_CHANNEL
from core.storage.db import Database
from core.storage.models import Ban, Community, Member, Raid, RaidAction
from core.storage.partner_models import ChatLink, RaidChat


def _community(row: Community) -> dict[str, Any]:
    return {
        "id": row.id,
        "platform": row.platform,
        "externalId": row.external_id,
        "title": row.title,
        "createdAt": row.created_at.isoformat(),
    }


async def communities(db: Database, *, community_id: int | None = None) -> list[dict[str, Any]]:
    """Every community (or the one with `community_id`), oldest first."""

    async def op(s: AsyncSession) -> list[dict[str, Any]]:
        q = select(Community).order_by(Community.id)
        if community_id is not None:
            q = q.where(Community.id == community_id)
        return [_community(r) for r in (await s.scalars(q)).all()]

    return await db.read(op)


async def community_id_of(db: Database, platform: str, external_id: str) -> int | None:
    """The id of a community known by its platform chat id, without creating it."""
    return await db.read(
        lambda s: s.scalar(
            select(Community.id).where(Community.platform == platform, Community.external_id == external_id)
        )
    )


async def community_name(db: Database, community_id: int) -> str | None:
    """A community's "<platform>:<external id>" (the name keys are scoped with); None if there is none."""
    found = (await db.read(lambda s: s.execute(
        select(Community.platform, Community.external_id).where(Community.id == community_id)))).first()
    return None if found is None else f"{found[0]}:{found[1]}"


async def community_name_of_raid(db: Database, raid_id: int) -> str | None:
    """The "<platform>:<external id>" of a raid's community; None for no such raid."""
    found = (await db.read(lambda s: s.execute(
        select(Community.platform, Community.external_id).join(Raid, Raid.community_id == Community.id)
        .where(Raid.id == raid_id)))).first()
    return None if found is None else f"{found[0]}:{found[1]}"


async def raid_of_session(db: Database, session_id: str) -> int | None:
    """The raid whose own session (type `raid`) this is; None for any other or unknown session."""
    try:
        sid = str(uuid.UUID(session_id))
    except ValueError:
        return None
    return await db.read(lambda s: s.scalar(select(Raid.id).where(Raid.session_id == sid)))


# A raid never changes community once it is in a current one: safe to remember, per database. The one
# exception is a raid of an old Discord channel community (`channel:<id>`, migration 0008), moved into
# its server's community when the adapter first sees the channel: those are never remembered. Raid ids
# are only unique within one database, so a process that opens two (tests, a restore) must not answer
# one's raid from the other's.
_RAID_COMMUNITY: weakref.WeakKeyDictionary[Database, dict[int, int]] = weakref.WeakKeyDictionary()


async def community_of_raid(db: Database, raid_id: int) -> int | None:
    known = _RAID_COMMUNITY.setdefault(db, {})
    if raid_id not in known:
        found = (await db.read(lambda s: s.execute(
            select(Raid.community_id, Community.external_id).join(Community, Community.id == Raid.community_id)
            .where(Raid.id == raid_id)))).first()
        if found is None:
            return None
        if found.external_id.startswith(LEGACY_CHANNEL):
            return found.community_id
        if len(known) > 100_000:
            known.clear()
        known[raid_id] = found.community_id
    return known[raid_id]


async def community_of_claim(db: Database, claim_id: int) -> int | None:
    return await db.read(
        lambda s: s.scalar(
            select(Raid.community_id).join(RaidAction, RaidAction.raid_id == Raid.id).where(RaidAction.id == claim_id)
        )
    )


async def member_exists(db: Database, member_id: int) -> bool:
    return (await db.read(lambda s: s.scalar(select(Member.id).where(Member.id == member_id)))) is not None


async def bans(db: Database, community_id: int) -> list[dict[str, Any]]:
    async def op(s: AsyncSession) -> list[dict[str, Any]]:
        rows = (
            await s.execute(
                select(Ban, Member.display_name)
                .join(Member, Member.id == Ban.member_id)
                .where(Ban.community_id == community_id)
                .order_by(Ban.id)
            )
        ).all()
        return [
            {"memberId": b.member_id, "name": name, "reason": b.reason, "bannedBy": b.banned_by,
             "createdAt": b.created_at.isoformat()}
            for b, name in rows
        ]

    return await db.read(op)


def _chat(platform: str, external_id: str, title: str | None, channel: str) -> dict[str, Any]:
    return {"platform": platform, "id": external_id, "title": title, "channel": channel or None}


async def partner_chats(db: Database, raid_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each raid's partner chats (core/partners.py), in the order they were added: where it is posted
    besides its own chat, and whether that post went up yet. One read for a page of raids."""
    if not raid_ids:
        return {}

    async def op(s: AsyncSession) -> dict[int, list[dict[str, Any]]]:
        rows = (await s.execute(
            select(RaidChat.raid_id, RaidChat.channel_id, RaidChat.progress_ref, Community.platform,
                   Community.external_id, Community.title)
            .join(Community, Community.id == RaidChat.community_id)
            .where(RaidChat.raid_id.in_(set(raid_ids))).order_by(RaidChat.id))).all()
        found: dict[int, list[dict[str, Any]]] = {r: [] for r in raid_ids}
        for r in rows:
            found[r.raid_id].append({**_chat(r.platform, r.external_id, r.title, r.channel_id),
                                     "posted": r.progress_ref is not None})
        return found

    return await db.read(op)


async def chat_links(db: Database, community_id: int, *, link_id: int | None = None) -> list[dict[str, Any]]:
    """A community's links to other chats (one row per link of each of its chats), as `/community chats`
    lists them per chat: the link's number, the chat of this community it belongs to, and the partner."""
    partner = Community.__table__.alias("partner")

    async def op(s: AsyncSession) -> list[dict[str, Any]]:
        q = (select(ChatLink.id, ChatLink.channel_id, ChatLink.partner_channel_id, ChatLink.created_at,
                    partner.c.platform, partner.c.external_id, partner.c.title)
             .join(partner, partner.c.id == ChatLink.partner_community_id)
             .where(ChatLink.community_id == community_id).order_by(ChatLink.id))
        if link_id is not None:
            q = q.where(ChatLink.id == link_id)
        return [{"id": r.id, "channel": r.channel_id or None, "createdAt": r.created_at.isoformat(),
                 "partner": _chat(r.platform, r.external_id, r.title, r.partner_channel_id)}
                for r in (await s.execute(q)).all()]

    return await db.read(op)


async def raid_dicts(db: Database, raids: list[Any]) -> list[dict[str, Any]]:
    """Raids (RaidProgress) as REST and MCP show them: `as_dict()` plus `partnerChats`."""
    chats = await partner_chats(db, [p.id for p in raids])
    return [{**p.as_dict(), "partnerChats": chats.get(p.id, [])} for p in raids]
