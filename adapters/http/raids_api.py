"""The raid and community REST API under /api, plus the original NUBI routes under /api/raids/sessions.

Every route that touches a community's data first passes `authorize_community`, so a key scoped to
one community can neither read nor change another's; lists are narrowed to the key's community.
Bodies are checked by the models in schemas.py before any service runs; domain errors are mapped
to the documented error shape by errors.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from core import access, catalog
from core.directory import ChatRef, MemberRef
from core.errors import AgentNotFound, NotFound, RaidNotFound, SessionNotFound, ValidationError
from core.export import board_csv_stream, report_csv_stream
from core.leaderboards import MAX_PAGE
from core.raids.model import ClaimResult, JoinResult, RaidProgress, RaidSpec
from core.services import Services
from core.targets import member_in_community
from core.windows import window_start

from .schemas import (
    MAX_DB_ID,
    AuditOut,
    BanIn,
    BanList,
    BanResult,
    ClaimIn,
    ClaimOut,
    CommunityBoardOut,
    CommunityList,
    CommunityOut,
    ContextOut,
    DbId,
    EndIn,
    EndOut,
    Envelope,
    HistoryOut,
    JoinIn,
    JoinOut,
    LinkConflictsOut,
    MemberIn,
    MetricsOut,
    NubiAction,
    NubiActionOut,
    NubiBoard,
    NubiJoin,
    NubiJoinOut,
    NubiMetricsOut,
    NubiRaidCreate,
    PointsIn,
    PointsOut,
    RaidBoardOut,
    RaidCreate,
    RaidList,
    RaidOut,
    RaidSessionList,
    RaidSessionOut,
    RaidStatus,
    ReportOut,
    ReviewIn,
    ReviewQueueOut,
    RevokeIn,
    RevokeOut,
    ScheduleIn,
    ScheduleList,
    ScheduleOut,
    Window,
)
from .security import across_communities, authorize_community, caller

router = APIRouter()
RAIDS, COMMUNITIES, CONTEXT, NUBI = "raids", "communities", "context", "raids (NUBI sessions)"
CSV = {200: {"content": {"text/csv": {}}, "description": "CSV file"}}
Top = Query(10, ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}; page on with `offset`")
Offset = Query(0, ge=0, le=MAX_DB_ID, description="entries to skip (the next page starts at offset + top)")
Limit = Query(50, ge=1, le=100)


def _svc(request: Request) -> Services:
    return request.app.state.services


async def _raid(request: Request, raid_id: int, top: int = 5) -> RaidProgress:
    progress = await _svc(request).raids.progress(raid_id, top=top)
    await authorize_community(request, progress.community_id)
    return progress


async def _raid_dicts(request: Request, raids: list[RaidProgress]) -> list[dict[str, Any]]:
    """Raids the caller may see, with their partner chats (of other communities: read past the row scope)."""
    with across_communities():
        return await catalog.raid_dicts(_svc(request).db, raids)


async def _authorize_raid(request: Request, raid_id: int) -> None:
    """The caller may act on this raid: free for admin keys, one remembered lookup for scoped ones."""
    if caller(request).admin:
        return
    community_id = await catalog.community_of_raid(_svc(request).db, raid_id)
    if community_id is None:
        raise RaidNotFound(f"Raid {raid_id} not found")
    await authorize_community(request, community_id)


async def _community(request: Request, community_id: int) -> dict[str, Any]:
    await authorize_community(request, community_id)
    found = await catalog.communities(_svc(request).db, community_id=community_id)
    if not found:
        raise NotFound(f"Community {community_id} not found")
    return found[0]


async def _list_scope(request: Request, community_id: int | None) -> tuple[int | None, bool]:
    """(community filter, whether anything may be listed): the asked community, else the key's own."""
    if community_id is not None:
        await authorize_community(request, community_id)
        return community_id, True
    scope = access.list_scope(caller(request))
    if scope is None:
        return None, True
    platform, _, external = scope.partition(":")
    own = await catalog.community_id_of(_svc(request).db, platform, external)
    return own, own is not None


def _chat_for(request: Request, wanted: ChatRef | None, fallback: ChatRef) -> ChatRef:
    """The chat a raid may start in: a scoped key only in its own (and by default there)."""
    return access.chat_for_raid(caller(request), wanted, fallback)


