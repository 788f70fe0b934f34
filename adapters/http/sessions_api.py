"""The ElizaOS Sessions API under /api/messaging (contract: docs/sessions-api.md).

Thin on purpose: parse the request, call SessionService, render upstream's JSON. Validation, the
timeout hierarchy and the expiry rules (410 once, then 404) live in core; errors become the documented
shape in errors.py. A message goes through the core command layer as a `web` chat, so `/raid start`
in a session does what it does in a Telegram group.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from core import access
from core.clock import to_ms
from core.errors import NubiError, ValidationError
from core.services import Services
from core.sessions.chat import command_responder, web_chat
from core.sessions.service import TRANSPORTS, Responder, SendResult, SessionInfo, StoredMessage

from .errors import error_body, error_response
from .security import caller

log = logging.getLogger(__name__)

SESSIONS = "/api/messaging/sessions"
CREATED_KEYS = ("sessionId", "channelId", "agentId", "userId", "createdAt", "metadata", "expiresAt", "timeoutConfig")
# The client's deprecated `mode` names for the transports.
LEGACY_MODES = {"sync": "http", "stream": "sse", "websocket": "websocket"}


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.started_at = time.monotonic()
    yield


router = APIRouter(lifespan=_lifespan)


def services_of(request: Request) -> Services:
    return request.app.state.services


def _uptime(request: Request) -> float:
    """Seconds since the app started; the start is noted here when no lifespan ran (e.g. a bare ASGI call)."""
    state = request.app.state
    if getattr(state, "started_at", None) is None:
        state.started_at = time.monotonic()
    return round(time.monotonic() - state.started_at, 3)


def _sid(session_id: str) -> str:
    """The canonical form of a session id in the path (stored ids are lower-case UUIDs)."""
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return session_id  # the service answers SESSION_NOT_FOUND for it


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a VALIDATION_ERROR naming `body` (never a parser trace)."""
    raw = await request.body()
    if not raw.strip():
        raise ValidationError("request body must be a JSON object", field="body")
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ValidationError("request body is not valid JSON", field="body") from exc
    if not isinstance(body, dict):
        raise ValidationError("request body must be a JSON object", field="body")
    return body


def _transport(body: dict[str, Any]) -> str:
    transport, mode = body.get("transport"), body.get("mode")
    if transport is None and mode is not None:
        if not isinstance(mode, str) or mode not in LEGACY_MODES:
            raise ValidationError(f"mode must be one of {', '.join(LEGACY_MODES)}", field="mode")
        return LEGACY_MODES[mode]
    if transport is None:
        return "websocket"
    if not isinstance(transport, str) or transport not in TRANSPORTS:
        raise ValidationError(f"transport must be one of {', '.join(TRANSPORTS)}", field="transport")
    return transport


def _responder(request: Request) -> Responder:
    """Route the message through the command layer; who moderates is the policy's call (core/access.py)."""
    services, who = services_of(request), caller(request)

    async def respond(info: SessionInfo, content: str) -> str | None:
        is_moderator = access.may_moderate(who, access.chat_community(web_chat(info)))
        return await command_responder(services, is_moderator=is_moderator)(info, content)

    return respond


# -- rendering -------------------------------------------------------------------------------------


def _user_message(result: SendResult) -> dict[str, Any]:
    msg = result.user_message
    return {
        "id": msg.id,
        "channel_id": result.session.channel_id,
        "author_id": msg.author_id,
        "content": msg.content,
        "created_at": to_ms(msg.created_at),
        "source_type": "user",
        "raw_message": {"content": msg.content, "attachments": msg.attachments or []},
        "metadata": msg.metadata,
    }


def _session_status(result: SendResult) -> dict[str, Any]:
    return {
        "expiresAt": result.session.expires_at.isoformat(),
        "renewalCount": result.session.renewal_count,
        "wasRenewed": result.was_renewed,
        "isNearExpiration": result.session.is_near_expiration,
    }


def _agent_response(msg: StoredMessage) -> dict[str, Any]:
    return {"text": msg.content, "messageId": msg.id, "createdAt": to_ms(msg.created_at)}


