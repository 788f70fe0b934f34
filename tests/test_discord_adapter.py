"""The Discord adapter end to end: the real discord.py client, the fake Discord API, real core services.

Interactions go in as gateway payloads through discord.py's own parsers, CommandTree and view store;
everything the adapter sends comes out over HTTP to the fake, where the assertions look. Core runs
on SQLite and PostgreSQL (the `services` fixture).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest
from sqlalchemy import select

from adapters.discord.adapter import DiscordAdapter, sync_commands
from adapters.discord.commands import COMMANDS
from core.clock import FakeClock
from core.config import DiscordConfig
from core.directory import ChatRef, MemberRef, find_community
from core.services import Services
from core.storage.models import ChatLock
from core.throttle import RetryLater
from tests.fakes.discord_api import (
    APPLICATION_ID,
    BOT_USER_ID,
    DEFAULT_MEMBER_PERMISSIONS,
    DEFAULT_TOKEN,
    CallbackType,
    DiscordHarness,
    FakeDiscordAPI,
    Press,
    StoredMessage,
    UserArg,
    autocomplete_interaction,
    component_interaction,
    guild_create_payload,
    member_payload,
    overwrite_payload,
    role_payload,
    slash_command_interaction,
    text_channel_payload,
)

GUILD_ID = 930_000_000_000_000_001
CHANNEL_ID = 930_000_000_000_000_002
MOD_ROLE_ID = 930_000_000_000_000_003
MOD_ID = 930_000_000_000_000_004
LEAD_ID = 930_000_000_000_000_005
MEMBER_ID = 930_000_000_000_000_006
RAIDER_BASE = 930_000_000_000_100_000

MANAGE_GUILD = discord.Permissions(manage_guild=True).value
SEND = discord.Permissions(send_messages=True).value
VIEW = discord.Permissions(view_channel=True).value
REACT = discord.Permissions(add_reactions=True).value
EMBED = discord.Permissions(embed_links=True).value
HISTORY = discord.Permissions(read_message_history=True).value
# Permission bits past 32 in the channel's own overwrites: Send Polls (49), Use External Apps (50),
# Send Voice Messages (46). They must come back exactly, not truncated.
POLLS = discord.Permissions(send_polls=True).value
EXTERNAL_APPS = discord.Permissions(use_external_apps=True).value
VOICE_MESSAGES = discord.Permissions(send_voice_messages=True).value
# What docs/discord.md asks a server to give nubi's role: nothing more, no Administrator.
BOT_ROLE = discord.Permissions(
    view_channel=True, send_messages=True, embed_links=True, read_message_history=True, manage_roles=True
).value
EVERYONE_BEFORE = overwrite_payload(GUILD_ID, type=0, allow=VIEW | VOICE_MESSAGES, deny=REACT | POLLS)
MODERATORS_BEFORE = overwrite_payload(MOD_ROLE_ID, type=0, allow=SEND | EXTERNAL_APPS, deny=POLLS)
INTERVAL = 0.5
TARGET = "https://twitter.com/nubi/status/1234567890?s=20"

slash = functools.partial(slash_command_interaction, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=MEMBER_ID)
as_mod = functools.partial(slash, user_id=MOD_ID, username="mod", permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)


def guild(
    *, everyone_overwrite: bool = True, everyone: dict[str, Any] | None = None, bot_role: int = BOT_ROLE
) -> dict[str, Any]:
    """The server as an owner sets it up: nubi's role holds exactly the documented permissions, and the
    raid channel already has its own @everyone overwrite and a moderators' overwrite."""
    overwrites = [everyone or EVERYONE_BEFORE] if everyone_overwrite else []
    return guild_create_payload(
        GUILD_ID,
        channels=[text_channel_payload(CHANNEL_ID, guild_id=GUILD_ID, name="raids",
                                       permission_overwrites=[*overwrites, MODERATORS_BEFORE])],
        roles=[role_payload(MOD_ROLE_ID, "Raid Lead")],
        members=[member_payload(MOD_ID, username="mod"), member_payload(LEAD_ID, username="lead", roles=[MOD_ROLE_ID])],
        bot_permissions=bot_role,
    )


@dataclass
class Bot:
    adapter: DiscordAdapter
    h: DiscordHarness[discord.Client]
    services: Services

    @property
    def fake(self) -> Any:
        return self.h.fake

    def visible(self) -> list[StoredMessage]:
        return self.fake.channel_messages(CHANNEL_ID)

    def raid_post(self) -> StoredMessage:
        [post] = [m for m in self.visible() if m.embeds and m.embeds[0]["title"].startswith("Raid #") and
                  "report" not in m.embeds[0]["title"]]
        return post

    def everyone(self) -> dict[str, Any] | None:
        return self.overwrite(GUILD_ID)

    def overwrite(self, target_id: int) -> dict[str, Any] | None:
        overwrites = self.fake.channel(CHANNEL_ID)["permission_overwrites"]
        return next((o for o in overwrites if o["id"] == str(target_id)), None)

    def overwrites(self) -> list[dict[str, Any]]:
        return sorted(self.fake.channel(CHANNEL_ID)["permission_overwrites"], key=lambda o: o["id"])

    async def press(self, custom_id: str, user_id: int, username: str, message: dict[str, Any] | None = None) -> Any:
        payload = component_interaction(
            custom_id, message or self.raid_post().json, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=user_id,
            username=username,
        )
        return await self.h.dispatch_interaction(payload)

    async def start_raid(self, **options: Any) -> int:
        payload = as_mod("raid start", {"url": TARGET, "likes": 40, "reposts": 30, "minutes": 30, **options})
        response = await self.h.dispatch_interaction(payload)
        assert response is not None and response.type == CallbackType.DEFERRED_CHANNEL_MESSAGE
        await self.adapter.posts.drain()  # the raid post may still be on its way (a retried send, say)
        return int(re.search(r"Raid #(\d+)", self.raid_post().embeds[0]["title"]).group(1))  # type: ignore[union-attr]

    async def community_id(self) -> int:
        found = await self.services.db.read(lambda s: find_community(s, ChatRef("discord", str(GUILD_ID))))
        assert found is not None
        return found


