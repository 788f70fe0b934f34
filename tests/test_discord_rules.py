"""Discord: user options name members exactly, a raid's buttons act only in its channel, settings.

The real discord.py client against the fake Discord API, real core services on both databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from core import catalog
from core.services import Services
from tests.fakes.discord_api import (
    UserArg,
    component_interaction,
    guild_create_payload,
    member_payload,
    role_payload,
    text_channel_payload,
)
from tests.test_discord_adapter import (
    CHANNEL_ID,
    GUILD_ID,
    LEAD_ID,
    MOD_ID,
    MOD_ROLE_ID,
    Bot,
    as_mod,
    make_bot,
    original_text,
    slash,
)

OTHER_CHANNEL = 930_000_000_000_000_009
STRANGER = 930_000_000_000_200_001


@pytest.fixture
async def bot(services: Services) -> AsyncIterator[Bot]:
    payload = guild_create_payload(
        GUILD_ID,
        channels=[text_channel_payload(CHANNEL_ID, guild_id=GUILD_ID, name="raids"),
                  text_channel_payload(OTHER_CHANNEL, guild_id=GUILD_ID, name="chat")],
        roles=[role_payload(MOD_ROLE_ID, "Raid Lead")],
        members=[member_payload(MOD_ID, username="mod"), member_payload(LEAD_ID, username="lead", roles=[MOD_ROLE_ID])],
    )
    async for b in make_bot(services, payload):
        yield b


async def answer(bot: Bot, payload: dict[str, Any]) -> str:
    response = await bot.h.dispatch_interaction(payload)
    assert response is not None
    return response.content or original_text(bot, payload)


async def test_a_user_option_names_exactly_that_member(bot: Bot) -> None:
    # the stranger never used nubi: Discord resolved the user, so the ban holds before they ever join
    text = await answer(bot, as_mod("ban", {"member": UserArg(STRANGER, "stranger"), "reason": "spam"}))
    assert text == f"<@{STRANGER}> is banned from raids here."
    cid = await bot.community_id()
    [ban] = await catalog.bans(bot.services.db, cid)
    assert ban["name"] == "stranger"


async def test_a_press_from_another_channel_is_refused(bot: Bot) -> None:
    raid_id = await bot.start_raid()
    post = bot.raid_post().json
    elsewhere = component_interaction(f"nubi:join:{raid_id}", {**post, "channel_id": str(OTHER_CHANNEL)},
                                      guild_id=GUILD_ID, channel_id=OTHER_CHANNEL, user_id=STRANGER,
                                      username="stranger")
    assert await answer(bot, elsewhere) == "That button belongs to a raid in another chat."
    assert (await bot.services.raids.progress(raid_id)).participants == 0
    here = await bot.press(f"nubi:join:{raid_id}", STRANGER, "stranger")
    assert here is not None and (here.content or "").startswith(f"Joined raid #{raid_id} as raider #1")


async def test_settings_from_slash_commands(bot: Bot) -> None:
    refused = await answer(bot, slash("settings set", {"key": "verification", "value": "review"}))
    assert refused == "Sorry, only moderators can do that here."
    assert await answer(bot, as_mod("settings set", {"key": "verification", "value": "review"})) == \
        "verification is now review here."
    shown = await answer(bot, slash("settings show"))
    assert "verification = review (set here)" in shown
    assert await answer(bot, as_mod("settings reset", {"key": "verification"})) == \
        "verification is back to the default: honor."
