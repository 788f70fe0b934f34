"""CSV exports of a leaderboard and of a raid report: whole boards, a page at a time.

An export pages through its board with `offset` (EXPORT_PAGE rows per read) and yields CSV text as
it goes, so a raid of 700 exports 700 rows and memory stays flat however big the board is.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from core.raids.model import BoardEntry

EXPORT_PAGE = 500  # board rows per database read while exporting

Fetch = Callable[[int, int], Awaitable[list[BoardEntry]]]  # (limit, offset) -> one page of a board


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


async def pages(fetch: Fetch, page: int = EXPORT_PAGE) -> AsyncIterator[list[BoardEntry]]:
    """Every entry of a board, a page at a time, until a short page says it is done."""
    offset = 0
    while True:
        rows = await fetch(page, offset)
        if rows:
            yield rows
        if len(rows) < page:
            return
        offset += page


def _lines(rows: Iterable[list[Any]]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerows(rows)
    return out.getvalue()


async def board_csv_stream(fetch: Fetch, page: int = EXPORT_PAGE) -> AsyncIterator[str]:
    """The whole board as CSV (the same columns as `board_csv`), streamed page by page."""
    yield _lines([["rank", "member_id", "name", "points"]])
    async for entries in pages(fetch, page):
        yield _lines([e.rank, e.member_id, _safe(e.name), e.points] for e in entries)


async def report_csv_stream(report: dict[str, Any], fetch: Fetch, page: int = EXPORT_PAGE) -> AsyncIterator[str]:
    """The report as CSV, then one `raider` row (rank, name, points) for every raider on the raid's
    board: the stored report keeps only its top ten."""
    yield report_csv(report)
    async for entries in pages(fetch, page):
        yield _lines(["raider", e.rank, _safe(e.name), e.points] for e in entries)


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
