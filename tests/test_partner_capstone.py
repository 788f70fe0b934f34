"""The capstone of issue #14: one partner raid across a Telegram forum topic and a Discord channel.

A moderator starts the raid in a topic of a forum group linked with a Discord channel, with `lock`
and `pin`. Thirty members raid from each side, ten of them the same people on both (linked with
`/link account` codes): the raid counts 50 members, one board has each linked member once with the
points of both sides, each post is edited in place within its platform's limits, both posts are
pinned and both chats locked while it runs and given back exactly at the end (the topic reopened,
the channel's overwrites as they were), and each chat gets one report. Then the same raid in
Spanish on both platforms, and a linked member's `/member merge` with a second account that holds
points too: the ledger keeps every point and the board shows their sum.

The real PTB Application against the fake Bot API and the real discord.py client against the fake
Discord API, sharing one set of real services, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest
from sqlalchemy import select

from adapters.telegram import TelegramAdapter
from core.clock import FakeClock
from core.config import TelegramConfig
from core.outbox import partner_raid_key, partner_unpin_key, raid_key, unpin_key
from core.services import Services
from core.storage.models import RaidAction
from core.targets import member_by_identity
from tests.fakes.discord_api import component_interaction
from tests.fakes.telegram_api import FakeMessage, FakeTelegramAPI, make_callback_update, make_command_update
from tests.ledger_check import assert_boards_equal_ledger, ledger_rows
from tests.test_discord_adapter import (
    BOT_ROLE,
    CHANNEL_ID,
    EVERYONE_BEFORE,
    GUILD_ID,
    MODERATORS_BEFORE,
    RAIDER_BASE,
    SEND,
    Bot,
    as_mod,
    guild,
    make_bot,
    slash,
)
from tests.test_discord_adapter import answer as pressed
from tests.test_discord_servers import answer
from tests.test_partner_raids import (  # noqa: F401  (fixtures)
    GROUP,
    MOD,
    URL,
    at_most_one_edit_per_interval,
    community,
    link_group_with_channel,
    patient_waits,
    tg_fake,
)
from tests.test_telegram_adapter import ORIGINAL, calls

PIN = discord.Permissions(pin_messages=True).value
TG_BASE = 2000  # Telegram raiders 2000..2029; Discord raiders RAIDER_BASE + 0..29
SIDE, LINKED = 30, 10  # members on each side; the first LINKED of each side are the same people
TG_EDITS = 1.5  # seconds between edits of a Telegram chat
ANY_CODE = re.compile(r"([A-Z2-9]{4}-[A-Z2-9]{4})")


@pytest.fixture
async def tg(services: Services, tg_fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:  # noqa: F811
    """The group's budget is Telegram's (messages and edits together, per rolling minute): the highest
    the settings allow, and edits coalesced a bit longer, so 60 raiders' presses leave room for the rest."""
    adapter = TelegramAdapter(services, TelegramConfig(token=tg_fake.token, api_base_url=tg_fake.base_url,
                                                       edit_interval_seconds=TG_EDITS, messages_per_minute=30))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


@pytest.fixture
async def dc(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild(bot_role=BOT_ROLE | PIN)):
        yield b


# -- helpers -----------------------------------------------------------------------------------------


async def until(check: Any, what: str, *, seconds: float = 30.0) -> None:
    """Wait for what the adapters do in the background (a chat's message budget may hold it back)."""
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def in_topic(fake: FakeTelegramAPI, topic: int, user: int, text: str) -> FakeMessage:
    """A command in the forum topic; the bot's next message in the group."""
    before = len(fake.calls_for("sendMessage", GROUP))
    fake.push_update(make_command_update(GROUP, user, text, username=f"user{user}", first_name=f"User{user}",
                                         topic=topic))
    sent = (await fake.wait_for_calls("sendMessage", chat_id=GROUP, count=before + 1))[before]
    assert sent.ok, sent.description
    return fake.message(GROUP, sent.result["message_id"])


async def tg_presses(fake: FakeTelegramAPI, message_id: int, presses: list[tuple[int, str]]) -> list[str]:
    """Members press buttons of the raid post at once, (user, data); each answer, in press order."""
    before = len(fake.calls_for("answerCallbackQuery"))
    ids = [fake.push_update(make_callback_update(GROUP, user, message_id, data, username=f"tg{user}",
                                                 first_name=f"Tg{user}"))["callback_query"]["id"]
           for user, data in presses]
    answered = (await calls(fake, "answerCallbackQuery", before + len(presses)))[before:]
    texts = {c.params["callback_query_id"]: str(c.params.get("text")) for c in answered}
    return [texts[i] for i in ids]


