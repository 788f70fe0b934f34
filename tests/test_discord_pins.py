"""Pinned raid posts on Discord, through the real discord.py against the fake Discord API.

`/raid start ... pin:True` pins the raid post while the raid runs and unpins it at its end. Pin
Messages is optional: without it the raid runs unpinned and the moderator is told. An unpin Discord
refused stays owed in the outbox and the next ready (a restarted client) finishes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import discord
import pytest

from adapters.discord.adapter import DiscordAdapter
from core.clock import FakeClock
from core.outbox import FIRST_RETRY, unpin_key
from core.services import Services
from tests.fakes.discord_api import DiscordHarness
from tests.test_discord_adapter import (
    BOT_ROLE,
    CHANNEL_ID,
    GUILD_ID,
    Bot,
    as_mod,
    fake_config,
    guild,
    make_bot,
    original_text,
)
from tests.test_discord_adapter import bot as bot  # noqa: F401  (the fixture)

PIN = discord.Permissions(pin_messages=True).value


@pytest.fixture
async def pinner(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild(bot_role=BOT_ROLE | PIN)):
        yield b


async def end_raid(bot: Bot) -> None:
    await bot.h.dispatch_interaction(as_mod("raid end"))
    await bot.adapter.posts.drain()


async def test_the_raid_post_is_pinned_while_the_raid_runs_and_unpinned_at_its_end(pinner: Bot) -> None:
    payload = as_mod("raid start", {"url": "https://x.com/nubi/status/1", "likes": 5, "pin": True})
    await pinner.h.dispatch_interaction(payload)
    await pinner.adapter.posts.drain()
    post = pinner.raid_post()
    assert pinner.fake.pinned(CHANNEL_ID) == [post.id]
    jump = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{post.id}"
    assert original_text(pinner, payload) == f"Raid #1 is live: the raid post is {jump}."
    progress = await pinner.services.raids.progress(1)
    assert progress.pin and (progress.progress_ref or {})["pinned"] is True

    await end_raid(pinner)
    assert pinner.fake.pinned(CHANNEL_ID) == []
    [unpin] = pinner.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/{post.id}", "DELETE")
    assert unpin.status == 204
    assert not await pinner.services.outbox.pending(unpin_key(1))


async def test_a_raid_without_pin_asks_nothing_of_discord(pinner: Bot) -> None:
    await pinner.start_raid()
    await end_raid(pinner)
    assert pinner.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/*") == []


async def test_without_pin_messages_the_raid_runs_unpinned_and_the_moderator_is_told(bot: Bot) -> None:  # noqa: F811
    payload = as_mod("raid start", {"url": "https://x.com/nubi/status/1", "likes": 5, "pin": True})
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()
    post = bot.raid_post()
    assert post.embeds[0]["title"] == "Raid #1 — live"
    [refused] = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/{post.id}", "PUT")
    assert refused.status == 403 and bot.fake.pinned(CHANNEL_ID) == []
    assert original_text(bot, payload).endswith(
        "I couldn't pin it: I need the Pin Messages permission in this channel. The raid runs unpinned.")
    assert "pinned" not in ((await bot.services.raids.progress(1)).progress_ref or {})

    await end_raid(bot)
    assert bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/*", "DELETE") == []
    assert not await bot.services.outbox.pending(unpin_key(1))


async def test_an_unpin_discord_refused_is_finished_by_a_new_adapter_when_it_is_ready(
    pinner: Bot, clock: FakeClock
) -> None:
    raid_id = await pinner.start_raid(pin=True)
    post = pinner.raid_post()
    path = f"/channels/{CHANNEL_ID}/messages/pins/{post.id}"
    pinner.fake.fail_next("DELETE", path, status=403)  # Pin Messages taken away for a moment
    await end_raid(pinner)
    assert pinner.fake.pinned(CHANNEL_ID) == [post.id]
    assert await pinner.services.outbox.pending(unpin_key(raid_id))

    await pinner.adapter.stop()  # this process is gone
    clock.advance(seconds=FIRST_RETRY)
    second = DiscordAdapter(pinner.services, fake_config(pinner.fake))  # a new process, same server
    async with DiscordHarness(second.build_client, guilds=[guild(bot_role=BOT_ROLE | PIN)], fake=pinner.fake):
        await asyncio.wait_for(second.reconciled.wait(), 5)  # its first ready finishes what is owed
        assert pinner.fake.pinned(CHANNEL_ID) == []
        assert not await pinner.services.outbox.pending(unpin_key(raid_id))
        await second.stop()
    assert [c.status for c in pinner.fake.calls_to(path, "DELETE")] == [403, 204]
