"""Milestone badges on Discord: a badge's role is checked when it is set (it exists, the bot holds Manage
Roles, and the role sits below the bot's highest role), and granted through the outbox when earned.

The real discord.py client against the fake Discord API (which refuses a role grant as Discord does),
real core services on both databases.
"""

from __future__ import annotations

import discord
import pytest

from core.services import Services
from tests.fakes.discord_api import guild_create_payload, member_payload, role_payload, text_channel_payload
from tests.test_badges import sweep
from tests.test_discord_adapter import (
    BOT_ROLE,
    CHANNEL_ID,
    GUILD_ID,
    LEAD_ID,
    MEMBER_ID,
    MOD_ID,
    MOD_ROLE_ID,
    Bot,
    as_mod,
    make_bot,
    slash,
)
from tests.test_discord_servers import answer

VETERANS_ID = 930_000_000_000_000_021
ADMINS_ID = 930_000_000_000_000_022
TWIN_A, TWIN_B = 930_000_000_000_000_023, 930_000_000_000_000_024


def server(*, bot_role: int = BOT_ROLE) -> dict:  # type: ignore[type-arg]
    """Roles from the bottom up: Raid Lead, Veterans, two roles named Twins, then nubi's role (added by
    the payload at the next position), then Admins, above the bot."""
    return guild_create_payload(
        GUILD_ID,
        channels=[text_channel_payload(CHANNEL_ID, guild_id=GUILD_ID, name="raids")],
        roles=[role_payload(MOD_ROLE_ID, "Raid Lead", position=1), role_payload(VETERANS_ID, "Veterans", position=2),
               role_payload(TWIN_A, "Twins", position=3), role_payload(TWIN_B, "Twins", position=4),
               role_payload(ADMINS_ID, "Admins", position=50)],
        members=[member_payload(MOD_ID, username="mod"), member_payload(LEAD_ID, username="lead", roles=[MOD_ROLE_ID]),
                 member_payload(MEMBER_ID, username="member")],
        bot_permissions=bot_role,
    )


async def set_badges(bot: Bot, value: str) -> str:
    return await answer(bot, as_mod("settings set", {"key": "badges", "value": value}))


def badge_messages(bot: Bot) -> list[str]:
    return [m.content for m in bot.visible() if "badge!" in (m.content or "")]


@pytest.fixture
async def bot(services: Services):  # type: ignore[no-untyped-def]
    async for b in make_bot(services, server()):
        yield b


async def test_a_role_is_checked_when_set_and_granted_once_when_earned(bot: Bot) -> None:
    above = await set_badges(bot, "6:Rookie role=@Admins")
    cid = await bot.community_id()
    assert above == ("badges: the role Admins is not below my highest role (nubi), so Discord will not let me give "
                     "it. Move my role above it in Server Settings > Roles, or pick a lower role.")
    assert (await set_badges(bot, "6:Rookie role=@Nobody")) == "badges: this server has no role named 'Nobody'."
    assert (await set_badges(bot, "6:Rookie role=123456789012345678")) == \
        "badges: this server has no role with the id 123456789012345678."
    assert "several roles are named 'Twins'" in await set_badges(bot, "6:Rookie role=Twins")
    assert "managed by Discord" in await set_badges(bot, f"6:Rookie role=<@&{GUILD_ID}>")  # @everyone
    assert (await bot.services.community_settings.show(cid))["settings"] == {}  # every refusal wrote nothing

    done = await set_badges(bot, "6:Rookie role=@Veterans, 1000:Legend")
    assert done == f"badges is now 6:Rookie role={VETERANS_ID}, 1000:Legend here."
    assert f"6:Rookie role={VETERANS_ID}" in await set_badges(bot, f"6:Rookie role=<@&{VETERANS_ID}>, 1000:Legend")

    raid_id = await bot.start_raid()
    await bot.press(f"nubi:join:{raid_id}", MEMBER_ID, "member")  # +5 early bird
    await bot.press(f"nubi:claim:{raid_id}:like", MEMBER_ID, "member")  # +1 and a speed bonus: past 6, the milestone
    assert VETERANS_ID not in bot.fake.member_roles(GUILD_ID, MEMBER_ID)  # not before the outbox delivers it

    await sweep(bot.services)
    await sweep(bot.services)  # delivered: nothing owed twice
    assert await bot.services.outbox.due() == []
    assert badge_messages(bot) == ["🏅 member reached 6 points and earned the Rookie badge!"]
    assert VETERANS_ID in bot.fake.member_roles(GUILD_ID, MEMBER_ID)
    assert len(bot.fake.calls_to(f"/guilds/{GUILD_ID}/members/{MEMBER_ID}/roles/{VETERANS_ID}", "PUT")) == 1

    me = await answer(bot, slash("me", username="member"))
    assert "Badges: 🏅 Rookie" in me
    board = await answer(bot, slash("leaderboard", {"scope": "raid"}, username="member"))
    assert "🥇 member 🏅 Rookie — " in board
    alltime = await answer(bot, slash("leaderboard", {"scope": "all"}, username="member"))
    assert "🥇 member 🏅 Rookie — " in alltime


