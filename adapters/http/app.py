"""The one ASGI app: REST (Sessions API, raids), Socket.IO at /socket.io/, the dashboard at /, MCP."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from core.services import Services

from . import errors, socketio_lib
from .security import Guard, GuardMiddleware, HostGuard


def _no_telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry hooks off, where the installed FastAPI has them (0.165 and later;
    the floor is older): nubi configures no OpenTelemetry, and FastAPI asked the global providers
    whether it should trace on every request, about a twentieth of a session create's time."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(
    services: Services,
    *,
    mounts: Sequence[tuple[str, Any]] = (),
    routes: Sequence[tuple[str, Any]] = (),
    lifespans: Sequence[Any] = (),
) -> Any:
    """Build the ASGI application around `services`.

    `mounts` adds (path prefix, ASGI app) pairs (e.g. MCP at /mcp); `routes` adds (exact path, ASGI app)
    pairs answering POST (the Telegram webhook: a mount would redirect the bare path, which Telegram
    does not follow); `lifespans` are async context managers entered for the app's lifetime (a
    mounted app's own lifespan is not run by Starlette, e.g. MCP's session manager).

    The result is the Host guard around the Socket.IO wrapper around the FastAPI app; `.fastapi` is the
    FastAPI app and `.state` its state (`.state.services`, `.state.realtime`).
    """
    app = FastAPIOffline(  # FastAPI whose /docs loads Swagger UI from nubi itself, not from a CDN
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/static",
        title="nubi API",
        version="0.1.0",
        description="ElizaOS-compatible Sessions API plus nubi's raid and community API.",
        responses=errors.RESPONSES,
        **_no_telemetry(),
    )
    app.state.services = services
    app.state.guard = Guard(services.settings.http)
    errors.install(app)
    from . import sessions_api

    app.add_middleware(sessions_api.HotRoutes)  # inside the guard: its checks run first
    app.add_middleware(GuardMiddleware, guard=app.state.guard)
    if services.settings.http.cors_origins:  # off by default: only the listed origins may call from a browser
        app.add_middleware(
            CORSMiddleware,
            allow_origins=services.settings.http.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Content-Type", "X-API-KEY"],
        )

    app.include_router(sessions_api.router)
    try:
        from . import raids_api
    except ImportError:  # built in its own step
        raids_api = None  # type: ignore[assignment]
    if raids_api is not None:
        app.include_router(raids_api.router)
    from . import partners_api, settings_api

    app.include_router(settings_api.router)
    app.include_router(partners_api.router)
    from . import dashboard, realtime

    sio = realtime.attach(app).sio  # the Socket.IO server, its event-bus bridge, POST /api/realtime/token
    dashboard.attach(app)  # the page at /, /static, /api/dashboard/*
    for path, sub in mounts:
        app.mount(path, sub)
    for path, endpoint in routes:
        app.router.routes.append(Route(path, endpoint, methods=["POST"]))
    if lifespans:
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
            async with AsyncExitStack() as stack:
                for cm in lifespans:
                    await stack.enter_async_context(cm)
                async with inner(asgi_app) as state:
                    yield state

        app.router.lifespan_context = lifespan
    wrapper = socketio_lib.load().ASGIApp(sio, other_asgi_app=app, socketio_path="socket.io")
    outer = HostGuard(wrapper, services.settings.http)  # every path and protocol: REST, Socket.IO, MCP
    outer.fastapi = app
    outer.state = app.state
    return outer
