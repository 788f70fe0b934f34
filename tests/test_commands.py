"""The command layer end to end through the real services: what a member and a moderator see."""

from __future__ import annotations

import pytest

from core.commands.service import ChatContext
from core.directory import ChatRef, MemberRef
from core.services import Services

CHAT = ChatRef("telegram", "-100500", "Raiders")
MOD = ChatContext(CHAT, MemberRef("telegram", "1", "Mo", "mo"), is_moderator=True)


def member(i: int, private: bool = False) -> ChatContext:
    return ChatContext(CHAT, MemberRef("telegram", str(100 + i), f"Ann{i}", f"ann{i}"), private=private)


async def say(services: Services, ctx: ChatContext, text: str) -> str:
    reply = await services.commands.handle_text(ctx, text)
    assert reply is not None
    return reply.text


async def test_a_raid_through_commands(services: Services, clock) -> None:
    start = await services.commands.handle_text(MOD, "/raid start https://x.com/nubi/status/9 likes=2 replies=1 duration=10m")
    assert start is not None and start.quiet and start.raid is not None
    assert "Raid #1" in start.text and "Likes" in start.text
    assert "joined raid #1 as raider #1" in await say(services, member(1), "/join")
    assert "already in raid #1" in await say(services, member(1), "/join")
    assert "Like claimed: +4" in await say(services, member(1), "/claim like")
    assert "already claimed like" in await say(services, member(1), "/claim likes")
    assert "does not ask for quotes" in await say(services, member(1), "/claim quote")
    assert "Join the raid first" in await say(services, member(2), "/claim like")
    board = await say(services, member(2), "/leaderboard")
    assert "Ann1" in board
    status = await say(services, MOD, "/raid status")
    assert "1/2" in status
    ended = await say(services, MOD, "/raid end")
    assert "report" in ended and "Raiders: 1" in ended
    assert "no active raid" in (await say(services, member(1), "/join")).lower()


async def test_moderator_commands_are_refused_politely(services: Services) -> None:
    for text in ("/raid start https://x.com/a/status/1", "/ban @x", "/points add @x 5 because", "/unlock", "/review"):
        assert "only moderators" in (await say(services, member(1), text)).lower()


async def test_bad_input_explains_with_usage(services: Services) -> None:
    text = await say(services, MOD, "/raid start https://x.com/a/status/1 duration=2d")
    assert "not a duration" in text and "Usage: /raid start" in text
    assert "https://" in await say(services, MOD, "/raid start ftp://x")
    assert "between 1 minute and 24 hours" in await say(services, MOD, "/raid start https://x.com/a/status/1 duration=25h")
    assert await services.commands.handle_text(member(1), "just chatting") is None


async def test_points_bans_schedules_review(services: Services) -> None:
    await say(services, member(1), "/me")  # the bot has seen ann1
    assert "10 points added to @ann1" in await say(services, MOD, "/points add @ann1 10 great thread")
    week = await say(services, member(2), "/leaderboard week")
    assert "Ann1 — 10 pts" in week
    assert "banned" in await say(services, MOD, "/ban @ann1 spam")
    await say(services, MOD, "/raid start https://x.com/a/status/1 likes=5 verify=review")
    assert "banned" in (await say(services, member(1), "/join")).lower()
    assert "may raid again" in await say(services, MOD, "/unban @ann1")
    await say(services, member(1), "/join")
    assert "waiting for verification" in await say(services, member(1), "/claim like")
    queue = await say(services, MOD, "/review")
    assert "#1 raid #1: Ann1 claims like" in queue
    assert "accepted" in await say(services, MOD, "/review accept 1")
    assert "already settled" in await say(services, MOD, "/review reject 1")
    assert "Schedule #1" in await say(services, MOD, "/schedule leaderboard 0 12 * * mon week top=5")
    assert "cron must have 5 fields" in await say(services, MOD, "/schedule leaderboard 99 12 * * mon week")
    assert "#1: week top 5" in await say(services, MOD, "/schedule list")
    assert "removed" in await say(services, MOD, "/schedule remove 1")
    assert "I don't know @ghost" in await say(services, MOD, "/ban @ghost")


async def test_private_chat(services: Services) -> None:
    dm = member(3, private=True)
    assert "Use this in the group" in await say(services, dm, "/join")
    me = await say(services, dm, "/me")
    assert "Ann3" in me and "not linked" in me
    linked = await say(services, dm, "/link @Ann_3")
    assert "Linked @ann_3" in linked and "unproven" in linked
    assert "already linked to another member" in await say(services, member(4, private=True), "/link ann_3")
    assert "nubi raids" in await say(services, dm, "/help")
    assert "Moderator commands" not in await say(services, dm, "/help")
    assert "Moderator commands" in await say(services, MOD, "/help")
    assert "X's developer policy" in await say(services, MOD, "/help")


async def test_buttons(services: Services) -> None:
    await say(services, MOD, "/raid start https://x.com/a/status/1 likes=5 reposts=1 max=1")
    press = services.commands.press
    assert "Joined raid #1" in (await press(member(1), "nubi:join:1")).text
    assert (await press(member(2), "nubi:join:1")).text == "The raid is full."
    assert "Repost claimed: +" in (await press(member(1), "nubi:claim:1:repost")).text
    assert "already claimed repost" in (await press(member(1), "nubi:claim:1:repost")).text
    assert "raider #1" in (await press(member(1), "nubi:stats:1")).text
    assert "no longer valid" in (await press(member(1), "garbage")).text
    await say(services, MOD, "/raid cancel")
    assert (await press(member(1), "nubi:claim:1:like")).text == "The raid has ended."


@pytest.mark.parametrize("text", ["/leaderboard", "/leaderboard raid"])
async def test_leaderboard_without_any_raid(services: Services, text: str) -> None:
    assert "No raid has run here yet" in await say(services, member(1), text)


async def test_chat_commands_live_in_a_community_session(services: Services, clock) -> None:
    await say(services, member(1), "/join")
    await say(services, member(2), "/me")
    sessions, _ = await services.sessions.list()
    community = [s for s in sessions if s.session_type == "community"]
    assert len(community) == 1 and community[0].renewal_count == 1
    kinds = [a["type"] for a in await services.sessions.activity(community[0].id)]
    assert kinds == ["created", "message_received", "message_received"]
    clock.advance(minutes=31)  # the conversation went quiet: the next message opens a new session
    await say(services, member(1), "/me")
    sessions, _ = await services.sessions.list()
    assert len([s for s in sessions if s.session_type == "community"]) == 1
    assert [s for s in sessions if s.session_type == "community"][0].id != community[0].id
