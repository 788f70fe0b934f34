"""Partner chats and member merges for the operator entry points (REST and MCP), on the chat commands' services.

`/community link|join|chats|unlink` and `/member merge` act in the chat they are sent in; an API caller
names a community by its id instead (and on Discord the channel: a link belongs to a channel, not to the
server). Both adapters call these functions after their own access check (REST: `authorize_community`,
core/access.py; MCP: an admin key), so they answer alike and write exactly what the chat commands write:
PartnerService and MemberLinkService do the work, refusals are their domain errors, and nothing changes
on a refusal. Members are named by id and only among the members the community knows, as REST's bans
and point changes take them (never a guess).

`/link account` is not here: it is a member's own act, proven by holding both accounts (the code comes
from one and is sent from the other). An API key speaks for a community, not for a member, so it could
only link two accounts on someone's word; docs/members.md says so.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core import catalog
from core.directory import ChatRef
from core.errors import NotFound, ValidationError
from core.services import Services
from core.storage.models import Community, Member
from core.targets import member_in_community

__all__ = ["accounts", "chat_of", "issue_code", "link", "links", "merge", "unlink"]


async def chat_of(svc: Services, community_id: int, channel: str | None) -> ChatRef:
    """The chat a link belongs to: the community, and on Discord one channel of the server."""
    row = (await svc.db.read(lambda s: s.execute(
        select(Community.platform, Community.external_id, Community.title).where(Community.id == community_id)))).first()
    if row is None:
        raise NotFound(f"Community {community_id} not found")
    if row.platform == "discord" and not channel:
        raise ValidationError("A Discord server links its channels one by one: say which (`channel`, its id).",
                              field="channel")
    if row.platform != "discord" and channel:
        raise ValidationError(f"A {row.platform} community is one chat: leave `channel` out.", field="channel")
    return ChatRef(row.platform, row.external_id, row.title, channel)


async def issue_code(svc: Services, community_id: int, channel: str | None) -> dict[str, Any]:
    """`/community link`: a one-time code (10 minutes) a moderator of the other chat redeems."""
    chat = await chat_of(svc, community_id, channel)
    issued = await svc.partners.issue(chat)
    return {"communityId": community_id, "channel": chat.channel, "code": issued.code,
            "expiresAt": issued.expires_at.isoformat()}


async def link(svc: Services, community_id: int, code: str, channel: str | None) -> dict[str, Any]:
    """`/community join CODE`: link this chat with the chat that asked for the code (both directions)."""
    chat = await chat_of(svc, community_id, channel)
    linked = await svc.partners.join(chat, code)
    [found] = await catalog.chat_links(svc.db, community_id, link_id=linked.link_id)
    return found


async def links(svc: Services, community_id: int) -> dict[str, Any]:
    """`/community chats`, for every chat of the community."""
    await _community(svc, community_id)
    return {"communityId": community_id, "links": await catalog.chat_links(svc.db, community_id)}


async def unlink(svc: Services, community_id: int, link_id: int) -> None:
    """`/community unlink ID`: both directions go; NotFound when the community has no such link."""
    found = await catalog.chat_links(svc.db, community_id, link_id=link_id)
    if not found:
        raise NotFound(f"This community has no chat link #{link_id}.")
    chat = await chat_of(svc, community_id, found[0]["channel"])
    if not await svc.partners.unlink(chat, link_id):  # removed by another caller meanwhile
        raise NotFound(f"This community has no chat link #{link_id}.")


async def merge(svc: Services, community_id: int, first: int, second: int, *, actor: int | None = None) -> dict[str, Any]:
    """`/member merge`: approve a refused account link of two members who both hold points here."""
    await _community(svc, community_id)
    for field, member_id in (("first", first), ("second", second)):
        if not await svc.db.read(lambda s, m=member_id: member_in_community(s, community_id, m)):
            raise ValidationError(f"there is no member #{member_id} in community #{community_id}", field=field)
    outcome = await svc.member_links.merge(community_id, first, second, actor=actor)
    keep, gone = outcome.members
    return {"communityId": community_id, "memberId": keep, "mergedMemberId": gone,
            "platforms": list(outcome.platforms)}


async def accounts(svc: Services, member_id: int, community_id: int | None) -> dict[str, Any]:
    """A member as boards show them: one member, with the platforms they have accounts on. With a
    community, only a member that community knows (another community's members are not probed)."""
    if community_id is not None:
        await _community(svc, community_id)
        known = await svc.db.read(lambda s: member_in_community(s, community_id, member_id))
    else:
        known = await catalog.member_exists(svc.db, member_id)
    name = await svc.db.read(lambda s: s.scalar(select(Member.display_name).where(Member.id == member_id)))
    if not known or name is None:
        raise NotFound(f"There is no member #{member_id}" + (f" in community #{community_id}." if community_id else "."))
    return {"communityId": community_id, "memberId": member_id, "name": name,
            "platforms": list(await svc.member_links.platforms(member_id))}


async def _community(svc: Services, community_id: int) -> None:
    if not await catalog.communities(svc.db, community_id=community_id):
        raise NotFound(f"Community {community_id} not found")