async def test_without_manage_roles_a_badge_role_is_refused(services: Services) -> None:
    no_manage = BOT_ROLE & ~discord.Permissions(manage_roles=True).value
    async for bot in make_bot(services, server(bot_role=no_manage)):
        refused = await set_badges(bot, "10:Ten role=@Veterans")
        assert refused == ("badges: I need the Manage Roles permission to give the role Veterans. Give it to my "
                           "role in Server Settings > Roles and try again.")
        assert await set_badges(bot, "10:Ten") == "badges is now 10:Ten here."  # badges without roles need nothing


async def test_the_fake_refuses_a_grant_as_discord_does(bot: Bot) -> None:
    """Add Guild Member Role above the bot's highest role: 403 50013, and the member keeps their roles."""
    guild = bot.adapter.client.get_guild(GUILD_ID)
    assert guild is not None
    member = await guild.fetch_member(MEMBER_ID)
    with pytest.raises(discord.Forbidden) as refused:
        await member.add_roles(discord.Object(ADMINS_ID))
    assert refused.value.code == 50013
    await member.add_roles(discord.Object(VETERANS_ID))
    await member.add_roles(discord.Object(VETERANS_ID))  # again: no change, no error
    assert bot.fake.member_roles(GUILD_ID, MEMBER_ID) == [VETERANS_ID]


async def test_a_refused_grant_stays_owed_until_discord_accepts_it(bot: Bot) -> None:
    """The role was grantable when set, then a server admin moved it above nubi's role: the grant is
    refused (403 50013), stays owed, and lands once the hierarchy is fixed; the announcement goes out once."""
    assert (await set_badges(bot, "6:Rookie role=@Veterans")).startswith("badges is now")
    veterans = next(r for r in bot.fake.guilds[GUILD_ID]["roles"] if r["id"] == str(VETERANS_ID))
    veterans["position"] = 60  # above nubi's role, behind nubi's back
    raid_id = await bot.start_raid()
    await bot.press(f"nubi:join:{raid_id}", MEMBER_ID, "member")
    await bot.press(f"nubi:claim:{raid_id}:like", MEMBER_ID, "member")

    await sweep(bot.services)
    refused = bot.fake.calls_to(f"/guilds/{GUILD_ID}/members/{MEMBER_ID}/roles/{VETERANS_ID}", "PUT")
    assert [c.status for c in refused] == [403]
    assert [d.kind for d in await bot.services.outbox.due()] == []  # released with a wait, not dropped
    bot.services.clock.advance(60)  # type: ignore[attr-defined]
    assert [d.kind for d in await bot.services.outbox.due()] == ["badge_role"]

    veterans["position"] = 2  # fixed
    await sweep(bot.services)
    assert VETERANS_ID in bot.fake.member_roles(GUILD_ID, MEMBER_ID)
    assert await bot.services.outbox.due() == []
    assert badge_messages(bot) == ["🏅 member reached 6 points and earned the Rookie badge!"]
