"""Platform-neutral views: one per thing (raid post, report, leaderboard), drawn by every adapter.

A view is plain data: a title, lines of plain text (adapters escape them for their markup), and
buttons. Telegram draws it as HTML with an inline keyboard, Discord as an embed with a view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.badges import shown
from core.raids.model import ACTION_LABELS, END_CAUSES, BoardEntry, RaidProgress

STATE_LABELS = {
    "verified": "verified on X",
    "accepted": "accepted by a moderator",
    "unverifiable": "not verifiable",
    "pending": "pending review",
    "rejected": "rejected",
}
STATUS_LABELS = {
    "active": "live",
    "completed": "completed",
    "timeout": "objectives not met",
    "failed": "nobody took part",
    "cancelled": "cancelled",
}


def ended_title(status: str, cause: str | None) -> str:
    """What a finished raid's title says: why it ended (a moderator's end is not "time ran out")."""
    if status in ("failed", "completed") or not cause:
        return STATUS_LABELS.get(status, status)
    return END_CAUSES.get(cause, STATUS_LABELS.get(status, status))


@dataclass(frozen=True)
class Button:
    label: str
    action: str  # join, claim, stats, url
    raid_id: int | None = None
    arg: str | None = None
    url: str | None = None

    @property
    def custom_id(self) -> str | None:
        if self.action == "url":
            return None
        parts = ["nubi", self.action, str(self.raid_id)]
        if self.arg:
            parts.append(self.arg)
        return ":".join(parts)


def parse_custom_id(custom_id: str) -> tuple[str, int, str | None] | None:
    """(action, raid id, arg) from a button id, or None if it is not one of ours."""
    parts = (custom_id or "").split(":")
    if len(parts) not in (3, 4) or parts[0] != "nubi" or not parts[2].isdigit():
        return None
    if parts[1] not in ("join", "claim", "stats"):
        return None
    return parts[1], int(parts[2]), parts[3] if len(parts) == 4 else None


@dataclass(frozen=True)
class View:
    kind: str  # raid, report, leaderboard, info
    title: str
    lines: list[str] = field(default_factory=list)
    buttons: list[Button] = field(default_factory=list)
    url: str | None = None
    color: str = "info"  # info, live, success, warning, danger

    @property
    def text(self) -> str:
        return "\n".join([self.title, *self.lines]) if self.title else "\n".join(self.lines)


def bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def duration_text(seconds: int) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def raid_buttons(p: RaidProgress) -> list[Button]:
    if not p.active:
        return [Button("Open post", "url", p.id, url=p.target_url)]
    buttons = [Button("Join", "join", p.id), Button("Open post", "url", p.id, url=p.target_url)]
    for o in p.objectives:
        buttons.append(Button(f"{ACTION_LABELS[o.action][0].capitalize()} +{o.points}", "claim", p.id, o.action))
    buttons.append(Button("My stats", "stats", p.id))
    return buttons


def raid_view(p: RaidProgress) -> View:
    lines = [p.target_url, ""]
    for o in p.objectives:
        plural = ACTION_LABELS[o.action][1].capitalize()
        mark = " ✓" if o.met else ""
        lines.append(f"{plural}: {bar(o.fraction)} {o.count}/{o.target} ({o.points} pt each){mark}")
    lines.append("")
    lines.append(f"Raiders: {p.participants}/{p.max_participants}")
    if p.active:
        lines.append(f"Time left: {duration_text(p.time_left_seconds)}")
    else:
        lines.append(f"Status: {STATUS_LABELS.get(p.status, p.status)}")
        if p.end_cause:
            lines.append(f"Ended: {END_CAUSES.get(p.end_cause, p.end_cause)}")
    if p.pending:
        lines.append(f"Claims awaiting review: {p.pending}")
    if p.top:
        lines.append("Top raiders: " + ", ".join(f"{e.name} ({e.points})" for e in p.top[:3]))
    if p.lock and p.active:
        lines.append("Chat is locked for the raid.")
    title = f"Raid #{p.id} — {STATUS_LABELS['active'] if p.active else ended_title(p.status, p.end_cause)}"
    color = "live" if p.active else ("success" if p.status == "completed" else "warning")
    return View("raid", title, lines, raid_buttons(p), url=p.target_url, color=color)


def report_view(report: dict[str, Any]) -> View:
    status = report.get("status", "")
    lines = [
        report.get("targetUrl", ""),
        "",
        f"Status: {STATUS_LABELS.get(status, status)}",
        *([f"Ended: {report['endedBecause']}"] if report.get("endedBecause") else []),
        f"Duration: {duration_text(report.get('durationSeconds', 0))}",
        f"Raiders: {report.get('participants', 0)}",
        f"Actions: {report.get('actions', 0)}",
    ]
    for o in report.get("objectives", []):
        plural = ACTION_LABELS.get(o["action"], (o["action"], o["action"] + "s"))[1].capitalize()
        lines.append(f"{plural}: {o['count']}/{o['target']}{' ✓' if o['met'] else ''}")
    lines.append(f"Objectives met: {report.get('objectivesMet', 0)}/{len(report.get('objectives', []))}")
    lines.append(f"Points awarded: {report.get('pointsAwarded', 0)}")
    states = dict(report.get("claimsByState") or {})
    expired = report.get("unsettledAtClose") or 0
    if states:
        words = []
        for k, n in states.items():
            if k == "unverifiable":
                if n - expired:
                    words.append(f"{n - expired} counted on the member's word")
                if expired:
                    words.append(f"{expired} not settled in time (no points)")
            elif n and k in STATE_LABELS:
                words.append(f"{n} {STATE_LABELS[k]}")
        if words:
            lines.append("Claims: " + ", ".join(words))
    if states.get("pending"):
        lines.append("Not final yet: this report updates when the pending claims are settled.")
    top = report.get("topRaiders") or []
    if top:
        lines.append("")
        lines.append("Top raiders:")
        lines += [f"{e['rank']}. {e['name']} — {e['points']} pts" for e in top]
    color = "success" if status == "completed" else "warning"
    title = f"Raid #{report.get('raidId')} report — {ended_title(status, report.get('endCause'))}"
    return View("report", title, lines, url=report.get("targetUrl"), color=color)


WINDOW_TITLES = {"raid": "Raid", "day": "Today's", "week": "This week's", "month": "This month's", "all": "All-time"}


def leaderboard_view(scope: str, entries: list[BoardEntry], *, raid_id: int | None = None) -> View:
    title = f"{WINDOW_TITLES.get(scope, scope)} leaderboard" + (f" (raid #{raid_id})" if raid_id else "")
    if not entries:
        return View("leaderboard", title, ["No points yet. Join a raid to get on the board!"])
    medals = {1: "🥇", 2: "🥈", 3: "🥉"}
    lines = [f"{medals.get(e.rank, f'{e.rank}.')} {e.name}{shown(e.badge)} — {e.points} pts" for e in entries]
    return View("leaderboard", title, lines)


def announcement_view(title: str, entries: list[BoardEntry]) -> View:
    """A scheduled board: titled with its window's dates (chosen in core from the announcement's slot)."""
    if not entries:
        return View("leaderboard", title, ["No points in this window."])
    return replace(leaderboard_view("", entries), title=title)


def info_view(text: str, title: str = "") -> View:
    return View("info", title, text.split("\n"))
