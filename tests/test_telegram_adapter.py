"""The Telegram adapter end to end: the real PTB Application against the fake Bot API, real services.

Updates go in through getUpdates (one test through the webhook app); every assertion reads what
the fake recorded, i.e. what Telegram would have seen.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup

from adapters.telegram import TelegramAdapter
from adapters.telegram import adapter as telegram_adapter
from adapters.telegram.outbox import Outbox, Rendered
from core.clock import FakeClock
from core.commands.parser import MEMBER_COMMANDS, MODERATOR_COMMANDS
from core.config import TelegramConfig
from core.directory import ChatRef, MemberRef
from core.events import ProgressChanged, RaidEnded, RaidStarted
from core.raids.model import RaidSpec
from core.services import Services
from tests.fakes import telegram_api
from tests.fakes.telegram_api import (
    PERMISSION_FIELDS,
    FakeMessage,
    FakeTelegramAPI,
    RecordedCall,
    make_callback_update,
    make_command_update,
)

GROUP = -100123
MOD = 7
URL = "https://x.com/nubi/status/42"
INTERVAL = 0.5
LATENCY = 0.15
# A group whose owner changed the defaults: restoring must bring back exactly this.
ORIGINAL = {name: name not in ("can_send_polls", "can_change_info", "can_manage_topics", "can_edit_tag")
            for name in PERMISSION_FIELDS}


class ShiftedClock:
    """The fake's clock: real monotonic time, plus a shift a test can add to age its flood window."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.shift


@pytest.fixture
def fake_time() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def fake(fake_time: ShiftedClock) -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(clock=fake_time, max_poll_wait=0.2) as server:
        server.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        server.set_member(GROUP, MOD, "administrator", first_name="Mod")
        yield server


def config_for(fake: FakeTelegramAPI, **overrides: Any) -> TelegramConfig:
    return TelegramConfig(
        token=fake.token, api_base_url=fake.base_url, edit_interval_seconds=INTERVAL, **overrides
    )


@asynccontextmanager
async def running(services: Services, config: TelegramConfig) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(services, config)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


