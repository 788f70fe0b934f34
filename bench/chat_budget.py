"""Benchmark 4, the chat budget: a burst of button presses must not flood the raid's chat.

Telegram (through the real python-telegram-bot and the local fake Bot API, tests/fakes/telegram_api.py,
with Telegram's flood rule switched on: 20 messages or edits per group per rolling minute): a
moderator starts a raid with /raid, then N members press Join and three Claim buttons on the raid
post. Measured: presses answered per second, the messages and edits the group received (ratio to
the naive one-edit-per-progress-event), flood (429) answers, and how long after the last press
the raid post showed the final count.

Discord (through the real discord.py client and the local fake REST API, tests/fakes/discord_api.py):
a moderator starts a raid with /raid start, then N members press Join and three Claim buttons on the
raid post, each wave of N presses fed at once through discord.py's own gateway dispatch
(DiscordHarness.press_many, which cancels nothing). Measured: presses answered per second; p99 from
dispatch to the interaction callback reaching Discord (its 3-second rule; the adapter defers when core
is slow); the channel messages and raid-post edits (ratio to the naive one-edit-per-progress-event,
checked against one edit per `discord.edit_interval_seconds`, default 5 s); whether every press was
answered; and how long after the last press the raid post showed the final counts.

Each part stops with a clear "not implemented yet" when its adapter module is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from typing import Any

from bot.app import settle_heap
from core.clock import SystemClock
from core.config import DiscordConfig, TelegramConfig
from core.directory import ChatRef
from core.events import EventBus, ProgressChanged
from core.services import Services
from core.storage.db import Database

from .env import Figure, Report, Target, bench_settings, open_loop, percentile

GROUP = -100987
MOD = 42
BUDGET_PER_MINUTE = 20  # Telegram's group limit; the fake answers 429 beyond it
EDIT_INTERVAL = 5.0  # the configured default (telegram.edit_interval_seconds)
CLAIMS = ("like", "repost", "reply")
GUILD = 940_000_000_000_000_001
CHANNEL = 940_000_000_000_000_002
RAIDER_BASE = 940_000_000_000_100_000
ANSWER_TARGET = 0.100  # seconds from dispatch to the interaction callback, in process
STREAM_BASE = 940_000_000_000_900_000
STREAM_SECONDS = 10.0
STREAM_SHARE = 0.5  # of the waves' answer rate


class _Counter:
    """ProgressChanged events: one edit each is what a naive adapter would send."""

    def __init__(self) -> None:
        self.n = 0

    async def count(self, _: ProgressChanged) -> None:
        self.n += 1


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise NotImplementedError(f"the {what} chat-budget benchmark is not implemented yet: it needs {module}")


async def bench(target: Target, report: Report, quick: bool) -> None:
    await telegram(target, report, members=100 if quick else 300)
    await discord(target, report, members=100 if quick else 300)


async def telegram(target: Target, report: Report, members: int) -> None:
    _require("adapters.telegram.adapter", "Telegram")
    from adapters.telegram import TelegramAdapter
    from tests.fakes import telegram_api
    from tests.fakes.telegram_api import FakeTelegramAPI, make_callback_update, make_command_update

    print(f"\n== chat budget on telegram ({target.kind}): {members} members press Join + {len(CLAIMS)} claims",
          flush=True)
    telegram_api.WAIT_LIMIT = 300.0  # the fake's wait guard is sized for tests, not for a burst
    url = await target.fresh()
    db = Database(url)
    services = Services(db, SystemClock(), bench_settings(url), EventBus())
    progress = _Counter()
    on_progress = progress.count

    services.bus.subscribe(ProgressChanged, on_progress)
    try:
        async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
            fake.add_chat(GROUP, title="Budget raiders")
            fake.set_member(GROUP, MOD, "administrator", first_name="Mod")
            fake.flood_limit(BUDGET_PER_MINUTE)
            config = TelegramConfig(token=fake.token, api_base_url=fake.base_url,
                                    edit_interval_seconds=EDIT_INTERVAL, messages_per_minute=BUDGET_PER_MINUTE)
            adapter = TelegramAdapter(services, config)
            await adapter.start()
            try:
                fake.push_update(make_command_update(GROUP, MOD, "/raid start https://x.com/nubi/status/77 "
                                                    "likes=1000000 reposts=1000000 replies=1000000"))
                post = (await fake.wait_for_calls("sendMessage", chat_id=GROUP))[0].result["message_id"]
                raid_id = await services.raids.active_raid_id(ChatRef("telegram", str(GROUP)))
                t0 = time.monotonic()
                answered = len(fake.calls_for("answerCallbackQuery"))
                first_call = len(fake.calls)
                presses = 0
                for data in [f"nubi:join:{raid_id}"] + [f"nubi:claim:{raid_id}:{a}" for a in CLAIMS]:
                    for i in range(members):
                        fake.push_update(make_callback_update(GROUP, 1000 + i, post, data, first_name=f"R{i}"))
                    presses += members
                    await fake.wait_for_calls("answerCallbackQuery", count=answered + presses)
                last_press = time.monotonic()
                await adapter.drain()
                edits = len(fake.calls_for("editMessageText", GROUP))
                async with asyncio.timeout(3 * EDIT_INTERVAL + 30):
                    while f"Raiders: {members}/" not in (fake.message(GROUP, post).text or ""):
                        edits += 1
                        await fake.wait_for_calls("editMessageText", chat_id=GROUP, count=edits)
                shown = time.monotonic()
            finally:
                await adapter.stop()
            group = [c for c in fake.calls[first_call:]
                     if c.chat_id == GROUP and c.method in ("sendMessage", "editMessageText")]
    finally:
        services.bus.unsubscribe(ProgressChanged, on_progress)
        await db.dispose()
        await target.drop(url)

    floods = sum(1 for c in group if c.error_code == 429)
    peak = max((sum(1 for d in group if c.at <= d.at < c.at + 60) for c in group), default=0)
    kind = f"{target.kind}, telegram"
    report.add(Figure("chat budget", kind, "presses answered/s", presses / (last_press - t0), "press/s",
                      note=f"{members} members x 4 presses"))
    report.add(Figure("chat budget", kind, "group messages + edits", len(group), "calls",
                      "one edit per progress event (naive)", progress.n, higher_is_better=False,
                      target=f"0 flood answers (429), <= {BUDGET_PER_MINUTE} in any minute",
                      met=floods == 0 and peak <= BUDGET_PER_MINUTE, note=f"{floods} floods, peak {peak}/min"))
    report.add(Figure("chat budget", kind, "raid post current after the last press", shown - last_press, "s",
                      target=f"<= {EDIT_INTERVAL + 1:.0f} s", met=shown - last_press <= EDIT_INTERVAL + 1,
                      higher_is_better=False))


async def discord(target: Target, report: Report, members: int) -> None:
    _require("adapters.discord.adapter", "Discord")
    from discord import Permissions

    from adapters.discord.adapter import DiscordAdapter
    from tests.fakes.discord_api import (
        DEFAULT_MEMBER_PERMISSIONS,
        CallbackType,
        DiscordHarness,
        FakeDiscordAPI,
        Press,
        component_interaction,
        guild_create_payload,
        member_payload,
        slash_command_interaction,
        text_channel_payload,
    )

    print(f"\n== chat budget on discord ({target.kind}): {members} members press Join + {len(CLAIMS)} claims",
          flush=True)
    config = DiscordConfig()  # the configured default edit interval
    interval = config.edit_interval_seconds
    url = await target.fresh()
    db = Database(url)
    services = Services(db, SystemClock(), bench_settings(url), EventBus())
    progress = _Counter()
    on_progress = progress.count

    guild = guild_create_payload(GUILD, channels=[text_channel_payload(CHANNEL, guild_id=GUILD, name="raids")],
                                 members=[member_payload(MOD, username="mod")])
    presses: list[Press] = []
    fake = FakeDiscordAPI()
    await fake.start()  # the adapter reaches it through its address settings
    adapter = DiscordAdapter(services, config.model_copy(
        update={"api_base_url": fake.base_url, "gateway_url": fake.gateway_url}))
    try:
        async with DiscordHarness(adapter.build_client, guilds=[guild], fake=fake) as h:
            try:
                await asyncio.wait_for(adapter.reconciled.wait(), 10)
                start = slash_command_interaction(
                    "raid start", {"url": "https://x.com/nubi/status/77", "likes": 1_000_000,
                                   "reposts": 1_000_000, "replies": 1_000_000},
                    guild_id=GUILD, channel_id=CHANNEL, user_id=MOD, username="mod",
                    permissions=DEFAULT_MEMBER_PERMISSIONS | Permissions(manage_guild=True).value)
                await h.dispatch_interaction(start)
                [post] = fake.channel_messages(CHANNEL)
                raid_id = await services.raids.active_raid_id(ChatRef("discord", str(GUILD), channel=str(CHANNEL)))
                settle_heap()  # as `nubi run` does once it has started (bot/cli.py)
                first_call = len(fake.calls)
                services.bus.subscribe(ProgressChanged, on_progress)
                for data in [f"nubi:join:{raid_id}"] + [f"nubi:claim:{raid_id}:{a}" for a in CLAIMS]:
                    wave = [component_interaction(data, post.json, guild_id=GUILD, channel_id=CHANNEL,
                                                  user_id=RAIDER_BASE + i, username=f"r{i}") for i in range(members)]
                    presses += await h.press_many(wave, give_up_after=300)
                waves_done = time.monotonic()
                await adapter.posts.drain()
                final = _without_clock(post.embeds[0]["description"])
                # The same presses as a steady stream: new members arrive one after another at half
                # the waves' answer rate, each pressing Join then its three claims.
                stream_rate = STREAM_SHARE * len(presses) / max(1e-9, waves_done - presses[0].dispatched_at)
                stream = await _stream(h, component_interaction, post.json, raid_id, stream_rate / 4)
                await adapter.posts.drain()
            finally:
                services.bus.unsubscribe(ProgressChanged, on_progress)
                await adapter.stop()
            channel = [c for c in fake.calls[first_call:]
                       if c.path.startswith(f"/channels/{CHANNEL}/messages") and c.method in ("POST", "PATCH")
                       and c.status == 200]
            deferred = sum(1 for p in presses if p.callback and p.callback.type == CallbackType.DEFERRED_CHANNEL_MESSAGE)
    finally:
        await fake.stop()
        await db.dispose()
        await target.drop(url)

    if f"Raiders: {members}/" not in "\n".join(final):
        raise RuntimeError(f"the Discord raid post never showed {members} raiders: {final}")
    answered = [p for p in presses if p.callback is not None and p.error is None]
    if not answered:
        raise RuntimeError("no Discord press was answered")
    latencies = [p.latency for p in answered if p.latency is not None]
    t0 = presses[0].dispatched_at
    last_answer = max(p.callback.at for p in answered if p.callback is not None)
    last_press = max((p.finished_at or last_answer) for p in presses)
    edits = [c for c in channel if c.method == "PATCH" and c.path.endswith(f"/{post.id}")]
    shown = next((c.at for c in edits if _without_clock(c.json["embeds"][0]["description"]) == final), None)
    if shown is None:
        raise RuntimeError("no edit of the Discord raid post showed its final state")
    # One flush per interval is decided when a flush starts; each edit reaches Discord after its own read
    # and round trip, so two can land a little under an interval apart. What arrivals must show: no more
    # than 1 + elapsed/interval edits since the first press, and never three within one interval (a
    # flush starts only after the previous one's edit arrived, and an interval after the one before).
    peak = max((sum(1 for d in edits if c.at <= d.at < c.at + interval) for c in edits), default=0)
    gaps = [b.at - a.at for a, b in zip(edits, edits[1:], strict=False)]
    paced = len(edits) <= 1 + (edits[-1].at - t0) / interval and peak <= 2
    p99 = percentile(latencies, 99)
    kind = f"{target.kind}, discord"
    report.add(Figure("chat budget", kind, "presses answered/s", len(answered) / (last_answer - t0), "press/s",
                      note=f"{members} members x 4 presses, each wave of {members} at once"))
    report.add(Figure("chat budget", kind, "p99 dispatch to interaction callback, waves", p99 * 1000, "ms",
                      higher_is_better=False,
                      note=f"p50 {percentile(latencies, 50) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
                           f"{deferred} deferred; bounded below by the wave: {members} presses / throughput"))
    report.add(Figure("chat budget", kind, "channel messages + raid post edits", len(channel), "calls",
                      "one edit per progress event (naive)", progress.n, higher_is_better=False,
                      target=f"at most 1 edit per {interval:.0f} s interval", met=paced,
                      note=f"{len(edits)} edits in {edits[-1].at - t0:.1f} s from the first press, "
                           f"peak {peak} per {interval:.0f} s, closest {min(gaps, default=0):.2f} s apart"))
    streamed = [p.latency for p in stream if p.latency is not None and p.error is None]
    s99 = percentile(streamed, 99) if streamed else float("inf")
    report.add(Figure("chat budget", kind, "p99 dispatch to interaction callback, steady stream", s99 * 1000, "ms",
                      higher_is_better=False, target=f"<= {ANSWER_TARGET * 1000:.0f} ms in process",
                      met=s99 <= ANSWER_TARGET and len(streamed) == len(stream),
                      note=f"{len(stream)} presses at about {stream_rate:,.0f}/s ({STREAM_SHARE:.0%} of the waves' "
                           f"rate), {len(stream) - len(streamed)} unanswered; "
                           f"p50 {percentile(streamed, 50) * 1000:.0f} ms" if streamed else "none answered"))
    failed = sum(1 for p in presses if p.error is not None)
    report.add(Figure("chat budget", kind, "presses answered", len(answered), "presses",
                      target=f"all {len(presses)}", met=len(answered) == len(presses),
                      note=f"{failed} raised, {sum(1 for p in presses if p.finished_at is None)} unfinished"))
    stale = max(0.0, shown - last_press)
    report.add(Figure("chat budget", kind, "raid post current after the last press", stale, "s",
                      target=f"<= {interval + 1:.0f} s", met=stale <= interval + 1, higher_is_better=False))


async def _stream(h: Any, make: Any, post: dict[str, Any], raid_id: int, members_per_second: float) -> list[Any]:
    """Open loop for STREAM_SECONDS: member i arrives at i / rate seconds and presses Join, then each claim
    after the previous press was answered."""
    presses: list[Any] = []

    async def member(user_id: int) -> None:
        for data in [f"nubi:join:{raid_id}"] + [f"nubi:claim:{raid_id}:{a}" for a in CLAIMS]:
            payload = make(data, post, guild_id=GUILD, channel_id=CHANNEL, user_id=user_id, username=f"s{user_id}")
            presses.extend(await h.press_many([payload], give_up_after=60))

    await open_loop(max(1, int(members_per_second * STREAM_SECONDS)), members_per_second,
                    lambda i: member(STREAM_BASE + i))
    return presses


def _without_clock(description: str) -> list[str]:
    """The raid post's lines minus its countdown, which changes on its own."""
    return [line for line in description.splitlines() if not line.startswith("Time left:")]
