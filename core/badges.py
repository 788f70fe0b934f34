"""Milestone badges: a community names thresholds on its members' all-time points; crossing one earns a badge.

A community's milestones live in its settings (`badges`, typed `100:Raider, 500:Veteran role=@Veterans`).
The ledger (core/ledger.py, the one place points change) calls `award` in the transaction of every
change: a member whose all-time points now reach a milestone gets a `member_badges` row, and the
announcement (outbox kind `badge`) and, on Discord, the role grant (`badge_role`) are owed in that same
transaction. The row's primary key (community, member, threshold) makes the award exactly once, even
when two claims race (their all-time score upserts serialize on one row) or two processes score
them; the outbox delivers each post at least once and never owes it twice.

Rules: a badge once earned stays, even when a revoke or a moderator's removal takes the member below
its threshold again, and crossing it again is not announced again. A milestone added later is earned
at the member's next gain of points (nothing is announced at setting time). The name a badge shows is
the one it had when it was earned.

Live views hear of an award through the event bus (`BadgeEarned`), published after the commit by the
service whose op gained the points: it runs the write inside `collecting()`, and `award` notes each
new badge there (the op runs in the caller's context, core/storage/db.py). An op run again after a
rollback notes the same badge again under the same key, so it is published once per write; only when a
rolled-back attempt noted a badge that a concurrent write then earned first can a live view hear of it
twice (never of a badge that is not earned, and none is missed).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.directory import platforms_of
from core.errors import ValidationError
from core.events import BadgeEarned
from core.i18n import _, normalize, use_language
from core.outbox import enqueue
from core.storage.models import Community, Member, MemberBadge, MemberIdentity, MemberScore, Raid
from core.storage.outbox_models import ChatPost
from core.storage.upsert import insert
from core.windows import EPOCH

if TYPE_CHECKING:
    from core.events import EventBus
    from core.ledger import Entry
    from core.raids.model import BoardEntry
    from core.storage.db import Database
    from core.storage.driver import Sql

KEY = "badges"
MAX_MILESTONES = 20
MAX_NAME = 32
MAX_THRESHOLD = 10_000_000
MEDAL = "🏅"
NONE = "none"
SYNTAX = "<points>:<name> [role=<role>], ... e.g. 100:Raider, 500:Veteran role=@Veterans"

# (community's platform external id, what the moderator typed after role=) -> the role's id, or a
# ValidationError saying why the bot cannot grant it. Registered by adapters of platforms with roles.
RoleCheck = Callable[[str, str], Awaitable[str]]


@dataclass(frozen=True)
class Milestone:
    threshold: int
    name: str
    role: str | None = None  # as typed before the check; the role's id once stored

    def stored(self) -> dict[str, Any]:
        return {"points": self.threshold, "name": self.name, **({"role": self.role} if self.role else {})}

    def text(self) -> str:
        return f"{self.threshold}:{self.name}" + (f" role={self.role}" if self.role else "")


_ROLE = re.compile(r"\s+role\s*=\s*(.*)$", re.IGNORECASE | re.DOTALL)


def _refuse(message: str) -> ValidationError:
    return ValidationError(_("badges: {problem} Write them as {syntax}.").format(problem=message, syntax=SYNTAX),
                           field=KEY)


def parse(value: Any) -> list[Milestone]:
    """Milestones from what a moderator typed (or a REST client sent as text), checked: thresholds whole,
    positive and unique, names present, short and unique. Roles are checked later, per platform."""
    if not isinstance(value, str):
        raise _refuse(_("give the milestones as text."))
    value = value.strip().strip("\"'“”")
    if value.lower() == NONE:
        return []
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise _refuse(_("no milestone given (to have none, set badges to none)."))
    if len(items) > MAX_MILESTONES:
        raise _refuse(_("at most {n} milestones.").format(n=MAX_MILESTONES))
    out: list[Milestone] = []
    for item in items:
        points, colon, rest = item.partition(":")
        shown = item[:40]
        if not colon:
            raise _refuse(_("'{item}' has no ':' between the points and the name.").format(item=shown))
        if not points.strip().isdigit() or not 1 <= int(points) <= MAX_THRESHOLD:
            raise _refuse(_("'{item}': the points must be a whole number from 1 to {most}.").format(
                item=shown, most=MAX_THRESHOLD))
        role = None
        found = _ROLE.search(rest)
        if found:
            role = found.group(1).strip()
            rest = rest[: found.start()]
            if not role:
                raise _refuse(_("'{item}': role= names no role.").format(item=shown))
        name = " ".join(rest.split())
        if not name:
            raise _refuse(_("'{item}' has no badge name.").format(item=shown))
        if len(name) > MAX_NAME:
            raise _refuse(_("the name '{name}' is longer than {most} characters.").format(name=name[:40], most=MAX_NAME))
        out.append(Milestone(int(points), name, role))
    thresholds = [m.threshold for m in out]
    twice = sorted({t for t in thresholds if thresholds.count(t) > 1})
    if twice:
        raise _refuse(_("{points} points named twice.").format(points=twice[0]))
    names = [m.name.lower() for m in out]
    again = next((m.name for m in out if names.count(m.name.lower()) > 1), None)
    if again:
        raise _refuse(_("the name '{name}' is used twice.").format(name=again))
    return sorted(out, key=lambda m: m.threshold)


def milestones(own: dict[str, Any] | None) -> list[Milestone]:
    """A community's milestones from its stored settings document."""
    return [Milestone(int(m["points"]), str(m["name"]), m.get("role")) for m in (own or {}).get(KEY) or []]


