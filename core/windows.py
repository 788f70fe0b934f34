"""Leaderboard windows: day, week (from Monday 00:00 UTC), month, all time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
