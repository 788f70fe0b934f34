"""The HTTP side of the access policy: who is calling, from where, to which host; limits and caps.

Rules live in core/access.py; this module only turns a request (or a socket's handshake) into a
`Caller` and a client address, and refuses what never reaches a route:

- a `Host` that is not ours (DNS rebinding: a page on attacker.example whose name now points at
  127.0.0.1) gets 421, on every path, Socket.IO and MCP included (`HostGuard`, the outermost app);
- a browser write from another origin gets 403 (a hostile page POSTing to the loopback API);
- with keys configured, a request without a valid X-API-KEY gets 401, except on the public paths;
  without keys (loopback only, as `nubi run` enforces) a client that is not loopback gets 401;
- requests beyond the per-key and per-address rate limit get 429; bodies beyond the cap get 413.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every configured key,
so neither the match nor its position leaks through timing; the config may hold the digest only.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from core import access
from core.access import ADMIN, NOBODY, Caller
from core.catalog import community_id_of, community_name
from core.config import HttpConfig
from core.errors import NubiError, PermissionDenied, Unauthorized, Unavailable
from core.ratelimit import RateLimiter
from core.storage.db import Database
from core.storage.rls import community_scope

from .errors import error_response

Forbidden = PermissionDenied  # the names the routes raise
__all__ = ["Forbidden", "Unauthorized", "Guard", "GuardMiddleware", "HostGuard", "caller", "authorize_community",
           "authorize_moderation", "across_communities"]

# Reachable without an API key: the page and its files, the API docs, health, and the Telegram webhook
# (which checks Telegram's secret token itself). Exact paths: nothing below them is public.
OPEN_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico",
                        "/api/messaging/sessions/health", "/telegram/webhook"})
OPEN_PREFIXES = ("/static/", "/docs/static/")  # the dashboard's and Swagger UI's own files
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
NO_COMMUNITY = 0  # a community id no row has (ids start at 1): under row-level security it sees no rows


@functools.lru_cache(maxsize=4096)  # asked of every request's peer address: parsing it is most of the guard's time
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_public(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def split_host(header: str) -> tuple[str, str | None]:
    """("name", "port" or None) of a Host header; IPv6 literals keep no brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        name, _, rest = header[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") else None
    name, sep, port = header.rpartition(":")
    return (name, port) if sep and port.isdigit() else (header, None)


def host_allowed(header: str | None, allowed: list[str]) -> bool:
    """Loopback names with any port, plus `[http] allowed_hosts` ("name" any port, "name:port" that one)."""
    if not header:
        return False
    if "*" in allowed:
        return True
    name, port = split_host(header)
    if name in LOOPBACK_NAMES:
        return True
    for entry in allowed:
        want_name, want_port = split_host(entry)
        if want_name == name and want_port in (None, port):
            return True
    return False


def origin_allowed(origin: str | None, host: str | None, config: HttpConfig) -> bool:
    """No Origin (not a browser), the app's own origin, or a configured CORS origin."""
    if origin is None:
        return True
    if origin in config.cors_origins or "*" in config.cors_origins:
        return True
    netloc = urlsplit(origin).netloc.lower()
    return bool(host) and netloc == (host or "").lower()


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Guard:
    """Resolves callers and client addresses and keeps the rate limits; one per app."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self._keys: list[tuple[bytes, str]] = []
        for k in config.api_keys:
            digest = key_digest(k.key.get_secret_value()) if k.key is not None else bytes.fromhex(k.key_sha256 or "")
            self._keys.append((digest, k.community))
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self.limiter = RateLimiter(config.rate_limit_per_minute)
        self._community_ids: dict[str, int] = {}  # "<platform>:<external id>" -> communities.id

    @property
    def keys_configured(self) -> bool:
        return bool(self._keys)

    def caller_for(self, presented: str | None) -> Caller | None:
        """The caller a presented key makes (admin for the keyless API); None when it matches no key."""
        if not self._keys:
            return ADMIN
        if not presented:
            return None
        digest = key_digest(presented)
        found: Caller | None = None
        for i, (known, community) in enumerate(self._keys):  # every key is compared: no early exit
            if hmac.compare_digest(digest, known) and found is None:
                found = Caller("admin", key_id=f"key{i}") if community == "*" else access.community_key(
                    community, f"key{i}")
        return found

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The peer, or, when the peer is a trusted proxy, the nearest untrusted X-Forwarded-For hop."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def admits_address(self, address: str) -> bool:
        """The keyless API answers loopback clients only (a proxy in front must be a trusted one)."""
        return self.keys_configured or is_loopback(address)

    def limited(self, who: Caller | None, address: str) -> float | None:
        """Count one request of this caller from this address; seconds to wait when over the limit."""
        buckets = ([f"key:{who.key_id}"] if who is not None and who.key_id else []) + [f"ip:{address}"]
        for bucket in buckets:
            ok, wait = self.limiter.allow(bucket)
            if not ok:
                return wait
        return None

    async def row_scope(self, db: Database, who: Caller, *, reading: bool) -> int | None:
        """The community a scoped caller works under for row-level security; None: global work.

        A community gets its row with its first raid. Until then a scoped caller's reads see no
        community's rows, and its writes (the first raid among them) run unscoped, guarded by the policy.
        """
        if who.admin or not db.row_level_security:
            return None
        if who.community is None:
            return NO_COMMUNITY
        found = self._community_ids.get(who.community)
        if found is None:
            platform, _, external = who.community.partition(":")
            found = await community_id_of(db, platform, external)
            if found is None:
                return NO_COMMUNITY if reading else None
            self._community_ids[who.community] = found  # ids are never reused: stale, it hides rows only
        return found


@contextmanager
def across_communities() -> Iterator[None]:
    """Work that spans two communities by design, for a caller already authorized for its own: reading a
    raid's partner chats, linking two chats, merging two members. It runs as the chat adapters run the
    same commands, outside the row-level scope (which would hide the partner community's rows)."""
    with community_scope(None):
        yield


def caller(request: Request) -> Caller:
    return getattr(request.state, "caller", NOBODY)


async def authorize_community(request: Request, community_id: int | None) -> None:
    """Refuse a caller acting on a community it may not see (or on all of them, when community_id is None)."""
    who = caller(request)
    if who.admin:
        return
    if community_id is None:
        access.require_admin(who)
    name = await community_name(request.app.state.services.db, community_id) if community_id is not None else None
    access.require_community(who, name)


async def authorize_moderation(request: Request, community_id: int) -> None:
    """A moderator command of a community (chat's MODERATOR_TYPES: `/community ...`, `/member merge`): the
    caller sees the community and `access.may_moderate` says yes, the rule chat asks of its members."""
    who = caller(request)
    if who.admin:
        return
    name = await community_name(request.app.state.services.db, community_id)
    access.require_community(who, name)
    if name is None or not access.may_moderate(who, name):
        raise PermissionDenied("This caller may not moderate this community.")


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _host(scope: dict[str, Any]) -> str | None:
    """The Host header (the last one, as `_headers` keeps it)."""
    found = None
    for k, v in scope.get("headers", ()):
        if len(k) == 4 and k.lower() == b"host":
            found = v.decode("latin-1")
    return found


class HostGuard:
    """The outermost app: answers only to allowed Host names, on every path and protocol."""

    def __init__(self, app: Any, config: HttpConfig) -> None:
        self.app = app
        self.config = config

    def __getattr__(self, name: str) -> Any:  # .fastapi, .state, ... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not host_allowed(_host(scope),
                                                                         self.config.allowed_hosts):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await error_response("MISDIRECTED_REQUEST", "This server does not answer to that Host name",
                                 status=421)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class GuardMiddleware:
    """Pure ASGI middleware: body cap, Origin on writes, API key, rate limits, row scope. Before routing."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal, who = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = who
        try:
            db = scope["app"].state.services.db
            community_id = await self.guard.row_scope(db, who, reading=scope.get("method") in SAFE_METHODS)
        except Unavailable as exc:
            await error_response(exc.code, exc.message, status=503)(scope, receive, send)
            return
        with community_scope(community_id):  # contextvars follow into the request's tasks
            await self.app(scope, _capped_receive(receive, self.guard.config.max_body_bytes), send)

    def _check(self, scope: dict[str, Any]) -> tuple[Any, Caller]:
        guard, path, method = self.guard, scope.get("path", ""), scope.get("method", "GET")
        headers = _headers(scope)
        peer = str((scope.get("client") or ("?", 0))[0])
        address = guard.client_address(peer, headers.get("x-forwarded-for"))
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > guard.config.max_body_bytes:
            return error_response("PAYLOAD_TOO_LARGE", "Request body is too large", status=413), NOBODY
        if method not in SAFE_METHODS and not origin_allowed(headers.get("origin"), headers.get("host"), guard.config):
            return error_response("FORBIDDEN", "Writes from another web origin are refused", status=403), NOBODY
        who = guard.caller_for(headers.get("x-api-key"))
        if not guard.admits_address(address):
            who = None
        if who is None and not is_public(path):
            message = ("A valid X-API-KEY header is required" if guard.keys_configured
                       else "Without API keys this server answers loopback clients only")
            return error_response("UNAUTHORIZED", message, status=401), NOBODY
        wait = guard.limited(who, address)
        if wait is not None:
            return error_response(
                "RATE_LIMIT_EXCEEDED", "Too many requests; slow down", {"retryAfterSeconds": round(wait, 1)},
                status=429, headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            ), NOBODY
        return None, who or NOBODY


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