async def _known_member(request: Request, community_id: int, member_id: int) -> None:
    """Members are named by id, and only in the community they used nubi in: never a guess."""
    if not await _svc(request).db.read(lambda s: member_in_community(s, community_id, member_id)):
        raise ValidationError(f"there is no member #{member_id} in community #{community_id}", field="memberId")


def _member(m: MemberIn) -> MemberRef:
    return MemberRef(m.platform, m.id, m.name, m.username)


def _join(r: JoinResult) -> dict[str, Any]:
    return {"raidId": r.raid_id, "memberId": r.member_id, "position": r.position, "already": r.already,
            "bonus": r.bonus}


def _claim(r: ClaimResult) -> dict[str, Any]:
    return {"claimId": r.claim_id, "raidId": r.raid_id, "memberId": r.member_id, "action": r.action,
            "verification": r.verification, "points": r.points, "completionBonus": r.completion_bonus,
            "already": r.already, "raidCompleted": r.raid_completed}


def _csv(chunks: AsyncIterator[str], filename: str) -> Response:
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- the original NUBI routes (declared first: /api/raids/sessions is not a raid id) ------------------


def _session_view(p: RaidProgress) -> dict[str, Any]:
    return {
        "sessionId": p.session_id, "raidId": p.id, "communityId": p.community_id, "targetUrl": p.target_url,
        "objectives": [{"type": o.action, "count": o.target, "points": o.points, "completed": o.count}
                       for o in p.objectives],
        "maxParticipants": p.max_participants, "duration": int((p.ends_at - p.started_at).total_seconds()),
        "createdAt": p.started_at.isoformat(), "expiresAt": p.ends_at.isoformat(),
        "progress": {"status": p.status, "participantCount": p.participants, "totalActions": p.actions,
                     "completionRate": p.completion_pct, "timeRemaining": p.time_left_seconds},
    }


async def _session_raid(request: Request, session_id: str) -> RaidProgress:
    raid_id = await catalog.raid_of_session(_svc(request).db, session_id)
    if raid_id is None:
        raise SessionNotFound(f"Raid session {session_id} not found")
    return await _raid(request, raid_id)


@router.post("/api/raids/sessions", status_code=201, response_model=Envelope[RaidSessionOut], tags=[NUBI],
             summary="Create a raid session (starts a raid)")
async def nubi_create(request: Request, body: NubiRaidCreate) -> dict[str, Any]:
    svc = _svc(request)
    agent = svc.settings.agent(body.agent_id) if body.agent_id else svc.settings.agents[0]
    if agent is None:
        raise AgentNotFound(f"Agent {body.agent_id} is not a configured agent")
    wanted = (ChatRef(body.community.platform, body.community.id, body.community.title, body.community.channel)
              if body.community else None)
    chat = _chat_for(request, wanted, ChatRef("web", agent.id, agent.name))
    spec = RaidSpec(body.target_url, {o.type: o.count for o in body.objectives},
                    {o.type: o.points for o in body.objectives if o.points is not None},
                    body.duration, body.max_participants, False, body.replace, body.verification)
    progress = await svc.raids.start(chat, spec)
    return {"success": True, "data": _session_view(progress)}


@router.get("/api/raids/sessions", response_model=Envelope[RaidSessionList], tags=[NUBI],
            summary="List raid sessions")
async def nubi_list(request: Request, status: RaidStatus | None = None, limit: int = Limit) -> dict[str, Any]:
    community_id, anything = await _list_scope(request, None)
    raids = await _svc(request).raids.list(community_id=community_id, status=status, limit=limit) if anything else []
    sessions = [_session_view(p) for p in raids]
    return {"success": True, "data": {"sessions": sessions, "total": len(sessions)}}


@router.get("/api/raids/sessions/{session_id}", response_model=Envelope[RaidSessionOut], tags=[NUBI],
            summary="Get a raid session")
async def nubi_get(request: Request, session_id: str) -> dict[str, Any]:
    return {"success": True, "data": _session_view(await _session_raid(request, session_id))}


@router.post("/api/raids/sessions/{session_id}/join", response_model=Envelope[NubiJoinOut], tags=[NUBI],
             summary="Join a raid session")