def text_form(items: Sequence[Milestone]) -> str:
    return ", ".join(m.text() for m in items) or NONE


async def resolve_roles(items: list[Milestone], platform: str, external_id: str,
                        checks: dict[str, RoleCheck]) -> list[Milestone]:
    """Each `role=` checked by the platform's adapter and replaced by the role's id; refused where the
    platform has no roles, or when no adapter of it runs in this process to check."""
    if not any(m.role for m in items):
        return items
    check = checks.get(platform)
    if check is None:
        if platform == "discord":
            raise ValidationError(_("badges: roles are checked with Discord, and this process is not connected "
                                    "to Discord. Set badges with role= from Discord itself."), field=KEY)
        raise ValidationError(_("badges: {platform} has no roles to grant; remove role= from the milestones.")
                              .format(platform=platform.capitalize()), field=KEY)
    return [replace(m, role=await check(external_id, m.role)) if m.role else m for m in items]


# -- awarding (inside the ledger's transaction) ---------------------------------------------------------

_earned: ContextVar[dict[tuple[int, int, int], BadgeEarned] | None] = ContextVar("nubi_badges_earned", default=None)


@contextmanager
def collecting() -> Iterator[dict[tuple[int, int, int], BadgeEarned]]:
    """Badges awarded by the writes made inside the block, keyed (community, member, threshold):
    publish them with `publish` once the write returned (committed)."""
    found: dict[tuple[int, int, int], BadgeEarned] = {}
    token = _earned.set(found)
    try:
        yield found
    finally:
        _earned.reset(token)


async def publish(bus: EventBus | None, found: dict[tuple[int, int, int], BadgeEarned]) -> None:
    if bus is not None:
        for event in found.values():
            await bus.publish(event)


def badge_key(community_id: int, member_id: int, threshold: int) -> str:
    return f"badge:{community_id}:{member_id}:{threshold}"


def role_key(community_id: int, member_id: int, threshold: int) -> str:
    return f"badgerole:{community_id}:{member_id}:{threshold}"


_TOTAL_SQL = ('SELECT points FROM member_scores WHERE community_id = $1 AND "window" = \'all\' AND window_start = $2'
              " AND member_id = $3")
_HELD_SQL = "SELECT threshold FROM member_badges WHERE community_id = $1 AND member_id = $2"


