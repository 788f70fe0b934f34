"""The slash-command tree: typed options mapped onto core's command dataclasses, nothing more.

Every callback builds the command object the text parser would build and hands it to
`services.commands.execute` through the adapter, which answers the interaction in time. Ranges are
declared for Discord's client, but discord.py does not enforce them: core validates every value.
Every description (and the names of fixed choices) is a gettext message: `CatalogTranslator` gives
Discord the Spanish and Russian texts from nubi's catalogs when the tree is synced, so a member whose
Discord is in one of those languages reads them in it; command and option names stay English, the
same words everywhere (what the docs, the help and other members type). Moderator commands are
registered without a default permission, so members with the configured
moderator role see them with no override in the server's settings; who is a moderator (Manage Server
or that role) is checked on every call, before anything runs, and others get a private refusal (core
refuses them too). Autocomplete reads core state and never fails loudly.
"""

from __future__ import annotations

import logging
import zoneinfo
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.app_commands import (
    Choice,
    Range,
    TranslationContextLocation,
    TranslationContextTypes,
    locale_str,
)

from core.commands import parser as p
from core.community_settings import KEYS as SETTING_KEYS
from core.directory import MemberRef, find_community
from core.errors import NubiError
from core.i18n import N_, translations
from core.raids.model import ACTION_LABELS
from core.targets import Mention

if TYPE_CHECKING:
    from .adapter import DiscordAdapter

log = logging.getLogger(__name__)

MAX_CHOICES = 25
NOT_MODERATOR = N_("Sorry, only moderators can do that here.")
Count = Range[int, 1, 1_000_000]
Top = Range[int, 1, 50]
Window = Literal["day", "week", "month", "all"]
AnnouncedWindow = Literal["day", "week", "month", "all", "day-so-far", "week-so-far", "month-so-far"]
Verification = Literal["honor", "proof_link", "x_api", "review"]
# The names Discord shows for the fixed choices above (the values core receives stay these words): marked
# here for the catalogs, translated by CatalogTranslator like the descriptions.
CHOICE_NAMES = (
    N_("raid"), N_("day"), N_("week"), N_("month"), N_("all"), N_("day-so-far"), N_("week-so-far"),
    N_("month-so-far"), N_("honor"), N_("proof_link"), N_("x_api"), N_("review"),
)
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


@app_commands.command(name="join", description=N_("Join the raid running in this channel"))
@app_commands.guild_only()
async def join(interaction: Interaction) -> None:
    await run(interaction, p.Join(), ephemeral=False)


@app_commands.command(name="claim", description=N_("Claim an action you did for the raid"))
@app_commands.guild_only()
@app_commands.describe(action=N_("What you did"), proof_url=N_("Link to your reply or quote, if the raid asks for proof"))
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


@app_commands.command(name="leaderboard", description=N_("Show the leaderboard"))
@app_commands.guild_only()
@app_commands.describe(scope=N_("This raid, or a window of time"), top=N_("How many places to show"))
async def leaderboard(
    interaction: Interaction, scope: Literal["raid", "day", "week", "month", "all"] = "raid", top: Top | None = None
) -> None:
    cmd = p.Leaderboard(scope) if top is None else p.Leaderboard(scope, top)
    await run(interaction, cmd, ephemeral=False)


@app_commands.command(name="me", description=N_("Your points, rank and streak"))
@app_commands.guild_only()
async def me(interaction: Interaction) -> None:
    await run(interaction, p.Me())


@app_commands.command(name="link", description=N_("Link your X account, or your accounts on other platforms"))
@app_commands.guild_only()
@app_commands.describe(handle=N_("Your X handle"), verify=N_("Prove a handle you linked before"),
                       account=N_("Get a one-time code to link your Telegram account with this one"),
                       code=N_("A code /link account gave your other account"))
async def link(interaction: Interaction, handle: str | None = None, verify: bool = False, account: bool = False,
               code: str | None = None) -> None:
    if account or code:  # answered for the member's eyes only: a code is a key to their account
        await run(interaction, p.LinkAccount(code.strip() if code else None))
        return
    await run(interaction, p.Link(None if verify else handle, verify))


@app_commands.command(name="help", description=N_("What nubi can do"))
@app_commands.guild_only()
async def help_(interaction: Interaction) -> None:
    await run(interaction, p.Help())


# -- raids (moderators) --------------------------------------------------------------------------

raid = ModeratorGroup(name="raid", description=N_("Run raids in this channel"), guild_only=True)


