"""A Sessions API conversation as a chat: commands in a session go through the same command layer.

A session is a chat of platform `web` whose member is the session's user. Its community is the one
named in the session's metadata (`community`), else the agent's own web community, so every web
session of one agent shares raids and leaderboards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.commands.service import ChatContext, Reply
from core.directory import ChatRef, MemberRef

from .service import Responder, SessionInfo, web_community

if TYPE_CHECKING:
    from core.services import Services


def web_chat(info: SessionInfo) -> ChatRef:
    community = web_community(info.metadata, info.agent_id)
    return ChatRef("web", community, title=f"web {community}")


def web_member(info: SessionInfo) -> MemberRef:
    name = info.metadata.get("userName") or info.metadata.get("username")
    if not isinstance(name, str) or not name.strip():
        name = f"user-{info.user_id[:8]}"
    return MemberRef("web", info.user_id, display_name=name[:64], username=name[:64])


def session_context(info: SessionInfo, *, is_moderator: bool) -> ChatContext:
    return ChatContext(web_chat(info), web_member(info), is_moderator=is_moderator)


def command_responder(services: Services, *, is_moderator: bool) -> Responder:
    """The bot's reply to a session message: the command's reply text, or None for plain text."""

    async def respond(info: SessionInfo, content: str) -> str | None:
        reply: Reply | None = await services.commands.handle_text(
            session_context(info, is_moderator=is_moderator), content
        )
        return None if reply is None else reply.text

    return respond
