"""CSV exports of a leaderboard and of a raid report."""

from __future__ import annotations

import csv
import io
from typing import Any

from core.raids.model import BoardEntry


def _safe(value: Any) -> Any:
    """Neutralize spreadsheet formulas in member-provided text (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def board_csv(entries: list[BoardEntry]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["rank", "member_id", "name", "points"])
    for e in entries:
        w.writerow([e.rank, e.member_id, _safe(e.name), e.points])
    return out.getvalue()


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["section", "key", "value", "extra"])
    for key in ("raidId", "status", "endCause", "endedBecause", "targetUrl", "startedAt", "endedAt",
                "durationSeconds", "participants", "actions", "objectivesMet", "pointsAwarded", "completionPct",
                "unsettledAtClose", "final"):
        w.writerow(["summary", key, _safe(report.get(key)), ""])
    for o in report.get("objectives", []):
        w.writerow(["objective", o["action"], o["count"], o["target"]])
    for state, n in (report.get("claimsByState") or {}).items():
        w.writerow(["claims", state, n, ""])
    for e in report.get("topRaiders", []):
        w.writerow(["top", e["rank"], _safe(e["name"]), e["points"]])
    return out.getvalue()
