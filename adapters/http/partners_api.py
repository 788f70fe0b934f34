"""Partner chats and member merges over REST: `/community link|join|chats|unlink` and `/member merge`.

The same core services as the chat commands (core/operators.py maps a community id onto them), behind the
same access rule: a community's moderator commands are for its own keys and admin keys
(`authorize_moderation` asks `access.may_moderate`, as chat does); a member's platforms are read like a
board. Linking and merging span two communities by design, so after that check they run outside the
row-level scope, as the chat adapters run them (`across_communities`). Refusals answer the documented
error shape and change nothing. `/link account` has no route: it is a member's own act, proven by
holding both accounts (docs/members.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import Field

from core import operators
from core.services import Services

from .schemas import MAX_DB_ID, Body, DbId, Model
from .security import across_communities, authorize_community, authorize_moderation

router = APIRouter()
PARTNERS = "partners and members"
Channel = Field(None, min_length=1, max_length=128, pattern=r"^\S+$",
                description="Discord: the channel of the server the link belongs to (required there); "
                            "leave it out for a Telegram or web community, which is one chat")


class ChannelIn(Body):
    channel: str | None = Channel


class RedeemIn(Body):
    code: str = Field(min_length=1, max_length=32, description="The other chat's code, e.g. K7QF-M2XA (case, "
                                                               "spaces and the dash do not matter)")
    channel: str | None = Channel


class MergeIn(Body):
    first: int = Field(ge=1, le=MAX_DB_ID, description="A member id (memberId) this community knows")
    second: int = Field(ge=1, le=MAX_DB_ID, description="The other member id of the refused account link")


class LinkCodeOut(Model):
    community_id: int
    channel: str | None
    code: str = Field(description="Redeemed once, within 10 minutes, by the other chat (`/community join CODE` "
                                  "or POST .../chat-links); keep it among moderators")
    expires_at: str


class LinkedChatOut(Model):
    platform: str
    id: str = Field(description="the platform's chat id (on Discord: the server)")
    title: str | None
    channel: str | None


class ChatLinkOut(Model):
    id: int = Field(description="the link's number here (DELETE .../chat-links/{id}; `/community unlink` in chat)")
    channel: str | None = Field(description="Discord: the channel of this community the link belongs to")
    created_at: str
    partner: LinkedChatOut


class ChatLinkList(Model):
    community_id: int
    links: list[ChatLinkOut]


class MergeOut(Model):
    community_id: int
    member_id: int = Field(description="the member both are now (the older id)")
    merged_member_id: int = Field(description="the id that is gone; its rows and points moved to memberId")
    platforms: list[str]


class MemberAccountsOut(Model):
    community_id: int | None
    member_id: int
    name: str
    platforms: list[str] = Field(description="where the member has accounts (linked ones: one member)")


def _svc(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/api/communities/{community_id}/chat-links", response_model=ChatLinkList, tags=[PARTNERS],
            summary="The chats linked with this community's chats (a raid started with `partners` runs in both)")
async def list_chat_links(request: Request, community_id: DbId) -> dict[str, Any]:
    await authorize_moderation(request, community_id)
    with across_communities():
        return await operators.links(_svc(request), community_id)


@router.post("/api/communities/{community_id}/chat-link-codes", status_code=201, response_model=LinkCodeOut,
             tags=[PARTNERS], summary="A one-time code that links another chat with this one (10 minutes)")
async def create_chat_link_code(request: Request, community_id: DbId, body: ChannelIn | None = None) -> dict[str, Any]:
    await authorize_moderation(request, community_id)
    return await operators.issue_code(_svc(request), community_id, (body or ChannelIn()).channel)


@router.post("/api/communities/{community_id}/chat-links", status_code=201, response_model=ChatLinkOut,
             tags=[PARTNERS], summary="Redeem another chat's code: link that chat with this one (both ways)")
async def link_chat(request: Request, community_id: DbId, body: RedeemIn) -> dict[str, Any]:
    await authorize_moderation(request, community_id)
    with across_communities():
        return await operators.link(_svc(request), community_id, body.code, body.channel)


@router.delete("/api/communities/{community_id}/chat-links/{link_id}", status_code=204, tags=[PARTNERS],
               summary="Remove a chat link (both directions)")
async def unlink_chat(request: Request, community_id: DbId, link_id: DbId) -> Response:
    await authorize_moderation(request, community_id)
    with across_communities():
        await operators.unlink(_svc(request), community_id, link_id)
    return Response(status_code=204)


@router.post("/api/communities/{community_id}/member-merges", response_model=MergeOut, tags=[PARTNERS],
             summary="Approve a refused account link: two members who both hold points here become one "
                     "(every point kept, audited)")
async def merge_members(request: Request, community_id: DbId, body: MergeIn) -> dict[str, Any]:
    await authorize_moderation(request, community_id)
    with across_communities():
        return await operators.merge(_svc(request), community_id, body.first, body.second)


@router.get("/api/communities/{community_id}/members/{member_id}/accounts", response_model=MemberAccountsOut,
            tags=[PARTNERS], summary="A member of this community and the platforms their linked accounts are on")
async def member_accounts(request: Request, community_id: DbId, member_id: DbId) -> dict[str, Any]:
    await authorize_community(request, community_id)
    return await operators.accounts(_svc(request), member_id, community_id)

