"""Discord's permission rules as its developer docs state them, for the fake Discord to enforce.

Written from the docs ("Permissions" > "Permission Hierarchy" / "Permission Overwrites" / "Implicit
Permissions"; "Edit Channel Permissions"), not from what nubi sends, so the fake refuses what Discord
refuses. Bits are Python ints end to end (Discord's permission strings pass 32 bits: Send Polls is
bit 49), never truncated.

- The guild owner has every permission; so does anyone whose roles (with @everyone) grant Administrator,
  and no overwrite takes anything from them.
- Otherwise, in a channel: the base (the @everyone role OR-ed with the member's roles), then the
  channel's @everyone overwrite (deny, then allow), then all the member's role overwrites at once
  (their denies OR-ed, their allows OR-ed; deny first), then the member's own overwrite (deny, allow).
- Implicit: without View Channel a member has nothing in the channel; without Send Messages, Embed
  Links, Attach Files, Mention Everyone and Send TTS Messages are denied too.
- Edit Channel Permissions needs Manage Roles in the channel; only permissions the bot has in the
  guild can be allowed or denied, unless it has a Manage Roles overwrite in the channel. Read here as:
  the bits whose allow/deny state the edit changes (re-sending an existing overwrite's bits unchanged is
  not granting them). Setting Manage Roles itself in an overwrite needs Administrator or such an overwrite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import discord

ALL = discord.Permissions.all().value
ADMINISTRATOR = discord.Permissions(administrator=True).value
VIEW_CHANNEL = discord.Permissions(view_channel=True).value
SEND_MESSAGES = discord.Permissions(send_messages=True).value
READ_MESSAGE_HISTORY = discord.Permissions(read_message_history=True).value
PIN_MESSAGES = discord.Permissions(pin_messages=True).value
CREATE_PUBLIC_THREADS = discord.Permissions(create_public_threads=True).value
CREATE_PRIVATE_THREADS = discord.Permissions(create_private_threads=True).value
SEND_MESSAGES_IN_THREADS = discord.Permissions(send_messages_in_threads=True).value
MANAGE_ROLES = discord.Permissions(manage_roles=True).value
MANAGE_THREADS = discord.Permissions(manage_threads=True).value
MANAGE_CHANNELS = discord.Permissions(manage_channels=True).value
NEEDS_SEND = discord.Permissions(
    embed_links=True, attach_files=True, mention_everyone=True, send_tts_messages=True
).value
ROLE, MEMBER = 0, 1


def guild_permissions(guild: Mapping[str, Any], member: Mapping[str, Any]) -> int:
    """A member's server-wide permissions: the owner and Administrator have all."""
    user_id = str(member["user"]["id"])
    if str(guild.get("owner_id")) == user_id:
        return ALL
    roles = {str(r["id"]): int(r["permissions"]) for r in guild.get("roles", [])}
    base = roles.get(str(guild["id"]), 0)
    for role_id in member.get("roles", []):
        base |= roles.get(str(role_id), 0)
    return ALL if base & ADMINISTRATOR else base


def channel_permissions(guild: Mapping[str, Any], member: Mapping[str, Any], channel: Mapping[str, Any]) -> int:
    """A member's permissions in a channel: base, then @everyone, role and member overwrites, then the
    implicit denials."""
    base = guild_permissions(guild, member)
    if base == ALL:
        return ALL
    overwrites = list(channel.get("permission_overwrites") or [])
    perms = _apply(base, _find(overwrites, str(guild["id"]), ROLE))
    member_roles = {str(r) for r in member.get("roles", [])}
    allow = deny = 0
    for o in overwrites:
        if int(o["type"]) == ROLE and o["id"] in member_roles:
            allow |= int(o["allow"])
            deny |= int(o["deny"])
    perms = (perms & ~deny) | allow
    perms = _apply(perms, _find(overwrites, str(member["user"]["id"]), MEMBER))
    if not perms & VIEW_CHANNEL:
        return 0
    if not perms & SEND_MESSAGES:
        perms &= ~NEEDS_SEND
    return perms


def overwrite_edit_refused(
    guild: Mapping[str, Any], member: Mapping[str, Any], channel: Mapping[str, Any],
    target_id: str, allow: int, deny: int,
) -> bool:
    """Whether Discord refuses this member's Edit Channel Permissions (PUT) with 50013."""
    if guild_permissions(guild, member) == ALL:
        return False
    if not channel_permissions(guild, member, channel) & MANAGE_ROLES:
        return True
    overwrites = list(channel.get("permission_overwrites") or [])
    current = next((o for o in overwrites if o["id"] == target_id), None)
    old_allow, old_deny = (int(current["allow"]), int(current["deny"])) if current else (0, 0)
    changed = (allow ^ old_allow) | (deny ^ old_deny)
    if _has_manage_roles_overwrite(overwrites, member):
        return False
    if changed & MANAGE_ROLES:
        return True
    return bool(changed & ~guild_permissions(guild, member))


def overwrite_delete_refused(guild: Mapping[str, Any], member: Mapping[str, Any], channel: Mapping[str, Any]) -> bool:
    """Delete Channel Permission needs Manage Roles (Administrator and the owner have it)."""
    return not channel_permissions(guild, member, channel) & MANAGE_ROLES


def _find(overwrites: Iterable[Mapping[str, Any]], target_id: str, kind: int) -> Mapping[str, Any] | None:
    return next((o for o in overwrites if o["id"] == target_id and int(o["type"]) == kind), None)


def _apply(perms: int, overwrite: Mapping[str, Any] | None) -> int:
    if overwrite is None:
        return perms
    return (perms & ~int(overwrite["deny"])) | int(overwrite["allow"])


def _has_manage_roles_overwrite(overwrites: Iterable[Mapping[str, Any]], member: Mapping[str, Any]) -> bool:
    mine = {str(r) for r in member.get("roles", [])} | {str(member["user"]["id"])}
    return any(o["id"] in mine and int(o["allow"]) & MANAGE_ROLES for o in overwrites)


def role_grant_refused(guild: Mapping[str, Any], member: Mapping[str, Any], role: Mapping[str, Any]) -> bool:
    """Add/Remove Guild Member Role: the bot needs Manage Roles, and (unless it owns the server) the role
    must sit below the bot's highest role ("Permission Hierarchy": a bot can only manage roles lower than
    its highest role). @everyone and roles managed by an integration cannot be given or taken at all."""
    if str(role["id"]) == str(guild["id"]) or role.get("managed"):
        return True
    if str(guild.get("owner_id")) == str(member["user"]["id"]):
        return False
    if not guild_permissions(guild, member) & MANAGE_ROLES:
        return True
    positions = {str(r["id"]): int(r.get("position", 0)) for r in guild.get("roles", [])}
    highest = max((positions.get(str(r), 0) for r in member.get("roles", [])), default=0)
    return highest <= int(role.get("position", 0))
