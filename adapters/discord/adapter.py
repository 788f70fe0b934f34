"""nubi on Discord (discord.py 2.7): slash commands, persistent raid buttons, event-driven posts, chat lock.

The adapter translates and nothing else: interactions become core commands and button presses
(`services.commands.execute` / `press`), core events become posts, edits and channel overwrites.
Building the client is separate from connecting it, so tests drive the real client offline:
`build_client()` makes one whose setup_hook registers the persistent buttons and subscribes to core
events; `start()` logs in and runs the gateway connection in a background task.

Every interaction is answered within Discord's 3 seconds: work that may be slow (a raid start posts
and locks) is deferred at once; anything else is answered directly, or deferred if core has not
replied after `answer_within` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

import discord
from discord import app_commands

from core.commands.parser import Command, RaidStart
from core.commands.service import ChatContext, Reply, error_reply
from core.config import DiscordConfig
from core.directory import ChatRef, MemberRef
from core.events import (
    AnnouncementDue,
    LockReleased,
    PostDue,
    ProgressChanged,
    RaidEnded,
    RaidStarted,
    ReportChanged,
)
from core.i18n import N_, _, use_language
from core.partners import Lacking
from core.services import Services
from core.targets import Mention
from core.views import View

from . import commands, permissions, render
from .badges import BadgePosts
from .chat_lock import ChannelLocks
from .endpoints import use_endpoints
from .posts import RaidPosts, jump_url
from .views import CUSTOM_ID, RaidButton

log = logging.getLogger(__name__)

PLATFORM = "discord"
MAX_RATELIMIT_WAIT = 30.0  # discord.py waits out shorter 429s itself; longer ones raise RateLimited
NOT_ON_POST = N_("That button is no longer on this post.")
ANSWER_WITHIN = 1.0  # Discord drops an interaction not answered within 3 s: defer early enough to land under load


class _NubiClient:
    """What both client flavours add: the adapter, the command tree and the two lifecycle hooks."""

    nubi: DiscordAdapter
    tree: app_commands.CommandTree[Any]

    def _attach(self, adapter: DiscordAdapter) -> None:
        self.nubi = adapter
        self.tree = app_commands.CommandTree(self)  # type: ignore[arg-type]
        commands.install(self.tree)
        self.tree.error(adapter.on_tree_error)

    async def setup_hook(self) -> None:
        await commands.use_catalogs(self.tree)
        await self.nubi.setup(self)  # type: ignore[arg-type]

    async def on_ready(self) -> None:
        await self.nubi.on_ready()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        await self.nubi.adopt_guild(guild)

    async def on_guild_available(self, guild: discord.Guild) -> None:  # back after an outage
        await self.nubi.adopt_guild(guild)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self.nubi.on_removed_button(interaction)


class NubiClient(_NubiClient, discord.Client):
    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        discord.Client.__init__(self, **options)
        self._attach(adapter)


class NubiShardedClient(_NubiClient, discord.AutoShardedClient):
    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        discord.AutoShardedClient.__init__(self, **options)
        self._attach(adapter)


def client_options() -> dict[str, Any]:
    return {
        "intents": discord.Intents(guilds=True),  # channels and roles; no messages, no member lists
        "allowed_mentions": discord.AllowedMentions.none(),  # names in replies never ping anyone
        "max_ratelimit_timeout": MAX_RATELIMIT_WAIT,
    }


class DiscordAdapter:
    def __init__(self, services: Services, config: DiscordConfig) -> None:
        self.services = services
        self.config = config
        self.answer_within = ANSWER_WITHIN
        self.posts = RaidPosts(services, lambda: self.client, config.edit_interval_seconds)
        self.locks = ChannelLocks(services, lambda: self.client, self.posts.poke)
        self.posts.partners.chat_locks = self.locks
        self.badges = BadgePosts(services, lambda: self.client)
        services.community_settings.role_checks[PLATFORM] = self.badges.check_role
        services.partners.checkers[PLATFORM] = self.check_partner
        self._handlers: list[tuple[type[Any], Any]] = [
            (RaidStarted, self.on_raid_started),
            (ProgressChanged, self.posts.on_progress_changed),
            (RaidEnded, self.posts.on_raid_ended),
            (LockReleased, self.locks.on_released),
            (AnnouncementDue, self.posts.on_announcement),
            (PostDue, self.on_post_due),
            (ReportChanged, self.posts.on_report_changed),
            # the raid's posts in its partner channels on Discord (core/partners.py)
            (RaidStarted, self.posts.partners.on_raid_started),
            (ProgressChanged, self.posts.partners.on_progress_changed),
            (RaidEnded, self.posts.partners.on_raid_ended),
            (ReportChanged, self.posts.partners.on_report_changed),
        ]
        self._subscribed = False
        self._adopted: set[str] = set()  # channels whose old community (migration 0008) was looked for
        self._connection: asyncio.Task[None] | None = None
        self._opened: discord.Client | None = None  # a client that logged in (or tried) and needs closing
        self.reconciled = asyncio.Event()
        self.client: discord.Client = self.build_client()

    # -- lifecycle -----------------------------------------------------------------------------------

    def build_client(self) -> discord.Client:
        """A fresh client for this adapter (sharded when configured); it becomes `self.client`."""
        use_endpoints(self.config)
        options = client_options()
        if self.config.shard_count:
            client: discord.Client = NubiShardedClient(
                self, shard_count=self.config.shard_count, shard_ids=self.config.shard_ids, **options
            )
        else:
            client = NubiClient(self, **options)
        self.client = client
        self.reconciled = asyncio.Event()
        return client

    async def setup(self, client: discord.Client) -> None:
        """setup_hook: persistent buttons for every raid post, and the core events (once per adapter)."""
        self._opened = client
        client.add_dynamic_items(RaidButton)
        if not self._subscribed:
            for event_type, handler in self._handlers:
                self.services.bus.subscribe(event_type, handler)
            self._subscribed = True

    async def on_ready(self) -> None:
        """Adopt the servers' old channel communities; finish chat-lock releases a previous run
        requested but could not confirm, and the unpins of ended raids still owed."""
        for guild in list(self.client.guilds):
            await self.adopt_guild(guild)
        try:
            restored = await self.locks.restore_pending()
            if restored:
                log.info("restored %d channel(s) whose raid lock was released while away", restored)
        except Exception:
            log.exception("restoring released chat locks failed")
        try:
            await self.posts.finish_unpins()
        except Exception:
            log.exception("finishing owed unpins failed")
        finally:
            self.reconciled.set()

    async def start(self) -> None:
        """Log in (a bad token fails here, loudly) and keep the gateway connection in a background task."""
        if self.config.token is None:
            raise RuntimeError("discord.token is not set (NUBI_DISCORD_TOKEN)")
        if self.client.is_closed():
            self.build_client()
        self._opened = self.client
        await self.client.login(self.config.token.get_secret_value())
        self._connection = asyncio.create_task(self._connect(self.client), name="nubi-discord-gateway")

    async def _connect(self, client: discord.Client) -> None:
        try:
            await client.connect(reconnect=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the Discord connection stopped")

    async def stop(self) -> None:
        if self._subscribed:
            for event_type, handler in self._handlers:
                self.services.bus.unsubscribe(event_type, handler)
            self._subscribed = False
        if self.services.community_settings.role_checks.get(PLATFORM) == self.badges.check_role:
            del self.services.community_settings.role_checks[PLATFORM]
        if self.services.partners.checkers.get(PLATFORM) == self.check_partner:
            del self.services.partners.checkers[PLATFORM]
        await self.posts.close()
        if self._opened is not None:
            await self._opened.close()
            self._opened = None
        if self._connection is not None:
            self._connection.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connection
            self._connection = None

    # -- who and where -------------------------------------------------------------------------------

    def chat(self, interaction: discord.Interaction[Any]) -> ChatRef:
        """A Discord community is the server (guild); the channel is where the command came from and
        where a raid started there runs. A direct message is a community of its own."""
        if interaction.guild_id is None:
            return ChatRef(PLATFORM, str(interaction.channel_id), getattr(interaction.channel, "name", None))
        guild = interaction.guild
        return ChatRef(PLATFORM, str(interaction.guild_id), guild.name if guild is not None else None,
                       channel=str(interaction.channel_id))

    async def adopt(self, server: ChatRef, channel_ids: list[str]) -> None:
        """Move the channels' communities from before communities were servers (migration 0008) into
        the server's; each channel is looked at once per process."""
        fresh = [c for c in channel_ids if c not in self._adopted]
        if not fresh:
            return
        await self.services.communities.adopt_channels(ChatRef(server.platform, server.external_id, server.title), fresh)
        self._adopted.update(fresh)

    async def adopt_guild(self, guild: discord.Guild) -> None:
        """A server the gateway announced: adopt its channels' old communities before anyone asks."""
        channels = [str(c.id) for c in (*guild.channels, *guild.threads)]
        try:
            await self.adopt(ChatRef(PLATFORM, str(guild.id), guild.name), channels)
        except Exception:
            log.exception("moving the old channel communities of server %s failed; retried on first use", guild.id)

    async def _adopt_interaction(self, interaction: discord.Interaction[Any]) -> None:
        chat = self.chat(interaction)
        if chat.channel is not None:
            await self.adopt(chat, [chat.channel])

    def is_moderator(self, interaction: discord.Interaction[Any]) -> bool:
        """Manage Server (administrators have it), or the configured moderator role (by id or name)."""
        if interaction.guild_id is None:
            return False
        perms = interaction.permissions
        if perms.manage_guild or perms.administrator:
            return True
        wanted = (self.config.moderator_role or "").strip().lstrip("@")
        user = interaction.user
        if not wanted or not isinstance(user, discord.Member):
            return False
        return any(str(role.id) == wanted or role.name.casefold() == wanted.casefold() for role in user.roles)

    def bot_permissions(self, interaction: discord.Interaction[Any]) -> discord.Permissions:
        """What nubi may do in the interaction's channel: its roles and the channel's overwrites, as
        discord.py computes them from the guild cache; Discord's own figure when the cache lacks them."""
        guild, channel = interaction.guild, interaction.channel
        me = guild.me if guild is not None else None
        if me is not None and isinstance(channel, discord.abc.GuildChannel):
            return channel.permissions_for(me)
        return interaction.app_permissions

    async def check_partner(self, chat: ChatRef, lock: bool, pin: bool) -> list[Lacking]:
        """What the bot lacks in a partner channel of a raid (core/partners.py), as discord.py computes it
        from the guild cache (its roles and the channel's overwrites): the same list as the pre-start
        check of a raid's own channel, plus Pin Messages when the raid pins."""
        channel = self.client.get_channel(int(chat.destination))
        guild = getattr(channel, "guild", None)
        me = guild.me if guild is not None else None
        if me is None or not isinstance(channel, discord.abc.GuildChannel):
            return [Lacking(_("access to that channel (I can't see it)"))]
        held = channel.permissions_for(me)
        lacking = [Lacking(n.label, "lock" if n.lock_only else None) for n in permissions.missing(held, lock=lock)]
        if pin and not held.pin_messages:
            lacking.append(Lacking("Pin Messages", "pin"))
        return lacking

    def context(self, interaction: discord.Interaction[Any], mentions: tuple[Mention, ...] = ()) -> ChatContext:
        user = interaction.user
        return ChatContext(
            chat=self.chat(interaction),
            member=MemberRef(PLATFORM, str(user.id), user.display_name, user.name),
            is_moderator=self.is_moderator(interaction),
            private=interaction.guild_id is None,
            mentions=mentions,
        )

    # -- interactions ----------------------------------------------------------------------------------

    async def run_command(
        self, interaction: discord.Interaction[Any], cmd: Command, *, defer: bool = False, ephemeral: bool = True,
        mentions: tuple[Mention, ...] = (),
    ) -> None:
        """A slash command: core decides and words the answer. `ephemeral` is the usual visibility of
        the answer, used when the interaction has to be deferred before core answered; `mentions` are
        the members picked in its user options."""
        if isinstance(cmd, RaidStart):
            lacking = permissions.missing(self.bot_permissions(interaction), lock=cmd.lock, thread=cmd.thread)
            if lacking:  # refused before anything starts: never a raid without its post
                with use_language(await self._language(interaction)):
                    text = permissions.refusal(lacking)
                await interaction.response.send_message(text, ephemeral=True)
                return
        await self._adopt_interaction(interaction)
        ctx = await self._in_language(self.context(interaction, mentions))
        with use_language(ctx.language):
            await self._answer(interaction, self.services.commands.execute(ctx, cmd), defer=defer, ephemeral=ephemeral)

    async def on_button(self, interaction: discord.Interaction[Any], custom_id: str) -> None:
        """A raid-post button: a private confirmation for the member who pressed it."""
        try:
            await self._adopt_interaction(interaction)
            # core reads the community's language with the raid's chat (one read per press); the
            # reply carries it for the adapter's own words (_send)
            await self._answer(interaction, self.services.commands.press(self.context(interaction), custom_id),
                               defer=False, ephemeral=True)
        except Exception as exc:  # dynamic items have no error hook worth the name: answer here
            await self._reply_error(interaction, exc)

    async def on_removed_button(self, interaction: discord.Interaction[Any]) -> None:
        """A press on a raid button the post does not show (the member's screen was behind the final
        edit, or a client sent an id of its own). discord.py drops such presses, which Discord shows
        as "This interaction failed"; nothing is done for them, the member is only told."""
        if interaction.type is not discord.InteractionType.component or interaction.message is None:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        if CUSTOM_ID.fullmatch(custom_id) and custom_id not in _custom_ids(interaction.message):
            log.info("ignored a press of %r, which message %s does not show", custom_id[:100], interaction.message.id)
            with use_language(await self._language(interaction)):
                text = _(NOT_ON_POST)
            with contextlib.suppress(discord.HTTPException):
                await interaction.response.send_message(text, ephemeral=True)

    async def _in_language(self, ctx: ChatContext) -> ChatContext:
        """The context with its community's language: the adapter's own words are in it too."""
        return replace(ctx, language=await self.services.commands.language(ctx.chat))

    async def _language(self, interaction: discord.Interaction[Any]) -> str | None:
        """The community's language for an answer outside a command (None, the default, if unknown)."""
        try:
            return await self.services.commands.language(self.chat(interaction))
        except Exception:
            log.warning("could not read the language of %s", interaction.guild_id or interaction.channel_id)
            return None

    async def _answer(
        self, interaction: discord.Interaction[Any], work: Awaitable[Reply], *, defer: bool, ephemeral: bool
    ) -> None:
        task = asyncio.ensure_future(work)
        if not defer:
            await asyncio.wait({task}, timeout=self.answer_within)
        if not task.done():
            try:
                await interaction.response.defer(ephemeral=ephemeral, thinking=True)
            except Exception:
                await asyncio.gather(task, return_exceptions=True)  # the work still finishes
                raise
        try:
            reply = await task
        except Exception as exc:
            reply = error_reply(exc)
        await self._send(interaction, reply, deferred_ephemeral=ephemeral)

    async def _send(self, interaction: discord.Interaction[Any], reply: Reply, *, deferred_ephemeral: bool) -> None:
        if reply.language is not None:  # worded by core in the language it read itself (a press)
            with use_language(reply.language):
                await self._send_in_language(interaction, reply, deferred_ephemeral=deferred_ephemeral)
        else:
            await self._send_in_language(interaction, reply, deferred_ephemeral=deferred_ephemeral)

    async def _send_in_language(
        self, interaction: discord.Interaction[Any], reply: Reply, *, deferred_ephemeral: bool
    ) -> None:
        if reply.quiet:  # the channel already has the post; the member gets a private pointer to it
            parts: dict[str, Any] = {"content": await self._quiet_ack(reply)}
            private = True
        else:
            parts = render.message(reply.view)
            private = reply.ephemeral or reply.error
        if not interaction.response.is_done():
            await interaction.response.send_message(**parts, ephemeral=private)
        elif deferred_ephemeral or not private:
            # fills the "thinking" message, whose visibility was fixed by the deferral
            await interaction.edit_original_response(**parts)
        else:  # deferred in public, but the answer is private
            await interaction.delete_original_response()
            await interaction.followup.send(**parts, ephemeral=True)

    async def _quiet_ack(self, reply: Reply) -> str:
        """Where the raid post is, and only if it is there: a refused post is reported, never called live."""
        if reply.raid is None:
            return render.quiet_ack(reply)
        raid_id = reply.raid.id
        if raid_id in self.posts.refused:
            return render.post_refused(raid_id, self.posts.refused[raid_id])
        progress = await self.services.raids.progress(raid_id, top=0)
        if progress.progress_ref is None:
            return render.post_pending(raid_id) + _partner_notes(reply)
        ack = render.quiet_ack(reply, jump_url(progress.progress_ref))
        if raid_id in self.posts.unpinned:
            ack += " " + _("I couldn't pin it: I need the Pin Messages permission in this channel. "
                           "The raid runs unpinned.")
        return ack + _partner_notes(reply)

    async def on_tree_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        """Errors before core answered (option conversion, checks) or while answering."""
        if interaction.type is discord.InteractionType.autocomplete:
            log.warning("autocomplete for /%s failed: %s", getattr(interaction.command, "name", "?"), error)
            return
        await self._reply_error(interaction, getattr(error, "original", error))

    async def _reply_error(self, interaction: discord.Interaction[Any], error: BaseException) -> None:
        with use_language(await self._language(interaction)):
            if isinstance(error, app_commands.TransformerError):
                text = _("That {kind} option isn't valid here.").format(kind=error.type.name.lower())
            elif isinstance(error, app_commands.NoPrivateMessage):
                text = _("Use this in a server channel.")
            elif isinstance(error, commands.NotModerator):
                text = _(commands.NOT_MODERATOR)
            else:
                text = error_reply(error if isinstance(error, Exception) else RuntimeError(error)).text
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not tell the member about an error: %s", exc)

    # -- core events -----------------------------------------------------------------------------------

    async def on_raid_started(self, event: RaidStarted) -> None:
        """Lock first (the post says whether the chat is locked; nubi keeps its own voice), then post
        the raid; a raid started with `thread` first gets its thread, which is what its lock locks. A raid whose post Discord refuses is cancelled: members could never see or join it."""
        if await self.posts.chat_of(event.community_id) is None:
            return
        if not await self.posts.owe(event.raid_id):
            return  # posted already, or this process or another one is delivering it
        progress = await self.services.raids.progress(event.raid_id, top=0)
        if progress.in_thread and progress.thread is None and progress.active:
            if not await self.posts.open_thread(progress):  # where the post goes; refused: cancelled below
                return  # Discord busy: still owed, the sweep brings it back
            progress = await self.services.raids.progress(event.raid_id, top=0)  # now in its thread
        if progress.lock and progress.active:
            await self.locks.lock(progress)
        await self.posts.post_now(event.raid_id)
        if event.raid_id in self.posts.refused:
            log.warning("raid #%s cancelled: Discord refused its post (%s)", event.raid_id,
                        self.posts.refused[event.raid_id])
            await self.services.raids.end(event.raid_id, status="cancelled", reason="post refused")


    async def on_post_due(self, event: PostDue) -> None:
        """An outbox row still owed (republished by the scheduler sweep): the raid post, its report, a
        scheduled board, a badge announcement or a badge's role grant."""
        if await self.posts.partners.on_post_due(event):
            return  # a partner channel's post or report (core/partners.py)
        if event.platform != PLATFORM:
            return
        if event.kind == "raid":
            await self.on_raid_started(RaidStarted(event.raid_id, event.community_id))
        elif event.kind == "report":
            await self.posts.post_report(event.raid_id)
        elif event.kind == "unpin":
            await self.posts.unpin(event.raid_id)
        elif event.kind == "announcement":
            owed = await self.services.schedules.owed(event.key)
            if owed is not None:
                await self.posts.on_announcement(owed)
        elif event.kind == "badge":
            await self.badges.announce(event.key)
        elif event.kind == "badge_role":
            chat = await self.posts.chat_of(event.community_id)
            if chat is not None:
                await self.badges.grant(event.key, chat.external_id)


