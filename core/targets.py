"""Which member a moderator's command means: exact, inside the community, never a guess.

A command names its target in one of the ways a platform makes exact: a mention the platform
resolved to a user (Telegram `text_mention`, a Discord user option), a reply to the member's
message, a numeric platform id, nubi's own `#id`, or a username compared whole and
case-insensitively. Text lookups only see members the community knows (they have used nubi there);
a name two members share, or no one has, is refused with a reply that says so. No pattern ever
reaches the database: `@%` is not a name, it is refused before any query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.directory import MemberRef, ensure_member
from core.errors import NotFound, ValidationError
from core.i18n import _
from core.storage.models import CommunityMember, MemberIdentity

# Telegram usernames are [A-Za-z0-9_]{5,32}; Discord's are [a-z0-9_.]{2,32}. Anything else is no name.
_USERNAME = re.compile(r"[A-Za-z0-9_.]{1,32}")
_DISCORD_MENTION = re.compile(r"<@!?(\d{1,20})>")
_PLATFORM_ID = re.compile(r"-?\d{1,20}")
_MEMBER_ID = re.compile(r"#(\d{1,18})")


class UnknownMember(NotFound):
    code = "UNKNOWN_MEMBER"


class AmbiguousMember(ValidationError):
    code = "AMBIGUOUS_MEMBER"


@dataclass(frozen=True)
class Mention:
    """A member the platform itself resolved, and the words the command used for them."""

    text: str
    member: MemberRef


@dataclass(frozen=True)
class Target:
    member_id: int
    shown: str  # how replies name the member


async def resolve_target(
    s: AsyncSession,
    community_id: int,
    platform: str,
    named: str,
    now: datetime,
    *,
    mentions: tuple[Mention, ...] = (),
    reply_to: MemberRef | None = None,
) -> Target:
    """The one member `named` means in this community, or UnknownMember / AmbiguousMember.

    An empty `named` means the member whose message the command replies to."""
    t = named.strip()
    if not t:
        if reply_to is None:
            raise ValidationError(_("Name a member (@username or id), or reply to one of their messages."),
                                  field="member")
        return Target(await ensure_member(s, reply_to, now), _shown(reply_to))
    for m in mentions:  # the platform vouches for these: a member nubi has not seen yet is created
        if m.text == t and m.member.platform == platform:
            return Target(await ensure_member(s, m.member, now), t)
    known = select(MemberIdentity.member_id).join(
        CommunityMember,
        (CommunityMember.member_id == MemberIdentity.member_id) & (CommunityMember.community_id == community_id),
    ).where(MemberIdentity.platform == platform)
    if (found := _MEMBER_ID.fullmatch(t)) is not None:  # nubi's own id: a member of any platform known here
        # (one who raided here only from a partner chat on another platform, core/partners.py, too)
        ids = (await s.scalars(select(CommunityMember.member_id).where(
            CommunityMember.community_id == community_id, CommunityMember.member_id == int(found[1])))).all()
    elif (found := _DISCORD_MENTION.fullmatch(t)) is not None or _PLATFORM_ID.fullmatch(t):
        external = found[1] if found is not None else t
        ids = (await s.scalars(known.where(MemberIdentity.external_id == external).limit(2))).all()
    else:
        name = t[1:] if t.startswith("@") else t
        if not _USERNAME.fullmatch(name):
            raise ValidationError(_("{name} is not a member's name: use @username, their id, or reply to them.").format(
                name=t[:40]),
                                  field="member")
        ids = (await s.scalars(
            known.where(func.lower(MemberIdentity.username) == name.lower()).distinct().limit(2)
        )).all()
    if not ids:
        raise UnknownMember(_("I don't know {name} here: they need to have used the bot in this community.").format(
            name=t[:40]),
                            details={"field": "member"})
    if len(set(ids)) > 1:
        raise AmbiguousMember(_("{name} could be more than one member here: mention them, reply to them "
                                "or use their numeric id.").format(name=t[:40]), field="member")
    return Target(ids[0], t)


async def member_in_community(s: AsyncSession, community_id: int, member_id: int) -> bool:
    """Whether a member is known in a community (REST and MCP take members by id, scoped the same way)."""
    return (await s.scalar(select(CommunityMember.member_id).where(
        CommunityMember.community_id == community_id, CommunityMember.member_id == member_id))) is not None


async def member_by_identity(s: AsyncSession, platform: str, external_id: str) -> int | None:
    """A member by their platform account id, exactly."""
    return await s.scalar(select(MemberIdentity.member_id).where(
        MemberIdentity.platform == platform, MemberIdentity.external_id == external_id))


def _shown(ref: MemberRef) -> str:
    return f"@{ref.username}" if ref.username else (ref.display_name or ref.external_id)