def _with_data_mirror(payload: dict[str, Any], status: int = 200) -> JSONResponse:
    """@elizaos/api-client returns `json.data` for `success: true` bodies: carry the payload there too."""
    return JSONResponse({**payload, "data": payload}, status_code=status)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _stream_reply(
    services: Services, first: SendResult, responder: Responder, content: str
) -> AsyncIterator[bytes]:
    """`user_message`, then the reply as `chunk`s (one per line), then `done`; `error` if the reply fails."""
    yield _sse("user_message", _user_message(first))
    try:
        reply = await responder(first.session, content)
        done: dict[str, Any] = {"success": True, "sessionStatus": _session_status(first)}
        if reply is not None:
            stored = await services.sessions.add_agent_message(first.session.id, reply, reply_to=first.user_message.id)
            for index, piece in enumerate(reply.splitlines(keepends=True)):
                yield _sse("chunk", {"messageId": stored.id, "index": index, "chunk": piece})
            done["agentResponse"] = _agent_response(stored)
        yield _sse("done", done)
    except Exception:
        log.exception("reply to session %s failed while streaming", first.session.id)
        yield _sse("error", error_body("INTERNAL_SERVER_ERROR", "An unexpected error occurred"))


# -- endpoints (literal paths before /sessions/{session_id}) ---------------------------------------


@router.get("/api/agents")
async def list_agents(request: Request) -> dict[str, Any]:
    agents = [{"id": a.id, "name": a.name, "status": "active"} for a in services_of(request).settings.agents]
    return {"success": True, "data": {"agents": agents}}


@router.get(f"{SESSIONS}/health")
async def health(request: Request) -> dict[str, Any]:
    services = services_of(request)
    counts = await services.sessions.health()
    return {
        "status": "healthy",
        "activeSessions": counts["activeSessions"],
        "expiringSoon": counts["expiringSoon"],
        "timestamp": services.clock.now().isoformat(),
        "uptime": _uptime(request),
    }


async def _owned(request: Request, session_id: str) -> str:
    """The session id, after the policy checked the caller may see the session's community."""
    sid = _sid(session_id)
    community = await services_of(request).sessions.community_of(sid)
    if community is not None:  # unknown ids get the service's own SESSION_NOT_FOUND
        access.require_session(caller(request), sid, community)
    return sid


@router.post(SESSIONS, status_code=201)
async def create_session(request: Request) -> dict[str, Any]:
    body = await json_object(request)
    metadata = body.get("metadata")
    requested = metadata.get("community") if isinstance(metadata, dict) else None
    own = access.session_community_for(caller(request), requested)
    if own is not None and (metadata is None or isinstance(metadata, dict)):  # a key's own web community
        metadata = {**(metadata or {}), "community": own}
    info = await services_of(request).sessions.create(
        body.get("agentId"), body.get("userId"), metadata=metadata, timeout_config=body.get("timeoutConfig")
    )
    api = info.as_api()
    return {key: api[key] for key in CREATED_KEYS}


@router.get(SESSIONS)
async def list_sessions(request: Request) -> dict[str, Any]:
    sessions, stats = await services_of(request).sessions.list(community=access.list_scope(caller(request)))
    return {"sessions": [s.as_api() for s in sessions], "total": len(sessions), "stats": stats}


@router.get(f"{SESSIONS}/{{session_id}}")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    return (await services_of(request).sessions.get(await _owned(request, session_id))).as_api()


@router.post(f"{SESSIONS}/{{session_id}}/messages", status_code=201, response_model=None)
async def send_message(session_id: str, request: Request) -> JSONResponse | StreamingResponse:
    return await _send_message(session_id, request, await json_object(request))


