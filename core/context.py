"""A compact context of a member (or a session) for an AI agent that talks to the community."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock, to_ms
from core.directory import member_uuid
from core.errors import NotFound
from core.leaderboards import LeaderboardService
from core.member_links.service import platforms
from core.raids.service import RaidService
from core.sessions.service import SessionService
from core.storage.db import Database
from core.storage.models import (
    Community,
    CommunityMember,
    Member,
    NubiSession,
    Raid,
    RaidAction,
    RaidParticipant,
    SessionMessage,
)
from core.windows import window_start


class ContextService:
    def __init__(
        self, db: Database, clock: Clock, raids: RaidService, boards: LeaderboardService, sessions: SessionService
    ) -> None:
        self.db = db
        self.clock = clock
        self.raids = raids
        self.boards = boards
        self.sessions = sessions

    async def for_member(self, member_id: int, *, session_id: str | None = None) -> dict[str, Any]:
        now = self.clock.now()

        async def op(s: AsyncSession) -> dict[str, Any]:
            member = await s.get(Member, member_id)
            if member is None:
                raise NotFound(f"Member {member_id} not found")
            sid = session_id or await s.scalar(
                select(NubiSession.id)
                .where(NubiSession.user_id == member_uuid(member_id), NubiSession.status == "active",
                       NubiSession.expires_at > now)
                .order_by(NubiSession.last_activity.desc())
                .limit(1)
            )
            session: dict[str, Any] | None = None
            messages: list[dict[str, Any]] = []
            if sid:
                row = await s.get(NubiSession, sid)
                if row is not None:
                    session = {"sessionId": row.id, "type": row.session_type, "expiresAt": row.expires_at.isoformat(),
                               "renewalCount": row.renewal_count}
                    msgs = (await s.scalars(
                        select(SessionMessage).where(SessionMessage.session_id == sid)
                        .order_by(SessionMessage.created_at.desc()).limit(5)
                    )).all()
                    messages = [{"content": m.content[:280], "isAgent": m.is_agent, "createdAt": to_ms(m.created_at)}
                                for m in reversed(msgs)]
            communities = (await s.execute(
                select(Community.id, Community.platform, Community.external_id, Community.title)
                .join(CommunityMember, CommunityMember.community_id == Community.id)
                .where(CommunityMember.member_id == member_id)
            )).all()
            active_ids = (await s.scalars(
                select(Raid.id).where(Raid.status == "active", Raid.community_id.in_([c[0] for c in communities]))
            )).all() if communities else []
            history = (await s.execute(
                select(Raid.id, Raid.target_url, Raid.status, RaidParticipant.points, Raid.started_at)
                .join(RaidParticipant, RaidParticipant.raid_id == Raid.id)
                .where(RaidParticipant.member_id == member_id)
                .order_by(Raid.started_at.desc()).limit(5)
            )).all()
            days = (await s.scalars(
                select(func.date(RaidParticipant.joined_at)).where(RaidParticipant.member_id == member_id).distinct()
            )).all()
            claim_states: dict[int, dict[str, int]] = {}
            for community_id, state, n in (await s.execute(
                select(Raid.community_id, RaidAction.verification, func.count())
                .join(Raid, Raid.id == RaidAction.raid_id)
                .where(RaidAction.member_id == member_id)
                .group_by(Raid.community_id, RaidAction.verification)
            )).all():
                claim_states.setdefault(community_id, {})[state] = n
            return {
                "member": {"id": member.id, "name": member.display_name, "xHandle": member.x_handle,
                           "xHandleVerified": member.x_handle_verified,
                           "platforms": list(await platforms(s, member.id))},
                "session": session,
                "recentMessages": messages,
                "communities": [{"id": c[0], "platform": c[1], "chatId": c[2], "title": c[3]} for c in communities],
                "activeRaidIds": list(active_ids),
                "recentRaids": [{"raidId": h[0], "target": h[1], "status": h[2], "points": h[3],
                                 "startedAt": h[4].isoformat()} for h in history],
                "streakDays": _streak([str(d) for d in days if d], now.date()),
                "claimStates": claim_states,
            }

        ctx = await self.db.read(op)
        standings = []
        claim_states = ctx.pop("claimStates")
        for c in ctx["communities"]:
            rank, points = await self.boards.rank(c["id"], member_id, "all")
            week_rank, week_points = await self.boards.rank(c["id"], member_id, "week")
            standings.append({"communityId": c["id"], "points": points, "rank": rank,
                              "weekPoints": week_points, "weekRank": week_rank,
                              # verified (a machine saw it) and accepted (a moderator) kept apart
                              "claims": claim_states.get(c["id"], {})})
        ctx["standings"] = standings
        ctx["activeRaids"] = [(await self.raids.progress(rid, top=3)).as_dict() for rid in ctx.pop("activeRaidIds")]
        ctx["weekStartsAt"] = window_start("week", now).isoformat()
        ctx["text"] = render_prompt(ctx)
        return ctx

    async def for_session(self, session_id: str) -> dict[str, Any]:
        info = await self.sessions.get(session_id)
        member_id = await self.db.read(lambda s: _member_for_uuid(s, info.user_id))
        if member_id is None:
            page = await self.sessions.messages(session_id, limit=5)
            ctx = {"member": None, "session": info.as_api(),
                   "recentMessages": [m.as_api() for m in reversed(page.messages)],
                   "activeRaids": [], "standings": [], "recentRaids": [], "streakDays": 0}
            ctx["text"] = render_prompt(ctx)
            return ctx
        return await self.for_member(member_id, session_id=session_id)


async def _member_for_uuid(s: AsyncSession, user_uuid: str) -> int | None:
    """Sessions API users are members whose UUID we derived; search the members we know."""
    from core.storage.models import MemberIdentity

    ident = await s.scalar(
        select(MemberIdentity.member_id).where(MemberIdentity.platform == "web", MemberIdentity.external_id == user_uuid)
    )
    return ident


def _streak(days: list[str], today: date) -> int:
    seen = {date.fromisoformat(d[:10]) for d in days}
    streak = 0
    day = today if today in seen else today - timedelta(days=1)
    while day in seen:
        streak += 1
        day -= timedelta(days=1)
    return streak


def claim_words(claims: dict[str, int]) -> str:
    """"2 verified on X, 1 accepted by a moderator": never one number for both."""
    from core.views import CLAIM_STATES_COUNTED, claims_in_state

    return ", ".join(claims_in_state(k, claims[k], review="pending") for k in CLAIM_STATES_COUNTED if claims.get(k))


def render_prompt(ctx: dict[str, Any]) -> str:
    lines = []
    m = ctx.get("member")
    if m:
        handle = f", X @{m['xHandle']}{'' if m['xHandleVerified'] else ' (unproven)'}" if m.get("xHandle") else ""
        lines.append(f"Member: {m['name']} (#{m['id']}{handle})")
    for st in ctx.get("standings", []):
        rank = f"rank {st['rank']}" if st["rank"] else "unranked"
        lines.append(f"Community {st['communityId']}: {st['points']} pts all time ({rank}); {st['weekPoints']} pts this week")
        if st.get("claims"):
            lines.append("  claims: " + claim_words(st["claims"]))
    if ctx.get("streakDays"):
        lines.append(f"Raid streak: {ctx['streakDays']} day(s)")
    for r in ctx.get("activeRaids", []):
        lines.append(f"Active raid #{r['id']} on {r['targetUrl']}: {r['completionPct']}% done, "
                     f"{r['participants']} raiders, {r['timeLeftSeconds'] // 60} min left")
    for r in ctx.get("recentRaids", []):
        lines.append(f"Past raid #{r['raidId']} ({r['status']}): earned {r['points']} pts")
    for msg in ctx.get("recentMessages", []):
        who = "nubi" if msg.get("isAgent") else "member"
        lines.append(f"{who}: {msg['content']}")
    return "\n".join(lines) if lines else "No context yet."