async def nubi_join(request: Request, session_id: str, body: NubiJoin) -> dict[str, Any]:
    p = await _session_raid(request, session_id)
    member = _member(body.member) if body.member else MemberRef(
        "telegram", body.telegram_id or "", body.telegram_username or "", body.telegram_username)
    result = await _svc(request).raids.join(p.id, member)
    return {"success": True, "data": {"sessionId": session_id, "raidId": p.id, "participant": _join(result)}}


@router.post("/api/raids/sessions/{session_id}/actions", response_model=Envelope[NubiActionOut], tags=[NUBI],
             summary="Record (claim) a raid action")
async def nubi_action(request: Request, session_id: str, body: NubiAction) -> dict[str, Any]:
    p = await _session_raid(request, session_id)
    member = _member(body.member) if body.member else MemberRef("telegram", body.participant_id or "")
    result = await _svc(request).raids.claim(p.id, member, body.action_type, proof_url=body.proof_url)
    return {"success": True, "data": {"recorded": not result.already, "claim": _claim(result)}}


@router.get("/api/raids/sessions/{session_id}/leaderboard", response_model=Envelope[NubiBoard], tags=[NUBI],
            summary="A raid session's leaderboard")
async def nubi_board(request: Request, session_id: str, limit: int = Limit) -> dict[str, Any]:
    p = await _session_raid(request, session_id)
    entries = await _svc(request).raids.leaderboard(p.id, top=limit)
    board = [{"rank": e.rank, "memberId": e.member_id, "name": e.name, "pointsEarned": e.points,
              "actionsCompleted": e.claims} for e in entries]
    return {"success": True, "data": {"leaderboard": board}}


@router.get("/api/raids/sessions/{session_id}/metrics", response_model=Envelope[NubiMetricsOut], tags=[NUBI],
            summary="A raid session's metrics and snapshots")
async def nubi_metrics(request: Request, session_id: str) -> dict[str, Any]:
    p = await _session_raid(request, session_id)
    view = _session_view(p)
    metrics = {"raidId": p.id, "targetUrl": p.target_url, "objectives": view["objectives"], **view["progress"]}
    return {"success": True, "data": {"metrics": metrics, "snapshots": await _svc(request).raids.metrics(p.id)}}


# -- raids --------------------------------------------------------------------------------------------


@router.post("/api/raids", status_code=201, response_model=RaidOut, tags=[RAIDS], summary="Start a raid")
async def create_raid(request: Request, body: RaidCreate) -> dict[str, Any]:
    wanted = ChatRef(body.community.platform, body.community.id, body.community.title, body.community.channel)
    chat = _chat_for(request, wanted, wanted)
    spec = RaidSpec(body.target_url, body.objectives, body.points, body.duration_seconds, body.max_participants,
                    body.lock, body.replace, body.verification, pin=body.pin, partners=body.partners)
    by = _member(body.started_by) if body.started_by else None
    return (await _raid_dicts(request, [await _svc(request).raids.start(chat, spec, by=by)]))[0]


@router.get("/api/raids", response_model=RaidList, tags=[RAIDS], summary="List raids (newest first)")
async def list_raids(request: Request, community_id: int | None = Query(None, alias="communityId", ge=1, le=MAX_DB_ID),
                     status: RaidStatus | None = None, limit: int = Limit) -> dict[str, Any]:
    cid, anything = await _list_scope(request, community_id)
    raids = await _svc(request).raids.list(community_id=cid, status=status, limit=limit) if anything else []
    return {"raids": await _raid_dicts(request, raids)}


@router.get("/api/raids/{raid_id}", response_model=RaidOut, tags=[RAIDS], summary="Get a raid's progress")
async def get_raid(request: Request, raid_id: DbId) -> dict[str, Any]:
    return (await _raid_dicts(request, [await _raid(request, raid_id)]))[0]


@router.post("/api/raids/{raid_id}/join", response_model=JoinOut, tags=[RAIDS], summary="Join a raid (idempotent)")
async def join_raid(request: Request, raid_id: DbId, body: JoinIn) -> dict[str, Any]:
    await _authorize_raid(request, raid_id)
    return _join(await _svc(request).raids.join(raid_id, _member(body.member)))


@router.post("/api/raids/{raid_id}/claims", response_model=ClaimOut, tags=[RAIDS],
             summary="Claim an action (idempotent per member and action)")
