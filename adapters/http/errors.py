"""The documented error shape, `{"error": {code, message, details?, timestamp}}`, in one place."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from core import errors as e

log = logging.getLogger(__name__)

STATUS = {
    "VALIDATION_ERROR": 400,
    "SESSION_NOT_FOUND": 404,
    "AGENT_NOT_FOUND": 404,
    "NOT_FOUND": 404,
    "RAID_NOT_FOUND": 404,
    "NO_ACTIVE_RAID": 404,
    "SESSION_EXPIRED": 410,
    "SESSION_RENEWAL_FAILED": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "RATE_LIMIT_EXCEEDED": 429,
    "RAID_ENDED": 409,
    "RAID_FULL": 409,
    "RAID_ALREADY_ACTIVE": 409,
    "ALREADY_CLAIMED": 409,
    "CONFLICT": 409,
    "NOT_PARTICIPANT": 409,
    "UNKNOWN_OBJECTIVE": 400,
    "BANNED": 403,
    "SERVICE_UNAVAILABLE": 503,
    "MISDIRECTED_REQUEST": 421,
    "PAYLOAD_TOO_LARGE": 413,
    "INTERNAL_SERVER_ERROR": 500,
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: dict[str, Any] | None = None
    timestamp: str


class ErrorBody(BaseModel):
    """Every error the API answers with, documented on every operation of the OpenAPI document."""

    error: ErrorDetail


DOCUMENTED = {
    400: "Invalid input (the field is named in details)",
    401: "A valid X-API-KEY header is required",
    403: "The API key may not act on this community",
    404: "Not found",
    409: "Conflicts with the current state (raid ended or full, already active)",
    410: "The session has expired (answered once; then 404)",
    413: "Request body too large",
    421: "The Host header names a host this server does not answer to (DNS-rebinding guard)",
    429: "Rate limit exceeded",
    503: "The database is unavailable; try again shortly",
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in DOCUMENTED.items()
}


def status_of(exc: e.NubiError) -> int:
    """A domain error's status: its own code's, else its nearest base class's (a `LINK_CODE_USED` is a
    conflict, 409, like every `Conflict`), else 400."""
    for cls in type(exc).__mro__:
        code = getattr(cls, "code", None)
        if code in STATUS:
            return STATUS[code]
    return 400


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "timestamp": datetime.now(UTC).isoformat()}
    if details:
        err["details"] = details
    return {"error": err}


def error_response(code: str, message: str, details: dict[str, Any] | None = None, status: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status or STATUS.get(code, 400),
                        headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(e.NubiError)
    async def _domain(request: Request, exc: e.NubiError) -> JSONResponse:
        return error_response(exc.code, exc.message, exc.details or None, status=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        return error_response("VALIDATION_ERROR", message, {"field": field} if field else None, status=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 413: "PAYLOAD_TOO_LARGE",
                429: "RATE_LIMIT_EXCEEDED"}.get(exc.status_code, "VALIDATION_ERROR")
        return error_response(code, str(exc.detail), status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response("INTERNAL_SERVER_ERROR", "An unexpected error occurred", status=500)
