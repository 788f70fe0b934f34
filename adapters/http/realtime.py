"""Socket.IO at /socket.io/: rooms per session and per raid, fed by the core's event bus.

A client authenticates once per connection (an API key, or a short-lived token issued for one
session), then joins rooms and acts through the same core services as every other adapter. Every
handler validates its payload and answers with an ack, `{ok: true, data}` or
`{ok: false, error: {code, message}}`: nothing a client sends can crash one. Progress updates are
coalesced to at most one per raid per second, however many claims arrive. Deliveries are
at-most-once (across processes too, through Redis), so clients take a REST snapshot on (re)connect
and apply events on top of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from core import access, catalog
from core import errors as e
from core.access import NOBODY, Caller
from core.clock import Clock
from core.config import ACTION_NAMES
from core.directory import MemberRef
from core.events import (
    BadgeEarned,
    ClaimRecorded,
    ClaimVerified,
    Event,
    MemberJoined,
    ProgressChanged,
    RaidEnded,
    RaidStarted,
    SessionMessageStored,
)
from core.raids.model import PLURALS, RaidProgress
from core.services import Services
from core.sessions.chat import command_responder, web_chat, web_member
from core.sessions.service import SessionInfo, parse_uuid
from core.storage.rls import community_scope
from core.throttle import Coalescer

from . import socketio_lib
from .security import Guard, Unauthorized, across_communities, caller, origin_allowed

log = logging.getLogger(__name__)

TOKEN_TTL = timedelta(minutes=10)
PROGRESS_INTERVAL = 1.0  # seconds between two progress_update events of one raid
ALL = "scope:*"  # the room of every socket allowed to see every community
READS = ("session:join", "raid:subscribe")  # events that change nothing (row-level security reads)


def scope_room(community: str | None) -> str:
    return ALL if community is None else f"scope:{community}"


def raid_scope(progress: RaidProgress) -> str:
    return f"{progress.chat.platform}:{progress.chat.external_id}"


class TokenSigner:
    """`<payload>.<signature>` tokens, HMAC-SHA256 over a per-app secret, binding a socket to one session."""

    def __init__(self, secret: bytes, clock: Clock, ttl: timedelta = TOKEN_TTL) -> None:
        self._secret = secret
        self._clock = clock
        self._ttl = ttl

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self._secret, payload, hashlib.sha256).digest())

    def issue(self, session_id: str) -> tuple[str, datetime]:
        expires = self._clock.now() + self._ttl
        payload = json.dumps({"sid": session_id, "exp": int(expires.timestamp())}, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}", expires

    def verify(self, token: str) -> str:
        """The session id the token was issued for; Unauthorized when forged, mangled or expired."""
        try:
            body, signature = token.split(".")
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if not hmac.compare_digest(signature, self._sign(payload)):
                raise ValueError("bad signature")
            claims = json.loads(payload)
            session_id, expires = claims["sid"], claims["exp"]
            if not isinstance(session_id, str) or not isinstance(expires, int):
                raise ValueError("bad claims")
        except (ValueError, TypeError, KeyError, binascii.Error):
            raise Unauthorized("That token is not valid.") from None
        if expires <= self._clock.now().timestamp():
            raise Unauthorized("That token has expired; ask for a new one.")
        return session_id


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- payloads --------------------------------------------------------------------------------------

RaidId = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class AuthIn(_Payload):
    apiKey: Annotated[StrictStr, Field(max_length=512)] | None = None
    token: Annotated[StrictStr, Field(max_length=2048)] | None = None


class SessionIn(_Payload):
    sessionId: Any = None  # checked by parse_uuid, which names the field in its error


class MessageIn(SessionIn):
    content: Any = None  # the sessions service validates these three exactly as the REST API does
    metadata: Any = None
    attachments: Any = None


class MemberIn(_Payload):
    platform: Literal["web", "telegram", "discord", "console"] = "web"
    id: Annotated[StrictStr, Field(min_length=1, max_length=128)] | Annotated[StrictInt, Field(ge=0, le=2**63 - 1)]
    name: Annotated[StrictStr, Field(max_length=64)] | None = None


class RaidIn(_Payload):
    raidId: RaidId


class JoinIn(RaidIn):
    member: MemberIn | None = None  # who acts; a session token always acts as its session's member


class ActionIn(JoinIn):
    action: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    proofUrl: Annotated[StrictStr, Field(max_length=2048)] | None = None


def _fail(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"ok": False, "error": error}


def _invalid(exc: PydanticValidationError) -> dict[str, Any]:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if not field:
        return _fail("VALIDATION_ERROR", "The payload must be an object.")
    return _fail("VALIDATION_ERROR", f"{field}: {first['msg']}", {"field": field})


Handler = Callable[[str, Caller, Any], Awaitable[Any]]


def scope_room_of(who: Caller) -> str:
    return scope_room(None if who.admin else who.community)


class Realtime:
    """The Socket.IO server of one app, its handlers, and the bridge from the event bus to rooms."""

    def __init__(self, services: Services, guard: Guard, *, secret: bytes | None = None) -> None:
        self.services = services
        self.guard = guard
        redis_url = services.settings.realtime.redis_url
        socketio = socketio_lib.load(redis=redis_url is not None)
        self._refused = socketio.exceptions.ConnectionRefusedError
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            client_manager=socketio.AsyncRedisManager(redis_url) if redis_url else None,
            cors_allowed_origins=self._origin_allowed,
        )
        self.tokens = TokenSigner(secret or secrets.token_bytes(32), services.clock)
        self.progress = Coalescer(PROGRESS_INTERVAL, self._flush_progress)
        self._callers: dict[str, Caller] = {}
        self._addresses: dict[str, str] = {}
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)
        self._on("session:authenticate", AuthIn, self._authenticate, authenticated=False)
        self._on("session:join", SessionIn, self._session_join)
        self._on("session:message", MessageIn, self._session_message)
        self._on("raid:subscribe", RaidIn, self._raid_subscribe)
        self._on("raid:join", JoinIn, self._raid_join)
        self._on("raid:action", ActionIn, self._raid_action)
        self._bridges: list[tuple[type[Event], Callable[[Any], Awaitable[None]]]] = [
            (RaidStarted, self._on_raid_started),
            (MemberJoined, self._on_member_joined),
            (ClaimRecorded, self._on_claim_recorded),
            (ClaimVerified, self._on_claim_verified),
            (ProgressChanged, self._on_progress_changed),
            (RaidEnded, self._on_raid_ended),
            (SessionMessageStored, self._on_session_message),
            (BadgeEarned, self._on_badge_earned),
        ]
        for event_type, bridge in self._bridges:
            services.bus.subscribe(event_type, bridge)

    async def close(self) -> None:
        for event_type, bridge in self._bridges:
            self.services.bus.unsubscribe(event_type, bridge)
        await self.progress.close()

    def _origin_allowed(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """The configured CORS origins, plus the app's own origin (the dashboard); the same rule as HTTP writes."""
        return origin_allowed(origin, environ.get("HTTP_HOST"), self.services.settings.http)

    # -- connection and dispatch -------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        client = environ.get("asgi.scope", {}).get("client") or ("?",)
        address = self.guard.client_address(str(client[0]), environ.get("HTTP_X_FORWARDED_FOR"))
        if self.guard.limited(NOBODY, address) is not None:  # a connect counts like a request of its address
            raise self._refused("Too many requests; slow down")
        self._addresses[sid] = address
        if not self.guard.keys_configured and self.guard.admits_address(address):  # the keyless loopback API
            await self._admit(sid, access.ADMIN)
        return True

    async def _disconnect(self, sid: str, *args: Any) -> None:
        self._callers.pop(sid, None)
        self._addresses.pop(sid, None)

    async def _admit(self, sid: str, caller: Caller) -> None:
        previous = self._callers.get(sid)
        if previous is not None and previous != caller:  # a new identity keeps none of the old rooms
            for room in self.sio.rooms(sid):
                if room != sid:
                    await self.sio.leave_room(sid, room)
        self._callers[sid] = caller
        await self.sio.enter_room(sid, scope_room_of(caller))

    def _on(self, event: str, model: type[_Payload], handler: Handler, *, authenticated: bool = True) -> None:
        async def run(sid: str, *args: Any) -> dict[str, Any]:
            """Every event passes the HTTP guard's steps: rate limit, caller, row-level-security scope."""
            try:
                who = self._callers.get(sid) or NOBODY
                wait = self.guard.limited(who, self._addresses.get(sid, "?"))
                if wait is not None:
                    raise e.RateLimited("Too many requests; slow down", details={"retryAfterSeconds": round(wait, 1)})
                if who is NOBODY and authenticated:
                    raise Unauthorized("Authenticate first: session:authenticate with an API key or a session token.")
                data = model.model_validate(args[0] if args else None)
                row_scope = await self.guard.row_scope(self.services.db, who, reading=event in READS)
                with community_scope(row_scope):
                    return {"ok": True, "data": await handler(sid, who, data)}
            except PydanticValidationError as exc:
                return _invalid(exc)
            except e.NubiError as exc:
                return _fail(exc.code, exc.message, exc.details or None)
            except Exception:
                log.exception("socket.io handler for %s failed", event)
                return _fail("INTERNAL_SERVER_ERROR", "An unexpected error occurred")

        self.sio.on(event, run)

    # -- authorization -----------------------------------------------------------------------------

    async def session_for(self, who: Caller, raw_id: Any) -> SessionInfo:
        """The session, if the policy lets this caller see it (others' sessions do not exist for it)."""
        session_id = parse_uuid(raw_id, "sessionId")
        community = await self.services.sessions.community_of(session_id)
        if community is not None:  # asked before the session is touched (an expired one is ended by a read)
            access.require_session(who, session_id, community)
        return await self.services.sessions.get(session_id)

    async def _raid_for(self, caller: Caller, raid_id: int, *, top: int = 10) -> RaidProgress:
        progress = await self.services.raids.progress(raid_id, top=top)
        access.require_community(caller, raid_scope(progress))
        return progress

    async def _check_raid(self, caller: Caller, raid_id: int) -> None:
        """Scoped callers may act only in their community's raids; the service checks the rest."""
        if not caller.admin:
            await self._raid_for(caller, raid_id, top=0)

    async def _member(self, caller: Caller, data: JoinIn) -> MemberRef:
        if not access.may_act_as_anyone(caller):
            if data.member is not None or caller.session_id is None:
                raise e.PermissionDenied("A session token acts as its session's own member.")
            return web_member(await self.services.sessions.get(caller.session_id))
        if data.member is None:
            raise e.ValidationError("member is required: {platform, id, name}", field="member")
        name = data.member.name or ""
        return MemberRef(data.member.platform, str(data.member.id), name, name or None)

    # -- client events -----------------------------------------------------------------------------

    async def _authenticate(self, sid: str, _: Caller, data: AuthIn) -> dict[str, Any]:
        if data.token is not None:
            session_id = self.tokens.verify(data.token)
            info = await self.services.sessions.get(session_id)
            who: Caller | None = access.session_caller(info.community, info.id)
        else:
            who = self.guard.caller_for(data.apiKey)
            if who is not None and not self.guard.admits_address(self._addresses.get(sid, "?")):
                who = None
            if who is None:
                raise Unauthorized("A valid apiKey or session token is required.")
        await self._admit(sid, who)
        return {"community": None if who.admin else who.community, "sessionId": who.session_id}

    async def _session_join(self, sid: str, caller: Caller, data: SessionIn) -> dict[str, Any]:
        info = await self.session_for(caller, data.sessionId)
        await self.sio.enter_room(sid, f"session:{info.id}")
        return info.as_api()

    async def _session_message(self, sid: str, caller: Caller, data: MessageIn) -> dict[str, Any]:
        info = await self.session_for(caller, data.sessionId)
        await self.sio.enter_room(sid, f"session:{info.id}")  # the reply is pushed to the room
        result = await self.services.sessions.send_message(
            info.id,
            data.content,
            attachments=data.attachments,
            metadata=data.metadata,
            responder=command_responder(
                self.services, is_moderator=access.may_moderate(caller, access.chat_community(web_chat(info)))),
        )
        out: dict[str, Any] = {
            "userMessage": result.user_message.as_api(),
            "sessionStatus": {
                "expiresAt": result.session.expires_at.isoformat(),
                "renewalCount": result.session.renewal_count,
                "wasRenewed": result.was_renewed,
                "isNearExpiration": result.session.is_near_expiration,
            },
        }
        if result.agent_message is not None:
            out["agentResponse"] = {"text": result.agent_message.content, "message": result.agent_message.as_api()}
        return out

    async def _raid_dict(self, progress: RaidProgress) -> dict[str, Any]:
        """A raid as REST and MCP show it (core/catalog.raid_dicts: `as_dict()` plus `partnerChats`). The
        partner chats are other communities' rows: read outside the row scope, as REST reads them."""
        with across_communities():
            [found] = await catalog.raid_dicts(self.services.db, [progress])
        return found

    async def _raid_subscribe(self, sid: str, caller: Caller, data: RaidIn) -> dict[str, Any]:
        progress = await self._raid_for(caller, data.raidId)
        await self.sio.enter_room(sid, f"raid:{progress.id}")
        return await self._raid_dict(progress)

    async def _raid_join(self, sid: str, caller: Caller, data: JoinIn) -> dict[str, Any]:
        await self._check_raid(caller, data.raidId)
        result = await self.services.raids.join(data.raidId, await self._member(caller, data))
        await self.sio.enter_room(sid, f"raid:{data.raidId}")
        return {
            "raidId": result.raid_id,
            "memberId": result.member_id,
            "position": result.position,
            "already": result.already,
            "bonus": result.bonus,
        }

    async def _raid_action(self, sid: str, caller: Caller, data: ActionIn) -> dict[str, Any]:
        action = data.action.strip().lower()
        action = PLURALS.get(action, action)
        if action not in ACTION_NAMES:
            raise e.ValidationError(f"action must be one of {', '.join(ACTION_NAMES)}", field="action")
        await self._check_raid(caller, data.raidId)
        result = await self.services.raids.claim(
            data.raidId, await self._member(caller, data), action, proof_url=data.proofUrl
        )
        return {
            "raidId": result.raid_id,
            "memberId": result.member_id,
            "action": result.action,
            "verification": result.verification,
            "points": result.points,
            "already": result.already,
            "claimId": result.claim_id,
            "completionBonus": result.completion_bonus,
            "raidCompleted": result.raid_completed,
        }

    # -- the event-bus bridge ----------------------------------------------------------------------

    async def _update(self, raid_id: int, kind: str, **fields: Any) -> None:
        await self.sio.emit("raid:update", {"type": kind, "raidId": raid_id, **fields}, to=f"raid:{raid_id}")

    async def _on_raid_started(self, event: RaidStarted) -> None:
        progress = await self.services.raids.progress(event.raid_id, top=10)
        payload = {"raidId": event.raid_id, "communityId": event.community_id, "raid": await self._raid_dict(progress)}
        await self.sio.emit("raid:created", payload, to=[ALL, scope_room(raid_scope(progress))])

    async def _on_member_joined(self, event: MemberJoined) -> None:
        await self._update(event.raid_id, "participant_joined", communityId=event.community_id,
                           memberId=event.member_id, position=event.position)

    async def _on_claim_recorded(self, event: ClaimRecorded) -> None:
        await self._update(event.raid_id, "action_completed", communityId=event.community_id,
                           memberId=event.member_id, action=event.action_type,
                           verification=event.verification, points=event.points)

    async def _on_claim_verified(self, event: ClaimVerified) -> None:
        await self._update(event.raid_id, "action_completed", communityId=event.community_id,
                           memberId=event.member_id, action=event.action_type,
                           verification=event.verification, pointsDelta=event.points_delta, reviewed=True)

    async def _on_progress_changed(self, event: ProgressChanged) -> None:
        self.progress.poke(event.raid_id)

    async def _flush_progress(self, raid_id: int) -> None:
        progress = await self.services.raids.progress(raid_id, top=10)
        await self._update(raid_id, "progress_update", communityId=progress.community_id,
                           progress=await self._raid_dict(progress))

    async def _on_raid_ended(self, event: RaidEnded) -> None:
        report = await self.services.raids.report(event.raid_id)
        await self._update(event.raid_id, "raid_completed", communityId=event.community_id,
                           status=event.status, report=report)
        self.progress.poke(event.raid_id)

    async def _on_badge_earned(self, event: BadgeEarned) -> None:
        """`badge:earned` to every socket that may see the community (like `raid:created`)."""
        view = await self.services.badges.live(event)
        if view is not None:
            scope = view.pop("scope")
            await self.sio.emit("badge:earned", view, to=[ALL, scope_room(scope)])

    async def _on_session_message(self, event: SessionMessageStored) -> None:
        await self.sio.emit(
            "session:message", {"sessionId": event.session_id, "message": event.message},
            to=f"session:{event.session_id}",
        )


def attach(app: FastAPI) -> Realtime:
    """Give `app` its Socket.IO server (closed with the app) and the token endpoint."""
    configured = app.state.services.settings.realtime.token_secret
    secret = configured.get_secret_value().encode() if configured is not None else None
    realtime = Realtime(app.state.services, app.state.guard, secret=secret)
    app.state.realtime = realtime
    app.include_router(router)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        try:
            async with inner(asgi_app) as state:
                yield state
        finally:
            await realtime.close()

    app.router.lifespan_context = lifespan
    return realtime


# -- REST: tokens for session-bound sockets ------------------------------------------------------------

router = APIRouter()


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    sessionId: StrictStr


@router.post("/api/realtime/token", tags=["realtime"])
async def issue_token(body: TokenRequest, request: Request) -> dict[str, Any]:
    """A token a browser can use to authenticate its socket as one session's member, without an API key."""
    realtime: Realtime = request.app.state.realtime
    info = await realtime.session_for(caller(request), body.sessionId)
    token, expires = realtime.tokens.issue(info.id)
    return {"token": token, "expiresAt": expires.isoformat(), "sessionId": info.id}
