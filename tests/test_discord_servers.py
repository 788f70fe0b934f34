"""On Discord a community is the server: raids run in channels, bans, boards, schedules and settings
hold across the server. Channel communities from before (migration 0008) are moved into their server.

The real discord.py client against the fake Discord API, real core services on both databases.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from core import catalog
from core.clock import FakeClock
from core.directory import LEGACY_CHANNEL, ChatRef, MemberRef, ensure_member, find_community
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import AuditEntry, Community, Raid, ScheduledAnnouncement
from tests.fakes.discord_api import (
    CallbackType,
    component_interaction,
    guild_create_payload,
    member_payload,
    role_payload,
    text_channel_payload,
)
from tests.ledger_check import assert_boards_equal_ledger
from tests.test_discord_adapter import (
    CHANNEL_ID,
    GUILD_ID,
    LEAD_ID,
    MEMBER_ID,
    MOD_ID,
    MOD_ROLE_ID,
    TARGET,
    Bot,
    as_mod,
    make_bot,
    slash,
)

OTHER_CHANNEL = 930_000_000_000_000_009
THIRD_CHANNEL = 930_000_000_000_000_010
OTHER_TARGET = "https://x.com/nubi/status/98765"


def server() -> dict[str, Any]:
    return guild_create_payload(
        GUILD_ID,
        channels=[text_channel_payload(CHANNEL_ID, guild_id=GUILD_ID, name="raids"),
                  text_channel_payload(OTHER_CHANNEL, guild_id=GUILD_ID, name="chat"),
                  text_channel_payload(THIRD_CHANNEL, guild_id=GUILD_ID, name="quiet")],
        roles=[role_payload(MOD_ROLE_ID, "Raid Lead")],
        members=[member_payload(MOD_ID, username="mod"), member_payload(LEAD_ID, username="lead", roles=[MOD_ROLE_ID])],
    )


@pytest.fixture
async def bot(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, server()):
        yield b


async def answer(bot: Bot, payload: dict[str, Any]) -> str:
    """What the member reads: the text and any embed's title and description."""
    response = await bot.h.dispatch_interaction(payload)
    assert response is not None
    if response.content:
        return response.content
    message = bot.fake.original_response(int(payload["id"]))
    assert message is not None
    embeds = " ".join(f"{e.get('title', '')} {e.get('description', '')}" for e in message.embeds)
    return f"{message.content} {embeds}"


def raid_posts(bot: Bot, channel_id: int) -> dict[int, Any]:
    """Raid id -> its live post in that channel."""
    posts = {}
    for m in bot.fake.channel_messages(channel_id):
        title = m.embeds[0]["title"] if m.embeds else ""
        found = re.match(r"Raid #(\d+)", title)
        if found and "report" not in title:
            posts[int(found.group(1))] = m
    return posts


async def start_in(bot: Bot, channel_id: int, url: str) -> int:
    response = await bot.h.dispatch_interaction(
        as_mod("raid start", {"url": url, "likes": 10, "minutes": 30}, channel_id=channel_id))
    assert response is not None and response.type == CallbackType.DEFERRED_CHANNEL_MESSAGE
    await bot.adapter.posts.drain()
    [raid_id] = raid_posts(bot, channel_id)
    return raid_id


async def press(bot: Bot, channel_id: int, raid_id: int, custom_id: str, user_id: int, name: str) -> str:
    post = raid_posts(bot, channel_id)[raid_id]
    payload = component_interaction(custom_id, post.json, guild_id=GUILD_ID, channel_id=channel_id,
                                    user_id=user_id, username=name)
    return await answer(bot, payload)