async def claim_action(request: Request, raid_id: DbId, body: ClaimIn) -> dict[str, Any]:
    await _authorize_raid(request, raid_id)
    return _claim(await _svc(request).raids.claim(raid_id, _member(body.member), body.action,
                                                  proof_url=body.proof_url))


@router.get("/api/raids/{raid_id}/leaderboard", response_model=RaidBoardOut, tags=[RAIDS],
            summary="A raid's leaderboard")
async def raid_board(request: Request, raid_id: DbId, top: int = Top, offset: int = Offset) -> dict[str, Any]:
    await _raid(request, raid_id, top=0)
    return {"raidId": raid_id, "entries": await _svc(request).raids.leaderboard(raid_id, top=top, offset=offset)}


@router.get("/api/raids/{raid_id}/leaderboard.csv", response_class=Response, responses=CSV, tags=[RAIDS],
            summary="A raid's whole leaderboard as CSV (streamed, every row)")
async def raid_board_csv(request: Request, raid_id: DbId) -> Response:
    await _raid(request, raid_id, top=0)
    board = _svc(request).raids.leaderboard
    return _csv(board_csv_stream(lambda limit, offset: board(raid_id, top=limit, offset=offset)),
                f"raid-{raid_id}-leaderboard.csv")


@router.get("/api/raids/{raid_id}/metrics", response_model=MetricsOut, tags=[RAIDS],
            summary="A raid's metrics snapshots (oldest first)")
async def raid_metrics(request: Request, raid_id: DbId) -> dict[str, Any]:
    await _raid(request, raid_id, top=0)
    return {"raidId": raid_id, "snapshots": await _svc(request).raids.metrics(raid_id)}


async def _report(request: Request, raid_id: int) -> dict[str, Any]:
    await _raid(request, raid_id, top=0)
    report = await _svc(request).raids.report(raid_id)
    if report is None:
        raise NotFound(f"Raid #{raid_id} has no report yet: it is written when the raid ends.")
    return report


@router.get("/api/raids/{raid_id}/report", response_model=ReportOut, tags=[RAIDS],
            summary="A finished raid's completion report")
async def raid_report(request: Request, raid_id: DbId) -> dict[str, Any]:
    return await _report(request, raid_id)


@router.get("/api/raids/{raid_id}/report.csv", response_class=Response, responses=CSV, tags=[RAIDS],
            summary="A finished raid's completion report as CSV, with a row for every raider (streamed)")
async def raid_report_csv(request: Request, raid_id: DbId) -> Response:
    report = await _report(request, raid_id)
    board = _svc(request).raids.leaderboard
    return _csv(report_csv_stream(report, lambda limit, offset: board(raid_id, top=limit, offset=offset)),
                f"raid-{raid_id}-report.csv")


@router.post("/api/raids/{raid_id}/end", response_model=EndOut, tags=[RAIDS],
             summary="End a raid now (or cancel it); idempotent")
async def end_raid(request: Request, raid_id: DbId, body: EndIn | None = None) -> dict[str, Any]:
    await _raid(request, raid_id, top=0)
    body = body or EndIn()
    svc = _svc(request)
    ended = await svc.raids.end(raid_id, status="cancelled" if body.cancel else None,
                                reason=body.reason or "ended over the API")
    return {"raidId": raid_id, "ended": ended, "status": (await svc.raids.progress(raid_id, top=0)).status}


@router.post("/api/claims/{claim_id}/review", response_model=ClaimOut, tags=[RAIDS],
             summary="Accept or reject a pending claim")
async def review_claim(request: Request, claim_id: DbId, body: ReviewIn) -> dict[str, Any]:
    svc = _svc(request)
    community_id = await catalog.community_of_claim(svc.db, claim_id)
    if community_id is None:
        raise NotFound(f"There is no claim #{claim_id}.")
    await authorize_community(request, community_id)
    return _claim(await svc.raids.review(claim_id, body.decision == "accept", community_id=community_id))


@router.post("/api/claims/{claim_id}/revoke", response_model=RevokeOut, tags=[RAIDS],
             summary="Take back an accepted claim: its points and the bonuses it unlocked leave every board (audited)")
