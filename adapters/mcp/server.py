"""nubi's MCP server: raid tools and raid resources for AI agents, over the same core services.

Every tool is one call on a core service. An MCP caller is trusted like a moderator (starting a raid is
a moderator action), so the server is only exposed to operators: stdio from `nubi mcp`, or HTTP at
/mcp behind the API keys. Domain errors come back as tool errors carrying the friendly message (and
the stable code in the structured content); anything else is logged here and reaches the caller only
as the SDK's generic "Error executing tool" text.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Annotated, Any, Literal, ParamSpec

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from core import catalog
from core.config import ACTION_NAMES
from core.directory import ChatRef, MemberRef
from core.errors import NotFound, NubiError, ValidationError
from core.raids.model import JoinResult, RaidSpec
from core.services import Services
from core.storage.models import PLATFORMS
from core.targets import member_by_identity
from core.windows import WINDOWS

log = logging.getLogger(__name__)

Platform = Literal[PLATFORMS]  # type: ignore[valid-type]
Action = Literal[ACTION_NAMES]  # type: ignore[valid-type]
Window = Literal[WINDOWS]  # type: ignore[valid-type]
RaidId = Annotated[int, Field(ge=1, description="The raid's number, as returned by start_raid or get_raid")]
Top = Annotated[int, Field(ge=1, le=100, description="How many entries of the board to return")]

# Who a raid started over MCP is attributed to when the caller names no moderator.
MCP_ACTOR = MemberRef("console", "mcp", "MCP agent")
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
TAKES_BACK = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)

P = ParamSpec("P")


class MemberIn(BaseModel):
    """A member as a chat platform knows them; nubi creates the member on first sight."""

    model_config = ConfigDict(extra="forbid")

    platform: Platform = Field(description="Platform of the member's account: telegram, discord, web or console")
    id: str = Field(min_length=1, max_length=128, description="The platform's user id")
    name: str = Field("", max_length=128, description="Display name to show on boards")
    username: str | None = Field(None, max_length=128, description="The platform username, without @")

    def ref(self) -> MemberRef:
        return MemberRef(self.platform, self.id, self.name, self.username)


def error_result(exc: NubiError) -> CallToolResult:
    """A domain error as the caller sees it: the friendly message, plus the stable code for programs."""
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details:
        error["details"] = exc.details
    return CallToolResult(
        content=[TextContent(type="text", text=exc.message)], structured_content={"error": error}, is_error=True
    )


def domain_errors(
    fn: Callable[P, Awaitable[dict[str, Any]]],
) -> Callable[P, Awaitable[dict[str, Any] | CallToolResult]]:
    """Map NubiError to an isError result in one place; the SDK reads the wrapped signature for the schema."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> dict[str, Any] | CallToolResult:
        try:
            return await fn(*args, **kwargs)
        except NubiError as exc:
            log.info("MCP tool %s refused: %s %s", fn.__name__, exc.code, exc.message)
            return error_result(exc)

    return wrapper


def _join_dict(r: JoinResult) -> dict[str, Any]:
    return {"raidId": r.raid_id, "memberId": r.member_id, "position": r.position, "alreadyJoined": r.already,
            "bonus": r.bonus}


def build_mcp(services: Services) -> MCPServer:
    """The MCP server over `services`: serve it with run_stdio or mcp_http_app (adapters.mcp.transport)."""
    server: MCPServer = MCPServer(
        "nubi",
        title="nubi raids",
        instructions=(
            "nubi runs community raids in Telegram and Discord chats. Start a raid with start_raid, let members "
            "join_raid and claim_action, follow it with get_raid or the nubi://raids/active resource, and read "
            "boards with get_leaderboard; revoke_claim takes an accepted claim back. get_member_context gives a "
            "prompt-ready summary of one member. "
            "Partner chats: create_chat_link_code, link_chats, list_chat_links, unlink_chat; start_raid with "
            "partners posts in each. merge_members approves a refused account link; get_member_accounts "
            "shows a member's platforms."
        ),
    )
    add_tools(server, services)
    add_resources(server, services)
    from .settings_tools import add_settings_tools  # it builds on this module's helpers

    add_settings_tools(server, services)
    from .partner_tools import add_partner_tools

    add_partner_tools(server, services)
    return server


