"""Platform-neutral views: one per thing (raid post, report, leaderboard), drawn by every adapter.

A view is plain data: a title, lines of plain text (adapters escape them for their markup), and
buttons. Telegram draws it as HTML with an inline keyboard, Discord as an embed with a view.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from core.badges import shown
from core.i18n import N_, _, ngettext, use_language
from core.raids.model import END_CAUSES, BoardEntry, RaidProgress, action_word

CLAIM_STATES_COUNTED = ("verified", "accepted", "unverifiable", "pending", "rejected")


def claims_in_state(state: str, n: int, *, review: str = "pending review") -> str:
    """"2 verified on X": a number of claims in one state, in the plural form the language wants."""
    if state == "verified":
        return ngettext("{n} verified on X", "{n} verified on X", n).format(n=n)
    if state == "accepted":
        return ngettext("{n} accepted by a moderator", "{n} accepted by a moderator", n).format(n=n)
    if state == "unverifiable":
        return ngettext("{n} not verifiable", "{n} not verifiable", n).format(n=n)
    if state == "pending" and review == "pending review":
        return ngettext("{n} pending review", "{n} pending review", n).format(n=n)
    if state == "pending":
        return ngettext("{n} pending", "{n} pending", n).format(n=n)
    if state == "rejected":
        return ngettext("{n} rejected", "{n} rejected", n).format(n=n)
    return f"{n} {state}"
STATUS_LABELS = {
    "active": N_("live"),
    "completed": N_("completed"),
    "timeout": N_("objectives not met"),
    "failed": N_("nobody took part"),
    "cancelled": N_("cancelled"),
}


def status_label(status: str) -> str:
    return _(STATUS_LABELS[status]) if status in STATUS_LABELS else status


def end_cause_label(cause: str) -> str:
    return _(END_CAUSES[cause]) if cause in END_CAUSES else cause


def ended_title(status: str, cause: str | None) -> str:
    """What a finished raid's title says: why it ended (a moderator's end is not "time ran out")."""
    if status in ("failed", "completed") or not cause:
        return status_label(status)
    return end_cause_label(cause) if cause in END_CAUSES else status_label(status)


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
        return _("{h}h {m:02d}m").format(h=h, m=m)
    if m:
        return _("{m}m {s:02d}s").format(m=m, s=s)
    return _("{s}s").format(s=s)


def raid_buttons(p: RaidProgress) -> list[Button]:
    if not p.active:
        return [Button(_("Open post"), "url", p.id, url=p.target_url)]
    buttons = [Button(_("Join"), "join", p.id), Button(_("Open post"), "url", p.id, url=p.target_url)]
    for o in p.objectives:
        buttons.append(Button(_("{action} +{points}").format(action=action_word(o.action).capitalize(), points=o.points),
                              "claim", p.id, o.action))
    buttons.append(Button(_("My stats"), "stats", p.id))
    return buttons


def raid_view(p: RaidProgress) -> View:
    """The live raid post, in the language of the raid's community."""
    with use_language(p.language):
        return _raid_view(p)


def _raid_view(p: RaidProgress) -> View:
    lines = [p.target_url, ""]
    for o in p.objectives:
        mark = " ✓" if o.met else ""
        lines.append(ngettext("{actions}: {bar} {count}/{target} ({points} pt each){mark}",
                              "{actions}: {bar} {count}/{target} ({points} pt each){mark}", o.points).format(
            actions=action_word(o.action, plural=True).capitalize(), bar=bar(o.fraction), count=o.count,
            target=o.target, points=o.points, mark=mark))
    lines.append("")
    lines.append(_("Raiders: {count}/{max}").format(count=p.participants, max=p.max_participants))
    if p.active:
        lines.append(_("Time left: {duration}").format(duration=duration_text(p.time_left_seconds)))
    else:
        lines.append(_("Status: {status}").format(status=status_label(p.status)))
        if p.end_cause:
            lines.append(_("Ended: {cause}").format(cause=end_cause_label(p.end_cause)))
    if p.pending:
        lines.append(_("Claims awaiting review: {count}").format(count=p.pending))
    if p.top:
        lines.append(_("Top raiders: {names}").format(names=", ".join(f"{e.name} ({e.points})" for e in p.top[:3])))
    if p.lock and p.active:
        lines.append(_("Chat is locked for the raid."))
    title = _("Raid #{id} — {status}").format(
        id=p.id, status=status_label("active") if p.active else ended_title(p.status, p.end_cause))
    color = "live" if p.active else ("success" if p.status == "completed" else "warning")
    return View("raid", title, lines, raid_buttons(p), url=p.target_url, color=color)


