"""Discord raids in a thread of their own, through the real discord.py against the fake Discord API.

`/raid start ... thread:True` starts a public thread in the channel where it was typed; the raid post,
its edits, the buttons, the moderator's commands and the report all live in that thread. The thread
permissions are checked only when the option is used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import discord
import pytest

from core.services import Services
from tests.fakes.discord_api import component_interaction
from tests.test_discord_adapter import (
    BOT_ROLE,
    CHANNEL_ID,
    GUILD_ID,
    RAIDER_BASE,
    Bot,
    as_mod,
    guild,
    make_bot,
    original_text,
)
from tests.test_discord_adapter import bot as bot  # noqa: F401  (the fixture)

THREADS = discord.Permissions(create_public_threads=True, send_messages_in_threads=True).value
URL = "https://x.com/nubi/status/7"


@pytest.fixture
async def threader(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild(bot_role=BOT_ROLE | THREADS)):
        yield b


async def test_a_thread_raid_is_posted_in_a_new_thread_and_its_report_follows_it_there(threader: Bot) -> None:
    bot = threader
    payload = as_mod("raid start", {"url": URL, "likes": 5, "thread": True})
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()

    [thread] = bot.fake.threads_of(CHANNEL_ID)
    thread_id = int(thread["id"])
    assert (thread["type"], thread["name"]) == (11, "Raid #1")  # a public thread of the raid channel
    [post] = bot.fake.channel_messages(thread_id)
    assert post.embeds[0]["title"] == "Raid #1 — live"
    assert bot.visible() == []  # nothing posted in the parent channel itself
    jump = f"https://discord.com/channels/{GUILD_ID}/{thread_id}/{post.id}"
    assert original_text(bot, payload) == f"Raid #1 is live: the raid post is {jump}."
    progress = await bot.services.raids.progress(1)
    assert progress.chat.channel == str(thread_id) and progress.thread == str(thread_id) and progress.in_thread

    pressed = await bot.h.dispatch_interaction(component_interaction(
        "nubi:join:1", post.json, guild_id=GUILD_ID, channel_id=thread_id, user_id=RAIDER_BASE, username="r0"))
    assert pressed is not None and pressed.content == "Joined raid #1 as raider #1! +5 early bird"
    await bot.adapter.posts.drain()
    assert "Raiders: 1/500" in bot.fake.channel_messages(thread_id)[0].embeds[0]["description"]

    await bot.h.dispatch_interaction(as_mod("raid end", channel_id=thread_id))  # typed in the thread
    await bot.adapter.posts.drain()
    live, report = bot.fake.channel_messages(thread_id)
    assert live.id == post.id and report.embeds[0]["title"].startswith("Raid #1 report")
    assert int(report.json["message_reference"]["message_id"]) == post.id
    assert bot.visible() == []
    assert [c.status for c in bot.fake.calls_to(f"/channels/{CHANNEL_ID}/threads", "POST")] == [201]


async def test_a_thread_raid_needs_the_thread_permissions_and_names_them(bot: Bot) -> None:  # noqa: F811
    refused = await bot.h.dispatch_interaction(as_mod("raid start", {"url": URL, "likes": 5, "thread": True}))
    assert refused is not None and refused.ephemeral
    assert "missing the Create Public Threads, Send Messages in Threads permissions" in (refused.content or "")
    assert await bot.services.raids.list() == [] and bot.fake.threads_of(CHANNEL_ID) == []

    raid_id = await bot.start_raid()  # without the option nothing about threads is asked
    assert bot.raid_post().embeds[0]["title"] == f"Raid #{raid_id} — live"


async def test_a_thread_raid_cannot_also_lock_and_nothing_starts(threader: Bot) -> None:
    payload = as_mod("raid start", {"url": URL, "likes": 5, "thread": True, "lock": True})
    await threader.h.dispatch_interaction(payload)
    assert original_text(threader, payload) == (
        "A raid in a thread of its own can't lock the chat: start it with lock or with thread, not both.")
    assert await threader.services.raids.list() == [] and threader.fake.threads_of(CHANNEL_ID) == []