async def _send_message(session_id: str, request: Request, body: dict[str, Any]) -> JSONResponse | StreamingResponse:
    transport = _transport(body)
    services, responder = services_of(request), _responder(request)
    content = body.get("content")
    if transport != "sse":  # the access check runs inside the message's own transaction
        sid, who = _sid(session_id), caller(request)
        result = await services.sessions.send_message(
            sid, content, attachments=body.get("attachments"), metadata=body.get("metadata"), responder=responder,
            allow=lambda community: access.require_session(who, sid, community),
        )
        return _message_response(transport, result)
    # SSE: store the user's message now, so 4xx stay plain JSON; reply in the stream
    session_id = await _owned(request, session_id)
    first = await services.sessions.send_message(
        _sid(session_id), content, attachments=body.get("attachments"), metadata=body.get("metadata")
    )
    return StreamingResponse(
        _stream_reply(services, first, responder, content),
        status_code=201,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _message_response(transport: str, result: SendResult) -> JSONResponse:
    payload: dict[str, Any] = {
        "success": True,
        "userMessage": _user_message(result),
        "sessionStatus": _session_status(result),
    }
    if transport == "http" and result.agent_message is not None:
        payload["agentResponse"] = _agent_response(result.agent_message)
    return _with_data_mirror(payload, status=201)


@router.get(f"{SESSIONS}/{{session_id}}/messages", response_model=None)
async def list_messages(session_id: str, request: Request) -> Response:
    query = request.query_params
    sid, who = _sid(session_id), caller(request)
    rendered = await services_of(request).sessions.messages_json(  # a live session's page, in one read
        sid, limit=query.get("limit"), before=query.get("before"), after=query.get("after"),
        allow=lambda community: access.require_session(who, sid, community),
    )
    if rendered is not None:
        return Response(rendered, media_type="application/json")
    session_id = await _owned(request, session_id)
    page = await services_of(request).sessions.messages(
        _sid(session_id), limit=query.get("limit"), before=query.get("before"), after=query.get("after")
    )
    out: dict[str, Any] = {"messages": [m.as_api() for m in page.messages], "hasMore": page.has_more}
    if page.messages:  # newest first: the last is the oldest
        out["cursors"] = {"before": to_ms(page.messages[-1].created_at), "after": to_ms(page.messages[0].created_at)}
    return JSONResponse(out)  # plain JSON types already: no second pass through jsonable_encoder


@router.post(f"{SESSIONS}/{{session_id}}/renew")
async def renew_session(session_id: str, request: Request) -> dict[str, Any]:
    return (await services_of(request).sessions.renew(await _owned(request, session_id))).as_api()


@router.post(f"{SESSIONS}/{{session_id}}/heartbeat")
async def heartbeat(session_id: str, request: Request) -> dict[str, Any]:
    return (await services_of(request).sessions.heartbeat(await _owned(request, session_id))).as_api()


@router.patch(f"{SESSIONS}/{{session_id}}/timeout")
async def update_timeout(session_id: str, request: Request) -> dict[str, Any]:
    body = await json_object(request)
    return (await services_of(request).sessions.update_timeout(await _owned(request, session_id), body)).as_api()


@router.delete(f"{SESSIONS}/{{session_id}}")
async def delete_session(session_id: str, request: Request) -> JSONResponse:
    sid = await _owned(request, session_id)
    await services_of(request).sessions.end(sid)
    return _with_data_mirror({"success": True, "message": f"Session {sid} deleted successfully"})


# -- the hot routes, dispatched without the framework's routing -------------------------------------


class HotRoutes:
    """Pure ASGI middleware, inside GuardMiddleware (the caller, limits and row scope are settled):
    session create, message post and the messages page go straight to their endpoints above.

    The same endpoint functions answer, with the same bodies and error shapes (errors.install's
    rules: a NubiError its documented code, anything else a logged 500), but without FastAPI's
    routing, request/response cycle and dependency solving, which cost more than the endpoint
    itself on these routes (bench/README.md). Every other request, and these with another method
    or an SSE reply, goes through the app as before; a body already read is handed on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and path == SESSIONS:
            await self._answer(scope, receive, send, None, _create)
            return
        if path.startswith(SESSIONS_PREFIX) and path.endswith("/messages"):
            session_id = path[len(SESSIONS_PREFIX):-len("/messages")]
            if session_id and "/" not in session_id:
                if method == "GET":
                    await self._answer(scope, receive, send, session_id, list_messages)
                    return
                if method == "POST":
                    await self._answer(scope, receive, send, session_id, _post)
                    return
        await self.app(scope, receive, send)

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any, session_id: str | None,
                      endpoint: Any) -> None:
        request = Request(scope, receive)
        try:
            response = await (endpoint(request) if session_id is None else endpoint(session_id, request))
        except _Elsewhere:  # an SSE reply: the app streams it, from the body already read
            await self.app(scope, _replay(await request.body(), receive), send)
            return
        except NubiError as exc:
            response = error_response(exc.code, exc.message, exc.details or None)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = error_response("INTERNAL_SERVER_ERROR", "An unexpected error occurred", status=500)
        await response(scope, receive, send)


SESSIONS_PREFIX = SESSIONS + "/"


class _Elsewhere(Exception):
    """The request is the app's to answer (raised before anything was done)."""


async def _create(request: Request) -> JSONResponse:
    return JSONResponse(await create_session(request), status_code=201)


async def _post(session_id: str, request: Request) -> JSONResponse:
    body = await json_object(request)
    if _transport(body) == "sse":
        raise _Elsewhere()
    return await _send_message(session_id, request, body)  # type: ignore[return-value]


def _replay(body: bytes, receive: Any) -> Any:
    """The body read already, then what the connection says next (a disconnect, in time)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return await receive()  # type: ignore[no-any-return]
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
