"""Serving the MCP server: stdio for `nubi mcp`, streamable HTTP mounted into the main app at /mcp.

HTTP runs stateless with plain JSON responses: each POST carries a whole exchange, so any nubi process
behind a load balancer can answer it (no sticky sessions, no per-client state to expire) and proxies
need no SSE support. The tools never call back into the client, so nothing is lost by it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from adapters.http.errors import error_response
from core import access
from core.config import HttpConfig
from core.errors import NubiError
from core.services import Services

from .server import build_mcp


async def run_stdio(services: Services) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it.

    Stdout is the protocol: logging must go to stderr (the default handler does) and nothing may print.
    """
    await build_mcp(services).run_stdio_async()


def mcp_http_app(services: Services) -> Starlette:
    """An ASGI app answering MCP at its root: mount it at /mcp, so clients use `http://host:port/mcp/`
    (`/mcp` answers with a same-origin 307 to it, which MCP clients follow).

    Mounted apps get no lifespan from Starlette: enter `mcp_lifespan(app)` in the main app's lifespan.
    """
    server = build_mcp(services)
    app = server.streamable_http_app(
        streamable_http_path="/",
        stateless_http=True,
        json_response=True,
        max_request_body_size=services.settings.http.max_body_bytes,
        transport_security=transport_security(services.settings.http),
    )
    app.add_middleware(AdminKeyOnly)
    app.state.session_manager = server.session_manager
    return app


@asynccontextmanager
async def mcp_lifespan(app: Starlette) -> AsyncIterator[None]:
    """Run the MCP app's session manager (its task group) for as long as the main app serves.

    Enter it once per app from mcp_http_app, and only when the app is mounted: served on its own,
    the app's own lifespan does this.
    """
    async with app.state.session_manager.run():
        yield


def transport_security(config: HttpConfig) -> TransportSecuritySettings:
    """The SDK's own Host/Origin check stays off: the main app's HostGuard and GuardMiddleware apply the
    same rule (allowed Host names, same-origin or configured browser writes) to MCP as to every other
    path, with the documented error shape."""
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class AdminKeyOnly:
    """MCP tools act on any community, so the policy admits admin callers only (core/access.py).

    The main app's GuardMiddleware has already resolved the caller into scope["state"]["caller"];
    served without it (no caller), the app is open, like the API without keys: stdio-like, local.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        who = (scope.get("state") or {}).get("caller")
        if scope["type"] == "http" and who is not None:
            try:
                access.require_admin(who)
            except NubiError as exc:
                await error_response(exc.code, "MCP needs an admin API key; this caller is scoped to one community.",
                                     status=401 if exc.code == "UNAUTHORIZED" else 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