def fake_config(fake: FakeDiscordAPI, **overrides: Any) -> DiscordConfig:
    """The adapter's settings pointing at the fake: no patching of discord.py."""
    options: dict[str, Any] = {"moderator_role": "Raid Lead", "edit_interval_seconds": INTERVAL, **overrides}
    return DiscordConfig(api_base_url=fake.base_url, gateway_url=fake.gateway_url, **options)


async def make_bot(services: Services, guild_payload: dict[str, Any]) -> AsyncIterator[Bot]:
    async with FakeDiscordAPI() as fake:
        adapter = DiscordAdapter(services, fake_config(fake))
        async with DiscordHarness(adapter.build_client, guilds=[guild_payload], fake=fake) as h:
            await asyncio.wait_for(adapter.reconciled.wait(), 5)
            yield Bot(adapter, h, services)
            await adapter.stop()
            assert h.fake.unhandled_calls() == []


@pytest.fixture
async def bot(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild()):
        yield b


def original_text(bot: Bot, payload: dict[str, Any]) -> str:
    message = bot.fake.original_response(int(payload["id"]))
    assert message is not None
    return message.content


async def test_moderator_starts_a_locked_raid_and_the_post_has_persistent_buttons(bot: Bot) -> None:
    payload = as_mod("raid start", {"url": TARGET, "likes": 40, "reposts": 30, "minutes": 30, "lock": True})

    response = await bot.h.dispatch_interaction(payload)

    assert response is not None
    assert (response.type, response.ephemeral) == (CallbackType.DEFERRED_CHANNEL_MESSAGE, True)
    post = bot.raid_post()
    [embed] = post.embeds
    assert embed["title"] == "Raid #1 — live"
    assert embed["url"] == "https://x.com/nubi/status/1234567890"
    assert "Likes: ░░░░░░░░░░ 0/40 (1 pt each)" in embed["description"]
    assert "Chat is locked for the raid." in embed["description"]
    buttons = [c for row in post.components for c in row["components"]]
    assert [(b.get("custom_id"), b["label"]) for b in buttons] == [
        ("nubi:join:1", "Join"), (None, "Open post"), ("nubi:claim:1:like", "Like +1"),
        ("nubi:claim:1:repost", "Repost +2"), ("nubi:stats:1", "My stats"),
    ]
    assert buttons[1]["url"] == "https://x.com/nubi/status/1234567890"
    jump = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{post.id}"
    assert original_text(bot, payload) == f"Raid #1 is live: the raid post is {jump}."
    progress = await bot.services.raids.progress(1)
    assert progress.progress_ref == {"channel_id": str(CHANNEL_ID), "message_id": str(post.id), "guild_id": str(GUILD_ID)}
    # the previous overwrites are on record; the channel denies sending now, except to nubi itself
    lock = await bot.services.locks.active(await bot.community_id(), str(CHANNEL_ID))
    assert lock is not None and lock.raid_id == 1
    assert lock.saved_permissions["everyone"] == {"allow": VIEW | VOICE_MESSAGES, "deny": REACT | POLLS}
    assert lock.saved_permissions["bot"] == "none"
    assert bot.everyone() == overwrite_payload(GUILD_ID, type=0, allow=VIEW | VOICE_MESSAGES, deny=REACT | POLLS | SEND)
    assert bot.overwrite(BOT_USER_ID) == overwrite_payload(BOT_USER_ID, type=1, allow=VIEW | SEND | EMBED | HISTORY)
    assert bot.overwrite(MOD_ROLE_ID) == MODERATORS_BEFORE
    reads = bot.fake.calls_to(f"/channels/{CHANNEL_ID}", "GET")
    [voice] = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{BOT_USER_ID}", "PUT")
    [put] = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", "PUT")
    assert reads and reads[0].at <= voice.at <= put.at  # nubi keeps its voice before @everyone loses theirs
    [posted] = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")
    assert put.at <= posted.at and posted.status == 200  # posted into the locked channel
    assert not bot.fake.bot_permissions(CHANNEL_ID) & discord.Permissions(administrator=True).value
    assert len(bot.visible()) == 1


