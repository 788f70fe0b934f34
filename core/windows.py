"""Leaderboard windows: day, week (from Monday 00:00 UTC), month, all time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from babel.dates import format_date

from core.i18n import N_, _, current_language

WINDOWS = ("day", "week", "month", "all")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_start(window: str, at: datetime) -> datetime:
    at = at.astimezone(UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "day":
        return day
    if window == "week":
        return day - timedelta(days=day.weekday())
    if window == "month":
        return day.replace(day=1)
    if window == "all":
        return EPOCH
    raise ValueError(f"unknown window {window!r}")


def window_end(window: str, start: datetime) -> datetime:
    if window == "day":
        return start + timedelta(days=1)
    if window == "week":
        return start + timedelta(days=7)
    if window == "month":
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    raise ValueError(f"window {window!r} never closes")


# -- announced windows ----------------------------------------------------------------------------
# A scheduled announcement shows, by default, the most recent window that has *ended* at its slot
# (a weekly post on Monday shows last Monday to Sunday); `<window>-so-far` shows the running one.
# Boundaries are local midnights in the schedule's time zone. Core picks the window; adapters render.

SO_FAR = "-so-far"
ANNOUNCED_WINDOWS = ("day", "week", "month", "all") + tuple(w + SO_FAR for w in ("day", "week", "month"))


@dataclass(frozen=True)
class AnnouncedWindow:
    window: str  # day, week, month or all
    start: datetime  # UTC; EPOCH for all time
    end: datetime  # UTC, exclusive
    running: bool
    title: str


def split_option(option: str) -> tuple[str, bool]:
    """('week', True) for 'week-so-far'; ValueError for anything else than ANNOUNCED_WINDOWS."""
    if option not in ANNOUNCED_WINDOWS:
        raise ValueError(f"unknown announced window {option!r}")
    return (option[: -len(SO_FAR)], True) if option.endswith(SO_FAR) else (option, False)


def local_window_start(window: str, at: datetime, zone: str) -> datetime:
    """The start (UTC) of the day, week (from Monday) or month holding `at`, by the clock of `zone`."""
    tz = ZoneInfo(zone)
    local = at.astimezone(tz)
    day = local.date()
    if window == "week":
        day -= timedelta(days=day.weekday())
    elif window == "month":
        day = day.replace(day=1)
    elif window != "day":
        raise ValueError(f"window {window!r} has no local start")
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)


def announced_window(option: str, slot: datetime, zone: str = "UTC") -> AnnouncedWindow:
    """The window an announcement at `slot` shows: the last completed one, or the running one."""
    window, running = split_option(option)
    if window == "all":
        return AnnouncedWindow("all", EPOCH, slot, False, _("All-time leaderboard"))
    current = local_window_start(window, slot, zone)
    if running:
        start, end = current, slot
    else:
        start, end = local_window_start(window, current - timedelta(microseconds=1), zone), current
    return AnnouncedWindow(window, start, end, running, _title(window, start, end, running, ZoneInfo(zone)))


def _title(window: str, start: datetime, end: datetime, running: bool, tz: ZoneInfo) -> str:
    """The board's title, dates and all, in the current language (Babel's calendar names)."""
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    lang = current_language.get()
    if window == "month":
        dates = format_date(first, "LLLL y", locale=lang)
    elif first == last:
        dates = format_date(first, "EEE d MMM y", locale=lang)
    elif first.year != last.year:
        dates = f"{format_date(first, 'EEE d MMM y', locale=lang)} – {format_date(last, 'EEE d MMM y', locale=lang)}"
    else:
        dates = f"{format_date(first, 'EEE d MMM', locale=lang)} – {format_date(last, 'EEE d MMM y', locale=lang)}"
    if running:
        return _(RUNNING_TITLES[window]).format(dates=dates) if window in RUNNING_TITLES else dates
    return (_("Leaderboard — week of {dates}") if window == "week" else _("Leaderboard — {dates}")).format(dates=dates)


RUNNING_TITLES = {
    "day": N_("Leaderboard — this day so far ({dates})"),
    "week": N_("Leaderboard — this week so far ({dates})"),
    "month": N_("Leaderboard — this month so far ({dates})"),
}