async def owed(q: Sql, entries: Sequence[Entry], community_id: int, items: Sequence[Milestone]) -> bool:
    """Whether `award` has anything to record for the community's members in `entries` (already written
    and scored): one whose points went up reached a milestone they do not hold. Two reads on the
    driver, so the hot path asks for a session (`award`'s) only when a badge is earned."""
    gains: dict[int, int] = {}
    for e in entries:
        if e.community_id == community_id:
            gains[e.member_id] = gains.get(e.member_id, 0) + e.points
    for member_id, points in gains.items():
        if points <= 0:
            continue
        total = await q.value(_TOTAL_SQL, community_id, q.ts(EPOCH), member_id) or 0
        reached = {m.threshold for m in items if m.threshold <= total}
        if reached and reached - {r[0] for r in await q.rows(_HELD_SQL, community_id, member_id)}:
            return True
    return False


async def award(s: AsyncSession, entries: Sequence[Entry], now: datetime) -> int:
    """Badges crossed by `entries` (already written and scored): recorded, announcement and role grant
    owed. Only members whose points went up are looked at. Returns how many badges were awarded."""
    gains: dict[tuple[int, int], list[Any]] = {}
    for e in entries:
        acc = gains.setdefault((e.community_id, e.member_id), [0, None])
        acc[0] += e.points
        acc[1] = acc[1] or e.raid_id
    gained = {key: raid for key, (points, raid) in gains.items() if points > 0}
    if not gained:
        return 0
    communities = {c for c, _m in gained}
    rows = (await s.execute(select(Community.id, Community.settings).where(Community.id.in_(communities)))).all()
    named = {r.id: milestones(r.settings) for r in rows}
    awarded = 0
    for (community_id, member_id), raid_id in gained.items():
        items = named.get(community_id)
        if not items:
            continue
        total = await s.scalar(select(MemberScore.points).where(
            MemberScore.community_id == community_id, MemberScore.window == "all",
            MemberScore.window_start == EPOCH, MemberScore.member_id == member_id))
        for m in items:
            if m.threshold > (total or 0):
                break
            new = await s.scalar(
                insert(s, MemberBadge)
                .values(community_id=community_id, member_id=member_id, threshold=m.threshold, name=m.name,
                        role_id=m.role, awarded_at=now)
                .on_conflict_do_nothing(index_elements=["community_id", "member_id", "threshold"])
                .returning(MemberBadge.threshold)
            )
            if new is None:
                continue  # earned before: kept, and never announced twice
            awarded += 1
            sink = _earned.get()
            if sink is not None:
                sink[(community_id, member_id, m.threshold)] = BadgeEarned(community_id, member_id, m.threshold,
                                                                           m.name, raid_id)
            await enqueue(s, "badge", badge_key(community_id, member_id, m.threshold), community_id, raid_id, now)
            if m.role:
                await enqueue(s, "badge_role", role_key(community_id, member_id, m.threshold), community_id,
                              raid_id, now)
    return awarded


# -- reading -----------------------------------------------------------------------------------------

async def earned(s: AsyncSession, community_id: int, member_ids: Iterable[int]) -> dict[int, list[str]]:
    """Member id -> names of the badges earned in the community, lowest milestone first."""
    ids = list(set(member_ids))
    if not ids:
        return {}
    rows = (await s.execute(
        select(MemberBadge.member_id, MemberBadge.name)
        .where(MemberBadge.community_id == community_id, MemberBadge.member_id.in_(ids))
        .order_by(MemberBadge.member_id, MemberBadge.threshold)
    )).all()
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r.member_id, []).append(r.name)
    return out


async def with_badges(s: AsyncSession, community_id: int, entries: list[BoardEntry]) -> list[BoardEntry]:
    """Board entries with each member's highest badge in the community."""
    found = await earned(s, community_id, (e.member_id for e in entries))
    return [replace(e, badge=found[e.member_id][-1]) if e.member_id in found else e for e in entries]


async def marked(s: AsyncSession, community_id: int, entries: list[BoardEntry]) -> list[BoardEntry]:
    """Board entries with each member's highest badge and their platforms (a linked member is one
    entry, with every platform they have an account on)."""
    if not entries:
        return entries
    found = await platforms_of(s, [e.member_id for e in entries])
    return [replace(e, platforms=tuple(found.get(e.member_id, ()))) for e in await with_badges(s, community_id, entries)]