async def revoke_claim(request: Request, claim_id: DbId, body: RevokeIn | None = None) -> dict[str, Any]:
    svc = _svc(request)
    community_id = await catalog.community_of_claim(svc.db, claim_id)
    if community_id is None:
        raise NotFound(f"There is no claim #{claim_id}.")
    await authorize_community(request, community_id)
    reason = body.reason if body else None
    taken = await svc.raids.revoke(claim_id, reviewer_id=None, reason=reason, community_id=community_id)
    return {"claimId": claim_id, "verification": "rejected", "pointsRevoked": taken}


# -- communities ----------------------------------------------------------------------------------------


@router.get("/api/communities", response_model=CommunityList, tags=[COMMUNITIES], summary="List communities")
async def list_communities(request: Request) -> dict[str, Any]:
    community_id, anything = await _list_scope(request, None)
    found = await catalog.communities(_svc(request).db, community_id=community_id) if anything else []
    return {"communities": found}


@router.get("/api/communities/{community_id}", response_model=CommunityOut, tags=[COMMUNITIES],
            summary="Get a community")
async def get_community(request: Request, community_id: DbId) -> dict[str, Any]:
    return await _community(request, community_id)


@router.get("/api/communities/{community_id}/leaderboard", response_model=CommunityBoardOut, tags=[COMMUNITIES],
            summary="A community's leaderboard over a window (day, week from Monday UTC, month, all)")
async def community_board(request: Request, community_id: DbId, window: Window = "all", top: int = Top,
                          offset: int = Offset) -> dict[str, Any]:
    await _community(request, community_id)
    svc = _svc(request)
    entries = await svc.boards.board(community_id, window, top=top, offset=offset)
    return {"communityId": community_id, "window": window,
            "windowStart": window_start(window, svc.clock.now()).isoformat(),
            "entries": await svc.member_links.with_platforms(entries)}


@router.get("/api/communities/{community_id}/leaderboard.csv", response_class=Response, responses=CSV,
            tags=[COMMUNITIES], summary="A community's whole leaderboard as CSV (streamed, every row)")
async def community_board_csv(request: Request, community_id: DbId, window: Window = "all") -> Response:
    await _community(request, community_id)
    svc = _svc(request)
    at = svc.clock.now()  # one window for every page, even if the export crosses midnight

    async def fetch(limit: int, offset: int) -> list[Any]:
        return await svc.boards.page(community_id, window, limit, offset, at=at)

    return _csv(board_csv_stream(fetch), f"community-{community_id}-{window}.csv")


@router.get("/api/communities/{community_id}/history", response_model=HistoryOut, tags=[COMMUNITIES],
            summary="Winners of a community's closed windows (newest first)")
