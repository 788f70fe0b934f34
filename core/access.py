"""The one access policy: what a caller may read and change, asked by every entry point.

A community is named `<platform>:<external id>` (`telegram:-100123`, `web:agent:<agent id>`), the form
API keys are scoped with and sessions store. Callers are:

- an **admin** key (or the keyless API, which `nubi run` only binds to loopback): every community;
- a **community** key: that community's raids, sessions, boards and moderation, nothing else, and
  never the tools that span communities (MCP, member context);
- a **session** (a Socket.IO token issued for one session): that session, and the raids of the
  session's community, acting as the session's own member;
- a **chat** member (Telegram, Discord, the console): the raids and boards of that chat's community;
  its moderators (a Telegram admin, a Discord role: the platform says who, the adapter asks it) also
  its moderation, and nothing of another chat, whatever raid id a button or command names;
- **nobody** (an unauthenticated socket): nothing but authenticating.

Refusals never name another community's objects: a caller learns that it may not look, not what is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.directory import ChatRef
from core.errors import PermissionDenied, SessionNotFound, Unauthorized
from core.i18n import _

Kind = Literal["admin", "community", "session", "chat", "nobody"]


def community_name(platform: str, external_id: str) -> str:
    """The one spelling of a community in keys, sessions and policy checks."""
    return f"{platform}:{external_id}"


def chat_community(chat: ChatRef) -> str:
    return community_name(chat.platform, chat.external_id)


@dataclass(frozen=True)
class Caller:
    """Who is asking, as every entry point resolves it (an API key, a session token, or nothing)."""

    kind: Kind
    community: str | None = None  # set for community and session callers
    session_id: str | None = None  # set for session callers
    key_id: str | None = None  # which configured key (for per-key rate limits); None without one
    moderator: bool = False  # chat callers: the platform says this member moderates the chat

    @property
    def admin(self) -> bool:
        return self.kind == "admin"

    def sees(self, community: str) -> bool:
        """May this caller read (and, within the services' own rules, change) `community`'s data?"""
        if self.kind == "admin":
            return True
        return self.kind in ("community", "session", "chat") and self.community == community


ADMIN = Caller("admin")  # also what the keyless loopback API is
NOBODY = Caller("nobody")


def community_key(community: str, key_id: str) -> Caller:
    return Caller("community", community=community, key_id=key_id)


def session_caller(community: str, session_id: str) -> Caller:
    return Caller("session", community=community, session_id=session_id)


def chat_caller(chat: ChatRef, *, moderator: bool) -> Caller:
    return Caller("chat", community=chat_community(chat), moderator=moderator)


def require_known(caller: Caller) -> None:
    if caller.kind == "nobody":
        raise Unauthorized("Authenticate first: an API key or a session token is required.")


def require_admin(caller: Caller) -> None:
    """Spanning communities (MCP tools, member context, community ids of others) needs an admin key."""
    require_known(caller)
    if not caller.admin:
        raise PermissionDenied("This needs an admin API key; this caller is scoped to one community.")


def require_community(caller: Caller, community: str | None) -> None:
    """Refuse acting on a community the caller may not see (None: a community that does not exist)."""
    require_known(caller)
    if caller.admin:
        return
    if community is None or not caller.sees(community):
        raise PermissionDenied(
            _("That belongs to another community.") if caller.kind == "chat"
            else "This API key cannot access that community.")


def list_scope(caller: Caller) -> str | None:
    """The one community a list may show this caller; None for all of them (admin)."""
    require_known(caller)
    return None if caller.admin else caller.community


def require_session(caller: Caller, session_id: str, session_community: str) -> None:
    """A session another caller may not see does not exist for it (404, not 403: ids are not probed)."""
    require_known(caller)
    if caller.kind == "session" and caller.session_id != session_id:
        raise PermissionDenied("This token was issued for another session.")
    if not caller.sees(session_community):
        raise SessionNotFound(f"Session {session_id} not found")


def may_moderate(caller: Caller, community: str) -> bool:
    """Keys (admin, or the community's own) and the chat's own moderators run moderator commands there;
    a session's member and a moderator of another chat do not."""
    if caller.kind == "chat":
        return caller.moderator and caller.sees(community)
    return caller.kind in ("admin", "community") and caller.sees(community)


def may_act_as_anyone(caller: Caller) -> bool:
    """Keys name the member they act for; a session acts as its own member only."""
    return caller.kind in ("admin", "community")


def chat_for_raid(caller: Caller, wanted: ChatRef | None, fallback: ChatRef) -> ChatRef:
    """The chat a new raid starts in: a community key only in its own (and there by default)."""
    require_known(caller)
    if caller.admin:
        return wanted or fallback
    if caller.kind != "community" or caller.community is None:
        raise PermissionDenied("Only an API key may start raids.")
    if wanted is None:
        platform, _sep, external = caller.community.partition(":")
        return ChatRef(platform, external)
    if chat_community(wanted) != caller.community:
        raise PermissionDenied("This API key cannot start raids in that community.")
    return wanted


def session_community_for(caller: Caller, requested: str | None) -> str | None:
    """The web community a new Sessions API conversation opens in, given `metadata.community`.

    Returns the external id to store in the metadata (None: leave it as sent). A community key opens
    sessions in its own web community only; an admin opens them anywhere.
    """
    require_known(caller)
    if caller.admin:
        return None
    own = caller.community or ""
    platform, _sep, external = own.partition(":")
    if caller.kind != "community" or platform != "web" or not external:
        raise PermissionDenied("Sessions open in a web community: this needs an admin or web-community key.")
    if requested not in (None, external):
        raise PermissionDenied("This API key cannot open sessions in another community.")
    return external