async def test_raids_run_per_channel_and_everything_else_holds_across_the_server(bot: Bot) -> None:
    first = await start_in(bot, CHANNEL_ID, TARGET)
    second = await start_in(bot, OTHER_CHANNEL, OTHER_TARGET)  # another channel: not "already running"
    assert first != second
    assert list(raid_posts(bot, CHANNEL_ID)) == [first] and list(raid_posts(bot, OTHER_CHANNEL)) == [second]
    for raid_id, channel in ((first, CHANNEL_ID), (second, OTHER_CHANNEL)):
        progress = await bot.services.raids.progress(raid_id)
        assert (progress.chat.external_id, progress.chat.channel) == (str(GUILD_ID), str(channel))
    assert (await bot.services.raids.progress(first)).community_id == (await bot.services.raids.progress(second)).community_id

    # a second raid in the same channel is refused; /raid status answers for the channel asked in
    text = await answer(bot, as_mod("raid start", {"url": OTHER_TARGET, "likes": 5}, channel_id=OTHER_CHANNEL))
    assert f"Raid #{second} is still running here" in text
    assert f"#{second}" in await answer(bot, as_mod("raid status", channel_id=OTHER_CHANNEL))

    # /join joins the raid of the channel it is typed in
    assert f"joined raid #{second}" in await answer(bot, slash("join", channel_id=OTHER_CHANNEL))
    assert f"joined raid #{first}" in await answer(bot, slash("join"))
    # a button of one channel's raid pressed from the other channel acts nowhere
    post = raid_posts(bot, CHANNEL_ID)[first]
    stray = component_interaction(f"nubi:claim:{first}:like", post.json, guild_id=GUILD_ID, channel_id=OTHER_CHANNEL,
                                  user_id=MEMBER_ID, username="member")
    assert "another chat" in await answer(bot, stray)
    assert "+" in await press(bot, CHANNEL_ID, first, f"nubi:claim:{first}:like", MEMBER_ID, "member")

    # the week's board read in a third channel counts what was earned in the others
    board = await answer(bot, slash("leaderboard", {"scope": "week"}, channel_id=THIRD_CHANNEL))
    assert "No points yet" not in board and re.search(r"\d+ pts", board)
    cid = (await bot.services.raids.progress(first)).community_id
    await assert_boards_equal_ledger(bot.services, [cid], bot.services.clock.now())

    # a ban typed in one channel holds in every channel of the server
    raider = 930_000_000_000_300_001
    text = await answer(bot, as_mod("ban", {"member": _user(raider, "spammer"), "reason": "spam"},
                                    channel_id=THIRD_CHANNEL))
    assert "banned" in text
    refused = await press(bot, CHANNEL_ID, first, f"nubi:join:{first}", raider, "spammer")
    assert "banned" in refused.lower()
    [ban] = await catalog.bans(bot.services.db, cid)
    assert ban["name"] == "spammer"

    # settings changed in one channel are the server's
    await answer(bot, as_mod("settings set", {"key": "timezone", "value": "Europe/Berlin"}, channel_id=OTHER_CHANNEL))
    shown = await answer(bot, as_mod("settings show", channel_id=THIRD_CHANNEL))
    assert "Europe/Berlin" in shown


async def test_a_schedule_posts_in_its_channel_and_is_delivered_after_a_failure(bot: Bot, clock: FakeClock) -> None:
    text = await answer(bot, as_mod("schedule add", {"cron": "0 12 * * mon", "window": "week"},
                                    channel_id=OTHER_CHANNEL))
    schedule_id = int(re.search(r"Schedule #(\d+)", text).group(1))  # type: ignore[union-attr]
    listed = await answer(bot, as_mod("schedule list", channel_id=THIRD_CHANNEL))  # the server's schedules
    assert f"#{schedule_id}" in listed and f"<#{OTHER_CHANNEL}>" in listed

    # the first send reaches Discord but its answer is lost (the connection drops): the post stays owed,
    # the sweep sends it again with the same nonce, and Discord (enforce_nonce) keeps one message
    bot.fake.drop_after_handling("POST", f"/channels/{OTHER_CHANNEL}/messages")
    slot = clock.now().replace(second=0, microsecond=0)
    assert await bot.services.schedules.fire(schedule_id, slot)
    await bot.adapter.posts.drain()
    clock.advance(seconds=60)
    owed = await bot.services.outbox.due()
    assert [(d.kind, d.key) for d in owed] == [("announcement", f"announce:{schedule_id}:{int(slot.timestamp())}")]
    for due in owed:
        await bot.services.bus.publish(due)
    await bot.adapter.posts.drain()
    assert len(bot.fake.calls_to(f"/channels/{OTHER_CHANNEL}/messages", "POST")) == 2
    assert len(_boards(bot, OTHER_CHANNEL)) == 1
    assert _boards(bot, CHANNEL_ID) == [] and _boards(bot, THIRD_CHANNEL) == []
    assert not await bot.services.schedules.fire(schedule_id, slot)  # a slot posts once
    assert await bot.services.outbox.due() == []


def _boards(bot: Bot, channel_id: int) -> list[Any]:
    return [m for m in bot.fake.channel_messages(channel_id)
            if m.embeds and "leaderboard" in (m.embeds[0].get("title") or "").lower()]


