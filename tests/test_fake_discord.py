"""Proves the offline Discord fake drives the *real* discord.py stack end to end.

Each test goes through discord.py's own CommandTree / views / HTTP client, so a regression in the fake
(wrong payload shape, missing endpoint, wrong status) or a change in discord.py's behaviour shows up here
before it silently weakens the adapter tests built on top of the fake.
"""

import functools
import io
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from discord import app_commands

from adapters.discord.endpoints import use_endpoints
from core.config import DiscordConfig
from tests.fakes import discord_permissions as rules
from tests.fakes.discord_api import (
    APPLICATION_ID,
    BOT_USER_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    CallbackType,
    DiscordHarness,
    FakeDiscordAPI,
    MessageFlags,
    UserArg,
    autocomplete_interaction,
    component_interaction,
    guild_create_payload,
    member_payload,
    modal_submit_interaction,
    overwrite_payload,
    role_payload,
    slash_command_interaction,
    text_channel_payload,
)

GUILD_ID = 910_000_000_000_000_001
CHANNEL_ID = 910_000_000_000_000_002
RAIDER_ROLE_ID = 910_000_000_000_000_003
ALICE_ID = 910_000_000_000_000_004
BOB_ID = 910_000_000_000_000_005
MANAGE_GUILD = discord.Permissions(manage_guild=True).value

slash = functools.partial(
    slash_command_interaction, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ALICE_ID
)
click = functools.partial(component_interaction, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ALICE_ID)


class JoinView(discord.ui.View):
    """Persistent raid-signup view: fixed custom_ids and no timeout so it survives restarts."""

    def __init__(self, joins: list[tuple[int, "JoinView"]]) -> None:
        super().__init__(timeout=None)
        self.joins = joins

    @discord.ui.button(label="Join", style=discord.ButtonStyle.primary, custom_id="nubi:join:42")
    async def join(self, interaction: discord.Interaction, button: discord.ui.Button["JoinView"]) -> None:
        self.joins.append((interaction.user.id, self))
        await interaction.response.send_message("You joined raid 42", ephemeral=True)

    @discord.ui.button(label="Close", style=discord.ButtonStyle.danger, custom_id="nubi:close:42")
    async def close(self, interaction: discord.Interaction, button: discord.ui.Button["JoinView"]) -> None:
        await interaction.response.edit_message(content="Raid 42 is closed", view=None)


class FeedbackModal(discord.ui.Modal, title="Raid feedback"):
    """Proves modals round-trip: sent as a type 9 response, submitted back as a type 5 interaction."""

    comment: discord.ui.TextInput["FeedbackModal"] = discord.ui.TextInput(
        label="Comment", custom_id="comment"
    )

    def __init__(self, received: list[str]) -> None:
        super().__init__(custom_id="nubi:feedback")
        self.received = received

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.received.append(self.comment.value)
        await interaction.response.send_message("thanks!", ephemeral=True)