async def dc_presses(bot: Bot, post: Any, presses: list[tuple[int, str]]) -> list[str]:
    """Members press buttons of the partner post at once through the gateway, (user, custom id)."""
    payloads = [component_interaction(custom_id, post.json, guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=user,
                                      username=f"dc{user - RAIDER_BASE}") for user, custom_id in presses]
    done = await bot.h.press_many(payloads)
    assert [p.error for p in done] == [None] * len(done)
    return [pressed(bot, p) for p in done]


def dc_posts(bot: Bot, raid: int) -> list[Any]:
    return [m for m in bot.visible() if m.embeds and m.embeds[0]["title"].startswith(f"Raid #{raid} —")]


def dc_reports(bot: Bot, raid: int) -> list[Any]:
    return [m for m in bot.visible() if m.embeds and re.match(rf"(Raid #{raid} report|Informe del raid #{raid})",
                                                                m.embeds[0]["title"])]


def tg_reports(fake: FakeTelegramAPI, raid: int) -> list[FakeMessage]:
    return [m for m in fake.sent_messages(GROUP)
            if re.match(rf"(Raid #{raid} report|Informe del raid #{raid})", m.text or "")]


async def who(services: Services, platform: str, user: int) -> int:
    found = await services.db.read(lambda s: member_by_identity(s, platform, str(user)))
    assert found is not None
    return found


async def link_accounts(services: Services, fake: FakeTelegramAPI, bot: Bot, tg_user: int, dc_user: int) -> str:
    """`/link account` in the member's private chat with the Telegram bot; the code on Discord."""
    fake.add_chat(tg_user)  # they started the bot
    before = len(fake.sent_messages(tg_user))
    fake.push_update(make_command_update(tg_user, tg_user, "/link account", chat_type="private",
                                            username=f"tg{tg_user}", first_name=f"Tg{tg_user}"))
    await fake.wait_for_calls("sendMessage", chat_id=tg_user, count=before + 1)
    code = ANY_CODE.search(fake.sent_messages(tg_user)[before].text or "")
    assert code, fake.sent_messages(tg_user)[before].text
    return await answer(bot, slash("link", {"code": code[1]}, user_id=dc_user, username=f"dc{dc_user - RAIDER_BASE}"))


def within_discord_limits(embed: dict[str, Any]) -> bool:
    """Discord's documented embed limits (title 256, description 4096, 6000 in all)."""
    total = len(embed.get("title", "")) + len(embed.get("description", "")) + sum(
        len(f.get("name", "")) + len(f.get("value", "")) for f in embed.get("fields", []))
    return len(embed.get("title", "")) <= 256 and len(embed.get("description", "")) <= 4096 and total <= 6000


# -- the raid ----------------------------------------------------------------------------------------