async def community_history(request: Request, community_id: DbId, window: Window | None = None,
                            limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
    await _community(request, community_id)
    windows = await _svc(request).boards.history(community_id, window, limit=limit)
    return {"communityId": community_id, "windows": windows}


@router.get("/api/communities/{community_id}/review", response_model=ReviewQueueOut, tags=[COMMUNITIES],
            summary="Claims waiting for a moderator's review")
async def review_queue(request: Request, community_id: DbId, limit: int = Limit) -> dict[str, Any]:
    await _community(request, community_id)
    items = await _svc(request).raids.review_queue(community_id=community_id, limit=limit)
    return {"communityId": community_id, "items": [
        {"claimId": i.claim_id, "raidId": i.raid_id, "memberId": i.member_id, "name": i.name, "action": i.action,
         "proofUrl": i.proof_url, "claimedAt": i.claimed_at.isoformat()} for i in items]}


@router.get("/api/communities/{community_id}/link-conflicts", response_model=LinkConflictsOut, tags=[COMMUNITIES],
            summary="Handle links refused because another member holds the handle (newest first)")
async def link_conflicts(request: Request, community_id: DbId, limit: int = Limit) -> dict[str, Any]:
    await _community(request, community_id)
    found = await _svc(request).links.conflicts(community_id=community_id, limit=limit)
    return {"communityId": community_id, "conflicts": found}


@router.post("/api/communities/{community_id}/points", status_code=201, response_model=PointsOut,
             tags=[COMMUNITIES], summary="Add or remove a member's points, with a reason (audited)")
async def adjust_points(request: Request, community_id: DbId, body: PointsIn) -> dict[str, Any]:
    await _community(request, community_id)
    await _known_member(request, community_id, body.member_id)
    svc = _svc(request)
    await svc.moderation.adjust_points(community_id, body.member_id, body.points, body.reason, actor=None)
    rank, total = await svc.boards.rank(community_id, body.member_id, "all")
    return {"communityId": community_id, "memberId": body.member_id, "points": body.points,
            "reason": body.reason.strip(), "totalPoints": total, "rank": rank}


@router.get("/api/communities/{community_id}/audit", response_model=AuditOut, tags=[COMMUNITIES],
            summary="A community's moderation audit log (newest first)")
async def audit_log(request: Request, community_id: DbId, limit: int = Query(50, ge=1, le=200)) -> dict[str, Any]:
    await _community(request, community_id)
    entries = await _svc(request).moderation.audit_log(community_id, limit=limit)
    return {"communityId": community_id, "entries": entries}


def _schedule(s: Any) -> dict[str, Any]:
    return {"id": s.id, "communityId": s.community_id, "cron": s.cron, "tz": s.timezone, "window": s.window,
            "top": s.top_n}


@router.get("/api/communities/{community_id}/schedules", response_model=ScheduleList, tags=[COMMUNITIES],
            summary="A community's scheduled leaderboard announcements")
async def list_schedules(request: Request, community_id: DbId) -> dict[str, Any]:
    await _community(request, community_id)
    return {"schedules": [_schedule(s) for s in await _svc(request).schedules.list(community_id)]}


@router.post("/api/communities/{community_id}/schedules", status_code=201, response_model=ScheduleOut,
             tags=[COMMUNITIES], summary="Schedule a leaderboard announcement (cron, in a time zone)")
async def add_schedule(request: Request, community_id: DbId, body: ScheduleIn) -> dict[str, Any]:
    await _community(request, community_id)
    svc = _svc(request)
    tz = body.tz or await svc.community_settings.timezone(community_id)
    added = await svc.schedules.add(community_id, body.cron, body.window, top_n=body.top, tz=tz)
    return _schedule(added)


@router.delete("/api/communities/{community_id}/schedules/{schedule_id}", status_code=204, tags=[COMMUNITIES],
               summary="Remove a scheduled announcement")
async def remove_schedule(request: Request, community_id: DbId, schedule_id: DbId) -> Response:
    await _community(request, community_id)
    if not await _svc(request).schedules.remove(community_id, schedule_id):
        raise NotFound(f"There is no schedule #{schedule_id} here.")
    return Response(status_code=204)


@router.get("/api/communities/{community_id}/bans", response_model=BanList, tags=[COMMUNITIES],
            summary="Members banned from raids in a community")
async def list_bans(request: Request, community_id: DbId) -> dict[str, Any]:
    await _community(request, community_id)
    return {"communityId": community_id, "bans": await catalog.bans(_svc(request).db, community_id)}


@router.post("/api/communities/{community_id}/bans", status_code=201, response_model=BanResult,
             tags=[COMMUNITIES], summary="Ban a member from raids (audited)")
async def ban_member(request: Request, community_id: DbId, body: BanIn) -> dict[str, Any]:
    await _community(request, community_id)
    await _known_member(request, community_id, body.member_id)
    done = await _svc(request).moderation.ban(community_id, body.member_id, body.reason, actor=None)
    return {"communityId": community_id, "memberId": body.member_id, "already": not done}


@router.delete("/api/communities/{community_id}/bans/{member_id}", status_code=204, tags=[COMMUNITIES],
               summary="Lift a member's ban (audited)")
async def unban_member(request: Request, community_id: DbId, member_id: DbId) -> Response:
    await _community(request, community_id)
    if not await _svc(request).moderation.unban(community_id, member_id, actor=None):
        raise NotFound(f"Member #{member_id} is not banned here.")
    return Response(status_code=204)


# -- context for agents (spans communities: admin keys only) ----------------------------------------------


@router.get("/api/context/members/{member_id}", response_model=ContextOut, tags=[CONTEXT],
            summary="A member's context for an agent: session, messages, raids, points, rank, streak")
async def member_context(request: Request, member_id: DbId) -> dict[str, Any]:
    access.require_admin(caller(request))
    return await _svc(request).context.for_member(member_id)


@router.get("/api/context/sessions/{session_id}", response_model=ContextOut, tags=[CONTEXT],
            summary="The context of a session's member for an agent")
async def session_context(request: Request, session_id: str) -> dict[str, Any]:
    access.require_admin(caller(request))
    return await _svc(request).context.for_session(session_id)