class RaidBot(discord.Client):
    """A miniature bot exercising the discord.py features the nubi adapter relies on."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default())
        self.tree = app_commands.CommandTree(self)
        self.seen: list[tuple[Any, ...]] = []
        self.errors: list[app_commands.AppCommandError] = []
        self.joins: list[tuple[int, JoinView]] = []
        self.feedback: list[str] = []
        self.join_view: JoinView | None = None
        self.tree.error(self.on_tree_error)
        self._register_commands()

    async def setup_hook(self) -> None:
        self.join_view = JoinView(self.joins)
        self.add_view(self.join_view)

    async def on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        self.errors.append(error)
        if not interaction.response.is_done():
            try:
                await interaction.response.send_message(f"Not allowed: {error}", ephemeral=True)
            except discord.HTTPException:
                pass  # e.g. the interaction was already acknowledged server-side

    def _register_commands(self) -> None:
        tree = self.tree

        @tree.command(name="roll", description="Roll for loot")
        @app_commands.choices(
            mode=[
                app_commands.Choice(name="Fast", value="fast"),
                app_commands.Choice(name="Slow", value="slow"),
            ]
        )
        async def roll(interaction: discord.Interaction, count: int, mode: app_commands.Choice[str]) -> None:
            self.seen.append(("roll", count, mode))
            await interaction.response.send_message(f"rolled {count} ({mode.value})", ephemeral=True)

        @tree.command(name="purge", description="Wipe the raid board")
        @app_commands.default_permissions(manage_guild=True)
        @app_commands.checks.has_permissions(manage_guild=True)
        async def purge(interaction: discord.Interaction) -> None:
            self.seen.append(("purge",))
            await interaction.response.send_message("purged")

        raid = app_commands.Group(name="raid", description="Raid management")
        admin = app_commands.Group(name="admin", description="Raid admin", parent=raid)

        @raid.command(name="start", description="Start a raid")
        async def start(interaction: discord.Interaction, target: str, leader: discord.Member) -> None:
            self.seen.append(("raid start", target, leader))
            await interaction.response.send_message(f"raid on {target} led by {leader.name}")

        @admin.command(name="reset", description="Reset all raids")
        async def reset(interaction: discord.Interaction) -> None:
            self.seen.append(("raid admin reset",))
            await interaction.response.send_message("reset", ephemeral=True)

        tree.add_command(raid)

        @tree.command(name="pick", description="Pick a game")
        async def pick(interaction: discord.Interaction, game: str) -> None:
            await interaction.response.send_message(game)

        @pick.autocomplete("game")
        async def pick_game(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            games = ["dragon", "drake", "goblin"]
            return [app_commands.Choice(name=g, value=g) for g in games if g.startswith(current)]

        @tree.command(name="slow", description="Deferred work")
        async def slow(interaction: discord.Interaction) -> None:
            await interaction.response.defer(ephemeral=True, thinking=True)
            await interaction.followup.send("crunching done")
            await interaction.edit_original_response(content="done!")
            await interaction.followup.send("extra details", ephemeral=True)

        @tree.command(name="feedback", description="Leave feedback")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(FeedbackModal(self.feedback))


def raid_guild() -> dict[str, Any]:
    return guild_create_payload(
        GUILD_ID,
        channels=[CHANNEL_ID],
        roles=[role_payload(RAIDER_ROLE_ID, "raider")],
        members=[
            member_payload(ALICE_ID, username="alice", roles=[RAIDER_ROLE_ID]),
            member_payload(BOB_ID, username="bob"),
        ],
        owner_id=BOB_ID,
    )


def pointed_at(fake: FakeDiscordAPI) -> RaidBot:
    """A RaidBot whose REST calls and gateway go to the fake, through nubi's two address settings."""
    use_endpoints(DiscordConfig(api_base_url=fake.base_url, gateway_url=fake.gateway_url))
    return RaidBot()


@pytest.fixture
async def h() -> AsyncIterator[DiscordHarness[RaidBot]]:
    async with FakeDiscordAPI() as fake, DiscordHarness(lambda: pointed_at(fake), guilds=[raid_guild()], fake=fake) as harness:
        yield harness
        # Every request discord.py made must have hit an implemented endpoint.
        assert harness.fake.unhandled_calls() == []


def text_channel(h: DiscordHarness[RaidBot]) -> discord.TextChannel:
    channel = h.client.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    return channel


async def test_boot_logs_in_and_populates_cache_from_gateway_payloads(h: DiscordHarness[RaidBot]) -> None:
    assert h.client.is_ready()
    assert h.client.user is not None and h.client.user.id == APPLICATION_ID
    assert h.client.application_id == APPLICATION_ID
    guild = h.client.get_guild(GUILD_ID)
    assert guild is not None and guild.owner_id == BOB_ID
    assert guild.member_count == 3 and guild.me is not None  # no members intent: only the bot is cached
    assert guild.me.guild_permissions.administrator
    assert [c.path for c in h.fake.calls] == ["/users/@me", "/oauth2/applications/@me"]

    alice = await guild.fetch_member(ALICE_ID)

    assert (alice.name, [r.id for r in alice.roles[1:]]) == ("alice", [RAIDER_ROLE_ID])
    with pytest.raises(discord.NotFound):
        await guild.fetch_member(ALICE_ID + 1000)


async def test_slash_command_converts_typed_options_and_responds_ephemerally(
    h: DiscordHarness[RaidBot],
) -> None:
    payload = slash("roll", {"count": 3, "mode": "slow"})

    response = await h.dispatch_interaction(payload)

    assert h.client.seen == [("roll", 3, app_commands.Choice(name="Slow", value="slow"))]
    assert type(h.client.seen[0][1]) is int
    assert response is not None
    assert response.type == CallbackType.CHANNEL_MESSAGE
    assert response.flags == MessageFlags.EPHEMERAL
    assert response.content == "rolled 3 (slow)"
    original = h.fake.original_response(int(payload["id"]))
    assert original is not None and original.ephemeral
    assert h.fake.channel_messages(CHANNEL_ID) == []  # ephemeral replies never show up in the channel