async def run_partner_raid(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, bot: Bot, clock: FakeClock, topic: int,
    *, side: int, live: str, locked: str,
) -> tuple[int, FakeMessage, Any]:
    """Start a locked, pinned partner raid in the topic; `side` members join and claim on each side
    (Telegram likes, Discord reposts; the linked ones press on both sides). Returns the raid, its
    Telegram post and its Discord post, the raid still running."""
    tg_post = await in_topic(fake, topic, MOD, f"/raid start {URL} likes=100 reposts=100 duration=10m lock pin "
                                                  "partners")
    [raid] = [r.id for r in await services.raids.list(status="active")]
    assert tg_post.text.startswith(f"Raid #{raid} — {live}") and tg_post.message_thread_id == topic, tg_post.text
    [row] = await services.partners.raid_chats(raid)
    for _ in range(600):  # each post delivered (sent, pinned, marked) by the adapter of its platform
        if not [k for k in (raid_key(raid), partner_raid_key(raid, row.id)) if await services.outbox.pending(k)]:
            break
        await asyncio.sleep(0.05)
    await adapter.drain()
    await bot.adapter.posts.drain()
    [dc_post] = dc_posts(bot, raid)
    # no partner chat lacks anything here: the start says nothing more than the post
    assert not [m for m in fake.sent_messages(GROUP) if "Partner chat" in (m.text or "")
                or "Chat asociado" in (m.text or "")]

    # pinned and locked on both sides while it runs: the topic closed (not the group), the channel denied
    assert fake.chat(GROUP).pinned == [tg_post.message_id]
    assert fake.chat(GROUP).topics[topic].closed
    assert fake.chat(GROUP).permissions == ORIGINAL
    assert bot.fake.pinned(CHANNEL_ID) == [dc_post.id]
    assert int(bot.everyone()["deny"]) & SEND  # type: ignore[index]
    assert locked in tg_post.text and locked in dc_post.embeds[0]["description"]

    tg_users = [TG_BASE + i for i in range(side)]
    dc_users = [RAIDER_BASE + i for i in range(side)]
    joined = await tg_presses(fake, tg_post.message_id, [(u, f"nubi:join:{raid}") for u in tg_users])
    assert all(f"#{raid}" in j for j in joined), joined
    liked = await tg_presses(fake, tg_post.message_id, [(u, f"nubi:claim:{raid}:like") for u in tg_users])
    assert len(liked) == side and all(re.match(r"(Like claimed: |Me gusta: reclamado, )\+\d+", t) for t in liked), liked
    joined = await dc_presses(bot, dc_post, [(u, f"nubi:join:{raid}") for u in dc_users])
    linked = min(LINKED, side)
    assert all(f"#{raid}" in j for j in joined), joined
    again = joined[:linked]  # the linked members are in the raid already, from Telegram
    assert all(re.search(r"(already in raid|Ya estás en el raid)", j) for j in again), again
    reposted = await dc_presses(bot, dc_post, [(u, f"nubi:claim:{raid}:repost") for u in dc_users])
    assert all(re.match(r"(Repost claimed: |Repost: reclamado, )\+\d+", r) for r in reposted), reposted
    # a linked member's like, pressed again on Discord, is the one they claimed on Telegram
    twice = await dc_presses(bot, dc_post, [(u, f"nubi:claim:{raid}:like") for u in dc_users[:linked]])
    assert all(re.search(r"(You already claimed|Ya reclamaste)", t) for t in twice), twice
    await adapter.drain()
    await bot.adapter.posts.drain()
    return raid, tg_post, dc_posts(bot, raid)[0]


async def end_and_check_restored(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, bot: Bot, clock: FakeClock, topic: int,
    raid: int, tg_post: FakeMessage, dc_post: Any,
) -> tuple[FakeMessage, Any]:
    """Time runs out: each chat gets one report, its pin undone and its lock given back exactly."""
    clock.advance(seconds=601)
    assert await services.raids.end_overdue() == [raid]
    try:
        await until(lambda: dc_reports(bot, raid) and tg_reports(fake, raid), "a report in each chat")
    except AssertionError:
        owed = [(d.key, d.kind) for d in await services.outbox.due()]
        raise AssertionError(f"reports: telegram {len(tg_reports(fake, raid))}, discord {len(dc_reports(bot, raid))}; "
                             f"owed {owed}; titles {[m.embeds[0]['title'] for m in bot.visible() if m.embeds]}; "
                             f"tg {[(m.text or '')[:40] for m in fake.sent_messages(GROUP)][-6:]}") from None
    await adapter.drain()
    await bot.adapter.posts.drain()
    [tg_report] = tg_reports(fake, raid)
    [dc_report] = dc_reports(bot, raid)
    assert tg_report.message_thread_id == topic and tg_report.reply_to_message_id == tg_post.message_id
    assert int(dc_report.json["message_reference"]["message_id"]) == dc_post.id
    assert fake.chat(GROUP).pinned == [] and bot.fake.pinned(CHANNEL_ID) == []
    assert not fake.chat(GROUP).topics[topic].closed
    assert fake.chat(GROUP).permissions == ORIGINAL and fake.calls_for("setChatPermissions") == []
    assert bot.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    [row] = await services.partners.raid_chats(raid)
    for key in (unpin_key(raid), partner_unpin_key(raid, row.id)):
        assert not await services.outbox.pending(key), key
    assert await services.locks.pending_releases() == []
    # a sweep later nothing is owed: no second report, pin or restore anywhere
    assert [d for d in await services.outbox.due() if d.raid_id == raid] == []
    await adapter.drain()
    await bot.adapter.posts.drain()
    assert len(tg_reports(fake, raid)) == 1 and len(dc_reports(bot, raid)) == 1
    return tg_report, dc_report