def _partner_notes(reply: Reply) -> str:
    """The partner chats' missing rights (core/partners.py `start_notes`), under the start's answer."""
    notes = reply.extra.get("partner_notes")
    return "\n" + render.text(notes) if isinstance(notes, View) else ""


def _custom_ids(message: discord.Message) -> set[str]:
    ids: set[str] = set()
    for row in message.components:
        for component in getattr(row, "children", [row]):
            if getattr(component, "custom_id", None):
                ids.add(component.custom_id)
    return ids


async def sync_commands(config: DiscordConfig, guild_id: int | None) -> int:
    """Publish the command tree (`nubi discord sync [--guild ID]`); returns how many commands synced.

    A guild sync is instant (for testing a bot in one server); a global one can take a while to show.
    """
    if config.token is None:
        raise RuntimeError("discord.token is not set (NUBI_DISCORD_TOKEN)")
    token = config.token.get_secret_value()
    use_endpoints(config)
    client = discord.Client(intents=discord.Intents.none())
    tree: app_commands.CommandTree[Any] = app_commands.CommandTree(client)
    commands.install(tree)
    await commands.use_catalogs(tree)  # descriptions in Spanish and Russian for clients in those languages
    async with client:
        await client.login(token)
        if guild_id is None:
            synced = await tree.sync()
        else:
            guild = discord.Object(guild_id)
            tree.copy_global_to(guild=guild)
            synced = await tree.sync(guild=guild)
    return len(synced)


async def application_id(config: DiscordConfig) -> int:
    """The bot's application id, asked of Discord with the bot token (`nubi discord invite`)."""
    if config.token is None:
        raise RuntimeError("discord.token is not set (NUBI_DISCORD_TOKEN)")
    use_endpoints(config)
    client = discord.Client(intents=discord.Intents.none())
    async with client:
        await client.login(config.token.get_secret_value())
        info = await client.application_info()
    return info.id
