"""A chat never stays muted: the scheduler's sweep retries a failed lock release until it succeeds.

Through the real adapters against the fakes: the release at a raid's end meets a transient platform
error, the chat stays locked, and the next sweep (no restart) gives the chat its permissions back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bot.scheduler import NubiScheduler
from core.clock import FakeClock
from core.directory import ChatRef
from core.locks import RELEASE_RETRY_AFTER
from core.raids.model import RaidSpec
from core.services import Services
from tests.fakes.telegram_api import PERMISSION_FIELDS, FakeTelegramAPI
from tests.test_discord_adapter import CHANNEL_ID, EVERYONE_BEFORE, GUILD_ID, SEND, Bot, as_mod, original_text
from tests.test_discord_adapter import bot as bot  # noqa: F401  (the fixture)
from tests.test_telegram_adapter import ORIGINAL, URL, config_for, running

GROUP = -100123


@pytest.fixture
async def scheduler(services: Services) -> AsyncIterator[NubiScheduler]:
    sched = NubiScheduler(services)  # not started: the test calls its sweep step by step
    yield sched
    await sched.stop()


async def test_telegram_release_after_a_transient_error_is_retried_by_the_sweep(
    services: Services, clock: FakeClock, scheduler: NubiScheduler
) -> None:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        fake.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)
        async with running(services, config_for(fake)) as adapter:
            progress = await services.raids.start(ChatRef("telegram", str(GROUP), "Raid Group"),
                                                  RaidSpec(URL, {"like": 5}, lock=True))
            await adapter.drain()
            assert not any(fake.chat(GROUP).permissions.values())
            lock = await services.locks.active(progress.community_id)
            assert lock is not None and lock.deadline == progress.ends_at + services.locks.grace

            fake.fail_next("setChatPermissions", error_code=502)  # the release meets a bad gateway
            await services.raids.end(progress.id, reason="ended by a moderator")
            await adapter.drain()
            assert not any(fake.chat(GROUP).permissions.values())  # still muted
            assert len(await services.locks.pending_releases("telegram")) == 1

            await scheduler.sweep()  # too soon: the first attempt may still be under way elsewhere
            await adapter.drain()
            assert len(await services.locks.pending_releases("telegram")) == 1

            clock.advance(seconds=RELEASE_RETRY_AFTER.total_seconds())
            await scheduler.sweep()
            await adapter.drain()
            assert fake.chat(GROUP).permissions == ORIGINAL
            assert await services.locks.pending_releases("telegram") == []
            assert await services.locks.active(progress.community_id) is None
            assert set(ORIGINAL) == set(PERMISSION_FIELDS)


async def test_discord_release_is_retried_by_the_sweep_without_a_restart(
    bot: Bot, clock: FakeClock  # noqa: F811
) -> None:
    sched = NubiScheduler(bot.services)
    try:
        await bot.start_raid(lock=True)
        path = f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}"
        bot.fake.fail_next("PUT", path, status=429, retry_after=60.0)  # longer than the adapter waits out
        payload = as_mod("unlock")
        await bot.h.dispatch_interaction(payload)
        assert original_text(bot, payload) == "Chat unlocked."
        locked = {**EVERYONE_BEFORE, "deny": str(int(EVERYONE_BEFORE["deny"]) | SEND)}
        assert bot.everyone() == locked
        assert len(await bot.services.locks.pending_releases("discord")) == 1

        clock.advance(seconds=RELEASE_RETRY_AFTER.total_seconds())
        await sched.sweep()
        for _ in range(50):
            if not await bot.services.locks.pending_releases("discord"):
                break
            await asyncio.sleep(0.05)
        assert bot.everyone() == EVERYONE_BEFORE  # exactly as before the lock
        assert await bot.services.locks.pending_releases("discord") == []
    finally:
        await sched.stop()