@raid.command(name="start", description=N_("Start a raid on a post"))
@app_commands.describe(
    url=N_("The post to raid (https://...)"),
    likes=N_("Target number of likes"), reposts=N_("Target number of reposts"), replies=N_("Target number of replies"),
    quotes=N_("Target number of quotes"), bookmarks=N_("Target number of bookmarks"), follows=N_("Target number of follows"),
    minutes=N_("How long the raid runs (default 30)"), max_participants=N_("Most raiders allowed"),
    lock=N_("Lock the chat while the raid runs"), replace=N_("End the raid running here and start this one"),
    verification=N_("How claims are checked"),
    pin=N_("Pin the raid post while it runs (default: the server's pin setting)"),
    thread=N_("Run the raid in a new thread of this channel"),
    partners=N_("Post it in the chats linked with /community link too (default: the server's partners setting)"),
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


@raid.command(name="end", description=N_("End the raid now and post its report"))
async def raid_end(interaction: Interaction) -> None:
    await run(interaction, p.RaidEnd(cancel=False), defer=True)


@raid.command(name="cancel", description=N_("Cancel the raid"))
async def raid_cancel(interaction: Interaction) -> None:
    await run(interaction, p.RaidEnd(cancel=True), defer=True)


@raid.command(name="status", description=N_("Show the running raid"))
async def raid_status(interaction: Interaction) -> None:
    await run(interaction, p.RaidStatus(), ephemeral=False)


@app_commands.command(name="unlock", description=N_("Lift the raid chat lock now"))
@app_commands.guild_only()
@app_commands.check(moderators_only)
async def unlock(interaction: Interaction) -> None:
    await run(interaction, p.Unlock(), defer=True, ephemeral=False)


# -- moderation ----------------------------------------------------------------------------------


@app_commands.command(name="ban", description=N_("Ban a member from raids here"))
@app_commands.guild_only()
@app_commands.check(moderators_only)
@app_commands.describe(member=N_("The member"), reason=N_("Why (kept in the audit log)"))
async def ban(interaction: Interaction, member: discord.User, reason: str | None = None) -> None:
    target = mention(member)
    await run(interaction, p.BanCmd(target.text, reason), ephemeral=False, mentions=(target,))


@app_commands.command(name="unban", description=N_("Let a banned member raid again"))
@app_commands.guild_only()
@app_commands.check(moderators_only)
@app_commands.describe(member=N_("The member"))
async def unban(interaction: Interaction, member: discord.User) -> None:
    target = mention(member)
    await run(interaction, p.UnbanCmd(target.text), ephemeral=False, mentions=(target,))


points = ModeratorGroup(name="points", description=N_("Add or remove points, with a reason"), guild_only=True)


async def _adjust(interaction: Interaction, member: discord.User, amount: int, reason: str, sign: int) -> None:
    if amount < 1:  # the sign comes from the subcommand; core then checks the size
        raise p.CommandError("the number of points must be positive", "points")
    target = mention(member)
    await run(interaction, p.PointsCmd(target.text, sign * amount, reason), ephemeral=False, mentions=(target,))


@points.command(name="add", description=N_("Give a member points"))
@app_commands.describe(member=N_("The member"), amount=N_("How many points"), reason=N_("Why (kept in the audit log)"))
async def points_add(interaction: Interaction, member: discord.User, amount: Count, reason: str) -> None:
    await _adjust(interaction, member, amount, reason, 1)


@points.command(name="remove", description=N_("Take points from a member"))
@app_commands.describe(member=N_("The member"), amount=N_("How many points"), reason=N_("Why (kept in the audit log)"))
async def points_remove(interaction: Interaction, member: discord.User, amount: Count, reason: str) -> None:
    await _adjust(interaction, member, amount, reason, -1)


# -- schedules -----------------------------------------------------------------------------------

schedule = ModeratorGroup(name="schedule", description=N_("Scheduled leaderboard posts"), guild_only=True)


@schedule.command(name="add", description=N_("Post a leaderboard on a schedule"))
@app_commands.describe(cron=N_("5 cron fields, e.g. 0 12 * * mon"),
                       window=N_("The last completed day/week/month, or the running one (so far)"), top=N_("How many places"),
                       tz=N_("Time zone of the cron, e.g. Europe/Berlin"))
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


@schedule.command(name="list", description=N_("List the scheduled posts here"))
async def schedule_list(interaction: Interaction) -> None:
    await run(interaction, p.ScheduleList())


@schedule.command(name="remove", description=N_("Remove a scheduled post"))
@app_commands.describe(schedule_id=N_("The schedule's number, as /schedule list shows it"))
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

review = ModeratorGroup(name="review", description=N_("Claims waiting for a moderator"), guild_only=True)


@review.command(name="list", description=N_("Claims waiting for review"))
async def review_list(interaction: Interaction) -> None:
    await run(interaction, p.Review())


@review.command(name="links", description=N_("Handle links refused because another member holds the handle"))
async def review_links(interaction: Interaction) -> None:
    await run(interaction, p.Review("links"))


@review.command(name="accept", description=N_("Accept a claim"))
@app_commands.describe(claim_id=N_("The claim's number"))
async def review_accept(interaction: Interaction, claim_id: int) -> None:
    await run(interaction, p.Review("accept", claim_id))


@review.command(name="reject", description=N_("Reject a claim"))
@app_commands.describe(claim_id=N_("The claim's number"))
async def review_reject(interaction: Interaction, claim_id: int) -> None:
    await run(interaction, p.Review("reject", claim_id))


@review.command(name="revoke", description=N_("Take back an accepted claim, bonuses included"))
@app_commands.describe(claim_id=N_("The claim's number"), reason=N_("Why (kept in the audit log)"))
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

member_group = ModeratorGroup(name="member", description=N_("Members of this community"), guild_only=True)


@member_group.command(name="merge", description=N_("Approve linking two accounts that both hold points here"))
@app_commands.describe(first=N_("A member: @mention, #id from nubi's refusal, or their user id"),
                       second=N_("The other member, named the same ways"))
async def member_merge(interaction: Interaction, first: Range[str, 1, 64], second: Range[str, 1, 64]) -> None:
    await run(interaction, p.MemberMerge(first.strip(), second.strip()), ephemeral=False)


# -- partner chats (moderators) --------------------------------------------------------------------

community_group = ModeratorGroup(name="community", description=N_("Link this channel with other chats for partner raids"),
                                 guild_only=True)


@community_group.command(name="link", description=N_("Get a one-time code that links another chat with this channel"))
async def community_link(interaction: Interaction) -> None:
    await run(interaction, p.CommunityLink())


@community_group.command(name="join", description=N_("Link this channel with the chat that gave you a code"))
@app_commands.describe(code=N_("The code /community link answered in the other chat"))
async def community_join(interaction: Interaction, code: Range[str, 1, 32]) -> None:
    await run(interaction, p.CommunityJoin(code.strip()), ephemeral=False)


@community_group.command(name="chats", description=N_("The chats linked with this channel"))
async def community_chats(interaction: Interaction) -> None:
    await run(interaction, p.CommunityChats())


@community_group.command(name="unlink", description=N_("Remove a link of this channel"))
@app_commands.describe(link_id=N_("The link's number, as /community chats lists it"))
async def community_unlink(interaction: Interaction, link_id: Range[int, 1]) -> None:
    await run(interaction, p.CommunityUnlink(link_id), ephemeral=False)


# -- settings -------------------------------------------------------------------------------------

settings_group = app_commands.Group(name="settings", description=N_("This community's own settings"), guild_only=True)


@settings_group.command(name="show", description=N_("Show this community's settings"))
async def settings_show(interaction: Interaction) -> None:
    await run(interaction, p.SettingsShow())


@settings_group.command(name="set", description=N_("Change a setting (moderators)"))
@app_commands.describe(key=N_("e.g. verification, objectives.like.points, timezone"), value=N_("The new value"))
async def settings_set(interaction: Interaction, key: str, value: Range[str, 1, 500]) -> None:
    await run(interaction, p.SettingsChange(key.strip().lower(), value), ephemeral=False)


@settings_group.command(name="reset", description=N_("Put a setting back to the default (moderators)"))
@app_commands.describe(key=N_("The setting, e.g. verification"))
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


# Discord's locales (https://discord.com/developers/docs/reference#locales) each shipped catalog serves.
DISCORD_LOCALES: dict[str, tuple[discord.Locale, ...]] = {
    "es": (discord.Locale.spain_spanish, discord.Locale.latin_american_spanish),
    "ru": (discord.Locale.russian,),
}
LANGUAGE_OF = {locale: language for language, locales in DISCORD_LOCALES.items() for locale in locales}
TRANSLATED = frozenset({
    TranslationContextLocation.command_description, TranslationContextLocation.group_description,
    TranslationContextLocation.parameter_description, TranslationContextLocation.choice_name,
})
MAX_TEXT = 100  # Discord: descriptions and choice names are 1-100 characters, localized ones too


class CatalogTranslator(app_commands.Translator):
    """discord.py's translator for the command tree, backed by nubi's gettext catalogs (core/i18n.py).

    Asked for every string and every Discord locale when the tree is synced; it answers descriptions
    and choice names in the locales of a shipped catalog, and None (Discord shows the English) for
    names, other locales, and a text the catalog lacks or that would break Discord's length rule."""

    async def translate(
        self, string: locale_str, locale: discord.Locale, context: TranslationContextTypes
    ) -> str | None:
        language = LANGUAGE_OF.get(locale)
        if language is None or context.location not in TRANSLATED:
            return None
        text = translations(language).gettext(string.message)
        if text == string.message:
            return None
        if not 1 <= len(text) <= MAX_TEXT:
            log.warning("the %s text for %r has %d characters, more than Discord takes; English is shown",
                        language, string.message, len(text))
            return None
        return text


async def use_catalogs(tree: app_commands.CommandTree[Any]) -> None:
    """Give the tree nubi's translator, so its sync sends the localized descriptions."""
    await tree.set_translator(CatalogTranslator())
