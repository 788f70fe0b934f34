"""Scoring rules as pure functions, with properties that must hold for any timing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from core.raids.scoring import ScoringRules, claim_points, early_joiner_bonus, speed_bonus
from core.windows import window_end, window_start

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = ScoringRules()


def test_defaults() -> None:
    assert early_joiner_bonus(RULES, 1) == 5 and early_joiner_bonus(RULES, 10) == 5
    assert early_joiner_bonus(RULES, 11) == 0 and early_joiner_bonus(RULES, 0) == 0
    assert speed_bonus(RULES, T0, T0) == 3
    assert speed_bonus(RULES, T0, T0 + timedelta(minutes=2, seconds=30)) == 2  # round(1.5)
    assert speed_bonus(RULES, T0, T0 + timedelta(minutes=5)) == 0
    assert claim_points(RULES, 3, T0, T0 + timedelta(hours=1)) == 3


@given(
    st.integers(0, 100), st.integers(0, 50), st.integers(0, 20),
    st.floats(0, 7200, allow_nan=False), st.floats(0, 7200, allow_nan=False),
)
def test_speed_bonus_is_bounded_and_never_grows_with_time(points, window, max_pts, a, b) -> None:
    rules = ScoringRules(speed_window_minutes=window, speed_max_points=max_pts)
    early, late = sorted((a, b))
    first = claim_points(rules, points, T0, T0 + timedelta(seconds=early))
    later = claim_points(rules, points, T0, T0 + timedelta(seconds=late))
    assert points <= later <= first <= points + max_pts


# hypothesis takes naive bounds and attaches the zone itself
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001
def test_windows_contain_their_instant(at: datetime) -> None:
    for w in ("day", "week", "month"):
        start = window_start(w, at)
        assert start <= at < window_end(w, start)
    assert window_start("week", at).weekday() == 0  # Monday 00:00 UTC