@pytest.fixture
async def adapter(services: Services, fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    async with running(services, config_for(fake)) as started:
        yield started


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixty members pressing buttons on a busy machine may take longer than the fake's 5 s default."""
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


async def calls(fake: FakeTelegramAPI, method: str, count: int, chat_id: int | None = None) -> list[RecordedCall]:
    return await fake.wait_for_calls(method, chat_id=chat_id, count=count)


async def say(fake: FakeTelegramAPI, chat_id: int, user: int, text: str, **kw: Any) -> FakeMessage:
    """Send a command and return the bot's next message in that chat."""
    before = len(fake.calls_for("sendMessage", chat_id))
    fake.push_update(make_command_update(chat_id, user, text, **kw))
    sent = (await calls(fake, "sendMessage", before + 1, chat_id))[before]
    assert sent.ok, sent.description
    return fake.message(chat_id, sent.result["message_id"])


async def press_all(fake: FakeTelegramAPI, presses: list[tuple[int, str, str]], message_id: int) -> list[str]:
    """Press buttons as (user id, name, data); return each press's answer text, in press order."""
    before = len(fake.calls_for("answerCallbackQuery"))
    ids = [
        fake.push_update(make_callback_update(GROUP, user, message_id, data, first_name=name))["callback_query"]["id"]
        for user, name, data in presses
    ]
    answers = {c.params["callback_query_id"]: c.params.get("text") for c in
               (await calls(fake, "answerCallbackQuery", before + len(presses)))[before:]}
    return [answers[i] for i in ids]


async def start_raid(fake: FakeTelegramAPI, options: str = "") -> FakeMessage:
    return await say(fake, GROUP, MOD, f"/raid start {URL} likes=100 reposts=25 duration=10m {options}".strip())


def buttons(message: FakeMessage) -> list[list[tuple[str, str]]]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [[(b["text"], b.get("callback_data") or b.get("url")) for b in row] for row in rows]


async def community_id(services: Services, raid_id: int) -> int:
    return (await services.raids.progress(raid_id)).community_id


# ---------------------------------------------------------------------------------------------- tests


async def test_raid_with_lock_members_press_buttons_and_it_ends_on_time(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock
) -> None:
    members = 60
    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)

    post = await start_raid(fake, f"max={members} lock")
    await adapter.drain()
    [started] = services.recorder.of(RaidStarted)
    raid = started.raid_id
    assert post.text.startswith(f"Raid #{raid} — live\n{URL}")
    assert post.entities == [{"type": "bold", "offset": 0, "length": len(f"Raid #{raid} — live")}]
    assert "Chat is locked for the raid." in post.text
    assert buttons(post) == [
        [("Join", f"nubi:join:{raid}"), ("Open post", URL)],
        [("Like +1", f"nubi:claim:{raid}:like"), ("Repost +2", f"nubi:claim:{raid}:repost")],
        [("My stats", f"nubi:stats:{raid}")],
    ]
    assert fake.sent_messages(GROUP) == [post]  # the /raid start reply is quiet: the post answers
    assert (await services.raids.progress(raid)).progress_ref == {"chat_id": GROUP, "message_id": post.message_id}

    # Permissions read, saved, then everything switched off.
    methods = [c.method for c in fake.calls]
    assert methods.index("getChat") < methods.index("setChatPermissions") < methods.index("sendMessage")
    lock = await services.locks.active(await community_id(services, raid))
    assert lock is not None and lock.saved_permissions == ORIGINAL and lock.raid_id == raid
    assert not any(fake.chat(GROUP).permissions.values())

    people = [(1000 + i, f"raider{i}") for i in range(members)]
    first_press = fake.clock()
    joined = await press_all(fake, [(u, n, f"nubi:join:{raid}") for u, n in people], post.message_id)
    positions = set()
    for text in joined:
        m = re.fullmatch(rf"Joined raid #{raid} as raider #(\d+)!( \+5 early bird)?", text)
        assert m, text
        positions.add(int(m[1]))
        assert bool(m[2]) == (int(m[1]) <= 10)
    assert positions == set(range(1, members + 1))

    claimed = await press_all(fake, [(u, n, f"nubi:claim:{raid}:like") for u, n in people], post.message_id)
    assert all(re.fullmatch(r"Like claimed: \+\d+", t) for t in claimed), claimed
    again, full = await press_all(
        fake, [(1000, "raider0", f"nubi:claim:{raid}:like"), (999, "late", f"nubi:join:{raid}")], post.message_id
    )
    assert again == "You already claimed like (counted, not verifiable)."
    assert full == "The raid is full."

    await adapter.drain()
    edits = fake.calls_for("editMessageText", GROUP)
    assert edits and all(e.ok for e in edits), [e.description for e in edits if not e.ok]  # never a no-op edit
    # One flush per interval at most, seen from the fake: each edit arrives after its own progress
    # read and trip, so two may land closer than an interval (a slow read under load delays the
    # first), but the edits since the first press are at most 1 + elapsed / interval, and no three
    # land within one interval.
    elapsed = edits[-1].at - first_press
    assert len(edits) <= (elapsed + LATENCY) / INTERVAL + 1, (len(edits), elapsed)
    spans = [c.at - a.at for a, c in zip(edits, edits[2:], strict=False)]
    assert min(spans, default=INTERVAL) >= INTERVAL - LATENCY, spans
    assert len(edits) < members / 4  # 2 * members changes, a handful of edits
    live = fake.message(GROUP, post.message_id)
    assert f"{members}/100" in live.text and f"Raiders: {members}/{members}" in live.text
    assert buttons(live) == buttons(post)  # same keyboard on every edit
    outgoing = sorted(c.at for c in fake.calls_for("sendMessage", GROUP) + edits)
    assert all(sum(1 for t in outgoing if s <= t < s + 60) <= 20 for s in outgoing)

    clock.advance(seconds=601)
    assert await services.raids.end_overdue() == [raid]
    assert await services.raids.end_overdue() == []
    await adapter.drain()

    [report] = [m for m in fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")]
    assert report.reply_to_message_id == post.message_id
    assert f"Raiders: {members}" in report.text and "Ended: time ran out" in report.text
    assert len(fake.sent_messages(GROUP)) == 2 and len(services.recorder.of(RaidEnded)) == 1
    final = fake.message(GROUP, post.message_id)
    assert f"Raid #{raid} — time ran out" in final.text and "Time left" not in final.text
    assert buttons(final) == [[("Open post", URL)]]  # no claim buttons once it is over

    assert fake.chat(GROUP).permissions == ORIGINAL
    assert fake.calls_for("setChatPermissions")[-1].params["use_independent_chat_permissions"] is True
    assert await services.locks.active(lock.community_id) is None
    assert await services.locks.pending_releases("telegram") == []
    [late] = await press_all(fake, [(1001, "raider1", f"nubi:join:{raid}")], post.message_id)
    assert late == "The raid has ended."


async def test_flood_control_is_honoured_and_the_last_state_lands(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, fake_time: ShiftedClock
) -> None:
    fake.flood_limit(per_chat_per_minute=2)
    post = await start_raid(fake)
    raid = services.recorder.of(RaidStarted)[0].raid_id
    await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    await calls(fake, "editMessageText", 1, GROUP)

    fake_time.shift += 59  # the raid post is one second from leaving the flood window
    await press_all(fake, [(1000, "a", f"nubi:claim:{raid}:like")], post.message_id)
    await calls(fake, "editMessageText", 3, GROUP)
    await adapter.drain()

    first, refused, retried = fake.calls_for("editMessageText", GROUP)
    assert first.ok and retried.ok
    assert (refused.ok, refused.error_code, refused.description) == (False, 429, "Too Many Requests: retry after 1")
    assert retried.at - refused.at >= 1.0  # waited as told, then edited again instead of re-sending
    assert "Likes: ░░░░░░░░░░ 1/100" in fake.message(GROUP, post.message_id).text
    assert len(fake.calls_for("sendMessage", GROUP)) == 1


async def test_a_group_never_gets_more_than_its_budget_per_minute(
    services: Services, fake: FakeTelegramAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram_adapter, "STOP_GRACE_SECONDS", 0.2)  # don't wait out the minute
    async with running(services, config_for(fake, messages_per_minute=3)) as adapter:
        post = await start_raid(fake)
        raid = services.recorder.of(RaidStarted)[0].raid_id
        for i in range(4):
            await press_all(fake, [(1000 + i, f"r{i}", f"nubi:join:{raid}")], post.message_id)
            await asyncio.sleep(0.3)
        await calls(fake, "editMessageText", 2, GROUP)
        await asyncio.sleep(3 * INTERVAL)  # the interval alone would allow more edits by now
        # 1 post + 2 edits is this minute's budget of 3.
        assert len(fake.calls_for("sendMessage", GROUP)) == 1
        assert len(fake.calls_for("editMessageText", GROUP)) == 2
        assert adapter.posts.coalescer.pending() == 1  # the newest state waits for the budget


def rendered(text: str, press: str | None) -> Any:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton(press, callback_data="x")]]) if press else None

    async def render() -> Rendered:
        return text, markup

    return render