def add_tools(server: MCPServer, services: Services) -> None:
    @server.tool(annotations=WRITES)
    @domain_errors
    async def start_raid(
        chat_platform: Annotated[Platform, Field(description="Platform of the chat the raid runs in")],
        chat_id: Annotated[str, Field(min_length=1, max_length=128, description="The platform's chat id")],
        url: Annotated[str, Field(description="The https:// post to raid, e.g. https://x.com/user/status/123")],
        objectives: Annotated[
            dict[Action, Annotated[int, Field(ge=1, le=1_000_000)]] | None,
            Field(description="Target count per action, e.g. {\"like\": 50, \"repost\": 25}; "
                              "omitted: the community's defaults"),
        ] = None,
        duration_minutes: Annotated[int | None, Field(ge=1, le=1440, description="Default: 30")] = None,
        max_participants: Annotated[int | None, Field(ge=1, le=100_000, description="Default: 500")] = None,
        lock: Annotated[bool, Field(description="Lock the chat for members while the raid runs")] = False,
        pin: Annotated[bool | None, Field(description="Pin the raid post while the raid runs; omitted: the "
                                                      "community's pin setting")] = None,
        replace: Annotated[bool, Field(description="End a raid still running in this chat and start this one")] = False,
        chat_title: Annotated[str | None, Field(max_length=256, description="Chat name to store")] = None,
        channel_id: Annotated[str | None, Field(min_length=1, max_length=128,
                                                description="Discord: the channel of the server (chat_id is the "
                                                            "server) where the raid runs")] = None,
        started_by: Annotated[MemberIn | None, Field(description="The moderator to credit; default: the MCP agent")] = None,
        partners: Annotated[bool | None, Field(description="Post the raid in every chat linked to this one as well "
                                                           "(see list_chat_links); omitted: the community's "
                                                           "partners setting")] = None,
    ) -> dict[str, Any]:
        """Start a raid in a chat (a moderator action). Returns the raid's progress, including its id and
        `partnerChats`, the linked chats it is posted in too."""
        spec = RaidSpec(
            url,
            dict(objectives or {}),
            duration_seconds=duration_minutes * 60 if duration_minutes is not None else None,
            max_participants=max_participants,
            lock=lock,
            replace=replace,
            pin=pin,
            partners=partners,
        )
        by = started_by.ref() if started_by else MCP_ACTOR
        progress = await services.raids.start(ChatRef(chat_platform, chat_id, chat_title, channel_id), spec, by=by)
        return (await catalog.raid_dicts(services.db, [progress]))[0]

    @server.tool(annotations=WRITES)
    @domain_errors
    async def join_raid(raid_id: RaidId, member: MemberIn) -> dict[str, Any]:
        """Join a member to a running raid. Joining twice changes nothing; early joiners earn a bonus."""
        return _join_dict(await services.raids.join(raid_id, member.ref()))

    @server.tool(annotations=WRITES)
    @domain_errors
    async def claim_action(
        raid_id: RaidId,
        member: MemberIn,
        action: Annotated[Action, Field(description="The action the member did on the raided post")],
        proof_url: Annotated[str | None, Field(max_length=512, description="Link to the member's reply or quote")] = None,
    ) -> dict[str, Any]:
        """Claim an action for a member who joined the raid. Returns its verification state and points."""
        r = await services.raids.claim(raid_id, member.ref(), action, proof_url=proof_url)
        return {"raidId": r.raid_id, "memberId": r.member_id, "action": r.action, "verification": r.verification,
                "points": r.points, "alreadyClaimed": r.already, "claimId": r.claim_id,
                "completionBonus": r.completion_bonus, "raidCompleted": r.raid_completed}

    @server.tool(annotations=TAKES_BACK)
    @domain_errors
    async def revoke_claim(
        claim_id: Annotated[int, Field(ge=1, description="The claim's number (claimId)")],
        reason: Annotated[str | None, Field(max_length=500, description="Why, for the audit log")] = None,
        community_id: Annotated[int | None, Field(ge=1, description="Only act if the claim is in this community")] = None,
    ) -> dict[str, Any]:
        """Take back an accepted claim (a moderator action, audited): its points, its speed bonus and the
        completion bonus it unlocked leave every board, in the windows where they were earned."""
        taken = await services.raids.revoke(claim_id, reviewer_id=None, reason=reason, community_id=community_id)
        return {"claimId": claim_id, "verification": "rejected", "pointsRevoked": taken}

    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def get_raid(raid_id: RaidId, top: Top = 5) -> dict[str, Any]:
        """A raid's progress: status, objectives with counts, participants, time left, top raiders, and
        `partnerChats` (the linked chats it is posted in, and whether each post went up)."""
        return (await catalog.raid_dicts(services.db, [await services.raids.progress(raid_id, top=top)]))[0]

    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def get_leaderboard(
        raid_id: Annotated[int | None, Field(ge=1, description="A raid's own board")] = None,
        community_id: Annotated[int | None, Field(ge=1, description="A community's board over a window")] = None,
        window: Annotated[Window, Field(description="Community boards only; weeks start Monday 00:00 UTC")] = "all",
        top: Top = 10,
        offset: Annotated[int, Field(ge=0, description="Entries to skip: the next page starts at offset + top")] = 0,
    ) -> dict[str, Any]:
        """A leaderboard: of one raid (raid_id) or of a community over a window (community_id + window).
        A page of at most 100 entries; page on with offset."""
        if (raid_id is None) == (community_id is None):
            raise ValidationError("give either raid_id or community_id", field="raid_id")
        if raid_id is not None:
            entries = await services.raids.leaderboard(raid_id, top=top, offset=offset)
            return {"scope": "raid", "raidId": raid_id, "entries": [asdict(e) for e in entries]}
        assert community_id is not None
        entries = await services.boards.board(community_id, window, top=top, offset=offset)
        return {"scope": "community", "communityId": community_id, "window": window,
                "entries": [asdict(e) for e in entries]}

    @server.tool(annotations=READ_ONLY)
    @domain_errors
    async def get_member_context(
        member_id: Annotated[int | None, Field(ge=1, description="nubi's member number (memberId)")] = None,
        session_id: Annotated[str | None, Field(max_length=64, description="A Sessions API session id")] = None,
        member: Annotated[MemberIn | None, Field(description="A member by platform account")] = None,
    ) -> dict[str, Any]:
        """What nubi knows of a member, for an agent's prompt: standings, streak, active and past raids,
        recent messages, and `text`, the same rendered as a few prompt-ready lines. Give exactly one of
        member_id, session_id or member."""
        if sum(x is not None for x in (member_id, session_id, member)) != 1:
            raise ValidationError("give exactly one of member_id, session_id or member", field="member_id")
        if session_id is not None:
            return await services.context.for_session(session_id)
        if member is not None:
            member_id = await services.db.read(lambda s: member_by_identity(s, member.platform, member.id))
            if member_id is None:
                raise NotFound(f"nubi does not know {member.platform} member {member.id} yet")
        assert member_id is not None
        return await services.context.for_member(member_id)


def add_resources(server: MCPServer, services: Services) -> None:
    @server.resource("nubi://raids/active", name="active_raids", title="Active raids", mime_type="application/json")
    async def active_raids() -> str:
        """Every raid running now, newest first, with its progress."""
        raids = await services.raids.list(status="active", limit=100)
        return json.dumps(await catalog.raid_dicts(services.db, raids))

    @server.resource("nubi://raids/{raid_id}", name="raid", title="A raid", mime_type="application/json")
    async def raid(raid_id: str) -> str:
        """One raid's progress, running or ended."""
        if not raid_id.isdigit():
            raise ResourceNotFoundError(f"Raid {raid_id} not found")
        try:
            return json.dumps((await catalog.raid_dicts(services.db, [await services.raids.progress(int(raid_id))]))[0])
        except NotFound as exc:
            raise ResourceNotFoundError(exc.message) from exc
        except NubiError as exc:
            raise ResourceError(exc.message) from exc
