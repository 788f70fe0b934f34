"""Discord raids in a thread of their own, through the real discord.py against the fake Discord API.

`/raid start ... thread:True` starts a public thread in the channel where it was typed; the raid post,
its edits, the buttons, the moderator's commands and the report all live in that thread. The thread
permissions are checked only when the option is used. With `lock` too, the lock locks that thread
(Discord's `locked`, which mutes everyone without Manage Threads there) and puts it back at the end,
exactly once, on restart too; the parent channel is never touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from sqlalchemy import select

from core.services import Services
from core.storage.models import ChatLock
from tests.fakes.discord_api import DEFAULT_MEMBER_PERMISSIONS, component_interaction
from tests.test_discord_adapter import (
    BOT_ROLE,
    CHANNEL_ID,
    GUILD_ID,
    LEAD_ID,
    RAIDER_BASE,
    Bot,
    as_mod,
    guild,
    make_bot,
    original_text,
)
from tests.test_discord_adapter import bot as bot  # noqa: F401  (the fixture)

THREADS = discord.Permissions(create_public_threads=True, send_messages_in_threads=True).value
MANAGE_THREADS = discord.Permissions(manage_threads=True).value
MANAGE_ROLES = discord.Permissions(manage_roles=True).value
IN_THREADS = discord.Permissions(send_messages_in_threads=True).value
URL = "https://x.com/nubi/status/7"


def talking_guild(bot_role: int) -> dict[str, Any]:
    """The test server, where members may also talk in threads (@everyone holds Send Messages in Threads,
    as in Discord's default role)."""
    payload = guild(bot_role=bot_role)
    for role in payload["roles"]:
        if role["id"] == str(GUILD_ID):
            role["permissions"] = str(DEFAULT_MEMBER_PERMISSIONS | IN_THREADS)
    return payload


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


@pytest.fixture
async def locker(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, talking_guild(BOT_ROLE | THREADS | MANAGE_THREADS)):
        yield b


async def start_locked_thread_raid(bot: Bot) -> int:
    await bot.h.dispatch_interaction(as_mod("raid start", {"url": URL, "likes": 5, "thread": True, "lock": True}))
    await bot.adapter.posts.drain()
    [thread] = bot.fake.threads_of(CHANNEL_ID)
    return int(thread["id"])


def locked(bot: Bot, thread_id: int) -> bool:
    return bool(bot.fake.channel(thread_id)["thread_metadata"]["locked"])


def lock_edits(bot: Bot, thread_id: int) -> list[tuple[Any, int]]:
    """Every Modify Channel nubi sent for the thread: the `locked` it asked for, and Discord's answer."""
    return [(c.json.get("locked"), c.status) for c in bot.fake.calls_to(f"/channels/{thread_id}", "PATCH")]


async def test_a_locking_thread_raid_locks_its_thread_not_the_channel_and_unlocks_it_once(locker: Bot) -> None:
    bot = locker
    channel_before = bot.fake.channel(CHANNEL_ID)["permission_overwrites"]
    assert bot.fake.member_can_send(CHANNEL_ID, LEAD_ID)

    thread_id = await start_locked_thread_raid(bot)

    assert locked(bot, thread_id) and lock_edits(bot, thread_id) == [(True, 200)]
    assert not bot.fake.member_can_send(thread_id, LEAD_ID)  # muted in the raid's thread...
    assert bot.fake.member_can_send(CHANNEL_ID, LEAD_ID)  # ...and free to talk in the channel, untouched
    assert bot.fake.channel(CHANNEL_ID)["permission_overwrites"] == channel_before
    [post] = bot.fake.channel_messages(thread_id)  # nubi (Manage Threads) posts in its locked thread
    assert "Chat is locked for the raid." in post.embeds[0]["description"]
    assert bot.visible() == []
    community_id = (await bot.services.raids.progress(1)).community_id
    lock = await bot.services.locks.active(community_id, str(thread_id))
    assert lock is not None and lock.raid_id == 1
    assert lock.saved_permissions == {"platform": "discord", "kind": "thread", "channel_id": str(thread_id),
                                      "guild_id": str(GUILD_ID), "parent_id": str(CHANNEL_ID), "raid_id": 1,
                                      "locked": False}

    pressed = await bot.h.dispatch_interaction(component_interaction(
        "nubi:join:1", post.json, guild_id=GUILD_ID, channel_id=thread_id, user_id=RAIDER_BASE, username="r0"))
    assert pressed is not None and pressed.content == "Joined raid #1 as raider #1! +5 early bird"
    await bot.adapter.posts.drain()
    assert "Raiders: 1/500" in bot.fake.channel_messages(thread_id)[0].embeds[0]["description"]  # edited, locked

    await bot.h.dispatch_interaction(as_mod("raid end", channel_id=thread_id))
    await bot.adapter.posts.drain()

    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    assert lock_edits(bot, thread_id) == [(True, 200), (False, 200)]
    live, report = bot.fake.channel_messages(thread_id)
    assert live.id == post.id and report.embeds[0]["title"].startswith("Raid #1 report")
    assert "Chat is locked" not in live.embeds[0]["description"]
    assert await bot.services.locks.pending_releases("discord") == []
    assert await bot.services.locks.active(community_id, str(thread_id)) is None

    await bot.services.locks.retry_releases()  # the sweep and a restart find nothing left to undo
    await bot.h.restart()
    await asyncio.wait_for(bot.adapter.reconciled.wait(), 5)
    assert lock_edits(bot, thread_id) == [(True, 200), (False, 200)]
    assert bot.fake.channel(CHANNEL_ID)["permission_overwrites"] == channel_before


async def test_a_locking_thread_raid_needs_manage_threads_and_not_manage_roles(services: Services) -> None:
    async for without in make_bot(services, talking_guild(BOT_ROLE | THREADS)):
        refused = await without.h.dispatch_interaction(
            as_mod("raid start", {"url": URL, "likes": 5, "thread": True, "lock": True}))
        assert refused is not None and refused.ephemeral
        assert "missing the Manage Threads permission" in (refused.content or "")
        assert await without.services.raids.list() == [] and without.fake.threads_of(CHANNEL_ID) == []

    async for no_roles in make_bot(services, talking_guild((BOT_ROLE & ~MANAGE_ROLES) | THREADS | MANAGE_THREADS)):
        thread_id = await start_locked_thread_raid(no_roles)  # the channel's overwrites are not its to edit
        assert locked(no_roles, thread_id) and not no_roles.fake.member_can_send(thread_id, LEAD_ID)
        assert no_roles.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/*") == []


async def test_a_thread_lock_discord_refuses_leaves_the_raid_running_unlocked(locker: Bot) -> None:
    bot = locker
    bot.fake.fail_next("PATCH", "/channels/*", status=403)

    thread_id = await start_locked_thread_raid(bot)

    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    [row] = (await bot.services.db.read(lambda s: s.scalars(select(ChatLock)))).all()
    assert row.raid_id == 1 and row.released_at is not None and row.release_reason == "missing permissions"
    assert lock_edits(bot, thread_id) == [(True, 403)]  # nothing to put back: never a second edit
    note, post = bot.fake.channel_messages(thread_id)  # told first, then the raid is posted
    assert "Chat is locked" not in post.embeds[0]["description"]
    assert note.content == ("I couldn't lock this thread: I need the Manage Threads permission in its channel. "
                            "The raid runs unlocked.")


async def test_a_thread_unlock_that_failed_is_finished_on_restart(locker: Bot) -> None:
    bot = locker
    thread_id = await start_locked_thread_raid(bot)
    bot.fake.fail_next("PATCH", f"/channels/{thread_id}", status=403)

    await bot.h.dispatch_interaction(as_mod("raid end", channel_id=thread_id))
    await bot.adapter.posts.drain()

    assert locked(bot, thread_id)  # still locked, and the report is in the thread all the same
    assert bot.fake.channel_messages(thread_id)[-1].embeds[0]["title"].startswith("Raid #1 report")
    [pending] = await bot.services.locks.pending_releases("discord")

    await bot.h.restart()
    await asyncio.wait_for(bot.adapter.reconciled.wait(), 5)

    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    assert lock_edits(bot, thread_id) == [(True, 200), (False, 403), (False, 200)]
    assert await bot.services.locks.pending_releases("discord") == []
    assert await bot.services.locks.active(pending.community_id, str(thread_id)) is None


async def test_a_thread_that_archived_itself_is_unlocked_and_takes_the_end_of_the_raid(locker: Bot) -> None:
    """A quiet thread archives itself; Discord changes an archived thread only in a request that
    unarchives it, so nubi unarchives it with the lock put back, and the raid's end goes there."""
    bot = locker
    thread_id = await start_locked_thread_raid(bot)
    bot.fake.archive_thread(thread_id)

    await bot.services.raids.end(1)
    await bot.adapter.posts.drain()

    edits = bot.fake.calls_to(f"/channels/{thread_id}", "PATCH")
    assert [(c.json, c.status) for c in edits] == [
        ({"locked": True}, 200),
        ({"locked": False}, 400),  # 50083: the thread is archived
        ({"archived": False, "locked": False}, 200),
    ]
    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    assert bot.fake.channel(thread_id)["thread_metadata"]["archived"] is False
    assert await bot.services.locks.pending_releases("discord") == []
    live, report = bot.fake.channel_messages(thread_id)  # the final edit and the report, in the thread
    assert "Chat is locked" not in live.embeds[0]["description"]
    assert report.embeds[0]["title"].startswith("Raid #1 report")


async def test_a_thread_that_archived_itself_is_unarchived_for_the_end_of_an_unlocked_raid(threader: Bot) -> None:
    """No lock: the thread archives itself during a quiet raid, and Discord refuses edits in an archived
    thread; nubi (Send Messages in Threads, no Manage Threads) unarchives it, then the final edit and the
    report land there."""
    bot = threader
    await bot.h.dispatch_interaction(as_mod("raid start", {"url": URL, "likes": 5, "thread": True}))
    await bot.adapter.posts.drain()
    [thread] = bot.fake.threads_of(CHANNEL_ID)
    thread_id = int(thread["id"])
    [post] = bot.fake.channel_messages(thread_id)
    assert post.embeds[0]["title"] == "Raid #1 — live"
    bot.fake.archive_thread(thread_id)

    await bot.services.raids.end(1)
    await bot.adapter.posts.drain()

    edits = bot.fake.calls_to(f"/channels/{thread_id}", "PATCH")
    assert [(c.json, c.status) for c in edits] == [({"archived": False}, 200)]
    assert bot.fake.channel(thread_id)["thread_metadata"]["archived"] is False
    message_edits = bot.fake.calls_to(f"/channels/{thread_id}/messages/{post.id}", "PATCH")
    assert message_edits and all(c.status == 200 for c in message_edits), [c.status for c in message_edits]
    live, report = bot.fake.channel_messages(thread_id)
    assert live.id == post.id and live.embeds[0]["title"] == "Raid #1 — nobody took part"  # the final edit
    assert report.embeds[0]["title"].startswith("Raid #1 report")


async def test_a_thread_a_moderator_locked_and_that_archived_is_left_as_it_is(threader: Bot) -> None:
    """Unarchiving a locked thread takes Manage Threads, which a raid without `lock` does not ask for:
    nubi does not try (a refused request would only use up its rate limit), and leaves it archived."""
    bot = threader
    await bot.h.dispatch_interaction(as_mod("raid start", {"url": URL, "likes": 5, "thread": True}))
    await bot.adapter.posts.drain()
    [thread] = bot.fake.threads_of(CHANNEL_ID)
    thread_id = int(thread["id"])
    bot.fake.channels[thread_id]["thread_metadata"]["locked"] = True  # a moderator locked it
    bot.fake.archive_thread(thread_id)

    await bot.services.raids.end(1)
    await bot.adapter.posts.drain()

    assert bot.fake.calls_to(f"/channels/{thread_id}", "PATCH") == []  # no refused unarchive attempt
    assert bot.fake.channel(thread_id)["thread_metadata"]["archived"] is True


async def test_unlock_typed_in_the_raids_thread_releases_its_thread_lock(locker: Bot) -> None:
    bot = locker
    thread_id = await start_locked_thread_raid(bot)
    assert locked(bot, thread_id)

    payload = as_mod("unlock", channel_id=thread_id)
    answered = await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()

    assert answered is not None and not answered.ephemeral and original_text(bot, payload) == "Chat unlocked."
    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    assert lock_edits(bot, thread_id) == [(True, 200), (False, 200)]
    community_id = (await bot.services.raids.progress(1)).community_id
    assert await bot.services.locks.active(community_id, str(thread_id)) is None
    assert await bot.services.locks.pending_releases("discord") == []
    assert (await bot.services.raids.progress(1)).active  # the raid runs on, unlocked
    again = as_mod("unlock", channel_id=thread_id)
    await bot.h.dispatch_interaction(again)
    assert original_text(bot, again) == "The chat is not locked."


async def test_unlock_typed_in_the_parent_channel_finds_the_thread_raids_lock(locker: Bot) -> None:
    """The raid belongs to the channel it was started in: /unlock there lifts its thread's lock, and only
    that one (another channel's /unlock finds nothing)."""
    bot = locker
    thread_id = await start_locked_thread_raid(bot)

    payload = as_mod("unlock")  # typed in the channel, not the thread
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()

    assert original_text(bot, payload) == "Chat unlocked."
    assert not locked(bot, thread_id) and bot.fake.member_can_send(thread_id, LEAD_ID)
    assert lock_edits(bot, thread_id) == [(True, 200), (False, 200)]
    assert await bot.services.locks.pending_releases("discord") == []
    assert bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/*") == []  # the channel itself untouched
    [post] = [m for m in bot.fake.channel_messages(thread_id) if m.embeds]
    assert "Chat is locked" not in post.embeds[0]["description"]  # the post follows
    again = as_mod("unlock")
    await bot.h.dispatch_interaction(again)
    assert original_text(bot, again) == "The chat is not locked."