def edits_within_limits(fake: FakeTelegramAPI, bot: Bot, tg_post: FakeMessage, dc_post: Any) -> None:
    """Each post was edited in place, never refused for its size, at most once per interval."""
    tg_edits = [c for c in fake.calls_for("editMessageText", GROUP)
                if c.params.get("message_id") == tg_post.message_id]
    # no refusal at all: an edit that would change nothing ("message is not modified") is never sent
    refused = [c.description for c in tg_edits if not c.ok]
    assert tg_edits and refused == [], refused
    assert all(len(c.params["text"]) <= 4096 for c in tg_edits)
    at_most_one_edit_per_interval([c.at for c in tg_edits])
    dc_edits = bot.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/{dc_post.id}", "PATCH")
    assert dc_edits and all(c.status == 200 for c in dc_edits), [c.status for c in dc_edits]
    at_most_one_edit_per_interval([c.at for c in dc_edits])
    [embed] = dc_posts_of(bot, dc_post.id).embeds
    assert within_discord_limits(embed)
    assert len(fake.message(GROUP, tg_post.message_id).text) <= 4096


def dc_posts_of(bot: Bot, message_id: int) -> Any:
    return next(m for m in bot.visible() if m.id == message_id)


# -- the test ----------------------------------------------------------------------------------------


