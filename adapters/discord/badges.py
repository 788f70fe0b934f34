"""Milestone badges on Discord: the role check when a moderator sets `badges`, and the posts an award owes.

A badge's `role=` is checked when it is set, from the server as the gateway gave it (roles and the
bot's own member come with GUILD_CREATE): the role must exist, not be @everyone or managed by an
integration, the bot must hold Manage Roles, and its highest role must sit above the role (Discord's
role hierarchy). Granting later goes through the outbox (kind `badge_role`): claimed, granted, marked;
a failure is retried by the sweep, and granting a role the member already has changes nothing on
Discord, so a repeat is harmless.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import discord

from core.badges import announcement_text
from core.errors import ValidationError
from core.i18n import _
from core.outbox import Delivery
from core.services import Services
from core.throttle import RetryLater
from core.views import info_view

from . import render
from .posts import _sent

log = logging.getLogger(__name__)

_MENTION = re.compile(r"^<@&(\d{15,21})>$")


def _refuse(text: str) -> ValidationError:
    return ValidationError(text, field="badges")


def find_role(guild: discord.Guild, typed: str) -> discord.Role:
    """The role a moderator named: a mention (<@&id>), an id, or a name (with or without @)."""
    typed = typed.strip()
    found = _MENTION.match(typed)
    wanted = found.group(1) if found else typed
    if wanted.isdigit():
        role = guild.get_role(int(wanted))
        if role is None:
            raise _refuse(_("badges: this server has no role with the id {id}.").format(id=wanted))
        return role
    name = wanted.removeprefix("@").strip()
    named = [r for r in guild.roles if r.name.lower() == name.lower()]
    if not named:
        raise _refuse(_("badges: this server has no role named '{name}'.").format(name=name[:40]))
    if len(named) > 1:
        raise _refuse(_("badges: several roles are named '{name}'; give the role's id instead (role=<id>).")
                      .format(name=name[:40]))
    return named[0]


def check_grantable(guild: discord.Guild, role: discord.Role) -> None:
    """Refuse, saying what to change, a role the bot could not grant."""
    me = guild.me
    if role.is_default() or role.managed:
        raise _refuse(_("badges: the role {role} is managed by Discord or an integration and cannot be given "
                        "to members.").format(role=role.name))
    if not me.guild_permissions.manage_roles:
        raise _refuse(_("badges: I need the Manage Roles permission to give the role {role}. Give it to my role "
                        "in Server Settings > Roles and try again.").format(role=role.name))
    if not me.top_role > role:
        raise _refuse(_("badges: the role {role} is not below my highest role ({mine}), so Discord will not let "
                        "me give it. Move my role above it in Server Settings > Roles, or pick a lower role.")
                      .format(role=role.name, mine=me.top_role.name))


class BadgePosts:
    def __init__(self, services: Services, client: Callable[[], discord.Client]) -> None:
        self.s = services
        self._client = client

    async def check_role(self, guild_id: str, typed: str) -> str:
        """core's RoleCheck for Discord: the role's id, or a ValidationError saying why not."""
        guild = self._client().get_guild(int(guild_id)) if guild_id.isdigit() else None
        if guild is None or guild.me is None:
            raise _refuse(_("badges: I can't see this server right now, so I can't check the role. Try again in a "
                            "moment."))
        role = find_role(guild, typed)
        check_grantable(guild, role)
        return str(role.id)

    async def announce(self, key: str) -> None:
        """Say in the server that a member earned a badge (in the channel of the raid that crossed it)."""
        async def send(d: Delivery) -> dict[str, Any] | None:
            award = await self.s.badges.award_of(key)
            if award is None or not award.channel_id:
                return None  # nothing to say, or nowhere to say it (no raid has run in this server)
            channel = self._client().get_partial_messageable(int(award.channel_id))
            view = render.message(info_view(announcement_text(award)))
            message = await _sent(channel.send(**view, nonce=d.nonce))
            return {"channel_id": award.channel_id, "message_id": str(message.id)}

        await self._deliver(key, send)

    async def grant(self, key: str, guild_id: str) -> None:
        """Give the member the badge's role; Discord treats a repeat grant as done."""
        async def send(d: Delivery) -> dict[str, Any] | None:
            award = await self.s.badges.award_of(key)
            if award is None or not award.role_id or not award.platform_user_id:
                return None
            guild = self._client().get_guild(int(guild_id))
            if guild is None:
                raise LookupError(f"server {guild_id} is not in reach now")
            try:
                member = await _sent(guild.fetch_member(int(award.platform_user_id)))
            except discord.NotFound:
                log.info("badge %s: the member left the server, no role to give", key)
                return None
            await _sent(member.add_roles(discord.Object(int(award.role_id)),
                                         reason=_("nubi badge {badge} ({points} points)").format(
                                             badge=award.name, points=award.threshold)))
            return {"role_id": award.role_id, "user_id": award.platform_user_id}

        await self._deliver(key, send)

    async def _deliver(self, key: str, send: Any) -> None:
        try:
            await self.s.outbox.deliver(key, send)
        except RetryLater:
            pass  # released with its wait: the sweep brings it back then