async def test_an_edit_that_changes_nothing_is_not_sent_and_keeps_its_budget(fake: FakeTelegramAPI) -> None:
    """Telegram refuses an edit to what the message already shows and still counts it against the
    group's budget: the outbox skips it instead, before and after a restart."""
    async with Bot(fake.token, base_url=fake.base_url) as bot:
        outbox = Outbox(bot, per_minute=3, edit_gap=0.0)
        join = InlineKeyboardMarkup([[InlineKeyboardButton("Join", callback_data="x")]])
        message = await outbox.send(GROUP, "<b>Raid</b> 0/5", markup=join)
        for _ in range(5):  # the same text and keyboard: no request, no place of the budget used
            assert await outbox.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 0/5", "Join")) is False
        assert fake.calls_for("editMessageText", GROUP) == []
        # the keyboard alone differs: that is an edit
        async with asyncio.timeout(5):  # a budget of 3 a minute: a used place would block for a minute
            assert await outbox.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 0/5", "Claim"))
            assert await outbox.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 1/5", "Claim"))
        assert [c.ok for c in fake.calls_for("editMessageText", GROUP)] == [True, True]
        assert await outbox.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 1/5", "Claim")) is False
        assert len(fake.calls_for("editMessageText", GROUP)) == 2

        restarted = Outbox(bot, per_minute=3, edit_gap=0.0)  # knows nothing: one edit goes out
        assert await restarted.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 1/5", "Claim")) is False
        [*_, refused] = fake.calls_for("editMessageText", GROUP)
        assert (refused.ok, refused.error_code) == (False, 400)
        assert "message is not modified" in (refused.description or "")  # as Telegram answers, taken as done
        assert await restarted.edit_latest(GROUP, message.message_id, rendered("<b>Raid</b> 1/5", "Claim")) is False
        assert len(fake.calls_for("editMessageText", GROUP)) == 3
    live = fake.message(GROUP, message.message_id)
    assert live.text == "Raid 1/5" and buttons(live) == [[("Claim", "x")]]