async def test_one_partner_raid_across_a_telegram_topic_and_a_discord_channel_with_linked_members(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot, clock: FakeClock,  # noqa: F811
) -> None:
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator", can_restrict_members=True, can_manage_topics=True,
                       can_pin_messages=True)
    topic = tg_fake.add_topic(GROUP, "Raids").message_thread_id
    await link_group_with_channel(services, tg_fake, dc)
    for i in range(LINKED):  # ten people link their two accounts before they raid
        linked = await link_accounts(services, tg_fake, dc, TG_BASE + i, RAIDER_BASE + i)
        assert "Linked: your accounts (telegram, discord) are one member now" in linked, linked
    for i in range(LINKED):
        assert await who(services, "telegram", TG_BASE + i) == await who(services, "discord", RAIDER_BASE + i)

    # -- the raid, in English ------------------------------------------------------------------------
    raid, tg_post, dc_post = await run_partner_raid(services, tg_fake, tg, dc, clock, topic, side=SIDE, live="live",
                                                    locked="Chat is locked for the raid.")
    progress = await services.raids.progress(raid)
    assert (progress.participants, progress.actions) == (2 * SIDE - LINKED, 2 * SIDE)
    assert {o.action: o.count for o in progress.objectives} == {"like": SIDE, "repost": SIDE}
    points = {o.action: o.points for o in progress.objectives}
    assert f"Raiders: {2 * SIDE - LINKED}/500" in tg_fake.message(GROUP, tg_post.message_id).text
    assert f"Raiders: {2 * SIDE - LINKED}/500" in dc_posts_of(dc, dc_post.id).embeds[0]["description"]
    edits_within_limits(tg_fake, dc, tg_post, dc_post)

    # one board: 50 members, each linked member once, with the points of both sides
    tg_community = await community(services, "telegram", GROUP)
    board = await services.raids.leaderboard(raid, top=100)
    assert len(board) == 2 * SIDE - LINKED == len({e.member_id for e in board})
    linked_members = [await who(services, "telegram", TG_BASE + i) for i in range(LINKED)]
    tg_only = [await who(services, "telegram", TG_BASE + i) for i in range(LINKED, SIDE)]
    dc_only = [await who(services, "discord", RAIDER_BASE + i) for i in range(LINKED, SIDE)]
    assert {e.member_id for e in board} == {*linked_members, *tg_only, *dc_only}
    rows = [r for r in await ledger_rows(services, tg_community) if r.raid_id == raid]
    actions = dict((await services.db.read(lambda s: s.execute(
        select(RaidAction.id, RaidAction.action_type).where(RaidAction.raid_id == raid)))).all())
    claimed: dict[int, list[str]] = defaultdict(list)
    earned: dict[int, int] = defaultdict(int)
    for r in rows:
        earned[r.member_id] += r.points
        if r.kind == "claim":
            claimed[r.member_id].append(actions[r.claim_id])
    on_board = {e.member_id: e.points for e in board}
    assert on_board == dict(earned)  # the board is the ledger's sums
    for m in linked_members:  # a like from Telegram and a repost from Discord, summed on one line
        assert sorted(claimed[m]) == ["like", "repost"]
        claims_points = sum(r.points for r in rows if r.member_id == m and r.kind == "claim")
        assert claims_points == points["like"] + points["repost"]
    assert all(claimed[m] == ["like"] for m in tg_only) and all(claimed[m] == ["repost"] for m in dc_only)
    assert await services.boards.board(await community(services, "discord", GUILD_ID), "all") == []

    tg_report, dc_report = await end_and_check_restored(services, tg_fake, tg, dc, clock, topic, raid, tg_post,
                                                        dc_post)
    assert f"Raiders: {2 * SIDE - LINKED}" in tg_report.text
    assert f"Raiders: {2 * SIDE - LINKED}" in dc_report.embeds[0]["description"]
    assert f"Raid #{raid} — time ran out" in tg_fake.message(GROUP, tg_post.message_id).text
    assert dc_posts_of(dc, dc_post.id).embeds[0]["title"] == f"Raid #{raid} — time ran out"
    await assert_boards_equal_ledger(services, [tg_community], clock.now())

    # -- the same raid in Spanish, on both platforms --------------------------------------------------
    switched = await in_topic(tg_fake, topic, MOD, "/settings set language es")
    assert switched.text == "Esta comunidad ahora lee nubi en Español." and switched.message_thread_id == topic
    switched_dc = await answer(dc, as_mod("settings set", {"key": "language", "value": "es"}))
    assert switched_dc == "Esta comunidad ahora lee nubi en Español."
    second, tg_post, dc_post = await run_partner_raid(services, tg_fake, tg, dc, clock, topic, side=LINKED + 2,
                                                      live="en marcha", locked="El chat está bloqueado")
    progress = await services.raids.progress(second)
    assert (progress.participants, progress.actions) == (LINKED + 4, 2 * (LINKED + 2))
    assert "Participantes: 14/500" in tg_fake.message(GROUP, tg_post.message_id).text
    assert "Participantes: 14/500" in dc_posts_of(dc, dc_post.id).embeds[0]["description"]
    edits_within_limits(tg_fake, dc, tg_post, dc_post)
    tg_report, dc_report = await end_and_check_restored(services, tg_fake, tg, dc, clock, topic, second, tg_post,
                                                        dc_post)
    assert tg_report.text.startswith(f"Informe del raid #{second} — se acabó el tiempo"), tg_report.text
    assert dc_report.embeds[0]["title"] == f"Informe del raid #{second} — se acabó el tiempo"
    assert "Participantes: 14" in tg_report.text and "Participantes: 14" in dc_report.embeds[0]["description"]
    assert dc_posts_of(dc, dc_post.id).embeds[0]["title"] == f"Raid #{second} — se acabó el tiempo"

    # -- a linked member's merge keeps every point ----------------------------------------------------
    # Discord raider #25 is the second account of the first linked member; both hold points here.
    kept, other = linked_members[0], await who(services, "discord", RAIDER_BASE + 25)
    before = await ledger_rows(services, tg_community)
    total = sum(r.points for r in before)
    sums = {m: sum(r.points for r in before if r.member_id == m) for m in (kept, other)}
    assert sums[kept] > 0 and sums[other] > 0
    asked = await answer(dc, slash("link", {"account": True}, user_id=RAIDER_BASE + 25, username="dc25"))
    code = ANY_CODE.search(asked)
    assert code, asked
    refused = await in_topic(tg_fake, topic, TG_BASE, f"/link account {code[1]}")
    found = re.search(r"/member merge #(\d+) #(\d+)", refused.text)
    assert found and {int(found[1]), int(found[2])} == {kept, other}, refused.text
    assert await who(services, "discord", RAIDER_BASE + 25) == other  # refused: nothing changed yet
    merged = await in_topic(tg_fake, topic, MOD, f"/member merge #{kept} #{other}")
    assert f"#{kept}" in merged.text and "/member merge" not in merged.text, merged.text
    one = await who(services, "telegram", TG_BASE)
    assert one == await who(services, "discord", RAIDER_BASE) == await who(services, "discord", RAIDER_BASE + 25)
    after = await ledger_rows(services, tg_community)
    assert [(r.id, r.points) for r in after] == [(r.id, r.points) for r in before]  # every row, every point
    assert sum(r.points for r in after) == total
    all_time = {e.member_id: e.points for e in await services.boards.board(tg_community, "all", top=100)}
    assert all_time[one] == sums[kept] + sums[other]
    assert not ({kept, other} - {one}) & set(all_time)  # the account merged away has no place of its own
    assert len(all_time) == 2 * SIDE - LINKED - 1
    await assert_boards_equal_ledger(services, [tg_community], clock.now())
