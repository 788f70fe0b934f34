"""The session > agent > global timeout hierarchy and its clamping rules (sessions-api.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from core.config import AgentConfig, SessionsConfig
from core.errors import ValidationError

FIELDS = ("timeoutMinutes", "autoRenew", "maxDurationMinutes", "warningThresholdMinutes")


@dataclass(frozen=True)
class TimeoutConfig:
    timeout_minutes: int
    auto_renew: bool
    max_duration_minutes: int
    warning_threshold_minutes: int

    def as_api(self) -> dict[str, Any]:
        return {
            "timeoutMinutes": self.timeout_minutes,
            "autoRenew": self.auto_renew,
            "maxDurationMinutes": self.max_duration_minutes,
            "warningThresholdMinutes": self.warning_threshold_minutes,
        }


def _number(v: Any) -> float | None:
    """JavaScript's Number(v) for the values JSON can carry; None where that is NaN."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return None if math.isnan(v) else float(v)
    if isinstance(v, str):
        try:
            f = float(v.strip()) if v.strip() else 0.0
        except ValueError:
            return None
        return None if math.isnan(f) else f
    return None


def coerce_session_overrides(raw: Any, g: SessionsConfig, *, strict_timeout: bool = False) -> dict[str, Any]:
    """Coerce a client's timeoutConfig as the spec says; `strict_timeout` refuses instead of clamping."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValidationError("timeoutConfig must be an object", field="timeoutConfig")
    unknown = set(raw) - set(FIELDS)
    if unknown:
        raise ValidationError(
            f"timeoutConfig has unknown field(s) {sorted(unknown)}", field="timeoutConfig"
        )
    out: dict[str, Any] = {}
    if "timeoutMinutes" in raw and raw["timeoutMinutes"] is not None:
        n = _number(raw["timeoutMinutes"])
        if strict_timeout:
            if n is None or not (g.min_timeout_minutes <= n <= g.max_timeout_minutes):
                raise ValidationError(
                    f"timeoutMinutes must be a number from {g.min_timeout_minutes} to {g.max_timeout_minutes}",
                    field="timeoutMinutes",
                )
            out["timeoutMinutes"] = int(n)
        else:
            out["timeoutMinutes"] = (
                g.default_timeout_minutes
                if n is None
                else int(max(g.min_timeout_minutes, min(g.max_timeout_minutes, n)))
            )
    if "autoRenew" in raw and raw["autoRenew"] is not None:
        if not isinstance(raw["autoRenew"], bool):
            raise ValidationError("autoRenew must be true or false", field="autoRenew")
        out["autoRenew"] = raw["autoRenew"]
    if "maxDurationMinutes" in raw and raw["maxDurationMinutes"] is not None:
        n = _number(raw["maxDurationMinutes"])
        out["maxDurationMinutes"] = g.max_duration_minutes if n is None else n  # finished in resolve()
    if "warningThresholdMinutes" in raw and raw["warningThresholdMinutes"] is not None:
        n = _number(raw["warningThresholdMinutes"])
        out["warningThresholdMinutes"] = g.warning_threshold_minutes if n is None else int(max(1, n))
    return out


def resolve(session: dict[str, Any], agent: AgentConfig | None, g: SessionsConfig) -> TimeoutConfig:
    """Most specific first: the session's values, then the agent's, then the global defaults."""

    def pick(key: str, agent_value: Any, default: Any) -> Any:
        if session.get(key) is not None:
            return session[key]
        return agent_value if agent_value is not None else default

    timeout = int(pick("timeoutMinutes", agent.timeout_minutes if agent else None, g.default_timeout_minutes))
    auto_renew = bool(pick("autoRenew", agent.auto_renew if agent else None, g.auto_renew))
    max_duration = pick(
        "maxDurationMinutes", agent.max_duration_minutes if agent else None, g.max_duration_minutes
    )
    max_duration = int(max(timeout, min(2 * g.max_timeout_minutes, max_duration)))
    warning = int(
        pick(
            "warningThresholdMinutes",
            agent.warning_threshold_minutes if agent else None,
            g.warning_threshold_minutes,
        )
    )
    return TimeoutConfig(timeout, auto_renew, max_duration, max(1, warning))


def expires_at(created_at: datetime, base: datetime, cfg: TimeoutConfig) -> datetime:
    """`base + timeout`, never later than `created_at + maxDuration`."""
    return min(
        base + timedelta(minutes=cfg.timeout_minutes),
        created_at + timedelta(minutes=cfg.max_duration_minutes),
    )