def shown(badge: str | None) -> str:
    return f" {MEDAL} {badge}" if badge else ""


@dataclass(frozen=True)
class Award:
    """What delivering a badge post needs: who earned what, where to say it, which role to grant."""

    community_id: int
    member_id: int
    threshold: int
    name: str
    role_id: str | None
    member_name: str
    platform_user_id: str | None  # the member's id on the community's platform
    channel_id: str  # Discord: the channel of the raid that crossed it, else of the community's last raid


def _parse_key(key: str) -> tuple[int, int, int] | None:
    parts = key.split(":")
    if len(parts) != 4 or parts[0] not in ("badge", "badgerole") or not all(p.isdigit() for p in parts[1:]):
        return None
    return int(parts[1]), int(parts[2]), int(parts[3])


class BadgeService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def award_of(self, key: str) -> Award | None:
        """The award an outbox row (`badge:...` or `badgerole:...`) is about; None if it is gone."""
        parsed = _parse_key(key)
        if parsed is None:
            return None
        community_id, member_id, threshold = parsed

        async def op(s: AsyncSession) -> Award | None:
            row = (await s.execute(
                select(MemberBadge.name, MemberBadge.role_id, Member.display_name, Community.platform)
                .join(Member, Member.id == MemberBadge.member_id)
                .join(Community, Community.id == MemberBadge.community_id)
                .where(MemberBadge.community_id == community_id, MemberBadge.member_id == member_id,
                       MemberBadge.threshold == threshold)
            )).first()
            if row is None:
                return None
            user = await s.scalar(select(MemberIdentity.external_id).where(
                MemberIdentity.member_id == member_id, MemberIdentity.platform == row.platform).limit(1))
            raid_id = await s.scalar(select(ChatPost.raid_id).where(ChatPost.key == key))
            channel = await s.scalar(select(Raid.channel_id).where(Raid.id == raid_id)) if raid_id else None
            if not channel:
                channel = await s.scalar(select(Raid.channel_id).where(Raid.community_id == community_id)
                                         .order_by(Raid.id.desc()).limit(1))
            return Award(community_id, member_id, threshold, row.name, row.role_id, row.display_name, user,
                         channel or "")

        return await self.db.read(op)

    async def live(self, event: BadgeEarned) -> dict[str, Any] | None:
        """An award as a live view shows it: who earned which badge, their platforms, and the
        announcement in the community's language. `scope` is the community's `platform:id`, for
        access checks. None when the member or community is gone (merged since)."""
        async def op(s: AsyncSession) -> dict[str, Any] | None:
            name = await s.scalar(select(Member.display_name).where(Member.id == event.member_id))
            community = (await s.execute(select(Community.platform, Community.external_id, Community.settings)
                                         .where(Community.id == event.community_id))).first()
            if name is None or community is None:
                return None
            language = normalize((community.settings or {}).get("language"))
            with use_language(language):
                text = _announcement(name, event.threshold, event.name)
            return {"communityId": event.community_id, "memberId": event.member_id, "name": name,
                    "badge": event.name, "points": event.threshold, "raidId": event.raid_id,
                    "platforms": (await platforms_of(s, [event.member_id]))[event.member_id],
                    "language": language, "text": text, "scope": f"{community.platform}:{community.external_id}"}

        return await self.db.read(op)

    async def of_member(self, community_id: int, member_id: int) -> list[str]:
        return (await self.db.read(lambda s: earned(s, community_id, [member_id]))).get(member_id, [])


def announcement_text(a: Award) -> str:
    return _announcement(a.member_name, a.threshold, a.name)


def _announcement(member: str, points: int, badge: str) -> str:
    return _("{medal} {member} reached {points} points and earned the {badge} badge!").format(
        medal=MEDAL, member=member, points=points, badge=badge)


__all__ = ["Award", "BadgeService", "Milestone", "RoleCheck", "announcement_text", "award", "badge_key", "collecting",
           "earned", "marked", "milestones", "parse", "publish", "resolve_roles", "role_key", "shown", "text_form",
           "with_badges"]
