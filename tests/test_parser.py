"""The command parser: every text channel's commands, and no text that makes it raise unhandled."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.commands import parser as p
from core.commands.parser import CommandError, parse


def test_plain_text_is_not_a_command() -> None:
    assert parse("hello /join") is None
    assert parse("/") is None
    assert parse("") is None


def test_raid_start_full_syntax() -> None:
    cmd = parse("/raid start https://x.com/a/status/1 likes=50 reposts=25x3 replies=10 quotes=5 "
                "bookmarks=4 follows=2 duration=1h30m max=100 lock replace verify=review")
    assert cmd == p.RaidStart(
        "https://x.com/a/status/1",
        {"like": 50, "repost": 25, "reply": 10, "quote": 5, "bookmark": 4, "follow": 2},
        {"repost": 3}, 5400, 100, True, True, "review",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/join", p.Join()),
        ("/join@nubi_bot", p.Join()),
        ("/claim retweet", p.Claim("repost")),
        ("/claim reply https://x.com/me/status/2", p.Claim("reply", "https://x.com/me/status/2")),
        ("/leaderboard", p.Leaderboard("raid")),
        ("/lb week top=5", p.Leaderboard("week", 5)),
        ("/leaderboard all", p.Leaderboard("all")),
        ("/me", p.Me()),
        ("/link @nubi", p.Link("@nubi")),
        ("/link verify", p.Link(None, True)),
        ("/raid end", p.RaidEnd(False)),
        ("/raid cancel", p.RaidEnd(True)),
        ("/raid status", p.RaidStatus()),
        ("/unlock", p.Unlock()),
        ("/ban @spammer bots everywhere", p.BanCmd("@spammer", "bots everywhere")),
        ("/unban 12345", p.UnbanCmd("12345")),
        ("/points add @ann 10 great thread", p.PointsCmd("@ann", 10, "great thread")),
        ("/points remove @bob 3 fake claim", p.PointsCmd("@bob", -3, "fake claim")),
        ("/schedule leaderboard 0 12 * * mon week top=10", p.ScheduleAdd("0 12 * * mon", "week", 10)),
        ("/schedule leaderboard 0 12 * * mon week-so-far", p.ScheduleAdd("0 12 * * mon", "week-so-far")),
        ("/settings", p.SettingsShow()),
        ("/settings set objectives.like.points 3", p.SettingsChange("objectives.like.points", "3")),
        ("/settings reset Verification", p.SettingsChange("verification", None)),
        ('/schedule leaderboard "0 9 * * *" day tz=Europe/Berlin', p.ScheduleAdd("0 9 * * *", "day", 10, "Europe/Berlin")),
        ("/schedule list", p.ScheduleList()),
        ("/schedule remove #4", p.ScheduleRemove(4)),
        ("/review", p.Review()),
        ("/review accept 17", p.Review("accept", 17)),
        ("/review revoke #17", p.Review("revoke", 17)),
        ("/review revoke 17 no like on the post", p.Review("revoke", 17, "no like on the post")),
        ("/review links", p.Review("links")),
        ("/review LINKS", p.Review("links")),
    ],
)
def test_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("/claim", "Which action"),
        ("/claim dance", "not an action"),
        ("/claim reply http://x.com/a/status/1", "https://"),
        ("/raid start", "Which post"),
        ("/raid start https://x.com/a/status/1 duration=forever", "not a duration"),
        ("/raid start https://x.com/a/status/1 likes=many", "whole number"),
        ("/raid start https://x.com/a/status/1 dances=4", "not an action"),
        ("/raid start https://x.com/a/status/1 sparkle", "don't understand"),
        ("/points add @a ten reason", "whole number"),
        ("/points add @a 5", "needs add or remove"),
        ("/schedule leaderboard 0 12 * week", "5 fields"),
        ("/review maybe 3", "Accept, reject or revoke"),
        ("/review revoke", "Revoke which claim"),
        ("/review revoke soon", "whole number"),
        ("/frobnicate", "don't know"),
    ],
)
def test_errors_explain_and_show_usage(text: str, needle: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    assert needle in info.value.message


@settings(max_examples=600, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_unhandled_on_any_text(text: str) -> None:
    try:
        parse(text)
    except CommandError:
        pass


words = st.sampled_from(["/raid", "start", "end", "/claim", "/schedule", "leaderboard", "likes=5", "x",
                         "duration=5m", "max=3", "top=2", "tz=UTC", "/points", "add", "@a", "1", "\"", "*",
                         "https://x.com/a/status/1", "/review", "accept", "/lb", "=", "likes=5x", "0"])


@settings(max_examples=600, deadline=None)
@given(st.lists(words, max_size=12))
def test_never_raises_unhandled_on_command_like_text(parts: list[str]) -> None:
    try:
        parse(" ".join(parts))
    except CommandError:
        pass