async def test_a_raid_post_redrawn_without_a_change_is_not_edited(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    post = await start_raid(fake)
    raid = services.recorder.of(RaidStarted)[0].raid_id
    await services.bus.publish(ProgressChanged(raid, await community_id(services, raid)))
    await adapter.drain()
    assert fake.calls_for("editMessageText", GROUP) == []  # the post shows this already
    await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    await adapter.drain()
    [edit] = fake.calls_for("editMessageText", GROUP)
    assert edit.ok and "Raiders: 1/500" in fake.message(GROUP, post.message_id).text
    for _ in range(3):
        await services.bus.publish(ProgressChanged(raid, await community_id(services, raid)))
        await adapter.drain()
    assert len(fake.calls_for("editMessageText", GROUP)) == 1


async def test_lock_without_rights_runs_the_raid_unlocked_with_one_notice(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    post = await start_raid(fake, "lock")
    raid = services.recorder.of(RaidStarted)[0].raid_id
    notice = await calls(fake, "sendMessage", 2, GROUP)
    await adapter.drain()

    assert "Chat is locked" not in post.text
    [refused] = fake.calls_for("setChatPermissions")  # the release found nothing to restore
    assert not refused.ok and "not enough rights" in (refused.description or "")
    notices = [m for m in fake.sent_messages(GROUP) if "couldn't lock" in m.text]
    assert len(notices) == 1 and notice[1].ok and notices[0].reply_to_message_id == post.message_id
    assert fake.chat(GROUP).permissions == ORIGINAL
    assert await services.locks.active(await community_id(services, raid)) is None
    assert await services.locks.pending_releases("telegram") == []
    [joined] = await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    assert joined.startswith(f"Joined raid #{raid}")


async def test_pending_releases_are_restored_on_start(services: Services, fake: FakeTelegramAPI) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)
    chat = ChatRef("telegram", str(GROUP), "Raid Group")
    progress = await services.raids.start(chat, RaidSpec(URL, {"like": 5}, lock=True))
    await services.locks.lock(progress.community_id, ORIGINAL, progress.ends_at, raid_id=progress.id)
    fake.chat(GROUP).permissions = dict.fromkeys(PERMISSION_FIELDS, False)
    await services.locks.unlock(progress.community_id, "deadline")  # requested while no bot ran
    assert len(await services.locks.pending_releases("telegram")) == 1

    async with running(services, config_for(fake)):
        assert fake.chat(GROUP).permissions == ORIGINAL
        assert await services.locks.pending_releases("telegram") == []


async def test_a_restarted_adapter_keeps_editing_the_same_post(services: Services, fake: FakeTelegramAPI) -> None:
    async with running(services, config_for(fake)) as first:
        post = await start_raid(fake)
        await first.drain()
    raid = services.recorder.of(RaidStarted)[0].raid_id
    async with running(services, config_for(fake)) as second:
        await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
        await second.drain()
    assert "Raiders: 1/500" in fake.message(GROUP, post.message_id).text
    assert len(fake.calls_for("sendMessage", GROUP)) == 1


async def test_moderator_commands_are_refused_politely_to_members(
    services: Services, fake: FakeTelegramAPI
) -> None:
    async with running(services, config_for(fake, moderator_ids=[55])):
        refusal = await say(fake, GROUP, 42, f"/raid start {URL}")
        assert refusal.text == "Sorry, only moderators can do that here."
        assert services.recorder.of(RaidStarted) == []
        # A configured moderator id counts even when Telegram says "member".
        await say(fake, GROUP, 55, f"/raid start {URL}")
        assert len(services.recorder.of(RaidStarted)) == 1
        # Commands meant for another bot in the group are not ours to answer.
        fake.push_update(make_command_update(GROUP, 42, "/join@other_bot"))
        late = await say(fake, GROUP, 42, "/join@nubi_test_bot")
        assert "joined raid" in late.text and len(fake.calls_for("sendMessage", GROUP)) == 3


async def test_me_and_leaderboard_in_a_private_chat(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    alice = 4242
    progress = await services.raids.start(ChatRef("telegram", str(GROUP), "Raid Group"), RaidSpec(URL, {"like": 5}))
    member = MemberRef("telegram", str(alice), "Alice", "alice")
    await services.raids.join(progress.id, member)
    await services.raids.claim(progress.id, member, "like")

    me = await say(fake, alice, alice, "/me", chat_type="private", first_name="Alice")
    board = await say(fake, alice, alice, "/leaderboard", chat_type="private", first_name="Alice")
    for reply in (me, board):
        assert reply.text.startswith("Alice\nX: not linked (use /link <handle>)")
        assert re.search(r"community \d+: \d+ pts all time \(#1\)", reply.text), reply.text
    helped = await say(fake, alice, alice, "/help", chat_type="private")
    assert "/raid start" not in helped.text  # a member's help has no moderator commands


async def test_scheduled_leaderboard_is_posted(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock
) -> None:
    progress = await services.raids.start(ChatRef("telegram", str(GROUP), "Raid Group"), RaidSpec(URL, {"like": 5}))
    for i, name in enumerate(["Alice", "Bob"]):
        member = MemberRef("telegram", str(500 + i), name)
        await services.raids.join(progress.id, member)
        if name == "Alice":
            await services.raids.claim(progress.id, member, "like")
    schedule = await services.schedules.add(progress.community_id, "0 12 * * 1", "week", top_n=3)
    clock.advance(days=7)  # next Monday's slot: the week that has just ended, with its dates
    assert await services.schedules.fire(schedule.id, clock.now())
    await adapter.drain()

    [post, *_, board] = fake.sent_messages(GROUP)
    assert post.text.startswith(f"Raid #{progress.id} — live")
    title = "Leaderboard — week of Mon 5 Jan – Sun 11 Jan 2026"
    assert board.text.startswith(f"{title}\n🥇 Alice — ")
    assert "🥈 Bob — 5 pts" in board.text
    assert board.entities == [{"type": "bold", "offset": 0, "length": len(title)}]


async def test_member_names_are_escaped(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    evil = "<b>&evil</b>"
    post = await start_raid(fake)
    raid = services.recorder.of(RaidStarted)[0].raid_id
    joined = await say(fake, GROUP, 666, "/join", first_name=evil)
    assert joined.text == f"{evil} joined raid #{raid} as raider #1 (+5 early-bird points)."
    assert joined.entities is None
    await press_all(fake, [(666, evil, f"nubi:claim:{raid}:like")], post.message_id)
    await adapter.drain()
    live = fake.message(GROUP, post.message_id)
    assert f"Top raiders: {evil} (" in live.text
    assert [e["type"] for e in live.entities or []] == ["bold"]  # only the title


async def test_command_menus_for_members_and_admins(fake: FakeTelegramAPI, adapter: TelegramAdapter) -> None:
    members = fake.my_commands()
    admins = fake.my_commands({"type": "all_chat_administrators"})
    assert [c["command"] for c in members] == list(MEMBER_COMMANDS)
    assert [c["command"] for c in admins] == list(MEMBER_COMMANDS + MODERATOR_COMMANDS)
    assert all(c["description"] for c in admins)


async def test_our_errors_are_logged_and_the_member_gets_a_short_apology(
    fake: FakeTelegramAPI, adapter: TelegramAdapter, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from adapters.telegram import outbox

    monkeypatch.setattr(outbox, "SERVER_ERROR_BACKOFF", 0.01)
    fake.fail_next("sendMessage", error_code=502, times=outbox.SEND_ATTEMPTS)  # a 5xx that does not go away
    with caplog.at_level(logging.ERROR, logger="adapters.telegram.adapter"):
        fake.push_update(make_command_update(31, 31, "/help", chat_type="private"))
        *failed_attempts, sent = await calls(fake, "sendMessage", outbox.SEND_ATTEMPTS + 1)
    failed = failed_attempts[-1]
    assert all(f.error_code == 502 for f in failed_attempts)
    assert failed.error_code == 502 and failed.params["text"].startswith("nubi raids")
    assert sent.ok and sent.params["text"] == "Something went wrong, try again."
    assert any("input='/help'" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_webhook_checks_the_secret_and_feeds_updates(services: Services, fake: FakeTelegramAPI) -> None:
    user = 77
    fake.add_chat(user)
    config = config_for(
        fake, mode="webhook", webhook_url="https://bot.example/telegram/webhook", webhook_secret="s3cret"
    )
    async with running(services, config) as adapter:
        assert fake.webhook is not None and fake.webhook["secret_token"] == "s3cret"
        assert fake.calls_for("getUpdates") == []
        update = make_command_update(user, user, "/help", chat_type="private")
        transport = httpx.ASGITransport(app=adapter.webhook_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://nubi") as http:
            missing = await http.post("/", json=update)
            wrong = await http.post("/", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
            assert (missing.status_code, wrong.status_code) == (403, 403)
            good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
            broken = await http.post("/", content=b"{not json", headers=good)
            not_an_update = await http.post("/", json=[update], headers=good)
            assert (broken.status_code, not_an_update.status_code) == (400, 400)
            accepted = await http.post("/", json=update, headers=good)
            assert accepted.status_code == 200
        [reply] = await calls(fake, "sendMessage", 1, user)
        await asyncio.sleep(0.1)
        assert len(fake.calls_for("sendMessage")) == 1  # only the update with the secret was handled
        assert reply.params["text"].startswith("nubi raids")


async def test_server_errors_are_retried_without_duplicates(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    fake.fail_next("sendMessage", error_code=502, times=2)  # the raid post meets two 502s
    fake.push_update(make_command_update(GROUP, MOD, f"/raid start {URL} likes=100 duration=10m"))
    await calls(fake, "sendMessage", 3, GROUP)
    raid = services.recorder.of(RaidStarted)[0].raid_id
    raid_posts = [c for c in fake.calls_for("sendMessage", GROUP) if c.ok]
    assert [c.ok for c in fake.calls_for("sendMessage", GROUP)] == [False, False, True]
    post = fake.message(GROUP, raid_posts[0].result["message_id"])
    fake.fail_next("editMessageText", error_code=503)
    await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    await calls(fake, "editMessageText", 2, GROUP)
    await adapter.drain()
    edits = fake.calls_for("editMessageText", GROUP)
    assert [e.ok for e in edits][:2] == [False, True]
    assert "Raiders: 1/500" in fake.message(GROUP, post.message_id).text
    assert len([c for c in fake.calls_for("sendMessage", GROUP) if c.ok]) == 1  # no duplicate post


OTHER_GROUP = -100456


async def press_in(fake: FakeTelegramAPI, chat_id: int, user: int, name: str, message_id: int, data: str) -> str:
    pressed = fake.push_update(make_callback_update(chat_id, user, message_id, data, first_name=name))
    query_id = pressed["callback_query"]["id"]
    while True:
        answered = [c for c in fake.calls_for("answerCallbackQuery") if c.params["callback_query_id"] == query_id]
        if answered:
            return str(answered[0].params.get("text"))
        await calls(fake, "answerCallbackQuery", len(fake.calls_for("answerCallbackQuery")) + 1)


async def test_the_same_raid_in_spanish_while_another_group_stays_english(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    """The language is the community's: one group switches to Spanish, the other, served at the same
    moment, stays English; replies, buttons, the raid post, its edits and the report follow it."""
    fake.add_chat(OTHER_GROUP, title="English Group")
    fake.set_member(OTHER_GROUP, MOD, "administrator", first_name="Mod")

    switched = await say(fake, GROUP, MOD, "/settings set language es")
    assert switched.text == "Esta comunidad ahora lee nubi en Español."
    shown = await say(fake, GROUP, MOD, "/settings")
    assert shown.text.startswith("Ajustes de esta comunidad:") and "language = es (fijado aquí)" in shown.text
    refused = await say(fake, GROUP, MOD, "/settings set language xx")
    assert refused.text == "language: 'xx' no es uno de en, es, ru"

    post, english = await asyncio.gather(start_raid(fake), say(fake, OTHER_GROUP, MOD, f"/raid start {URL} likes=5"))
    await adapter.drain()
    raid = int(re.search(r"#(\d+)", post.text)[1])  # type: ignore[index]
    other = int(re.search(r"#(\d+)", english.text)[1])  # type: ignore[index]
    assert post.text.startswith(f"Raid #{raid} — en marcha\n{URL}")
    assert "Me gusta: ░░░░░░░░░░ 0/100 (1 punto cada uno)" in post.text
    assert "Reposts: ░░░░░░░░░░ 0/25 (2 puntos cada uno)" in post.text
    assert "Participantes: 0/500" in post.text and "Tiempo restante: 10 min 00 s" in post.text
    assert buttons(post) == [
        [("Unirme", f"nubi:join:{raid}"), ("Abrir publicación", URL)],
        [("Me gusta +1", f"nubi:claim:{raid}:like"), ("Repost +2", f"nubi:claim:{raid}:repost")],
        [("Mis datos", f"nubi:stats:{raid}")],
    ]
    assert english.text.startswith(f"Raid #{other} — live") and "Likes: ░░░░░░░░░░ 0/5 (1 pt each)" in english.text
    assert buttons(english)[0] == [("Join", f"nubi:join:{other}"), ("Open post", URL)]

    joined, joined_en = await asyncio.gather(
        press_in(fake, GROUP, 1001, "Ana", post.message_id, f"nubi:join:{raid}"),
        press_in(fake, OTHER_GROUP, 1002, "Bob", english.message_id, f"nubi:join:{other}"),
    )
    assert joined == f"¡Te uniste al raid #{raid} como participante #1! +5 por llegar pronto"
    assert joined_en == f"Joined raid #{other} as raider #1! +5 early bird"
    claimed = await press_in(fake, GROUP, 1001, "Ana", post.message_id, f"nubi:claim:{raid}:like")
    assert re.fullmatch(r"Me gusta: reclamado, \+\d+", claimed), claimed
    again = await press_in(fake, GROUP, 1001, "Ana", post.message_id, f"nubi:claim:{raid}:like")
    assert again == "Ya reclamaste me gusta (contada, no verificable)."
    reply = await say(fake, GROUP, 1003, "/join", first_name="Carla", username="carla")
    assert reply.text == f"Carla se unió al raid #{raid} como participante #2 (+5 puntos por llegar pronto)."
    bad = await say(fake, GROUP, 1003, "/claim dance", first_name="Carla", username="carla")
    assert bad.text.startswith("'dance' no es una acción\nUso: /claim <like|repost|")
    denied = await say(fake, GROUP, 1003, "/raid end", first_name="Carla", username="carla")
    assert denied.text == "Lo siento, aquí solo los moderadores pueden hacer eso."
    await adapter.drain()
    live = fake.message(GROUP, post.message_id)
    assert "Participantes: 2/500" in live.text and "Me gusta: ░░░░░░░░░░ 1/100" in live.text
    assert re.search(r"Mejores participantes: Ana \(\d+\), Carla \(5\)", live.text), live.text

    sent = len(fake.calls_for("sendMessage", GROUP))
    fake.push_update(make_command_update(GROUP, MOD, "/raid end"))  # quiet: the report answers
    await calls(fake, "sendMessage", sent + 1, GROUP)
    await adapter.drain()
    [report] = [m for m in fake.sent_messages(GROUP) if m.text.startswith(f"Informe del raid #{raid}")]
    assert report.text.startswith(f"Informe del raid #{raid} — terminado por un moderador\n")
    assert "Participantes: 2" in report.text and "Terminó: terminado por un moderador" in report.text
    assert "Reclamaciones: 1 contada por la palabra del miembro" in report.text
    assert "Mejores participantes:" in report.text and re.search(r"\n1\. Ana — \d+ puntos\n2\. Carla — 5 puntos", report.text)
    final = fake.message(GROUP, post.message_id)
    assert final.text.startswith(f"Raid #{raid} — terminado por un moderador") and buttons(final) == [
        [("Abrir publicación", URL)]]
    assert fake.message(OTHER_GROUP, english.message_id).text.startswith(f"Raid #{other} — live")

    back = await say(fake, GROUP, MOD, "/settings reset language")
    assert back.text == "This community now reads nubi in English."
    board = await say(fake, GROUP, 1001, "/leaderboard")
    assert board.text.startswith(f"Raid leaderboard (raid #{raid})") and "Carla — 5 pts" in board.text
