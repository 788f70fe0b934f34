"""Scheduled boards show a finished window, by the schedule's clock, chosen in core from the slot.

Driven as a moderator would: `/schedule leaderboard ...` through the command layer, points at
chosen moments, the slot fired by the scheduler's own call, and the post read from the fake
Telegram API the real adapter sent it to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from adapters.telegram import TelegramAdapter
from core.clock import FakeClock
from core.commands.service import ChatContext
from core.directory import ChatRef, MemberRef
from core.services import Services
from core.windows import announced_window
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.test_telegram_adapter import ORIGINAL, config_for, running

GROUP = -100321
CHAT = ChatRef("telegram", str(GROUP), "Raid Group")
MOD = ChatContext(CHAT, MemberRef("telegram", "7", "Mod", "the_mod"), is_moderator=True)


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def adapter(services: Services) -> AsyncIterator[tuple[TelegramAdapter, FakeTelegramAPI]]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        fake.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        async with running(services, config_for(fake)) as started:
            yield started, fake


async def member(services: Services, user: str, name: str) -> int:
    """A member who used the bot in the group (so a moderator may name them)."""
    ctx = ChatContext(CHAT, MemberRef("telegram", user, name, name.lower()))
    assert await services.commands.handle_text(ctx, "/me") is not None
    return int(user)


async def give(services: Services, clock: FakeClock, at: datetime, name: str, points: int) -> None:
    clock.advance(seconds=(at - clock.now()).total_seconds())
    reply = await services.commands.handle_text(MOD, f"/points add @{name.lower()} {points} good work")
    assert reply is not None and "points added" in reply.text, reply.text if reply else None


async def announce(services: Services, adapter: TelegramAdapter, fake: FakeTelegramAPI, text: str,
                   slot: datetime, clock: FakeClock) -> str:
    reply = await services.commands.handle_text(MOD, text)
    assert reply is not None and reply.text.startswith("Schedule #"), reply.text if reply else None
    schedule = (await services.schedules.list())[-1]
    clock.advance(seconds=(slot - clock.now()).total_seconds())
    assert await services.schedules.run_due() >= 1  # the sweep fires the slot that is due
    await adapter.drain()
    return fake.sent_messages(GROUP)[-1].text + f"\n(schedule {schedule.id})"


async def test_a_monday_announcement_shows_last_week_with_its_dates(
    services: Services, clock: FakeClock, adapter: tuple[TelegramAdapter, FakeTelegramAPI]
) -> None:
    bot, fake = adapter
    await member(services, "501", "Alice")
    await member(services, "502", "Bobby")
    await give(services, clock, datetime(2026, 1, 11, 20, 0, tzinfo=UTC), "Alice", 30)  # Sunday: last week
    await give(services, clock, datetime(2026, 1, 12, 9, 0, tzinfo=UTC), "Bobby", 50)  # Monday: this week

    monday_noon = datetime(2026, 1, 12, 12, 0, tzinfo=UTC)
    posted = await announce(services, bot, fake, "/schedule leaderboard 0 12 * * mon week", monday_noon, clock)
    assert posted.startswith("Leaderboard — week of Mon 5 Jan – Sun 11 Jan 2026\n🥇 Alice — 30 pts\n(")
    assert "Bobby" not in posted

    so_far = await announce(services, bot, fake, "/schedule leaderboard 0 13 * * mon week-so-far",
                            datetime(2026, 1, 12, 13, 0, tzinfo=UTC), clock)
    assert so_far.startswith("Leaderboard — this week so far (Mon 12 Jan 2026)\n🥇 Bobby — 50 pts\n(")
    assert "Alice" not in so_far


async def test_the_schedules_time_zone_moves_the_window_boundaries(
    services: Services, clock: FakeClock, adapter: tuple[TelegramAdapter, FakeTelegramAPI]
) -> None:
    bot, fake = adapter
    await member(services, "501", "Alice")
    await member(services, "502", "Bobby")
    # Sunday 22:30 UTC is Sunday 23:30 in Berlin; Sunday 23:30 UTC is already Monday 00:30 there.
    await give(services, clock, datetime(2026, 1, 11, 22, 30, tzinfo=UTC), "Alice", 10)
    await give(services, clock, datetime(2026, 1, 11, 23, 30, tzinfo=UTC), "Bobby", 20)

    berlin = await announce(services, bot, fake, "/schedule leaderboard 0 9 * * mon week tz=Europe/Berlin",
                            datetime(2026, 1, 12, 8, 0, tzinfo=UTC), clock)  # Monday 09:00 in Berlin
    assert berlin.startswith("Leaderboard — week of Mon 5 Jan – Sun 11 Jan 2026\n🥇 Alice — 10 pts\n(")
    assert "Bobby" not in berlin

    utc = await announce(services, bot, fake, "/schedule leaderboard 0 9 * * mon week",
                         datetime(2026, 1, 12, 9, 0, tzinfo=UTC), clock)
    assert utc.startswith("Leaderboard — week of Mon 5 Jan – Sun 11 Jan 2026\n🥇 Bobby — 20 pts\n🥈 Alice — 10 pts")


def test_windows_are_taken_from_the_slot_in_the_zone() -> None:
    # a monthly board on the 1st shows the month before; a daily one at 00:05 shows yesterday
    month = announced_window("month", datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "UTC")
    assert (month.start, month.end, month.title) == (
        datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC), "Leaderboard — February 2026")
    day = announced_window("day", datetime(2026, 3, 1, 0, 5, tzinfo=UTC), "America/New_York")  # Feb 28, 19:05 there
    assert (day.start, day.end, day.title) == (
        datetime(2026, 2, 27, 5, 0, tzinfo=UTC), datetime(2026, 2, 28, 5, 0, tzinfo=UTC), "Leaderboard — Fri 27 Feb 2026")


async def test_a_spanish_community_gets_its_board_in_spanish_with_spanish_dates(
    services: Services, clock: FakeClock, adapter: tuple[TelegramAdapter, FakeTelegramAPI]
) -> None:
    bot, fake = adapter
    await member(services, "501", "Alice")
    await give(services, clock, datetime(2026, 1, 7, 20, 0, tzinfo=UTC), "Alice", 21)
    switched = await services.commands.handle_text(MOD, "/settings set language es")
    assert switched is not None and switched.text == "Esta comunidad ahora lee nubi en Español."
    reply = await services.commands.handle_text(MOD, "/schedule leaderboard 0 9 * * mon week")
    assert reply is not None and reply.text.startswith("Programación #"), reply.text if reply else None
    clock.advance(seconds=(datetime(2026, 1, 12, 9, 0, tzinfo=UTC) - clock.now()).total_seconds())
    assert await services.schedules.run_due() >= 1
    await bot.drain()
    assert fake.sent_messages(GROUP)[-1].text == "Clasificación — semana del lun 5 ene – dom 11 ene 2026\n🥇 Alice — 21 puntos"