async def test_members_join_and_claim_edits_are_throttled_and_the_raid_ends_once(
    bot: Bot, clock: FakeClock
) -> None:
    """All of it in a locked channel, by a bot whose role holds only the documented permissions."""
    raid_id = await bot.start_raid(lock=True)
    post_id = bot.raid_post().id
    assert bot.everyone() is not None and int(bot.everyone()["deny"]) & SEND  # type: ignore[index]
    raiders = [(RAIDER_BASE + i, f"raider{i:02d}") for i in range(32)]

    for i, (user_id, name) in enumerate(raiders, start=1):
        joined = await bot.press(f"nubi:join:{raid_id}", user_id, name)
        assert joined is not None and joined.ephemeral and joined.type == CallbackType.CHANNEL_MESSAGE
        bonus = " +5 early bird" if i <= 10 else ""
        assert joined.content == f"Joined raid #{raid_id} as raider #{i}!{bonus}"
    for user_id, name in raiders:
        claimed = await bot.press(f"nubi:claim:{raid_id}:like", user_id, name)
        assert claimed is not None and claimed.ephemeral and claimed.content == "Like claimed: +4"
    again = await bot.press(f"nubi:join:{raid_id}", *raiders[0])
    assert again is not None and again.content == f"You're already in raid #{raid_id} (raider #1)."
    await bot.adapter.posts.drain()

    all_edits = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/{post_id}", "PATCH")
    assert [c.status for c in all_edits if c.status != 200] == []  # no edit refused while locked
    edits = [c for c in all_edits if c.status == 200]
    times = [c.at for c in edits]
    # 64 changes, a handful of edits: flushes start an interval apart (a slow read may delay one PATCH,
    # so arrivals are checked as a rate: no three edits within one interval)
    assert 2 <= len(edits) <= (times[-1] - times[0]) / INTERVAL + 2 < 64 / 4
    assert all(b - a >= INTERVAL for a, b in zip(times, times[2:], strict=False)), times
    description = bot.raid_post().embeds[0]["description"]
    assert "Raiders: 32/500" in description and "Likes: ████████░░ 32/40 (1 pt each)" in description
    assert len(bot.visible()) == 1  # edited in place, never re-posted
    live = copy.deepcopy(bot.raid_post().json)

    clock.advance(minutes=31)
    assert await bot.services.raids.end_overdue() == [raid_id]
    assert await bot.services.raids.end_overdue() == []
    await bot.adapter.posts.drain()

    post, report = bot.visible()
    assert post.id == post_id and post.embeds[0]["title"] == f"Raid #{raid_id} — time ran out"
    assert [c.get("custom_id") for row in post.components for c in row["components"]] == [None]  # link only
    assert report.embeds[0]["title"] == f"Raid #{raid_id} report — time ran out"
    assert "Ended: time ran out" in report.embeds[0]["description"]
    assert "Raiders: 32" in report.embeds[0]["description"]
    assert int(report.json["message_reference"]["message_id"]) == post_id
    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])  # exactly
    assert await bot.services.locks.active(await bot.community_id(), str(CHANNEL_ID)) is None
    assert await bot.services.locks.pending_releases("discord") == []
    # a member whose screen still shows the live post presses a button the final edit removed:
    # an id the pressed message does not carry is never acted on
    late = await bot.press(f"nubi:claim:{raid_id}:repost", *raiders[1])
    assert late is not None and late.ephemeral and late.content == "That button is no longer on this post."
    stale = await bot.press(f"nubi:join:{raid_id}", RAIDER_BASE + 99, "late", message=live)
    assert stale is not None and stale.content == "The raid has ended."
    assert len(bot.visible()) == 2


async def test_raid_start_needs_manage_server_or_the_moderator_role(bot: Bot) -> None:
    """Registered for everyone (no default permission to override), checked on every call."""
    tree = bot.h.client.tree  # type: ignore[attr-defined]
    for command in COMMANDS:
        assert tree.get_command(command.name).default_permissions is None, command.name
    refused = slash("raid start", {"url": TARGET})

    response = await bot.h.dispatch_interaction(refused)

    assert response is not None and (response.type, response.ephemeral) == (CallbackType.CHANNEL_MESSAGE, True)
    assert response.content == "Sorry, only moderators can do that here."
    assert bot.visible() == [] and await bot.services.raids.list() == []
    for name, options in [("unlock", {}), ("ban", {"member": UserArg(LEAD_ID, "lead")}), ("schedule list", {}),
                          ("review list", {}), ("points add", {"member": UserArg(LEAD_ID, "lead"), "amount": 5,
                                                               "reason": "x"})]:
        answer = await bot.h.dispatch_interaction(slash(name, options))
        assert answer is not None and answer.ephemeral and answer.content == "Sorry, only moderators can do that here."
    assert bot.visible() == []

    by_role = slash("raid start", {"url": TARGET}, user_id=LEAD_ID, username="lead", roles=[MOD_ROLE_ID])
    await bot.h.dispatch_interaction(by_role)

    assert original_text(bot, by_role).startswith("Raid #1 is live")
    assert bot.raid_post().embeds[0]["title"] == "Raid #1 — live"


async def test_buttons_on_an_old_post_still_work_after_a_restart(bot: Bot) -> None:
    raid_id = await bot.start_raid()
    post_id = bot.raid_post().id
    first = bot.h.client

    second = await bot.h.restart()
    await asyncio.wait_for(bot.adapter.reconciled.wait(), 5)

    assert second is not first and bot.adapter.client is second
    joined = await bot.press(f"nubi:join:{raid_id}", RAIDER_BASE, "raider00")
    assert joined is not None and joined.content == f"Joined raid #{raid_id} as raider #1! +5 early bird"
    await bot.adapter.posts.drain()
    assert bot.raid_post().id == post_id and "Raiders: 1/500" in bot.raid_post().embeds[0]["description"]
    assert len(bot.visible()) == 1
    stats = await bot.press(f"nubi:stats:{raid_id}", RAIDER_BASE, "raider00")
    assert stats is not None and stats.content == f"Raid #{raid_id}: raider #1, 5 pts; no claims yet."


async def test_slow_answers_are_deferred_first_then_filled_in(bot: Bot) -> None:
    raid_id = await bot.start_raid()
    bot.adapter.answer_within = 0.0  # core "takes longer" than the answer budget

    joined = slash("join", user_id=MOD_ID, username="mod")
    response = await bot.h.dispatch_interaction(joined)
    pressed = await bot.press(f"nubi:stats:{raid_id}", MOD_ID, "mod")

    assert response is not None and (response.type, response.ephemeral) == (CallbackType.DEFERRED_CHANNEL_MESSAGE, False)
    assert original_text(bot, joined) == f"mod joined raid #{raid_id} as raider #1 (+5 early-bird points)."
    assert pressed is not None and (pressed.type, pressed.ephemeral) == (CallbackType.DEFERRED_CHANNEL_MESSAGE, True)
    stats = bot.fake.original_response(pressed.interaction_id)
    assert stats is not None and stats.ephemeral
    assert stats.content == f"Raid #{raid_id}: raider #1, 5 pts; no claims yet."


