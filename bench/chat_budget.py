"""Benchmark 4, the chat budget: a burst of button presses must not flood the raid's chat.

Telegram (through the real python-telegram-bot and the local fake Bot API, tests/fakes/telegram_api.py,
with Telegram's flood rule switched on: 20 messages or edits per group per rolling minute): a
moderator starts a raid with /raid, then N members press Join and three Claim buttons on the raid
post. Measured: presses answered per second, the messages and edits the group received (ratio to
the naive one-edit-per-progress-event), flood (429) answers, and how long after the last press
the raid post showed the final count.

Discord (through the real discord.py client and the local fake Discord API, tests/fakes/discord_api.py):
the fake (REST and gateway) and the press generator run in their own process (bench/discord_peer.py);
the bot logs in and keeps a real gateway session to it over 127.0.0.1, as `nubi run` does. A moderator
starts a raid with /raid start, then N members press Join and three Claim buttons on the raid post, each
wave of N INTERACTION_CREATEs written to the gateway at once. Measured: presses answered per second; p99
from the gateway send to the interaction callback reaching the fake (Discord's 3-second rule; the adapter
defers when core is slow), over the waves and over a steady stream; the channel messages and raid-post
edits (ratio to the naive one-edit-per-progress-event, checked against one edit per
`discord.edit_interval_seconds`, default 5 s); whether every press was answered, with no error logged by
the bot and no call refused by the fake; and how long after the last press the raid post showed the final
counts.

Each part stops with a clear "not implemented yet" when its adapter module is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.app import settle_heap
from core.clock import SystemClock
from core.config import DiscordConfig, TelegramConfig
from core.directory import ChatRef
from core.events import EventBus, ProgressChanged
from core.services import Services
from core.storage.db import Database

from .env import Figure, Report, Target, bench_settings, percentile

GROUP = -100987
MOD = 42
BUDGET_PER_MINUTE = 20  # Telegram's group limit; the fake answers 429 beyond it
EDIT_INTERVAL = 5.0  # the configured default (telegram.edit_interval_seconds)
CLAIMS = ("like", "repost", "reply")
GUILD = 940_000_000_000_000_001
CHANNEL = 940_000_000_000_000_002
RAIDER_BASE = 940_000_000_000_100_000
ANSWER_TARGET = 0.100  # seconds from the gateway send to the interaction callback, fake in its own process
STREAM_BASE = 940_000_000_000_900_000
STREAM_SECONDS = 10.0
STREAM_SHARE = 0.5  # of the waves' answer rate
ROOT = Path(__file__).resolve().parent.parent


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


class _Peer:
    """The fake Discord API and the press generator in their own process (bench/discord_peer.py)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Peer:
        root = ROOT
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.discord_peer", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=root, env=env, limit=1 << 26)
        return cls(proc)

    async def ask(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        request = {"op": op, "args": args} if op != "hello" else args
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Discord peer process exited during {op!r} (code {await self.proc.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the Discord peer failed {op!r}: {answer['error']}")
        return answer["ok"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                async with asyncio.timeout(10):
                    await self.ask("stop")
                    await self.proc.wait()
            except (TimeoutError, RuntimeError, BrokenPipeError, ConnectionResetError):
                self.proc.kill()
                await self.proc.wait()


class _Errors(logging.Handler):
    """Errors the bot logged (what escapes a press's handling on the real gateway is only logged)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def discord(target: Target, report: Report, members: int) -> None:
    _require("adapters.discord.adapter", "Discord")
    from adapters.discord.adapter import DiscordAdapter

    print(f"\n== chat budget on discord ({target.kind}): {members} members press Join + {len(CLAIMS)} claims",
          flush=True)
    config = DiscordConfig()  # the configured default edit interval
    interval = config.edit_interval_seconds
    url = await target.fresh()
    db = Database(url)
    services = Services(db, SystemClock(), bench_settings(url), EventBus())
    progress = _Counter()
    on_progress = progress.count
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    peer = await _Peer.start()
    adapter: DiscordAdapter | None = None
    try:
        where = await peer.ask("hello", guild=GUILD, channel=CHANNEL, mod=MOD)
        # `nubi run`'s path: login over REST, then a real gateway session, both on 127.0.0.1
        adapter = DiscordAdapter(services, config.model_copy(update={
            "token": SecretStr(where["token"]), "api_base_url": where["base_url"],
            "gateway_url": where["gateway_url"]}))
        await adapter.start()
        try:
            await asyncio.wait_for(adapter.reconciled.wait(), 30)
            started = await peer.ask("raid_start", options={
                "url": "https://x.com/nubi/status/77", "likes": 1_000_000, "reposts": 1_000_000,
                "replies": 1_000_000})
            post_id, mark = started["post_id"], started["mark"]
            raid_id = await services.raids.active_raid_id(ChatRef("discord", str(GUILD), channel=str(CHANNEL)))
            settle_heap()  # as `nubi run` does once it has started (bot/cli.py)
            services.bus.subscribe(ProgressChanged, on_progress)
            presses = await peer.ask("waves", raid_id=raid_id, members=members, base=RAIDER_BASE,
                                     give_up_after=300)
            t0 = presses[0][1]
            waves_done = max(at for _, _, at in presses if at is not None)
            await adapter.posts.drain()
            final = _without_clock((await peer.ask("post"))["embeds"][0]["description"])
            # The same presses as a steady stream: new members arrive one after another at half the
            # waves' answer rate, each pressing Join then its three claims.
            stream_rate = STREAM_SHARE * len(presses) / max(1e-9, waves_done - t0)
            cpu, wall = time.process_time(), time.monotonic()
            stream = await peer.ask("stream", raid_id=raid_id, base=STREAM_BASE,
                                    members_per_second=stream_rate / 4,
                                    members=max(1, int(stream_rate / 4 * STREAM_SECONDS)))
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall  # the bot's process, all its threads
            await adapter.posts.drain()
            channel = await peer.ask("calls", mark=mark)
            checks = await peer.ask("check", mark=mark, ids=[p[0] for p in presses + stream])
        finally:
            services.bus.unsubscribe(ProgressChanged, on_progress)
            await adapter.stop()
    finally:
        logging.getLogger().removeHandler(errors)
        await peer.close()
        await db.dispose()
        await target.drop(url)

    if f"Raiders: {members}/" not in "\n".join(final):
        raise RuntimeError(f"the Discord raid post never showed {members} raiders: {final}")
    answered = [p for p in presses if p[2] is not None]
    if not answered:
        raise RuntimeError("no Discord press was answered")
    latencies = [at - sent for _, sent, at in answered]
    last_press = max(at for _, _, at in answered)
    edits = [(at, text) for method, path, at, text in channel if method == "PATCH" and path.endswith(f"/{post_id}")]
    shown = next((at for at, text in edits if text is not None and _without_clock(text) == final), None)
    if shown is None:
        raise RuntimeError("no edit of the Discord raid post showed its final state")
    # One flush per interval is decided when a flush starts; each edit reaches Discord after its own read
    # and round trip, so two can land a little under an interval apart. What arrivals must show: no more
    # than 1 + elapsed/interval edits since the first press, and never three within one interval (a
    # flush starts only after the previous one's edit arrived, and an interval after the one before).
    times = [at for at, _ in edits]
    peak = max((sum(1 for d in times if c <= d < c + interval) for c in times), default=0)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    paced = len(times) <= 1 + (times[-1] - t0) / interval and peak <= 2
    p99 = percentile(latencies, 99)
    kind = f"{target.kind}, discord"
    report.add(Figure("chat budget", kind, "presses answered/s", len(answered) / (last_press - t0), "press/s",
                      note=f"{members} members x 4 presses, each wave of {members} at once"))
    report.add(Figure("chat budget", kind, "p99 gateway send to interaction callback, waves", p99 * 1000, "ms",
                      higher_is_better=False,
                      note=f"p50 {percentile(latencies, 50) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
                           f"{checks['deferred']} deferred; bounded below by the wave: {members} presses / throughput"))
    report.add(Figure("chat budget", kind, "channel messages + raid post edits", len(channel), "calls",
                      "one edit per progress event (naive)", progress.n, higher_is_better=False,
                      target=f"at most 1 edit per {interval:.0f} s interval", met=paced,
                      note=f"{len(times)} edits in {times[-1] - t0:.1f} s from the first press, "
                           f"peak {peak} per {interval:.0f} s, closest {min(gaps, default=0):.2f} s apart"))
    streamed = [at - sent for _, sent, at in stream if at is not None]
    s99 = percentile(streamed, 99) if streamed else float("inf")
    report.add(Figure("chat budget", kind, "p99 gateway send to interaction callback, steady stream", s99 * 1000,
                      "ms", higher_is_better=False,
                      target=f"<= {ANSWER_TARGET * 1000:.0f} ms, fake in its own process",
                      met=s99 <= ANSWER_TARGET and len(streamed) == len(stream),
                      note=f"{len(stream)} presses at about {stream_rate:,.0f}/s ({STREAM_SHARE:.0%} of the waves' "
                           f"rate), {len(stream) - len(streamed)} unanswered; "
                           f"p50 {percentile(streamed, 50) * 1000:.0f} ms; bot CPU {cpu / len(stream) * 1000:.1f} ms "
                           f"per press, {cpu / wall:.0%} of a core" if streamed else "none answered"))
    everything = presses + stream
    unanswered = sum(1 for p in everything if p[2] is None)
    refused = checks["refused"] + checks["unhandled"] + checks["double"]
    report.add(Figure("chat budget", kind, "presses answered", len(everything) - unanswered, "presses",
                      target=f"all {len(everything)}, no error logged, nothing refused",
                      met=unanswered == 0 and not errors.records and refused == 0,
                      note=f"{unanswered} unanswered, {len(errors.records)} errors logged by the bot, "
                           f"{checks['refused']} calls refused, {checks['unhandled']} unknown, "
                           f"{checks['double']} answered twice"))
    stale = max(0.0, shown - last_press)
    report.add(Figure("chat budget", kind, "raid post current after the last press", stale, "s",
                      target=f"<= {interval + 1:.0f} s", met=stale <= interval + 1, higher_is_better=False))


def _without_clock(description: str) -> list[str]:
    """The raid post's lines minus its countdown, which changes on its own."""
    return [line for line in description.splitlines() if not line.startswith("Time left:")]
