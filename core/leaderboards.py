"""Community leaderboards over windows (from the maintained score table), ranks, and window history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from core.badges import with_badges
from core.clock import Clock
from core.config import Settings
from core.errors import ValidationError
from core.events import AnnouncementDue
from core.i18n import _, use_language
from core.raids.model import BoardEntry
from core.storage.db import Database
from core.storage.models import (
    Community,
    CommunityMember,
    LeaderboardWindow,
    Member,
    MemberIdentity,
    MemberScore,
    MemberScoreSlice,
)
from core.storage.upsert import insert
from core.views import View, announcement_view
from core.windows import WINDOWS, AnnouncedWindow, announced_window, window_end, window_start


def excluded_members_clause(settings: Settings, community_id: int, member_col: Any) -> Any:
    """A WHERE clause leaving off excluded members, moderators (if configured) and configured ids."""
    # Spelled as the partial index ix_community_members_off_board is, so the planner can use it.
    off = text("(community_members.excluded OR community_members.is_moderator)") \
        if settings.leaderboard.exclude_moderators else CommunityMember.excluded.is_(True)
    clause = ~exists().where(
        CommunityMember.community_id == community_id, CommunityMember.member_id == member_col, off
    )
    pairs = [p.split(":", 1) for p in settings.leaderboard.exclude_members if ":" in p]
    if pairs:
        clause = and_(
            clause,
            ~exists().where(
                MemberIdentity.member_id == member_col,
                or_(*[and_(MemberIdentity.platform == a, MemberIdentity.external_id == b) for a, b in pairs]),
            ),
        )
    return clause


def _board_query(settings: Settings, community_id: Any, window: Any, start: Any) -> Any:
    """(member id, name, points) of one board, best first; ties go to whoever got there first."""
    return (
        select(MemberScore.member_id, Member.display_name, MemberScore.points)
        .join(Member, Member.id == MemberScore.member_id)
        .where(
            MemberScore.community_id == community_id,
            MemberScore.window == window,
            MemberScore.window_start == start,
            MemberScore.points > 0,
            excluded_members_clause(settings, community_id, MemberScore.member_id),
        )
        .order_by(MemberScore.points.desc(), MemberScore.last_scored_at.asc(), MemberScore.member_id)
    )


MAX_PAGE = 100  # entries per page of a JSON board; CSV exports page through the whole board


def check_window(window: str) -> str:
    if window not in WINDOWS:
        raise ValidationError(_("window must be one of {windows}").format(windows=", ".join(WINDOWS)), field="window")
    return window


class LeaderboardService:
    def __init__(self, db: Database, clock: Clock, settings: Settings) -> None:
        self.db = db
        self.clock = clock
        self.settings = settings
        # Built once (the exclusions are fixed by the settings): a board read only binds values.
        self._board = (
            _board_query(settings, bindparam("community_id"), bindparam("window"), bindparam("start"))
            .limit(bindparam("top")).offset(bindparam("offset"))
        )

    async def board(
        self, community_id: int, window: str, *, top: int = 10, offset: int = 0, at: datetime | None = None
    ) -> list[BoardEntry]:
        """One page of a board: `top` entries (at most MAX_PAGE) from `offset`."""
        check_window(window)
        if not 1 <= top <= MAX_PAGE:
            raise ValidationError(_("top must be between 1 and {max}").format(max=MAX_PAGE), field="top")
        return await self.page(community_id, window, top, offset, at=at)

    async def page(
        self, community_id: int, window: str, limit: int, offset: int, *, at: datetime | None = None
    ) -> list[BoardEntry]:
        """Any slice of a board, for exports that page through all of it (core/export.py)."""
        check_window(window)
        if limit < 1 or offset < 0:
            raise ValidationError("a page needs a positive size and an offset of 0 or more", field="offset")
        top = limit
        start = window_start(window, at or self.clock.now())

        async def op(s: AsyncSession) -> list[BoardEntry]:
            params = {"community_id": community_id, "window": window, "start": start, "top": top, "offset": offset}
            rows = (await s.execute(self._board, params)).all()
            return await with_badges(s, community_id, [BoardEntry(offset + i + 1, r[0], r[1], r[2])
                                                       for i, r in enumerate(rows)])

        return await self.db.read(op)

    async def board_between(self, community_id: int, window: AnnouncedWindow, *, top: int = 10) -> list[BoardEntry]:
        """The board of an announced window. A window that is one of the stored UTC windows (or all
        time) reads its running score rows; any other (a time zone's week, a window so far) sums the
        quarter-hour slices inside [start, end)."""
        aligned = window.window == "all" or (
            window.start == window_start(window.window, window.start)
            and (window.running or window.end == window_end(window.window, window.start))
        )
        if aligned:
            return await self.board(community_id, window.window, top=top, at=window.start)
        sl = MemberScoreSlice
        points = func.sum(sl.points).label("points")
        query = (
            select(sl.member_id, Member.display_name, points)
            .join(Member, Member.id == sl.member_id)
            .where(sl.community_id == community_id, sl.slice_start >= window.start, sl.slice_start < window.end,
                   excluded_members_clause(self.settings, community_id, sl.member_id))
            .group_by(sl.member_id, Member.display_name)
            .having(func.sum(sl.points) > 0)
            .order_by(points.desc(), func.max(sl.last_scored_at), sl.member_id)
            .limit(top)
        )

        async def op(s: AsyncSession) -> list[BoardEntry]:
            rows = (await s.execute(query)).all()
            return await with_badges(s, community_id, [BoardEntry(i + 1, r[0], r[1], int(r[2]))
                                                       for i, r in enumerate(rows)])

        return await self.db.read(op)

    async def announcement(self, event: AnnouncementDue) -> View:
        """What a scheduled announcement shows, chosen from its slot (not from when it is drawn)."""
        settings = await self.db.read(lambda s: s.scalar(
            select(Community.settings).where(Community.id == event.community_id)))
        with use_language((settings or {}).get("language")):  # the board is worded for its community
            window = announced_window(event.window, datetime.fromisoformat(event.slot), event.timezone)
            entries = await self.board_between(event.community_id, window, top=event.top_n)
            return announcement_view(window.title, entries)

    async def rank(self, community_id: int, member_id: int, window: str = "all") -> tuple[int | None, int]:
        """(rank or None when unranked, points) of a member on a community board."""
        start = window_start(check_window(window), self.clock.now())

        async def op(s: AsyncSession) -> tuple[int | None, int]:
            mine = (
                await s.execute(
                    select(MemberScore.points, MemberScore.last_scored_at).where(
                        MemberScore.community_id == community_id,
                        MemberScore.window == window,
                        MemberScore.window_start == start,
                        MemberScore.member_id == member_id,
                    )
                )
            ).first()
            if mine is None or mine.points <= 0:
                return None, mine.points if mine else 0
            ahead = await s.scalar(
                select(func.count()).where(
                    MemberScore.community_id == community_id,
                    MemberScore.window == window,
                    MemberScore.window_start == start,
                    or_(
                        MemberScore.points > mine.points,
                        and_(MemberScore.points == mine.points, MemberScore.last_scored_at < mine.last_scored_at),
                        and_(
                            MemberScore.points == mine.points,
                            MemberScore.last_scored_at == mine.last_scored_at,
                            MemberScore.member_id < member_id,
                        ),
                    ),
                    excluded_members_clause(self.settings, community_id, MemberScore.member_id),
                )
            )
            return (ahead or 0) + 1, mine.points

        return await self.db.read(op)

    async def close_windows(self, top: int = 10) -> int:
        """Keep the winners of every window that has ended and has no history row yet. Idempotent."""
        now = self.clock.now()

        async def op(s: AsyncSession) -> int:
            closed = 0
            for window in ("day", "week", "month"):
                current = window_start(window, now)
                pending = (
                    await s.execute(
                        select(MemberScore.community_id, MemberScore.window_start)
                        .where(MemberScore.window == window, MemberScore.window_start < current)
                        .where(
                            ~exists().where(
                                LeaderboardWindow.community_id == MemberScore.community_id,
                                LeaderboardWindow.window == window,
                                LeaderboardWindow.window_start == MemberScore.window_start,
                            )
                        )
                        .distinct()
                    )
                ).all()
                for community_id, start in pending:
                    rows = (
                        await s.execute(_board_query(self.settings, community_id, window, start).limit(top))
                    ).all()
                    winners = [
                        {"rank": i + 1, "memberId": r[0], "name": r[1], "points": r[2]} for i, r in enumerate(rows)
                    ]
                    res = await s.execute(
                        insert(s, LeaderboardWindow)
                        .values(
                            community_id=community_id,
                            window=window,
                            window_start=start,
                            window_end=window_end(window, start),
                            closed_at=now,
                            winners=winners,
                        )
                        .on_conflict_do_nothing(index_elements=["community_id", "window", "window_start"])
                    )
                    closed += res.rowcount or 0
            return closed

        return await self.db.write(op)

    async def history(self, community_id: int, window: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        async def op(s: AsyncSession) -> list[dict[str, Any]]:
            q = (
                select(LeaderboardWindow)
                .where(LeaderboardWindow.community_id == community_id)
                .order_by(LeaderboardWindow.window_start.desc())
                .limit(limit)
            )
            if window:
                q = q.where(LeaderboardWindow.window == check_window(window))
            return [
                {
                    "window": r.window,
                    "windowStart": r.window_start.isoformat(),
                    "windowEnd": r.window_end.isoformat(),
                    "closedAt": r.closed_at.isoformat(),
                    "winners": r.winners,
                }
                for r in (await s.scalars(q)).all()
            ]

        return await self.db.read(op)