async def test_rate_limited_edits_are_retried_without_a_duplicate_post(bot: Bot) -> None:
    raid_id = await bot.start_raid()
    post = bot.raid_post()
    path = f"/channels/{CHANNEL_ID}/messages/{post.id}"
    bot.fake.fail_next("PATCH", path, status=429, retry_after=0.05)

    await bot.press(f"nubi:join:{raid_id}", RAIDER_BASE, "raider00")
    await bot.adapter.posts.drain()

    assert [c.status for c in bot.fake.calls_to(path, "PATCH")] == [429, 200]
    assert len(post.history) == 1 and "Raiders: 1/500" in post.embeds[0]["description"]
    assert len(bot.visible()) == 1

    # A wait longer than the client's limit comes back to the Coalescer, which defers the edit.
    bot.fake.fail_next("PATCH", path, status=429, retry_after=31)
    await bot.services.raids.join(raid_id, MemberRef("discord", str(RAIDER_BASE + 1), "raider01"))
    await asyncio.sleep(INTERVAL + 0.3)  # the next edit is due after the interval; then no retry for 31 s
    assert [c.status for c in bot.fake.calls_to(path, "PATCH")] == [429, 200, 429]
    assert bot.adapter.posts.coalescer.pending() == 1
    bot.fake.fail_next("PATCH", path, status=429, retry_after=31)
    with pytest.raises(RetryLater) as deferred:
        await bot.adapter.posts.refresh(raid_id)
    assert deferred.value.seconds == 31
    assert len(bot.visible()) == 1 and len(post.history) == 1


async def test_leaderboard_me_and_claim_autocomplete(bot: Bot) -> None:
    raid_id = await bot.start_raid()
    suggest = functools.partial(
        autocomplete_interaction, "claim", guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=MEMBER_ID, focused="action"
    )

    everything = await bot.h.dispatch_interaction(suggest({"action": ""}))
    reposts = await bot.h.dispatch_interaction(suggest({"action": "repo"}))

    assert everything is not None and everything.choices == [
        {"name": "Like (+1)", "value": "like"}, {"name": "Repost (+2)", "value": "repost"},
    ]
    assert reposts is not None and reposts.choices == [{"name": "Repost (+2)", "value": "repost"}]

    await bot.press(f"nubi:join:{raid_id}", MEMBER_ID, "alice")
    claimed = await bot.h.dispatch_interaction(slash("claim", {"action": "likes"}, username="alice"))
    assert claimed is not None and claimed.ephemeral and claimed.content == "Like claimed: +4"

    board = await bot.h.dispatch_interaction(slash("leaderboard"))
    weekly = await bot.h.dispatch_interaction(slash("leaderboard", {"scope": "week", "top": 3}))
    me = await bot.h.dispatch_interaction(slash("me", username="alice"))

    assert board is not None and not board.ephemeral
    [embed] = board.data["embeds"]  # type: ignore[index]
    assert embed["title"] == f"Raid leaderboard (raid #{raid_id})" and embed["description"] == "🥇 alice — 9 pts"
    assert weekly is not None and weekly.data["embeds"][0]["title"] == "This week's leaderboard"  # type: ignore[index]
    assert me is not None and me.ephemeral
    assert "alice" in (me.content or "") and "9 pts all time (#1)" in (me.content or "")

    helped = await bot.h.dispatch_interaction(slash("help"))
    assert helped is not None and helped.ephemeral and "Member commands:" in (helped.content or "")
    assert "Moderator commands:" not in (helped.content or "")

    nothing_here = await bot.h.dispatch_interaction(
        autocomplete_interaction("review accept", {"claim_id": ""}, focused="claim_id", guild_id=GUILD_ID,
                                 channel_id=CHANNEL_ID, user_id=MEMBER_ID)
    )
    assert nothing_here is not None and nothing_here.choices == []  # moderator-only suggestions


async def test_review_queue_autocomplete_and_decision(services: Services) -> None:
    async for bot in make_bot(services, guild()):
        raid_id = await bot.start_raid(verification="review")
        await bot.press(f"nubi:join:{raid_id}", MEMBER_ID, "alice")
        pending = await bot.press(f"nubi:claim:{raid_id}:repost", MEMBER_ID, "alice")
        assert pending is not None and pending.content == "Repost claim recorded: waiting for verification."
        [item] = await services.raids.review_queue()

        choices = await bot.h.dispatch_interaction(
            autocomplete_interaction("review accept", {"claim_id": ""}, focused="claim_id", guild_id=GUILD_ID,
                                     channel_id=CHANNEL_ID, user_id=MOD_ID,
                                     permissions=DEFAULT_MEMBER_PERMISSIONS | MANAGE_GUILD)
        )
        accepted = await bot.h.dispatch_interaction(as_mod("review accept", {"claim_id": item.claim_id}))

        assert choices is not None and choices.choices == [
            {"name": f"#{item.claim_id} raid #{raid_id}: alice claims repost", "value": item.claim_id}
        ]
        assert accepted is not None and accepted.ephemeral
        assert accepted.content == f"Claim #{item.claim_id} accepted: +5."

        revoked = await bot.h.dispatch_interaction(
            as_mod("review revoke", {"claim_id": item.claim_id, "reason": "repost deleted"})
        )
        assert revoked is not None and revoked.ephemeral
        assert revoked.content == f"Claim #{item.claim_id} revoked: -5 points (repost deleted)."
        assert [e.points for e in await services.raids.leaderboard(raid_id)] == [5]  # the join bonus stays
        again = await bot.h.dispatch_interaction(as_mod("review revoke", {"claim_id": item.claim_id}))
        assert again is not None and again.ephemeral and "no accepted points to revoke" in (again.content or "")