async def test_failing_permission_check_goes_through_tree_on_error(h: DiscordHarness[RaidBot]) -> None:
    purge = h.client.tree.get_command("purge")
    assert purge is not None and purge.default_permissions == discord.Permissions(manage_guild=True)

    denied = await h.dispatch_interaction(slash("purge", permissions=DEFAULT_MEMBER_PERMISSIONS))

    assert h.client.seen == []
    [error] = h.client.errors
    assert isinstance(error, app_commands.MissingPermissions)
    assert error.missing_permissions == ["manage_guild"]
    assert denied is not None and denied.ephemeral and "Manage Server" in (denied.content or "")

    allowed = await h.dispatch_interaction(
        slash("purge", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
    )

    assert h.client.seen == [("purge",)]
    assert len(h.client.errors) == 1
    assert allowed is not None and not allowed.ephemeral and allowed.content == "purged"
    assert [m.content for m in h.fake.channel_messages(CHANNEL_ID)] == ["purged"]


async def test_subcommands_and_nested_groups_resolve_with_member_options(h: DiscordHarness[RaidBot]) -> None:
    leader = UserArg(BOB_ID, username="bob", roles=[RAIDER_ROLE_ID])

    started = await h.dispatch_interaction(slash("raid start", {"target": "dragon", "leader": leader}))
    reset = await h.dispatch_interaction(slash("raid admin reset"))

    assert h.client.errors == []
    (name, target, member), reset_call = h.client.seen
    assert (name, target) == ("raid start", "dragon")
    assert isinstance(member, discord.Member)
    assert member.id == BOB_ID and [r.id for r in member.roles[1:]] == [RAIDER_ROLE_ID]
    assert reset_call == ("raid admin reset",)
    assert started is not None and started.content == "raid on dragon led by bob"
    assert reset is not None and reset.ephemeral


async def test_persistent_view_handles_clicks_before_and_after_restart(h: DiscordHarness[RaidBot]) -> None:
    first = h.client
    announcement = await text_channel(h).send("Raid 42 is forming", view=JoinView(first.joins))
    stored = h.fake.messages[announcement.id]
    assert stored.components[0]["components"][0]["custom_id"] == "nubi:join:42"

    joined = await h.dispatch_interaction(click("nubi:join:42", stored.json))

    assert joined is not None and joined.ephemeral and joined.content == "You joined raid 42"
    assert [user for user, _ in first.joins] == [ALICE_ID]

    second = await h.restart()

    assert second is not first and first.is_closed()
    rejoined = await h.dispatch_interaction(click("nubi:join:42", stored.json, user_id=BOB_ID))
    assert rejoined is not None and rejoined.content == "You joined raid 42"
    assert second.joins == [(BOB_ID, second.join_view)]  # handled by the view registered via add_view
    assert len(first.joins) == 1
    assert await h.dispatch_interaction(click("nubi:join:43", stored.json)) is None  # unknown id is ignored

    closed = await h.dispatch_interaction(click("nubi:close:42", stored.json))

    assert closed is not None and closed.type == CallbackType.UPDATE_MESSAGE
    assert stored.content == "Raid 42 is closed" and stored.components == []
    assert [v["content"] for v in stored.history] == ["Raid 42 is forming"]


async def test_permission_overwrite_is_put_then_deleted(h: DiscordHarness[RaidBot]) -> None:
    channel = text_channel(h)
    raider = channel.guild.get_role(RAIDER_ROLE_ID)
    assert raider is not None
    allow = discord.Permissions(view_channel=True).value
    deny = discord.Permissions(send_messages=True).value

    await channel.set_permissions(
        raider, overwrite=discord.PermissionOverwrite(view_channel=True, send_messages=False)
    )

    [put] = h.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{RAIDER_ROLE_ID}", "PUT")
    assert (put.json["type"], int(put.json["allow"]), int(put.json["deny"])) == (0, allow, deny)
    assert h.fake.channel(CHANNEL_ID)["permission_overwrites"] == [
        overwrite_payload(RAIDER_ROLE_ID, type=0, allow=allow, deny=deny)
    ]
    assert channel.overwrites_for(raider).send_messages is False  # cache updated by the CHANNEL_UPDATE echo
    fetched = await h.client.fetch_channel(CHANNEL_ID)
    assert isinstance(fetched, discord.TextChannel) and fetched.overwrites_for(raider).send_messages is False

    await channel.set_permissions(raider, overwrite=None)

    assert len(h.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{RAIDER_ROLE_ID}", "DELETE")) == 1
    assert h.fake.channel(CHANNEL_ID)["permission_overwrites"] == []
    assert channel.overwrites_for(raider).is_empty()


async def test_rate_limited_message_post_is_retried_and_created_once(h: DiscordHarness[RaidBot]) -> None:
    h.fake.fail_next("POST", "/channels/*/messages", status=429, retry_after=0.05)

    message = await text_channel(h).send("raid starting")

    posts = h.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.04  # discord.py honoured retry_after
    assert [(m.id, m.content) for m in h.fake.channel_messages(CHANNEL_ID)] == [(message.id, "raid starting")]


async def test_a_nonce_with_enforce_nonce_returns_the_first_message_instead_of_a_second(
    h: DiscordHarness[RaidBot],
) -> None:
    """discord.py sends `nonce` with `enforce_nonce: true`; Discord then dedupes for a few minutes."""
    import aiohttp

    channel = text_channel(h)
    h.fake.drop_after_handling("POST", "/channels/*/messages")
    with pytest.raises(aiohttp.ClientError):  # Discord made it; the answer was lost on the way
        await channel.send("raid starting", nonce="raid-7-post")
    again = await channel.send("raid starting", nonce="raid-7-post")
    other = await channel.send("raid starting", nonce="raid-8-post")

    sent = h.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")
    assert all(c.json["enforce_nonce"] is True for c in sent)
    assert [m.id for m in h.fake.channel_messages(CHANNEL_ID)] == [again.id, other.id]
    assert again.nonce == "raid-7-post"
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x", nonce="n" * 26)  # up to 25 characters
    assert too_long.value.status == 400


async def test_rate_limited_interaction_callback_is_retried_by_the_webhook_adapter(
    h: DiscordHarness[RaidBot],
) -> None:
    h.fake.fail_next("POST", "/interactions/*/*/callback", status=429, retry_after=0.05)
    payload = slash("roll", {"count": 2, "mode": "fast"})

    response = await h.dispatch_interaction(payload)

    attempts = h.fake.calls_to(f"/interactions/{payload['id']}/*/callback")
    assert [c.status for c in attempts] == [429, 200]
    assert h.client.errors == []
    assert response is not None and response.content == "rolled 2 (fast)"
    assert len(h.fake.interaction_responses(int(payload["id"]))) == 1


async def test_forbidden_and_server_errors_surface_as_discord_exceptions(h: DiscordHarness[RaidBot]) -> None:
    channel = text_channel(h)
    h.fake.fail_next("POST", "/channels/*/messages", status=403)
    h.fake.fail_next("*", "/channels/*/messages", status=503)

    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("nope")
    with pytest.raises(discord.DiscordServerError) as unavailable:
        await channel.send("nope again")

    assert (forbidden.value.status, forbidden.value.code, forbidden.value.text) == (
        403,
        50013,
        "Missing Permissions",
    )
    assert unavailable.value.status == 503
    assert h.fake.channel_messages(CHANNEL_ID, include_deleted=True) == []


async def test_tree_sync_uses_bulk_overwrite_endpoints(h: DiscordHarness[RaidBot]) -> None:
    synced = await h.client.tree.sync()

    [put] = h.fake.calls_to(f"/applications/{APPLICATION_ID}/commands", "PUT")
    sent = {c["name"]: c for c in put.json}
    assert set(sent) == {"roll", "purge", "raid", "pick", "slow", "feedback"}
    assert int(sent["purge"]["default_member_permissions"]) == MANAGE_GUILD
    assert {c.name: c.default_member_permissions for c in synced}["purge"] == discord.Permissions(
        manage_guild=True
    )
    assert [(o["name"], o["type"]) for o in sent["raid"]["options"]] == [("admin", 2), ("start", 1)]
    assert {c.name: c.id for c in synced} == {c["name"]: int(c["id"]) for c in h.fake.commands[None]}
    assert {c.id for c in await h.client.tree.fetch_commands()} == {c.id for c in synced}
    assert {c.id for c in await h.client.tree.sync()} == {c.id for c in synced}  # ids survive a re-sync

    guild = discord.Object(GUILD_ID)
    h.client.tree.copy_global_to(guild=guild)
    guild_synced = await h.client.tree.sync(guild=guild)

    assert len(h.fake.calls_to(f"/applications/{APPLICATION_ID}/guilds/{GUILD_ID}/commands", "PUT")) == 1
    assert {c.guild_id for c in guild_synced} == {GUILD_ID}


async def test_deferred_response_is_completed_by_followup_then_edited(h: DiscordHarness[RaidBot]) -> None:
    payload = slash("slow")
    interaction_id = int(payload["id"])

    response = await h.dispatch_interaction(payload)

    assert (
        response is not None and response.type == CallbackType.DEFERRED_CHANNEL_MESSAGE and response.ephemeral
    )
    original = h.fake.original_response(interaction_id)
    assert original is not None
    assert (original.content, original.flags) == ("done!", MessageFlags.EPHEMERAL)
    assert [(v["content"], v["flags"]) for v in original.history] == [
        ("", MessageFlags.EPHEMERAL | MessageFlags.LOADING),
        ("crunching done", MessageFlags.EPHEMERAL),
    ]
    [extra] = h.fake.followups(interaction_id)
    assert extra.content == "extra details" and extra.ephemeral


async def test_autocomplete_and_modal_responses(h: DiscordHarness[RaidBot]) -> None:
    suggestions = await h.dispatch_interaction(
        autocomplete_interaction(
            "pick", {"game": "dr"}, focused="game", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=ALICE_ID
        )
    )
    modal = await h.dispatch_interaction(slash("feedback"))

    assert suggestions is not None and suggestions.type == CallbackType.AUTOCOMPLETE_RESULT
    assert suggestions.choices == [{"name": "dragon", "value": "dragon"}, {"name": "drake", "value": "drake"}]
    assert modal is not None and modal.type == CallbackType.MODAL
    assert modal.data is not None
    assert (modal.data["custom_id"], modal.data["title"]) == ("nubi:feedback", "Raid feedback")

    submitted = await h.dispatch_interaction(
        modal_submit_interaction(
            "nubi:feedback",
            {"comment": "great raid"},
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
            user_id=ALICE_ID,
        )
    )

    assert h.client.feedback == ["great raid"]
    assert submitted is not None and submitted.content == "thanks!" and submitted.ephemeral


async def test_second_acknowledgement_is_rejected_like_discord(h: DiscordHarness[RaidBot]) -> None:
    payload = slash("roll", {"count": 1, "mode": "fast"})
    await h.dispatch_interaction(payload)

    await h.dispatch_interaction(payload)  # Discord redelivering the same interaction

    [error] = h.client.errors
    assert isinstance(error, app_commands.CommandInvokeError)
    assert isinstance(error.original, discord.HTTPException) and error.original.code == 40060
    assert len(h.fake.interaction_responses(int(payload["id"]))) == 1


async def test_attachments_edits_and_deletes_are_stored(h: DiscordHarness[RaidBot]) -> None:
    channel = text_channel(h)

    message = await channel.send("raid log", file=discord.File(io.BytesIO(b"boss down"), filename="log.txt"))
    [post] = h.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")
    assert post.json["content"] == "raid log" and [f.data for f in post.files] == [b"boss down"]
    assert [a.filename for a in message.attachments] == ["log.txt"]
    assert await message.attachments[0].read() == b"boss down"

    edited = await message.edit(content="raid log (final)")
    assert edited.content == "raid log (final)" and edited.edited_at is not None
    stored = h.fake.messages[message.id]
    assert [v["content"] for v in stored.history] == ["raid log"]
    assert [a["filename"] for a in stored.json["attachments"]] == ["log.txt"]  # kept across the edit

    await message.delete()
    assert stored.deleted and h.fake.channel_messages(CHANNEL_ID) == []
    assert [name for name, _ in h.fake.gateway_events] == [
        "MESSAGE_CREATE",
        "MESSAGE_UPDATE",
        "MESSAGE_DELETE",
    ]


async def test_rejected_token_fails_login() -> None:
    async with FakeDiscordAPI() as fake, DiscordHarness(lambda: pointed_at(fake), guilds=[raid_guild()], fake=fake) as h:
        assert discord.http.Route.BASE == fake.base_url  # set by nubi's setting, not by the harness
        h.token = "stale-token"

        with pytest.raises(discord.LoginFailure):
            await h.restart()

        assert (h.fake.calls[-1].path, h.fake.calls[-1].status) == ("/users/@me", 401)


# -- Discord's permission rules, enforced on the bot ------------------------------------------------

P = discord.Permissions
VIEW, SEND, EMBED = P(view_channel=True).value, P(send_messages=True).value, P(embed_links=True).value
MANAGE_ROLES, MANAGE_MESSAGES = P(manage_roles=True).value, P(manage_messages=True).value
POLLS = P(send_polls=True).value  # bit 49
BOT_ROLE = P(view_channel=True, send_messages=True, embed_links=True, read_message_history=True,
             manage_roles=True).value


def limited_guild(*overwrites: dict[str, Any], bot_permissions: int = BOT_ROLE) -> dict[str, Any]:
    """A server where the bot's role holds exactly `bot_permissions` (no Administrator) and @everyone
    holds nothing, so every right the bot has comes from its role or the channel's overwrites."""
    return guild_create_payload(
        GUILD_ID,
        channels=[text_channel_payload(CHANNEL_ID, guild_id=GUILD_ID, permission_overwrites=overwrites)],
        roles=[role_payload(GUILD_ID, "@everyone", permissions=0), role_payload(RAIDER_ROLE_ID, "raider")],
        members=[member_payload(BOB_ID, username="bob")],
        bot_permissions=bot_permissions,
    )


async def limited(*overwrites: dict[str, Any], bot_permissions: int = BOT_ROLE) -> AsyncIterator[DiscordHarness[RaidBot]]:
    async with FakeDiscordAPI() as fake, DiscordHarness(
        lambda: pointed_at(fake), guilds=[limited_guild(*overwrites, bot_permissions=bot_permissions)], fake=fake
    ) as harness:
        yield harness


async def test_an_everyone_deny_silences_the_bot_until_its_own_overwrite_allows_it() -> None:
    async for h in limited(overwrite_payload(GUILD_ID, type=0, deny=SEND)):
        channel = text_channel(h)
        with pytest.raises(discord.Forbidden) as refused:
            await channel.send("raid!")
        assert (refused.value.status, refused.value.code) == (403, 50013)
        assert h.fake.channel_messages(CHANNEL_ID) == []

        await channel.set_permissions(channel.guild.me, overwrite=discord.PermissionOverwrite(send_messages=True))
        message = await channel.send("raid!")
        edited = await message.edit(content="raid! (edited)")

        assert edited.content == "raid! (edited)"
        assert channel.permissions_for(channel.guild.me).send_messages  # discord.py's own computation agrees


async def test_overwrite_edits_need_manage_roles_and_only_grant_what_the_bot_holds() -> None:
    async for h in limited(overwrite_payload(GUILD_ID, type=0, allow=VIEW, deny=POLLS)):
        http = h.client.http
        with pytest.raises(discord.Forbidden):  # Manage Messages: not the bot's to give
            await http.edit_channel_permissions(CHANNEL_ID, RAIDER_ROLE_ID, str(MANAGE_MESSAGES), "0", 0)
        with pytest.raises(discord.Forbidden):  # nor Manage Roles itself, without such an overwrite
            await http.edit_channel_permissions(CHANNEL_ID, RAIDER_ROLE_ID, str(MANAGE_ROLES), "0", 0)
        # denying Send Messages to @everyone changes only a bit the bot holds; Send Polls (bit 49),
        # which it does not hold, is sent back unchanged and stays exactly as it was
        await http.edit_channel_permissions(CHANNEL_ID, GUILD_ID, str(VIEW), str(POLLS | SEND), 0)
        assert h.fake.channel(CHANNEL_ID)["permission_overwrites"] == [
            overwrite_payload(GUILD_ID, type=0, allow=VIEW, deny=POLLS | SEND)
        ]
        with pytest.raises(discord.Forbidden):  # but dropping the Send Polls deny would change it
            await http.edit_channel_permissions(CHANNEL_ID, GUILD_ID, str(VIEW), str(SEND), 0)
    async for h in limited(overwrite_payload(GUILD_ID, type=0, deny=SEND), bot_permissions=BOT_ROLE & ~MANAGE_ROLES):
        with pytest.raises(discord.Forbidden):
            await h.client.http.edit_channel_permissions(CHANNEL_ID, BOT_USER_ID, str(SEND), "0", 1)
        with pytest.raises(discord.Forbidden):
            await h.client.http.delete_channel_permissions(CHANNEL_ID, GUILD_ID)
        assert h.fake.channel(CHANNEL_ID)["permission_overwrites"] == [overwrite_payload(GUILD_ID, type=0, deny=SEND)]


THREADS = P(create_public_threads=True, send_messages_in_threads=True).value
MANAGE_THREADS = P(manage_threads=True).value


def set_bot_role(h: DiscordHarness[RaidBot], permissions: int) -> None:
    """A server admin changes the bot's role on Discord's side (the client's cache is not told)."""
    for role in h.fake.guilds[GUILD_ID]["roles"]:
        if role["name"] == "nubi":
            role["permissions"] = str(permissions)


async def test_a_locked_thread_takes_manage_threads_to_lock_and_to_post_in() -> None:
    async for h in limited(overwrite_payload(GUILD_ID, type=0, allow=VIEW), bot_permissions=BOT_ROLE | THREADS):
        thread = await text_channel(h).create_thread(name="Raid #1", type=discord.ChannelType.public_thread)
        message = await thread.send("raid!")  # Send Messages in Threads, from the parent channel
        renamed = await thread.edit(name="Raid #1 (live)")  # its creator may rename it...
        assert renamed.name == "Raid #1 (live)"
        with pytest.raises(discord.Forbidden) as refused:  # ...but only Manage Threads may lock it
            await thread.edit(locked=True)
        assert (refused.value.status, refused.value.code) == (403, 50013)
        assert h.fake.channel(thread.id)["thread_metadata"]["locked"] is False

        set_bot_role(h, BOT_ROLE | THREADS | MANAGE_THREADS)
        await thread.edit(locked=True)
        await thread.send("still talking")  # Manage Threads speaks in a locked thread
        await message.edit(content="raid! (edited)")

        set_bot_role(h, BOT_ROLE | THREADS)  # without it, a locked thread takes no message and no edit
        with pytest.raises(discord.Forbidden) as refused:
            await thread.send("let me in")
        assert (refused.value.status, refused.value.code) == (403, 160005)
        with pytest.raises(discord.Forbidden):
            await message.edit(content="raid! (again)")
        with pytest.raises(discord.Forbidden):  # nor may it unlock it again
            await h.client.http.edit_channel(thread.id, locked=False)
        assert [m.content for m in h.fake.channel_messages(thread.id)] == ["raid! (edited)", "still talking"]

        set_bot_role(h, BOT_ROLE | THREADS | MANAGE_THREADS)
        h.fake.archive_thread(thread.id)
        with pytest.raises(discord.HTTPException) as archived:  # changed only by a request that unarchives it
            await h.client.http.edit_channel(thread.id, locked=False)
        assert (archived.value.status, archived.value.code) == (400, 50083)
        with pytest.raises(discord.HTTPException) as archived:  # an archived thread's messages stay as they are
            await message.edit(content="raid! (late)")
        assert (archived.value.status, archived.value.code) == (400, 50083)
        await thread.send("back")  # a message unarchives it
        assert h.fake.channel(thread.id)["thread_metadata"]["archived"] is False
        await h.client.http.edit_channel(thread.id, locked=False)
        assert h.fake.channel(thread.id)["thread_metadata"]["locked"] is False
        with pytest.raises(discord.HTTPException) as bad:  # Discord validates the body
            await h.client.http.edit_channel(thread.id, auto_archive_duration=5)
        assert bad.value.status == 400


async def test_an_unlocked_archived_thread_is_unarchived_by_anyone_who_may_talk_there() -> None:
    """Modify Channel: "When setting archived to false, when locked is also false, only the SEND_MESSAGES
    permission is required" (Send Messages in Threads, in a thread); a locked one takes Manage Threads."""
    async for h in limited(overwrite_payload(GUILD_ID, type=0, allow=VIEW), bot_permissions=BOT_ROLE | THREADS):
        thread = await text_channel(h).create_thread(name="Raid #1", type=discord.ChannelType.public_thread)
        h.fake.channels[thread.id]["owner_id"] = str(ALICE_ID)  # someone else's thread: no creator's rights
        h.fake.archive_thread(thread.id)
        with pytest.raises(discord.Forbidden):  # archiving or renaming it is not the bot's to do...
            await h.client.http.edit_channel(thread.id, archived=False, name="mine")
        await h.client.http.edit_channel(thread.id, archived=False)  # ...unarchiving it is
        assert h.fake.channel(thread.id)["thread_metadata"]["archived"] is False
        with pytest.raises(discord.Forbidden):
            await h.client.http.edit_channel(thread.id, archived=True)

        h.fake.archive_thread(thread.id)
        set_bot_role(h, BOT_ROLE & ~P(send_messages_in_threads=True).value)  # may not talk in threads
        with pytest.raises(discord.Forbidden) as refused:
            await h.client.http.edit_channel(thread.id, archived=False)
        assert (refused.value.status, refused.value.code) == (403, 50013)

        set_bot_role(h, BOT_ROLE | THREADS)
        h.fake.channels[thread.id]["thread_metadata"]["locked"] = True  # a moderator locked it before
        h.fake.channels[thread.id]["owner_id"] = str(BOT_USER_ID)  # even its creator needs Manage Threads then
        with pytest.raises(discord.Forbidden):
            await h.client.http.edit_channel(thread.id, archived=False)
        assert h.fake.channel(thread.id)["thread_metadata"]["archived"] is True
        set_bot_role(h, BOT_ROLE | THREADS | MANAGE_THREADS)
        await h.client.http.edit_channel(thread.id, archived=False)
        assert h.fake.channel(thread.id)["thread_metadata"]["archived"] is False


async def test_member_can_send_follows_the_thread_lock() -> None:
    everyone = rules.SEND_MESSAGES | VIEW | P(send_messages_in_threads=True).value
    payload = limited_guild(bot_permissions=BOT_ROLE | THREADS | MANAGE_THREADS)
    payload["roles"][0]["permissions"] = str(everyone)  # @everyone may talk, in threads too
    payload["members"].append(member_payload(ALICE_ID, username="alice"))  # not the owner (bob), who may all
    payload["member_count"] = len(payload["members"])
    async with FakeDiscordAPI() as fake, DiscordHarness(lambda: pointed_at(fake), guilds=[payload], fake=fake) as h:
        thread = await text_channel(h).create_thread(name="talk", type=discord.ChannelType.public_thread)
        assert h.fake.member_can_send(thread.id, ALICE_ID) and h.fake.member_can_send(CHANNEL_ID, ALICE_ID)
        await thread.edit(locked=True)
        assert not h.fake.member_can_send(thread.id, ALICE_ID) and h.fake.member_can_send(CHANNEL_ID, ALICE_ID)
        assert h.fake.member_can_send(thread.id, BOB_ID)  # the owner holds every permission, Manage Threads too


def test_the_permission_computation_follows_discords_order() -> None:
    raider_role, other_role = str(RAIDER_ROLE_ID), "77"
    guild = {"id": str(GUILD_ID), "owner_id": str(BOB_ID), "roles": [
        {"id": str(GUILD_ID), "permissions": str(VIEW | SEND)},
        {"id": raider_role, "permissions": str(EMBED | POLLS)},
        {"id": other_role, "permissions": "0"},
    ]}
    alice = {"user": {"id": str(ALICE_ID)}, "roles": [raider_role, other_role]}

    def channel(*overwrites: dict[str, Any]) -> dict[str, Any]:
        return {"permission_overwrites": list(overwrites)}

    assert rules.channel_permissions(guild, alice, channel()) == VIEW | SEND | EMBED | POLLS  # base: roles OR-ed
    # @everyone's deny, then the role overwrites together: one role's allow beats another's deny
    everyone_deny = overwrite_payload(GUILD_ID, type=0, deny=SEND)
    assert not rules.channel_permissions(guild, alice, channel(everyone_deny)) & SEND
    both = channel(everyone_deny, overwrite_payload(RAIDER_ROLE_ID, type=0, deny=SEND),
                   overwrite_payload(77, type=0, allow=SEND))
    assert rules.channel_permissions(guild, alice, both) & SEND
    # the member's own overwrite comes last and wins
    mine = overwrite_payload(ALICE_ID, type=1, deny=SEND)
    assert not rules.channel_permissions(guild, alice, channel(*both["permission_overwrites"], mine)) & SEND
    # implicit: no Send Messages, no Embed Links; no View Channel, nothing at all (bit 49 included)
    assert rules.channel_permissions(guild, alice, channel(everyone_deny)) == VIEW | POLLS
    assert rules.channel_permissions(guild, alice, channel(overwrite_payload(GUILD_ID, type=0, deny=VIEW))) == 0
    # Administrator and the owner: every permission, whatever the overwrites say
    admin_guild = {**guild, "roles": [*guild["roles"][:2], {"id": other_role, "permissions": str(P(administrator=True).value)}]}
    assert rules.channel_permissions(admin_guild, alice, channel(mine)) == P.all().value
    bob = {"user": {"id": str(BOB_ID)}, "roles": []}
    assert rules.channel_permissions(guild, bob, channel(overwrite_payload(BOB_ID, type=1, deny=VIEW))) == P.all().value
