"""Who and where: members across platforms and the communities raids run in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.models import Community, CommunityMember, Member, MemberIdentity
from core.storage.upsert import insert

# Built once: looked up on every join, so it stays in SQLAlchemy's compiled cache.
_MI = MemberIdentity.__table__
_IDENTITY = select(_MI.c.member_id, _MI.c.username).where(  # on the table: a Core statement, no ORM step
    _MI.c.platform == bindparam("platform"), _MI.c.external_id == bindparam("external_id")
)

_M = Member.__table__
_NEW_MEMBER = (
    sa_insert(_M)
    .values(display_name=bindparam("b_name"), x_handle_verified=False, created_at=bindparam("b_now"))
    .returning(_M.c.id)
)
_NEW_IDENTITY = {
    name: dialect.insert(_MI)
    .values(member_id=bindparam("b_member_id"), platform=bindparam("b_platform"),
            external_id=bindparam("b_external_id"), username=bindparam("b_username"))
    .on_conflict_do_nothing(index_elements=["platform", "external_id"])
    .returning(_MI.c.member_id)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}
_DROP_MEMBER = delete(_M).where(_M.c.id == bindparam("b_id"))

# A Discord channel community from before communities were servers (migration 0008): `channel:<id>`,
# moved into its server's community when the Discord adapter first sees the channel (core/communities.py).
LEGACY_CHANNEL = "channel:"

USER_NAMESPACE = uuid.UUID("5b0e6c1e-3f4d-4c8a-9a57-6e1f0d2b7c11")


@dataclass(frozen=True)
class MemberRef:
    """A member as an adapter knows them: platform, the platform's user id, and a name to show."""

    platform: str
    external_id: str
    display_name: str = ""
    username: str | None = None


@dataclass(frozen=True)
class ChatRef:
    """A community (platform and its id there) and, where the community spans several chats, the chat:
    on Discord the community is the server (`external_id` = guild id) and `channel` the channel a
    command came from or a raid runs in. On Telegram and the web the community is the chat (`channel`
    None)."""

    platform: str
    external_id: str
    title: str | None = None
    channel: str | None = None

    @property
    def destination(self) -> str:
        """The platform id posts go to: the channel, else the community's own chat."""
        return self.channel or self.external_id

    @property
    def channel_key(self) -> str:
        """The channel as stored (`channel_id` columns): "" where the community is the chat."""
        return self.channel or ""


def member_uuid(member_id: int) -> str:
    """The stable UUID a member has in the Sessions API (`userId`)."""
    return str(uuid.uuid5(USER_NAMESPACE, f"member:{member_id}"))


async def ensure_member(s: AsyncSession, ref: MemberRef, now: object) -> int:
    """The member id for a platform identity, created on first sight; names follow the platform."""
    row = (await s.execute(_IDENTITY, {"platform": ref.platform, "external_id": ref.external_id})).first()
    if row is not None:
        if ref.username and row.username != ref.username:
            await s.execute(
                update(MemberIdentity)
                .where(MemberIdentity.platform == ref.platform, MemberIdentity.external_id == ref.external_id)
                .values(username=ref.username)
            )
        return row.member_id
    name = ref.display_name or ref.username or f"{ref.platform}:{ref.external_id}"
    member_id = await s.scalar(_NEW_MEMBER, {"b_name": name[:128], "b_now": now})
    claimed = await s.scalar(_NEW_IDENTITY[s.get_bind().dialect.name], {
        "b_member_id": member_id, "b_platform": ref.platform, "b_external_id": ref.external_id,
        "b_username": ref.username,
    })
    if claimed is None:  # a concurrent first sight of the same identity committed first: use its member
        await s.execute(_DROP_MEMBER, {"b_id": member_id})
        return (await s.execute(_IDENTITY, {"platform": ref.platform, "external_id": ref.external_id})).one()[0]
    return member_id


async def ensure_community(s: AsyncSession, ref: ChatRef, now: object) -> int:
    stmt = (
        insert(s, Community)
        .values(platform=ref.platform, external_id=ref.external_id, title=ref.title, settings={}, created_at=now)
        .on_conflict_do_nothing(index_elements=["platform", "external_id"])
    )
    await s.execute(stmt)
    return (
        await s.scalar(
            select(Community.id).where(Community.platform == ref.platform, Community.external_id == ref.external_id)
        )
    ) or 0


async def seen_in_community(
    s: AsyncSession, community_id: int, member_id: int, is_moderator: bool | None, now: object
) -> None:
    """Record that a member used nubi in a community (moderators find them there by name).

    `is_moderator` is the platform's own word on this member in this community; None (a web or API
    caller, whose key says nothing about the platform) keeps what the platform said last."""
    stmt = insert(s, CommunityMember).values(
        community_id=community_id, member_id=member_id, is_moderator=bool(is_moderator), excluded=False,
        last_seen_at=now,
    )
    changes = {"last_seen_at": stmt.excluded.last_seen_at}
    if is_moderator is not None:
        changes["is_moderator"] = stmt.excluded.is_moderator
    await s.execute(stmt.on_conflict_do_update(index_elements=["community_id", "member_id"], set_=changes))


async def community_chat(s: AsyncSession, community_id: int, channel: str = "") -> ChatRef | None:
    """A community's chat (`channel` of it, if any): adapters reach it from events that carry ids."""
    row = (
        await s.execute(
            select(Community.platform, Community.external_id, Community.title).where(Community.id == community_id)
        )
    ).first()
    return ChatRef(row.platform, row.external_id, row.title, channel or None) if row else None


async def find_community(s: AsyncSession, ref: ChatRef) -> int | None:
    """A community's id without creating it (read-only lookups such as autocomplete)."""
    return await s.scalar(
        select(Community.id).where(Community.platform == ref.platform, Community.external_id == ref.external_id)
    )


PLATFORM_ORDER = ("telegram", "discord", "web", "console")


async def platforms_of(s: AsyncSession, member_ids: list[int]) -> dict[int, list[str]]:
    """Each member's platforms (boards show a linked member once, with their platforms)."""
    found: dict[int, set[str]] = {}
    if member_ids:
        for member_id, platform in (await s.execute(
                select(MemberIdentity.member_id, MemberIdentity.platform)
                .where(MemberIdentity.member_id.in_(set(member_ids))))).all():
            found.setdefault(member_id, set()).add(platform)
    return {m: ordered_platforms(found.get(m, set())) for m in member_ids}


def ordered_platforms(found: set[str]) -> list[str]:
    """Platforms each once, in a stable order (Telegram, Discord, web, console, then any other)."""
    order = PLATFORM_ORDER
    return sorted(found, key=lambda p: (order.index(p) if p in order else len(order), p))
