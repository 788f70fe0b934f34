"""MCP tools for a community's own settings: the same core service as `/settings` and the REST routes."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server import MCPServer
from pydantic import Field

from core.services import Services

from .server import READ_ONLY, WRITES, domain_errors

CommunityId = Annotated[int, Field(ge=1, le=2**63 - 1, description="The community's number (communityId)")]
SettingValue = bool | int | str | list[str] | None


def add_settings_tools(server: MCPServer, services: Services) -> None:
    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def get_community_settings(community_id: CommunityId) -> dict[str, Any]:
        """A community's settings: `settings` holds the keys it set itself, `effective` every key as its
        raids use it (objectives, points, verification tier, bonuses, exclusions, time zone)."""
        return await services.community_settings.show(community_id)

    @server.tool(annotations=WRITES)
    @domain_errors
    async def update_community_settings(
        community_id: CommunityId,
        settings: Annotated[dict[str, SettingValue], Field(
            min_length=1, max_length=64,
            description='Dotted keys to set, e.g. {"verification": "review", "objectives.like.points": 3}; '
                        "null resets a key to the global default. All are applied, or none (a moderator action, "
                        "audited).")],
    ) -> dict[str, Any]:
        """Change a community's settings, validated like the config file's [raids] section."""
        return await services.community_settings.change(community_id, settings, actor=None)