def report_view(report: dict[str, Any]) -> View:
    """A raid's report, in the current language (an adapter posting it sets the community's)."""
    status = report.get("status", "")
    cause = report.get("endCause")
    lines = [
        report.get("targetUrl", ""),
        "",
        _("Status: {status}").format(status=status_label(status)),
        *([_("Ended: {cause}").format(cause=end_cause_label(cause) if cause else report["endedBecause"])]
          if report.get("endedBecause") else []),
        _("Duration: {duration}").format(duration=duration_text(report.get("durationSeconds", 0))),
        _("Raiders: {count}").format(count=report.get("participants", 0)),
        _("Actions: {count}").format(count=report.get("actions", 0)),
    ]
    for o in report.get("objectives", []):
        plural = action_word(o["action"], plural=True).capitalize()
        lines.append(f"{plural}: {o['count']}/{o['target']}{' ✓' if o['met'] else ''}")
    lines.append(_("Objectives met: {met}/{total}").format(
        met=report.get("objectivesMet", 0), total=len(report.get("objectives", []))))
    lines.append(_("Points awarded: {points}").format(points=report.get("pointsAwarded", 0)))
    states = dict(report.get("claimsByState") or {})
    expired = report.get("unsettledAtClose") or 0
    if states:
        words = []
        for k, n in states.items():
            if k == "unverifiable":
                if n - expired:
                    words.append(ngettext("{count} counted on the member's word", "{count} counted on the member's word",
                                          n - expired).format(count=n - expired))
                if expired:
                    words.append(ngettext("{count} not settled in time (no points)",
                                          "{count} not settled in time (no points)", expired).format(count=expired))
            elif n and k in CLAIM_STATES_COUNTED:
                words.append(claims_in_state(k, n))
        if words:
            lines.append(_("Claims: {list}").format(list=", ".join(words)))
    if states.get("pending"):
        lines.append(_("Not final yet: this report updates when the pending claims are settled."))
    top = report.get("topRaiders") or []
    if top:
        lines.append("")
        lines.append(_("Top raiders:"))
        lines += [ngettext("{rank}. {name} — {points} pt", "{rank}. {name} — {points} pts", e["points"]).format(
            rank=e["rank"], name=e["name"], points=e["points"]) for e in top]
    color = "success" if status == "completed" else "warning"
    title = _("Raid #{id} report — {status}").format(id=report.get("raidId"), status=ended_title(status, cause))
    return View("report", title, lines, url=report.get("targetUrl"), color=color)


WINDOW_TITLES = {
    "raid": N_("Raid leaderboard"),
    "day": N_("Today's leaderboard"),
    "week": N_("This week's leaderboard"),
    "month": N_("This month's leaderboard"),
    "all": N_("All-time leaderboard"),
}


def leaderboard_view(scope: str, entries: list[BoardEntry], *, raid_id: int | None = None) -> View:
    title = _(WINDOW_TITLES[scope]) if scope in WINDOW_TITLES else _("{scope} leaderboard").format(scope=scope)
    if raid_id:
        title = _("{board} (raid #{id})").format(board=title, id=raid_id)
    if not entries:
        return View("leaderboard", title, [_("No points yet. Join a raid to get on the board!")])
    medals = {1: "🥇", 2: "🥈", 3: "🥉"}
    lines = [ngettext("{rank} {name}{badge} — {points} pt", "{rank} {name}{badge} — {points} pts", e.points).format(
        rank=medals.get(e.rank, f"{e.rank}."), name=e.name, badge=shown(e.badge), points=e.points) for e in entries]
    return View("leaderboard", title, lines)


def announcement_view(title: str, entries: list[BoardEntry]) -> View:
    """A scheduled board: titled with its window's dates (chosen in core from the announcement's slot)."""
    if not entries:
        return View("leaderboard", title, [_("No points in this window.")])
    return replace(leaderboard_view("", entries), title=title)


def info_view(text: str, title: str = "") -> View:
    return View("info", title, text.split("\n"))
