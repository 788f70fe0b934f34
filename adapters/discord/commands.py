"""The slash-command tree: typed options mapped onto core's command dataclasses, nothing more.

Every callback builds the command object the text parser would build and hands it to
`services.commands.execute` through the adapter, which answers the interaction in time. Ranges are
declared for Discord's client, but discord.py does not enforce them: core validates every value.
Moderator commands are registered without a default permission, so members with the configured
moderator role see them with no override in the server's settings; who is a moderator (Manage Server
or that role) is checked on every call, before anything runs, and others get a private refusal (core
refuses them too). Autocomplete reads core state and never fails loudly.
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.app_commands import Choice, Range

from core.commands import parser as p
from core.community_settings import KEYS as SETTING_KEYS
from core.directory import MemberRef, find_community
from core.errors import NubiError
from core.i18n import N_, _
from core.raids.model import ACTION_LABELS
from core.targets import Mention

if TYPE_CHECKING:
    from .adapter import DiscordAdapter

MAX_CHOICES = 25
NOT_MODERATOR = N_("Sorry, only moderators can do that here.")
Count = Range[int, 1, 1_000_000]
Top = Range[int, 1, 50]
Window = Literal["day", "week", "month", "all"]
AnnouncedWindow = Literal["day", "week", "month", "all", "day-so-far", "week-so-far", "month-so-far"]
Verification = Literal["honor", "proof_link", "x_api", "review"]
Interaction = discord.Interaction[Any]


def host(interaction: Interaction) -> DiscordAdapter:
    return interaction.client.nubi  # type: ignore[attr-defined, no-any-return]


def mention(user: discord.abc.User) -> Mention:
    """A member picked in a user option: Discord resolved them, so core takes them as they are."""
    return Mention(f"<@{user.id}>", MemberRef("discord", str(user.id), user.display_name, user.name))


async def run(
    interaction: Interaction, cmd: p.Command, *, defer: bool = False, ephemeral: bool = True,
    mentions: tuple[Mention, ...] = (),
) -> None:
    await host(interaction).run_command(interaction, cmd, defer=defer, ephemeral=ephemeral, mentions=mentions)


class NotModerator(app_commands.CheckFailure):
    """A member without Manage Server or the moderator role ran a moderator command."""


def moderators_only(interaction: Interaction) -> bool:
    if not host(interaction).is_moderator(interaction):
        raise NotModerator(NOT_MODERATOR)
    return True


class ModeratorGroup(app_commands.Group):
    """A command group only moderators may run (checked here, per call: Discord's UI shows it to all)."""

    async def interaction_check(self, interaction: Interaction) -> bool:
        return moderators_only(interaction)


# -- members -------------------------------------------------------------------------------------


@app_commands.command(name="join", description="Join the raid running in this channel")
@app_commands.guild_only()
async def join(interaction: Interaction) -> None:
    await run(interaction, p.Join(), ephemeral=False)


@app_commands.command(name="claim", description="Claim an action you did for the raid")
@app_commands.guild_only()
@app_commands.describe(action="What you did", proof_url="Link to your reply or quote, if the raid asks for proof")
async def claim(interaction: Interaction, action: str, proof_url: str | None = None) -> None:
    await run(interaction, p.Claim(p.action_name(action) or action.strip().lower(), proof_url))


@claim.autocomplete("action")
async def claim_action(interaction: Interaction, current: str) -> list[Choice[str]]:
    services = host(interaction).services
    chat = host(interaction).chat(interaction)
    try:
        progress = await services.raids.progress(await services.raids.active_raid_id(chat), top=0)
    except NubiError:
        return []
    typed = current.strip().lower()
    return [
        Choice(name=f"{ACTION_LABELS[o.action][0].capitalize()} (+{o.points})", value=o.action)
        for o in progress.objectives
        if typed in o.action or typed in ACTION_LABELS[o.action][1]
    ][:MAX_CHOICES]


@app_commands.command(name="leaderboard", description="Show the leaderboard")
@app_commands.guild_only()
@app_commands.describe(scope="This raid, or a window of time", top="How many places to show")
async def leaderboard(
    interaction: Interaction, scope: Literal["raid", "day", "week", "month", "all"] = "raid", top: Top | None = None
) -> None:
    cmd = p.Leaderboard(scope) if top is None else p.Leaderboard(scope, top)
    await run(interaction, cmd, ephemeral=False)


@app_commands.command(name="me", description="Your points, rank and streak")
@app_commands.guild_only()
async def me(interaction: Interaction) -> None:
    await run(interaction, p.Me())


@app_commands.command(name="link", description=_("Link your X account, or your accounts on other platforms"))
@app_commands.guild_only()
@app_commands.describe(handle="Your X handle", verify="Prove a handle you linked before",
                       account=_("Get a one-time code to link your Telegram account with this one"),
                       code=_("A code /link account gave your other account"))
async def link(interaction: Interaction, handle: str | None = None, verify: bool = False, account: bool = False,
               code: str | None = None) -> None:
    if account or code:  # answered for the member's eyes only: a code is a key to their account
        await run(interaction, p.LinkAccount(code.strip() if code else None))
        return
    await run(interaction, p.Link(None if verify else handle, verify))


@app_commands.command(name="help", description="What nubi can do")
@app_commands.guild_only()
async def help_(interaction: Interaction) -> None:
    await run(interaction, p.Help())


# -- raids (moderators) --------------------------------------------------------------------------

raid = ModeratorGroup(name="raid", description="Run raids in this channel", guild_only=True)


@raid.command(name="start", description="Start a raid on a post")
@app_commands.describe(
    url="The post to raid (https://...)",
    likes="Target number of likes", reposts="Target number of reposts", replies="Target number of replies",
    quotes="Target number of quotes", bookmarks="Target number of bookmarks", follows="Target number of follows",
    minutes="How long the raid runs (default 30)", max_participants="Most raiders allowed",
    lock="Lock the chat while the raid runs", replace="End the raid running here and start this one",
    verification="How claims are checked",
    pin="Pin the raid post while it runs (default: the server's pin setting)",
    thread="Run the raid in a new thread of this channel",
    partners="Post it in the chats linked with /community link too (default: the server's partners setting)",
)
async def raid_start(
    interaction: Interaction,
    url: str,
    likes: Count | None = None,
    reposts: Count | None = None,
    replies: Count | None = None,
    quotes: Count | None = None,
    bookmarks: Count | None = None,
    follows: Count | None = None,
    minutes: Range[int, 1, 1440] | None = None,
    max_participants: Range[int, 1, 100_000] | None = None,
    lock: bool = False,
    replace: bool = False,
    verification: Verification | None = None,
    pin: bool | None = None,
    thread: bool = False,
    partners: bool | None = None,
) -> None:
    targets = {"like": likes, "repost": reposts, "reply": replies, "quote": quotes, "bookmark": bookmarks,
               "follow": follows}
    cmd = p.RaidStart(
        url=url,
        objectives={action: n for action, n in targets.items() if n is not None},
        duration_seconds=minutes * 60 if minutes is not None else None,
        max_participants=max_participants,
        lock=lock,
        replace=replace,
        verification=verification,
        pin=pin,
        thread=thread,
        partners=partners,
    )
    await run(interaction, cmd, defer=True)  # posting and locking happen inside: answer first


@raid.command(name="end", description="End the raid now and post its report")
async def raid_end(interaction: Interaction) -> None:
    await run(interaction, p.RaidEnd(cancel=False), defer=True)


@raid.command(name="cancel", description="Cancel the raid")
async def raid_cancel(interaction: Interaction) -> None:
    await run(interaction, p.RaidEnd(cancel=True), defer=True)


@raid.command(name="status", description="Show the running raid")
async def raid_status(interaction: Interaction) -> None:
    await run(interaction, p.RaidStatus(), ephemeral=False)


@app_commands.command(name="unlock", description="Lift the raid chat lock now")
@app_commands.guild_only()
@app_commands.check(moderators_only)
async def unlock(interaction: Interaction) -> None:
    await run(interaction, p.Unlock(), defer=True, ephemeral=False)


# -- moderation ----------------------------------------------------------------------------------


@app_commands.command(name="ban", description="Ban a member from raids here")
@app_commands.guild_only()
@app_commands.check(moderators_only)
async def ban(interaction: Interaction, member: discord.User, reason: str | None = None) -> None:
    target = mention(member)
    await run(interaction, p.BanCmd(target.text, reason), ephemeral=False, mentions=(target,))


@app_commands.command(name="unban", description="Let a banned member raid again")
@app_commands.guild_only()
@app_commands.check(moderators_only)
async def unban(interaction: Interaction, member: discord.User) -> None:
    target = mention(member)
    await run(interaction, p.UnbanCmd(target.text), ephemeral=False, mentions=(target,))


points = ModeratorGroup(name="points", description="Add or remove points, with a reason", guild_only=True)


async def _adjust(interaction: Interaction, member: discord.User, amount: int, reason: str, sign: int) -> None:
    if amount < 1:  # the sign comes from the subcommand; core then checks the size
        raise p.CommandError("the number of points must be positive", "points")
    target = mention(member)
    await run(interaction, p.PointsCmd(target.text, sign * amount, reason), ephemeral=False, mentions=(target,))


@points.command(name="add", description="Give a member points")
async def points_add(interaction: Interaction, member: discord.User, amount: Count, reason: str) -> None:
    await _adjust(interaction, member, amount, reason, 1)


@points.command(name="remove", description="Take points from a member")
async def points_remove(interaction: Interaction, member: discord.User, amount: Count, reason: str) -> None:
    await _adjust(interaction, member, amount, reason, -1)


# -- schedules -----------------------------------------------------------------------------------

schedule = ModeratorGroup(name="schedule", description="Scheduled leaderboard posts", guild_only=True)


@schedule.command(name="add", description="Post a leaderboard on a schedule")
@app_commands.describe(cron="5 cron fields, e.g. 0 12 * * mon",
                       window="The last completed day/week/month, or the running one (so far)", top="How many places",
                       tz="Time zone of the cron, e.g. Europe/Berlin")
async def schedule_add(
    interaction: Interaction, cron: str, window: AnnouncedWindow, top: Top | None = None, tz: str | None = None
) -> None:
    options: dict[str, Any] = {}  # unset options keep the parser's defaults
    if top is not None:
        options["top"] = top
    if tz:
        options["tz"] = tz
    await run(interaction, p.ScheduleAdd(cron, window, **options), ephemeral=False)


@schedule_add.autocomplete("tz")
async def schedule_zone(interaction: Interaction, current: str) -> list[Choice[str]]:
    typed = current.strip().lower()
    return [Choice(name=z, value=z) for z in _zones() if typed in z.lower()][:MAX_CHOICES]


@cache
def _zones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


@schedule.command(name="list", description="List the scheduled posts here")
async def schedule_list(interaction: Interaction) -> None:
    await run(interaction, p.ScheduleList())


@schedule.command(name="remove", description="Remove a scheduled post")
async def schedule_remove(interaction: Interaction, schedule_id: int) -> None:
    await run(interaction, p.ScheduleRemove(schedule_id))


@schedule_remove.autocomplete("schedule_id")
async def schedule_choices(interaction: Interaction, current: str) -> list[Choice[int]]:
    community_id = await _community_for_moderator(interaction)
    if community_id is None:
        return []
    items = await host(interaction).services.schedules.list(community_id)
    return [
        Choice(name=f"#{s.id}: {s.window} top {s.top_n} at {s.cron} ({s.timezone})"[:100], value=s.id)
        for s in items
        if current.strip() in str(s.id)
    ][:MAX_CHOICES]


# -- review --------------------------------------------------------------------------------------

review = ModeratorGroup(name="review", description="Claims waiting for a moderator", guild_only=True)


@review.command(name="list", description="Claims waiting for review")
async def review_list(interaction: Interaction) -> None:
    await run(interaction, p.Review())


@review.command(name="links", description="Handle links refused because another member holds the handle")
async def review_links(interaction: Interaction) -> None:
    await run(interaction, p.Review("links"))


@review.command(name="accept", description="Accept a claim")
async def review_accept(interaction: Interaction, claim_id: int) -> None:
    await run(interaction, p.Review("accept", claim_id))


@review.command(name="reject", description="Reject a claim")
async def review_reject(interaction: Interaction, claim_id: int) -> None:
    await run(interaction, p.Review("reject", claim_id))


@review.command(name="revoke", description="Take back an accepted claim, bonuses included")
@app_commands.describe(claim_id="The claim's number", reason="Why (kept in the audit log)")
async def review_revoke(
    interaction: Interaction, claim_id: int, reason: Range[str, 1, 500] | None = None
) -> None:
    await run(interaction, p.Review("revoke", claim_id, reason))


@review_accept.autocomplete("claim_id")
@review_reject.autocomplete("claim_id")
async def review_choices(interaction: Interaction, current: str) -> list[Choice[int]]:
    community_id = await _community_for_moderator(interaction)
    if community_id is None:
        return []
    typed = current.strip().lstrip("#").lower()
    items = await host(interaction).services.raids.review_queue(community_id=community_id, limit=MAX_CHOICES)
    return [
        Choice(name=f"#{i.claim_id} raid #{i.raid_id}: {i.name} claims {i.action}"[:100], value=i.claim_id)
        for i in items
        if typed in str(i.claim_id) or typed in i.name.lower()
    ]


# -- members (moderators) --------------------------------------------------------------------------

member_group = ModeratorGroup(name="member", description=_("Members of this community"), guild_only=True)


@member_group.command(name="merge", description=_("Approve linking two accounts that both hold points here"))
@app_commands.describe(first=_("A member: @mention, #id from nubi's refusal, or their user id"),
                       second=_("The other member, named the same ways"))
async def member_merge(interaction: Interaction, first: Range[str, 1, 64], second: Range[str, 1, 64]) -> None:
    await run(interaction, p.MemberMerge(first.strip(), second.strip()), ephemeral=False)


# -- partner chats (moderators) --------------------------------------------------------------------

community_group = ModeratorGroup(name="community", description="Link this channel with other chats for partner raids",
                                 guild_only=True)


@community_group.command(name="link", description="Get a one-time code that links another chat with this channel")
async def community_link(interaction: Interaction) -> None:
    await run(interaction, p.CommunityLink())


@community_group.command(name="join", description="Link this channel with the chat that gave you a code")
@app_commands.describe(code="The code /community link answered in the other chat")
async def community_join(interaction: Interaction, code: Range[str, 1, 32]) -> None:
    await run(interaction, p.CommunityJoin(code.strip()), ephemeral=False)


@community_group.command(name="chats", description="The chats linked with this channel")
async def community_chats(interaction: Interaction) -> None:
    await run(interaction, p.CommunityChats())


@community_group.command(name="unlink", description="Remove a link of this channel")
@app_commands.describe(link_id="The link's number, as /community chats lists it")
async def community_unlink(interaction: Interaction, link_id: Range[int, 1]) -> None:
    await run(interaction, p.CommunityUnlink(link_id), ephemeral=False)


# -- settings -------------------------------------------------------------------------------------

settings_group = app_commands.Group(name="settings", description="This community's own settings", guild_only=True)


@settings_group.command(name="show", description="Show this community's settings")
async def settings_show(interaction: Interaction) -> None:
    await run(interaction, p.SettingsShow())


@settings_group.command(name="set", description="Change a setting (moderators)")
@app_commands.describe(key="e.g. verification, objectives.like.points, timezone", value="The new value")
async def settings_set(interaction: Interaction, key: str, value: Range[str, 1, 500]) -> None:
    await run(interaction, p.SettingsChange(key.strip().lower(), value), ephemeral=False)


@settings_group.command(name="reset", description="Put a setting back to the default (moderators)")
async def settings_reset(interaction: Interaction, key: str) -> None:
    await run(interaction, p.SettingsChange(key.strip().lower(), None), ephemeral=False)


@settings_set.autocomplete("key")
@settings_reset.autocomplete("key")
async def settings_keys(interaction: Interaction, current: str) -> list[Choice[str]]:
    typed = current.strip().lower()
    return [Choice(name=k, value=k) for k in SETTING_KEYS if typed in k][:MAX_CHOICES]


async def _community_for_moderator(interaction: Interaction) -> int | None:
    """Moderator-only suggestions: checks do not run for autocomplete, so it asks itself."""
    adapter = host(interaction)
    if not adapter.is_moderator(interaction):
        return None
    chat = adapter.chat(interaction)
    return await adapter.services.db.read(lambda s: find_community(s, chat))


COMMANDS: tuple[app_commands.Command[Any, ..., Any] | app_commands.Group, ...] = (
    join, claim, leaderboard, me, link, help_, raid, unlock, ban, unban, points, schedule, review, settings_group,
    member_group, community_group,
)


def install(tree: app_commands.CommandTree[Any]) -> None:
    """Add nubi's commands to a tree (the bot's, or the bare one `nubi discord sync` uses)."""
    for command in COMMANDS:
        tree.add_command(command)