async def test_a_lock_without_permission_is_released_and_the_raid_runs_unlocked(bot: Bot) -> None:
    bot.fake.fail_next("PUT", f"/channels/{CHANNEL_ID}/permissions/*", status=403)

    raid_id = await bot.start_raid(lock=True)

    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    rows = await bot.services.db.read(lambda s: s.scalars(select(ChatLock)))
    [row] = rows.all()  # the lock was recorded before the attempt, then released
    assert row.raid_id == raid_id and row.released_at is not None and row.release_reason == "missing permissions"
    assert await bot.services.locks.pending_releases("discord") == []
    assert "Chat is locked" not in bot.raid_post().embeds[0]["description"]
    notes = [m.content for m in bot.visible() if m.content]
    assert notes == [
        "I couldn't lock this channel: I need the Manage Permissions (Manage Roles) permission here. "
        "The raid runs unlocked."
    ]
    assert [c.status for c in bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/*")] == [403]


async def test_a_channel_without_an_overwrite_gets_it_removed_again(services: Services) -> None:
    async for bot in make_bot(services, guild(everyone_overwrite=False)):
        await bot.start_raid(lock=True)
        assert bot.everyone() == overwrite_payload(GUILD_ID, type=0, allow=0, deny=SEND)
        lock = await services.locks.active(await bot.community_id(), str(CHANNEL_ID))
        assert lock is not None and lock.saved_permissions["everyone"] == "none"

        payload = as_mod("raid end")
        ended = await bot.h.dispatch_interaction(payload)

        assert ended is not None and ended.ephemeral and original_text(bot, payload) == "Raid #1 report is in this channel."
        assert bot.everyone() is None and bot.overwrites() == [MODERATORS_BEFORE]
        assert len(bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", "DELETE")) == 1
        assert [m.embeds[0]["title"] for m in bot.visible()] == ["Raid #1 — nobody took part",
                                                                 "Raid #1 report — nobody took part"]


async def test_a_release_that_failed_is_restored_when_the_bot_is_ready_again(bot: Bot) -> None:
    await bot.start_raid(lock=True)
    bot.fake.fail_next("PUT", f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", status=403)

    payload = as_mod("unlock")

    unlocked = await bot.h.dispatch_interaction(payload)

    assert unlocked is not None and not unlocked.ephemeral and original_text(bot, payload) == "Chat unlocked."
    assert bot.everyone() == overwrite_payload(GUILD_ID, type=0, allow=VIEW | VOICE_MESSAGES, deny=REACT | POLLS | SEND)
    [pending] = await bot.services.locks.pending_releases("discord")

    await bot.h.restart()
    await asyncio.wait_for(bot.adapter.reconciled.wait(), 5)

    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    assert await bot.services.locks.pending_releases("discord") == []
    assert await bot.services.locks.active(pending.community_id, str(CHANNEL_ID)) is None


async def test_scheduled_leaderboard_is_posted_when_due(bot: Bot, clock: FakeClock) -> None:
    await bot.h.dispatch_interaction(slash("me", username="alice"))  # alice has used the bot here
    gave = await bot.h.dispatch_interaction(
        as_mod("points add", {"member": UserArg(MEMBER_ID, "alice"), "amount": 7, "reason": "great memes"})
    )
    assert gave is not None and not gave.ephemeral and gave.content == f"7 points added to <@{MEMBER_ID}>: great memes"
    added = await bot.h.dispatch_interaction(as_mod("schedule add", {"cron": "0 12 * * mon", "window": "week"}))
    assert added is not None and not added.ephemeral and (added.content or "").startswith("Schedule #1: the week top 10")
    [schedule] = await bot.services.schedules.list()

    clock.advance(days=7)  # next Monday's slot: the week that has just ended, with its dates
    assert await bot.services.schedules.fire(schedule.id, clock.now().replace(second=0, microsecond=0))

    [gave_message, _, board] = bot.visible()
    assert board.embeds[0]["title"] == "Leaderboard — week of Mon 5 Jan – Sun 11 Jan 2026"
    assert board.embeds[0]["description"] == "🥇 alice — 7 pts"
    assert gave_message.json["mentions"] == []  # names in replies never ping


async def test_errors_become_short_private_replies(
    bot: Bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    no_raid = await bot.h.dispatch_interaction(slash("join"))
    assert no_raid is not None and no_raid.ephemeral and no_raid.content == "There is no active raid here right now."

    bad_amount = await bot.h.dispatch_interaction(
        as_mod("points add", {"member": UserArg(MEMBER_ID, "alice"), "amount": 0, "reason": "typo"})
    )
    assert bad_amount is not None and bad_amount.ephemeral
    assert (bad_amount.content or "").startswith("the number of points must be positive")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(bot.services.raids, "active_raid_id", broken)
    with caplog.at_level(logging.ERROR):
        crashed = await bot.h.dispatch_interaction(slash("join"))
    assert crashed is not None and crashed.ephemeral and crashed.content == "Something went wrong, try again."
    assert "database on fire" in caplog.text


async def test_sync_commands_publishes_the_tree(bot: Bot) -> None:
    config = fake_config(bot.fake, token=DEFAULT_TOKEN)
    count = await sync_commands(config, None)
    in_guild = await sync_commands(config, GUILD_ID)

    assert count == in_guild == len(COMMANDS)
    published = {c["name"]: c for c in bot.fake.commands[None]}
    assert set(published) == {"join", "claim", "leaderboard", "me", "link", "help", "raid", "unlock", "ban",
                              "unban", "points", "schedule", "review", "settings", "member",
                              "community"}
    # no default permission: members with the moderator role see the commands without an override
    assert {c.get("default_member_permissions") for c in published.values()} == {None}
    assert {c["guild_id"] for c in bot.fake.commands[GUILD_ID]} == {str(GUILD_ID)}
    assert bot.fake.calls_to(f"/applications/{APPLICATION_ID}/guilds/{GUILD_ID}/commands", "PUT")


async def test_sharded_client_when_configured(services: Services) -> None:
    adapter = DiscordAdapter(services, DiscordConfig(shard_count=4, shard_ids=[2, 3]))

    assert isinstance(adapter.client, discord.AutoShardedClient)
    assert (adapter.client.shard_count, adapter.client.shard_ids) == (4, [2, 3])
    assert isinstance(DiscordAdapter(services, DiscordConfig()).client, discord.Client)
    with pytest.raises(RuntimeError, match="discord.token"):
        await adapter.start()
    await adapter.stop()



async def test_a_raid_started_in_another_process_is_posted_once_by_the_sweep(bot: Bot, db_url: str) -> None:
    """Another worker (its own Services and event bus, no Discord adapter) starts and ends a raid."""
    from bot.scheduler import NubiScheduler
    from core.events import EventBus
    from core.raids.model import RaidSpec
    from core.storage.db import Database

    other = Services(Database(db_url), bot.services.clock, bot.services.settings, EventBus())
    try:
        progress = await other.raids.start(ChatRef("discord", str(GUILD_ID), channel=str(CHANNEL_ID)), RaidSpec(TARGET, {"like": 3}))
        assert bot.visible() == []  # this process never saw RaidStarted
        sweep = NubiScheduler(bot.services)
        await sweep.republish_unposted()
        await sweep.republish_unposted()  # twice: still one post
        assert len(bot.visible()) == 1 and bot.raid_post().embeds[0]["title"] == f"Raid #{progress.id} — live"
        await other.raids.end(progress.id, status="cancelled")
        await sweep.republish_unposted()
        await sweep.republish_unposted()
        reports = [m for m in bot.visible() if m.embeds and "report" in m.embeds[0]["title"]]
        assert len(reports) == 1
    finally:
        await other.db.dispose()


async def test_server_errors_on_the_post_and_its_edits_are_retried(bot: Bot, monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters.discord import posts

    monkeypatch.setattr(posts, "SERVER_ERROR_RETRY", 0.05)
    bot.fake.fail_next("POST", f"/channels/{CHANNEL_ID}/messages", status=503)
    raid_id = await bot.start_raid()  # the first send meets a 503; the Coalescer posts it again
    await bot.adapter.posts.drain()
    post = bot.raid_post()
    assert [c.status for c in bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")][:2] == [503, 200]
    path = f"/channels/{CHANNEL_ID}/messages/{post.id}"
    bot.fake.fail_next("PATCH", path, status=503)
    await bot.services.raids.join(raid_id, MemberRef("discord", str(RAIDER_BASE), "raider00"))
    for _ in range(60):
        await asyncio.sleep(0.1)
        if "Raiders: 1/500" in bot.raid_post().embeds[0]["description"]:
            break
    assert [c.status for c in bot.fake.calls_to(path, "PATCH")][:2] == [503, 200]
    assert "Raiders: 1/500" in bot.raid_post().embeds[0]["description"]
    assert len(bot.visible()) == 1  # no duplicate post


def answer(bot: Bot, press: Press) -> str:
    """What the member read: the direct answer, or the deferred one once it was filled in."""
    assert press.callback is not None
    if press.callback.type == CallbackType.DEFERRED_CHANNEL_MESSAGE:
        return original_text(bot, {"id": press.interaction_id})
    return press.callback.content or ""


async def test_a_burst_of_concurrent_presses_is_answered_and_coalesced(bot: Bot) -> None:
    """DiscordHarness.press_many: 50 members press Join at the same moment, through the real gateway path."""
    raid_id = await bot.start_raid()
    post = bot.raid_post()
    joins = [component_interaction(f"nubi:join:{raid_id}", post.json, guild_id=GUILD_ID, channel_id=CHANNEL_ID,
                                   user_id=RAIDER_BASE + i, username=f"raider{i:02d}") for i in range(50)]

    presses = await bot.h.press_many(joins)
    await bot.adapter.posts.drain()

    assert [p.error for p in presses] == [None] * 50
    assert all(p.callback is not None and p.latency is not None and p.latency >= 0 for p in presses)
    places = [re.fullmatch(rf"Joined raid #{raid_id} as raider #(\d+)!( \+5 early bird)?", answer(bot, p)) for p in presses]
    assert sorted(int(m.group(1)) for m in places if m) == list(range(1, 51))
    assert (await bot.services.raids.progress(raid_id)).participants == 50
    edits = [c for c in bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/{post.id}", "PATCH") if c.status == 200]
    assert 1 <= len(edits) <= (edits[-1].at - edits[0].at) / INTERVAL + 2 < 50 / 5  # coalesced, not one per join
    assert "Raiders: 50/500" in bot.raid_post().embeds[0]["description"]
    assert len(bot.visible()) == 1


async def test_press_many_gives_up_waiting_without_cancelling_a_press(bot: Bot) -> None:
    """Presses still running when the driver stops waiting finish on their own (nothing is cancelled)."""
    raid_id = await bot.start_raid()
    post = bot.raid_post()
    joins = [component_interaction(f"nubi:join:{raid_id}", post.json, guild_id=GUILD_ID, channel_id=CHANNEL_ID,
                                   user_id=RAIDER_BASE + i, username=f"raider{i:02d}") for i in range(5)]

    presses = await bot.h.press_many(joins, give_up_after=0)

    assert [p.finished_at for p in presses] == [None] * 5  # still running when it stopped waiting
    for _ in range(500):
        await asyncio.sleep(0.01)
        if len(bot.fake.interaction_responses()) == 1 + 5:  # the raid start's, then every press's
            break
    assert {c.interaction_id for c in bot.fake.interaction_responses()[1:]} == {p.interaction_id for p in presses}
    assert (await bot.services.raids.progress(raid_id)).participants == 5


async def test_a_post_whose_answer_was_lost_is_sent_again_and_appears_once(bot: Bot, clock: FakeClock) -> None:
    """Discord made the raid post but the connection dropped before the answer: nubi cannot know. The
    outbox keeps the post owed and the sweep sends it again with the same nonce (enforce_nonce), so
    Discord hands back the first message instead of making a second; a report that lost its answer
    the same way appears once too."""
    from bot.scheduler import NubiScheduler

    bot.fake.drop_after_handling("POST", f"/channels/{CHANNEL_ID}/messages")
    payload = as_mod("raid start", {"url": TARGET, "likes": 40, "minutes": 30})
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()
    progress = await bot.services.raids.progress(1)
    assert progress.progress_ref is None and len(bot.visible()) == 1  # made on Discord, unknown to nubi

    sweep = NubiScheduler(bot.services)
    clock.advance(seconds=6)
    await sweep.republish_unposted()
    await bot.adapter.posts.drain()
    await sweep.republish_unposted()  # sent now: nothing more to do

    (post,) = bot.visible()
    posts = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")
    assert len(posts) == 2 and posts[0].json["nonce"] == posts[1].json["nonce"]
    assert (await bot.services.raids.progress(1)).progress_ref["message_id"] == str(post.id)
    await bot.services.raids.join(1, MemberRef("discord", str(RAIDER_BASE), "raider00"))
    for _ in range(60):  # edits go to that one message
        await asyncio.sleep(0.1)
        if "Raiders: 1/500" in bot.raid_post().embeds[0]["description"]:
            break
    assert "Raiders: 1/500" in bot.raid_post().embeds[0]["description"]

    bot.fake.drop_after_handling("POST", f"/channels/{CHANNEL_ID}/messages")
    ended = as_mod("raid end")
    await bot.h.dispatch_interaction(ended)
    await bot.adapter.posts.drain()
    clock.advance(seconds=6)
    await sweep.republish_unposted()
    await bot.adapter.posts.drain()
    reports = [m for m in bot.visible() if "report" in m.embeds[0]["title"]]
    assert len(reports) == 1 and "Ended: ended by a moderator" in reports[0].embeds[0]["description"]
    assert await bot.services.outbox.due() == []


async def test_a_raid_start_without_a_needed_permission_is_refused_and_names_it(services: Services) -> None:
    """The channel's @everyone overwrite denies Embed Links, which nubi's role only had from its base."""
    denied = overwrite_payload(GUILD_ID, type=0, allow=VIEW, deny=EMBED | POLLS)
    async for bot in make_bot(services, guild(everyone=denied)):
        payload = as_mod("raid start", {"url": TARGET, "likes": 5, "lock": True})

        response = await bot.h.dispatch_interaction(payload)

        assert response is not None and (response.type, response.ephemeral) == (CallbackType.CHANNEL_MESSAGE, True)
        assert (response.content or "").startswith(
            "I can't start a raid here: I'm missing the Embed Links permission in this channel"
        )
        assert await services.raids.list() == [] and bot.visible() == []
        assert bot.overwrites() == sorted([denied, MODERATORS_BEFORE], key=lambda o: o["id"])  # nothing touched
        assert bot.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/*") == []


async def test_a_locking_raid_needs_manage_roles_and_an_unlocked_one_does_not(services: Services) -> None:
    without = BOT_ROLE & ~discord.Permissions(manage_roles=True).value
    async for bot in make_bot(services, guild(bot_role=without)):
        locking = await bot.h.dispatch_interaction(as_mod("raid start", {"url": TARGET, "likes": 5, "lock": True}))

        assert locking is not None and locking.ephemeral
        assert "missing the Manage Roles permission" in (locking.content or "")
        assert await services.raids.list() == []

        raid_id = await bot.start_raid()  # no lock asked: nothing missing
        assert bot.raid_post().embeds[0]["title"] == f"Raid #{raid_id} — live"


async def test_a_post_discord_refuses_cancels_the_raid_and_tells_the_moderator(bot: Bot) -> None:
    bot.fake.fail_next("POST", f"/channels/{CHANNEL_ID}/messages", status=403)
    payload = as_mod("raid start", {"url": TARGET, "likes": 5, "lock": True})

    response = await bot.h.dispatch_interaction(payload)

    assert response is not None and response.ephemeral
    text = original_text(bot, payload)
    assert text.startswith("Raid #1 was cancelled: Discord refused its post in this channel (Missing Permissions).")
    assert "live" not in text
    [raid] = await bot.services.raids.list()
    assert raid.status == "cancelled"
    assert bot.visible() == []  # no post, and no report of a raid nobody saw
    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])  # lock undone
    assert await bot.services.locks.pending_releases("discord") == []


async def test_the_report_is_posted_even_while_the_channel_stays_locked(bot: Bot) -> None:
    """Releasing fails at the raid's end: the channel is still locked, and nubi still posts the report."""
    await bot.start_raid(lock=True)
    bot.fake.fail_next("PUT", f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", status=403)

    payload = as_mod("raid end")
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()

    assert int(bot.everyone()["deny"]) & SEND  # type: ignore[index]
    titles = [m.embeds[0]["title"] for m in bot.visible()]
    assert titles == ["Raid #1 — nobody took part", "Raid #1 report — nobody took part"]
    assert [c.status for c in bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages", "POST")] == [200, 200]

    await bot.h.restart()  # the next ready finishes the release, every overwrite as it was
    await asyncio.wait_for(bot.adapter.reconciled.wait(), 5)
    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    assert await bot.services.locks.pending_releases("discord") == []


async def test_nubi_keeps_an_overwrite_of_its_own_and_gets_it_back_exactly(services: Services) -> None:
    """An admin had already given nubi a member overwrite (with a bit past 32): the lock widens it, the
    release puts it back as it was."""
    own = overwrite_payload(BOT_USER_ID, type=1, allow=HISTORY, deny=REACT | POLLS)
    payload = guild()
    payload["channels"][0]["permission_overwrites"].append(own)
    async for bot in make_bot(services, payload):
        await bot.start_raid(lock=True)
        assert bot.overwrite(BOT_USER_ID) == overwrite_payload(
            BOT_USER_ID, type=1, allow=VIEW | SEND | EMBED | HISTORY, deny=REACT | POLLS
        )
        assert len(bot.visible()) == 1

        await bot.h.dispatch_interaction(as_mod("raid end"))

        assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE, own], key=lambda o: o["id"])


async def _answered(fake: FakeDiscordAPI, payload: dict[str, Any], text: str) -> str:
    for _ in range(100):
        message = fake.original_response(int(payload["id"]))
        if message is not None and message.content.startswith(text):
            return message.content
        callback = fake.interaction_response(int(payload["id"]))
        if callback is not None and (callback.content or "").startswith(text):
            return callback.content or ""
        await asyncio.sleep(0.05)
    raise AssertionError(f"no answer starting with {text!r}")


async def test_the_settings_point_rest_and_the_gateway_at_another_server(services: Services) -> None:
    """`nubi run`'s path, no harness: login over REST at api_base_url, then a real websocket session at
    gateway_url (Hello, Identify with the guilds intent only, READY, GUILD_CREATE), interactions and
    the echoes of nubi's own writes arriving over it."""
    async with FakeDiscordAPI() as fake:
        fake.add_guild(guild())
        adapter = DiscordAdapter(services, fake_config(fake, token=DEFAULT_TOKEN))
        await adapter.start()
        try:
            await asyncio.wait_for(adapter.reconciled.wait(), 10)
            [session] = fake.gateway.sessions
            assert session.identify["token"] == DEFAULT_TOKEN
            assert session.intents == discord.Intents(guilds=True).value
            assert [c.path for c in fake.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]

            start = as_mod("raid start", {"url": TARGET, "likes": 5, "lock": True})
            fake.register_interaction(start)
            await fake.gateway.dispatch("INTERACTION_CREATE", start)

            assert (await _answered(fake, start, "Raid #1 is live")).endswith(f"/{CHANNEL_ID}/{fake.channel_messages(CHANNEL_ID)[0].id}.")
            channel = adapter.client.get_channel(CHANNEL_ID)
            assert isinstance(channel, discord.TextChannel)
            for _ in range(50):  # the CHANNEL_UPDATE echo of the lock reaches the cache over the gateway
                if channel.overwrites_for(discord.Object(GUILD_ID)).send_messages is False:
                    break
                await asyncio.sleep(0.05)
                channel = adapter.client.get_channel(CHANNEL_ID)  # type: ignore[assignment]
            assert channel.overwrites_for(discord.Object(GUILD_ID)).send_messages is False
            assert channel.permissions_for(channel.guild.me).send_messages  # nubi's own overwrite holds
        finally:
            await adapter.stop()
        assert fake.unhandled_calls() == []


async def test_review_links_shows_refused_handle_links_to_moderators(bot: Bot) -> None:
    from core.errors import Conflict

    raid_id = await bot.start_raid()
    raider = MemberRef("discord", str(RAIDER_BASE), "raider00")
    await bot.services.raids.join(raid_id, raider)
    await bot.services.links.link(MemberRef("discord", "42", "owner"), "alice")
    with pytest.raises(Conflict):
        await bot.services.links.link(raider, "alice")

    payload = as_mod("review links")
    response = await bot.h.dispatch_interaction(payload)

    assert response is not None and response.ephemeral
    text = response.content or original_text(bot, payload)
    assert "@alice: asked for by raider00" in text and "held by owner" in text


async def test_the_same_raid_in_spanish_and_back_to_english(bot: Bot) -> None:
    """The server's language words the replies, the raid post and its buttons, the report, and the
    adapter's own texts (the moderator check, the pointer to the post); switching back works."""
    switched = await bot.h.dispatch_interaction(as_mod("settings set", {"key": "language", "value": "es"}))
    assert switched is not None and switched.content == "Esta comunidad ahora lee nubi en Español."

    payload = as_mod("raid start", {"url": TARGET, "likes": 40, "reposts": 30, "minutes": 30})
    await bot.h.dispatch_interaction(payload)
    await bot.adapter.posts.drain()
    post = bot.raid_post()
    [embed] = post.embeds
    assert embed["title"] == "Raid #1 — en marcha"
    assert "Me gusta: ░░░░░░░░░░ 0/40 (1 punto cada uno)" in embed["description"]
    assert "Participantes: 0/500" in embed["description"] and "Tiempo restante: 30 min 00 s" in embed["description"]
    buttons = [c for row in post.components for c in row["components"]]
    assert [b["label"] for b in buttons] == ["Unirme", "Abrir publicación", "Me gusta +1", "Repost +2", "Mis datos"]
    jump = f"https://discord.com/channels/{GUILD_ID}/{CHANNEL_ID}/{post.id}"
    assert original_text(bot, payload) == f"El raid #1 está en marcha: su publicación está en {jump}."

    joined = await bot.press("nubi:join:1", MEMBER_ID, "alice")
    assert joined is not None and joined.content == "¡Te uniste al raid #1 como participante #1! +5 por llegar pronto"
    claimed = await bot.h.dispatch_interaction(slash("claim", {"action": "likes"}, username="alice"))
    assert claimed is not None and re.fullmatch(r"Me gusta: reclamado, \+\d+", claimed.content or ""), claimed
    stats = await bot.press("nubi:stats:1", MEMBER_ID, "alice")
    assert stats is not None and re.fullmatch(
        r"Raid #1: participante #1, \d+ puntos; me gusta \(contada, no verificable\)\.", stats.content or ""), stats
    denied = await bot.h.dispatch_interaction(slash("raid end"))
    assert denied is not None and denied.content == "Lo siento, aquí solo los moderadores pueden hacer eso."

    ended = as_mod("raid end")
    await bot.h.dispatch_interaction(ended)
    await bot.adapter.posts.drain()
    report = next(m for m in bot.visible() if m.embeds and "Informe" in m.embeds[0]["title"])
    assert report.embeds[0]["title"] == "Informe del raid #1 — terminado por un moderador"
    assert "Participantes: 1" in report.embeds[0]["description"]
    assert bot.raid_post().embeds[0]["title"] == "Raid #1 — terminado por un moderador"
    assert original_text(bot, ended) == "Informe del raid #1 está en este canal."

    back = await bot.h.dispatch_interaction(as_mod("settings reset", {"key": "language"}))
    assert back is not None and back.content == "This community now reads nubi in English."
    board = await bot.h.dispatch_interaction(slash("leaderboard"))
    assert board is not None and board.data["embeds"][0]["title"] == "Raid leaderboard (raid #1)"  # type: ignore[index]
