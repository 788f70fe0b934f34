"""Points: the objective's points per accepted claim plus the community's bonuses. Pure functions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from core.config import Bonuses


@dataclass(frozen=True)
class ScoringRules:
    early_joiners: int = 10
    early_joiner_points: int = 5
    speed_window_minutes: int = 5
    speed_max_points: int = 3
    completion_points: int = 10

    @classmethod
    def from_bonuses(cls, b: Bonuses) -> ScoringRules:
        return cls(**b.model_dump())

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ScoringRules:
        known = {k: int(v) for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def early_joiner_bonus(rules: ScoringRules, position: int) -> int:
    return rules.early_joiner_points if 0 < position <= rules.early_joiners else 0


def speed_bonus(rules: ScoringRules, raid_started: datetime, claimed_at: datetime) -> int:
    """Full bonus at the start, decaying linearly to nothing at the end of the speed window."""
    window = rules.speed_window_minutes * 60
    if window <= 0 or rules.speed_max_points <= 0:
        return 0
    elapsed = (claimed_at - raid_started).total_seconds()
    if elapsed < 0 or elapsed >= window:
        return 0
    return round(rules.speed_max_points * (1 - elapsed / window))


def claim_points(rules: ScoringRules, objective_points: int, raid_started: datetime, claimed_at: datetime) -> int:
    return objective_points + speed_bonus(rules, raid_started, claimed_at)
