"""MCP tools for partner chats and member merges: `/community link|join|chats|unlink` and `/member merge`.

The same functions as the REST routes (core/operators.py), on the same core services; MCP callers hold
an admin key (every tool spans communities), the same standing REST gives a community's own key here.
`/link account` has no tool: it is a member's own act, proven by holding both accounts (docs/members.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import Field

from core import operators
from core.services import Services

from .server import READ_ONLY, TAKES_BACK, WRITES, domain_errors
from .settings_tools import CommunityId

ChannelId = Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^\S+$",
                                        description="Discord: the channel of the server the link belongs to "
                                                    "(required there); omit it for a Telegram or web community")]
MemberId = Annotated[int, Field(ge=1, le=2**63 - 1, description="nubi's member number (memberId)")]


def add_partner_tools(server: MCPServer, services: Services) -> None:
    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def list_chat_links(community_id: CommunityId) -> dict[str, Any]:
        """The chats linked with this community's chats, each with its link id. A raid started with
        partners in one of them is posted in its linked chats too."""
        return await operators.links(services, community_id)

    @server.tool(annotations=WRITES)
    @domain_errors
    async def create_chat_link_code(community_id: CommunityId, channel_id: ChannelId = None) -> dict[str, Any]:
        """A one-time code (10 minutes) that links another chat with this one: a moderator of the other chat
        sends /community join CODE there, or link_chats redeems it for that chat's community."""
        return await operators.issue_code(services, community_id, channel_id)

    @server.tool(annotations=WRITES)
    @domain_errors
    async def link_chats(
        community_id: CommunityId,
        code: Annotated[str, Field(min_length=1, max_length=32, description="The other chat's code, e.g. K7QF-M2XA")],
        channel_id: ChannelId = None,
    ) -> dict[str, Any]:
        """Redeem another chat's link code for this community's chat: the two chats are linked both ways."""
        return await operators.link(services, community_id, code, channel_id)

    @server.tool(annotations=TAKES_BACK)
    @domain_errors
    async def unlink_chat(
        community_id: CommunityId,
        link_id: Annotated[int, Field(ge=1, le=2**63 - 1, description="The link's id, from list_chat_links")],
    ) -> dict[str, Any]:
        """Remove a chat link (both directions). Raids already started keep their partner chats."""
        await operators.unlink(services, community_id, link_id)
        return {"communityId": community_id, "linkId": link_id, "removed": True}

    @server.tool(annotations=TAKES_BACK)
    @domain_errors
    async def merge_members(community_id: CommunityId, first: MemberId, second: MemberId) -> dict[str, Any]:
        """Approve a refused account link (a moderator action, audited): two members who both hold points in
        this community and asked to be linked become one; every point of both is kept."""
        return await operators.merge(services, community_id, first, second)

    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def get_member_accounts(
        member_id: MemberId,
        community_id: Annotated[int | None, Field(ge=1, le=2**63 - 1,
                                                  description="Only a member this community knows")] = None,
    ) -> dict[str, Any]:
        """A member and the platforms their accounts are on (linked accounts are one member)."""
        return await operators.accounts(services, member_id, community_id)
