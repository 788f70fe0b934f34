"""API keys, per-key and per-address rate limits, and request body caps.

With no key configured the API is open, and `nubi run` refuses to bind anywhere but loopback.
A key is scoped to one community (`<platform>:<external id>`) or to all (`*`, admin); a scoped key
can neither read nor change another community's data.
"""

from __future__ import annotations

import hmac
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy import select

from core.catalog import community_id_of
from core.config import HttpConfig
from core.errors import NubiError, Unavailable
from core.storage.models import Community
from core.storage.rls import community_scope

from .errors import error_response

# Reachable without an API key: the page, its files, the API docs, health, and the Telegram webhook
# (which checks Telegram's secret token itself).
OPEN_PATHS = ("/", "/static", "/docs", "/openapi.json", "/api/messaging/sessions/health", "/favicon.ico",
              "/telegram/webhook")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NO_COMMUNITY = 0  # a community id no row has (ids start at 1): under row-level security it sees no rows


class Unauthorized(NubiError):
    code = "UNAUTHORIZED"


class Forbidden(NubiError):
    code = "FORBIDDEN"


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin key, a community key, or anyone (no keys configured)."""

    key_id: str | None
    community: str | None  # "<platform>:<external id>" for a scoped key; None for admin/open

    @property
    def admin(self) -> bool:
        return self.community is None


OPEN = Principal(None, None)


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


class Guard:
    """Resolves the caller and enforces rate limits; one per app."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self._keys = [(k.key.get_secret_value(), k.community) for k in config.api_keys]
        self._hits: dict[str, deque[float]] = {}

    @property
    def keys_configured(self) -> bool:
        return bool(self._keys)

    def principal_for(self, presented: str | None) -> Principal | None:
        if not self._keys:
            return OPEN
        if not presented:
            return None
        for i, (key, community) in enumerate(self._keys):
            if hmac.compare_digest(presented.encode(), key.encode()):
                return Principal(f"key{i}", None if community == "*" else community)
        return None

    def allow(self, bucket: str, now: float | None = None) -> tuple[bool, float]:
        """A sliding one-minute window per bucket; (allowed, seconds until a slot frees up)."""
        now = time.monotonic() if now is None else now
        q = self._hits.setdefault(bucket, deque())
        while q and q[0] <= now - 60:
            q.popleft()
        if len(q) >= self.config.rate_limit_per_minute:
            return False, max(0.0, q[0] + 60 - now)
        q.append(now)
        return True, 0.0


def principal(request: Request) -> Principal:
    return getattr(request.state, "principal", OPEN)


async def authorize_community(request: Request, community_id: int | None) -> None:
    """Refuse a scoped key acting on another community (or on everything, when community_id is None)."""
    who = principal(request)
    if who.admin:
        return
    if community_id is None:
        raise Forbidden("This API key is scoped to one community.")
    services = request.app.state.services
    row = await services.db.read(
        lambda s: s.execute(select(Community.platform, Community.external_id).where(Community.id == community_id))
    )
    found = row.first()
    if found is None or f"{found[0]}:{found[1]}" != who.community:
        raise Forbidden("This API key cannot access that community.")


def community_key_of(request: Request) -> str | None:
    """The community a scoped key is bound to (None for admin/open)."""
    return principal(request).community


class GuardMiddleware:
    """Pure ASGI middleware: body cap, API key, rate limits. Runs before routing."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard
        self._community_ids: dict[str, int] = {}  # "<platform>:<external id>" -> communities.id

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = (scope.get("client") or ("?", 0))[0]
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.guard.config.max_body_bytes:
            await error_response("PAYLOAD_TOO_LARGE", "Request body is too large", status=413)(scope, receive, send)
            return
        open_path = path == "/" or any(path == p or path.startswith(p + "/") for p in OPEN_PATHS if p != "/")
        who = self.guard.principal_for(headers.get("x-api-key"))
        if who is None and not open_path and not path.startswith("/socket.io"):
            await error_response("UNAUTHORIZED", "A valid X-API-KEY header is required", status=401)(
                scope, receive, send
            )
            return
        if not path.startswith("/socket.io"):
            for bucket in ([f"key:{who.key_id}"] if who and who.key_id else []) + [f"ip:{client}"]:
                ok, wait = self.guard.allow(bucket)
                if not ok:
                    await error_response(
                        "RATE_LIMIT_EXCEEDED", "Too many requests; slow down",
                        {"retryAfterSeconds": round(wait, 1)}, status=429,
                        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
                    )(scope, receive, send)
                    return
        scope.setdefault("state", {})["principal"] = who or OPEN
        try:
            community_id = await self._row_scope(scope, who)
        except Unavailable as exc:
            await error_response(exc.code, exc.message, status=503)(scope, receive, send)
            return
        with community_scope(community_id):  # contextvars follow into the request's tasks
            await self.app(scope, _capped_receive(receive, self.guard.config.max_body_bytes), send)

    async def _row_scope(self, scope: dict[str, Any], who: Principal | None) -> int | None:
        """The community a scoped key's request runs under for row-level security; None: global work.

        A community gets its row with its first raid. Until then a scoped key's reads see no
        community's rows, and its writes (the first raid among them) run unscoped, guarded only by
        the routes' own checks.
        """
        if who is None or who.community is None:
            return None
        db = scope["app"].state.services.db
        if not db.row_level_security:
            return None
        found = self._community_ids.get(who.community)
        if found is None:
            platform, _, external = who.community.partition(":")
            found = await community_id_of(db, platform, external)
            if found is None:
                return NO_COMMUNITY if scope.get("method") in SAFE_METHODS else None
            self._community_ids[who.community] = found  # ids are never reused: stale, it hides rows only
        return found


def _capped_receive(receive: Any, cap: int) -> Any:
    """Bodies without a Content-Length (chunked) are capped while they stream in."""
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise _BodyTooLarge()
        return message

    return wrapped


class _BodyTooLarge(NubiError):
    code = "PAYLOAD_TOO_LARGE"

    def __init__(self) -> None:
        super().__init__("Request body is too large")
