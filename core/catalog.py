"""Read-only lookups for API adapters: communities, the raid behind a session, a claim's community, bans.

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