def _user(user_id: int, name: str) -> Any:
    from tests.fakes.discord_api import UserArg

    return UserArg(user_id, name)


def _uid(name: str) -> str:
    return str(930_000_000_000_400_000 + sum(ord(c) * 31**i for i, c in enumerate(name)) % 10_000)


async def _legacy_channel(services: Services, channel_id: int, members: list[str], *, ban: str | None = None,
                          settings: dict[str, Any] | None = None) -> int:
    """A channel community as migration 0008 leaves one from before: `channel:<id>`, its raids in it."""
    legacy = ChatRef("discord", f"{LEGACY_CHANNEL}{channel_id}", "old", channel=str(channel_id))
    raid = await services.raids.start(legacy, RaidSpec(f"https://x.com/nubi/status/{channel_id % 1000}", {"like": 50}),
                                      by=MemberRef("discord", str(MOD_ID), "mod", "mod"))
    for name in members:
        m = MemberRef("discord", _uid(name), name, name)
        await services.raids.join(raid.id, m)
        await services.raids.claim(raid.id, m, "like")
    await services.raids.end(raid.id, reason="ended by a moderator", cause="ended_by_moderator")
    if ban:
        target = MemberRef("discord", _uid(ban), ban, ban)
        member_id = await services.db.write(lambda s: ensure_member(s, target, services.clock.now()))
        await services.moderation.ban(raid.community_id, member_id, "old ban", actor=None)
    await services.schedules.add(raid.community_id, "0 12 * * mon", "week", channel=str(channel_id))
    if settings:
        async def op(s: Any) -> None:
            row = await s.get(Community, raid.community_id)
            row.settings = settings
        await services.db.write(op)
    return raid.community_id


async def test_old_channel_communities_are_moved_into_their_server(services: Services) -> None:
    a = await _legacy_channel(services, CHANNEL_ID, ["ann", "bob"], ban="eve",
                              settings={"timezone": "Asia/Tokyo"})
    b = await _legacy_channel(services, OTHER_CHANNEL, ["bob", "cat"])
    before = await services.boards.board(a, "all", top=10)
    assert {e.name: e.points for e in before}

    async for bot in make_bot(services, server()):  # the gateway announces the server: its channels are adopted
        cid = await services.db.read(lambda s: find_community(s, ChatRef("discord", str(GUILD_ID))))
        assert cid == a  # the first channel became the server (ids kept); the second was merged into it
        assert await services.db.read(lambda s: find_community(s, ChatRef("discord", f"{LEGACY_CHANNEL}{OTHER_CHANNEL}"))) is None
        assert await services.db.read(lambda s: s.get(Community, b)) is None

        raids = (await services.db.read(lambda s: s.execute(select(Raid.community_id, Raid.channel_id)))).all()
        assert sorted(raids) == sorted([(cid, str(CHANNEL_ID)), (cid, str(OTHER_CHANNEL))])
        schedules = (await services.db.read(lambda s: s.execute(
            select(ScheduledAnnouncement.community_id, ScheduledAnnouncement.channel_id)))).all()
        assert sorted(schedules) == sorted([(cid, str(CHANNEL_ID)), (cid, str(OTHER_CHANNEL))])

        # bob earned in both channels: one place on the server's board, with both raids' points
        board = {e.name: e.points for e in await services.boards.board(cid, "all", top=10)}
        per_raid = {e.name: e.points for e in before}
        assert board["bob"] > per_raid["bob"] and set(board) == {"ann", "bob", "cat"}
        await assert_boards_equal_ledger(services, [cid], services.clock.now())
        assert [x["name"] for x in await catalog.bans(services.db, cid)] == ["eve"]
        kept = await services.db.read(lambda s: s.scalar(select(Community.settings).where(Community.id == a)))
        assert kept == {"timezone": "Asia/Tokyo"}
        merges = (await services.db.read(lambda s: s.scalars(
            select(AuditEntry.data).where(AuditEntry.action == "community_merge")))).all()
        assert sorted(m["from"] for m in merges) == [f"{LEGACY_CHANNEL}{CHANNEL_ID}", f"{LEGACY_CHANNEL}{OTHER_CHANNEL}"]

        # members keep raiding where they were: the board answered in the old channel is the server's
        text = await answer(bot, slash("leaderboard", {"scope": "all"}, channel_id=OTHER_CHANNEL))
        assert "ann" in text and "cat" in text
