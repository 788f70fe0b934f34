"""The live dashboard: a static page at / and the small read API it takes its snapshots from.

The page (static/index.html, plain JS, no build step) loads a snapshot from /api/dashboard/* on
every (re)connect and then follows Socket.IO events, since deliveries are at-most-once. The read API
is built directly on the core services so the page depends on nothing but this module.

The page's own controls are English; what it shows of a community's board and raids that nubi also
says in chat (board titles, why a raid ended, a badge's announcement) comes from here in the
community's language (`language`, `labels`), as its members read it in chat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select

from core import access
from core.i18n import LANGUAGE_NAMES, _, use_language
from core.raids.model import END_CAUSES, RaidProgress
from core.services import Services
from core.storage.models import Community
from core.views import WINDOW_TITLES
from core.windows import WINDOWS

from .assets import BrowserAssets, versioned_page
from .schemas import DbId
from .security import authorize_community, caller

STATIC_DIR = Path(__file__).with_name("static")
ENDED = ("completed", "timeout", "failed", "cancelled")

page = APIRouter(include_in_schema=False)
router = APIRouter(prefix="/api/dashboard", tags=["dashboard"])


def attach(app: FastAPI) -> None:
    app.include_router(page)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BrowserAssets, static_dir=STATIC_DIR)  # added last: outermost, sees the limiter's 429


@page.get("/")
async def index() -> HTMLResponse:
    return HTMLResponse(versioned_page(STATIC_DIR / "index.html", STATIC_DIR))


@router.get("/me")
async def me(request: Request) -> dict[str, Any]:
    """Who the presented key is, so the page offers a moderator only the communities the key may act on."""
    who = caller(request)
    community_id = await _scope_filter(request)
    return {
        "keysRequired": request.app.state.guard.keys_configured,
        "scope": "all" if who.admin else "community",
        "community": who.community,
        "communityId": community_id or None,
    }


def _services(request: Request) -> Services:
    return request.app.state.services


async def _scope_filter(request: Request) -> int | None | Literal[False]:
    """The community id a scoped key may list (False: its community has no rows yet), None for all."""
    scope = access.list_scope(caller(request))
    if scope is None:
        return None
    platform, _, external_id = scope.partition(":")
    found = await _services(request).db.read(
        lambda s: s.scalar(
            select(Community.id).where(Community.platform == platform, Community.external_id == external_id)
        )
    )
    return False if found is None else found


def _raid_labels(progress: RaidProgress) -> dict[str, str]:
    """The raid's texts the page shows as nubi words them in chat, in the community's language."""
    with use_language(progress.language):
        cause = END_CAUSES.get(progress.end_cause or "")
        return {"board": _(WINDOW_TITLES["raid"]), "empty": _("No points yet. Join a raid to get on the board!"),
                "endedBecause": _(cause) if cause else ""}


def _shown(progress: RaidProgress) -> dict[str, Any]:
    return {**progress.as_dict(), "labels": _raid_labels(progress)}


async def _raid(request: Request, raid_id: int, top: int = 10) -> RaidProgress:
    progress = await _services(request).raids.progress(raid_id, top=top)
    await authorize_community(request, progress.community_id)
    return progress


@router.get("/raids")
async def list_raids(
    request: Request,
    status: Literal["active", "ended"] = "active",
    limit: int = Query(20, ge=1, le=50),
) -> dict[str, Any]:
    """Active raids with live numbers, or the latest ended raids with their reports."""
    svc = _services(request)
    community_id = await _scope_filter(request)
    if community_id is False:
        return {"raids": []}
    if status == "active":
        raids = await svc.raids.list(community_id=community_id, status="active", limit=limit)
        return {"raids": [_shown(r) for r in raids]}
    ended: list[RaidProgress] = []
    for state in ENDED:
        ended += await svc.raids.list(community_id=community_id, status=state, limit=limit)
    ended.sort(key=lambda r: (r.ended_at or r.ends_at, r.id), reverse=True)
    return {"raids": [{**_shown(r), "report": await svc.raids.report(r.id)} for r in ended[:limit]]}


@router.get("/raids/{raid_id}")
async def raid_detail(request: Request, raid_id: DbId) -> dict[str, Any]:
    """One raid for the detail panel: progress with its top 10, metrics snapshots, report once ended."""
    svc = _services(request)
    progress = await _raid(request, raid_id)
    return {
        "raid": _shown(progress),
        "metrics": await svc.raids.metrics(raid_id),
        "report": None if progress.active else await svc.raids.report(raid_id),
    }


@router.get("/communities/{community_id}/settings")
async def community_settings(request: Request, community_id: DbId) -> dict[str, Any]:
    """The community's settings, shown read-only beside its board (moderators change them in chat or REST)."""
    await authorize_community(request, community_id)
    shown = await _services(request).community_settings.show(community_id)
    language = shown["effective"].get("language", "en")
    return {**shown, "language": {"code": language, "name": LANGUAGE_NAMES.get(language, language)}}


@router.get("/communities/{community_id}/leaderboard")
async def community_board(
    request: Request,
    community_id: DbId,
    window: str = Query("week", pattern="^(" + "|".join(WINDOWS) + ")$"),
    top: int = Query(10, ge=1, le=50),
) -> dict[str, Any]:
    """The board with each member once (badge, platforms), titled in the community's language."""
    await authorize_community(request, community_id)
    services = _services(request)
    entries = await services.boards.board(community_id, window, top=top)
    language = await services.community_settings.language(community_id)
    with use_language(language):
        labels = {"title": _(WINDOW_TITLES[window]), "empty": _("No points in this window.")}
    return {"communityId": community_id, "window": window, "language": language,
            "languageName": LANGUAGE_NAMES.get(language, language), "labels": labels,
            "entries": await services.member_links.with_platforms(entries)}
