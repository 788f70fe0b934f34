"""The composition root: config -> database -> services -> scheduler -> adapters -> HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import Callable
from typing import Any

from core.config import Settings
from core.services import Services, build_services

from .preflight import StartupError, bind_socket, check_settings, migrate_async, platform_failure
from .scheduler import NubiScheduler

__all__ = ["NubiApp", "StartupError", "loop_factory", "settle_heap"]

log = logging.getLogger("nubi")

GC_YOUNG_THRESHOLD = 20_000  # objects allocated between young collections (CPython's default: 700)


def settle_heap() -> None:
    """Take what startup built (modules, mappers, compiled statements, the app) out of the garbage
    collector's sight, and collect the young generation less often.

    Every full collection otherwise walks those few hundred thousand objects again: under load that
    was a 50-80 ms pause now and then, the whole of the HTTP API's p99 (bench/README.md). Called once,
    after the app has started; objects created later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (it is a dependency on Linux and macOS), else asyncio's own loop;
    uvicorn makes the same choice."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class NubiApp:
    def __init__(self, settings: Settings, *, services: Services | None = None) -> None:
        self.settings = settings
        self.services = services
        self.scheduler: NubiScheduler | None = None
        self.adapters: list[Any] = []
        self.http_server: Any = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_socket: socket.socket | None = None
        self.asgi: Any = None

    async def start(self) -> None:
        s = self.settings
        check_settings(s)
        if s.http.enabled:  # taken first: a port in use stops the start before any platform is touched
            self._http_socket = bind_socket(s.http.host, s.http.port)
        await migrate_async(s.database.url)
        self.services = self.services or build_services(s)
        if s.x.bearer_token is not None:
            from adapters.x.verifier import install

            install(self.services)  # /link proves handles with a one-time code; sweeps verify claims
        if s.scheduler.enabled:
            self.scheduler = NubiScheduler(self.services)
            await self.scheduler.start()
        routes: list[tuple[str, Any]] = []
        if s.telegram.token is not None:
            from adapters.telegram.adapter import TelegramAdapter

            tg = TelegramAdapter(self.services, s.telegram)
            self.adapters.append(tg)  # so stop() closes what start() opened, also after a failure
            with platform_failure("Telegram", f"the Bot API at {s.telegram.api_base_url}",
                                  secrets=(s.telegram.token.get_secret_value(),)):
                await tg.start()
            if tg.webhook_app is not None:
                routes.append(("/telegram/webhook", tg.webhook_app))
        if s.discord.token is not None:
            from adapters.discord.adapter import DiscordAdapter

            dc = DiscordAdapter(self.services, s.discord)
            self.adapters.append(dc)
            with platform_failure("Discord", "the Discord API", secrets=(s.discord.token.get_secret_value(),)):
                await dc.start()
        if s.http.enabled:
            await self._start_http(routes)
        log.info(
            "nubi is running: database %s, http %s, telegram %s, discord %s",
            self.services.db.dialect,
            f"http://{s.http.host}:{self.port}" if s.http.enabled else "off",
            "on" if s.telegram.token else "off (no token)",
            "on" if s.discord.token else "off (no token)",
        )

    @property
    def port(self) -> int:
        server = self.http_server
        if server is not None and getattr(server, "servers", None):
            sock = server.servers[0].sockets[0]
            return sock.getsockname()[1]
        return self.settings.http.port

    async def _start_http(self, routes: list[tuple[str, Any]]) -> None:
        import uvicorn

        from adapters.http.app import create_app
        from adapters.mcp.mount import LazyMcp

        assert self.services is not None
        mcp = LazyMcp(self.services)  # the MCP SDK is loaded by the first /mcp request, not here
        self.asgi = create_app(self.services, mounts=[("/mcp", mcp)], routes=routes, lifespans=[mcp.lifespan()])
        host, port = self.settings.http.host, self.settings.http.port
        sock, self._http_socket = self._http_socket, None
        assert sock is not None
        config = uvicorn.Config(
            self.asgi, host=host, port=port, log_level="warning", lifespan="on", access_log=False,
        )
        self.http_server = uvicorn.Server(config)
        self.http_server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._http_task = asyncio.create_task(self.http_server.serve(sockets=[sock]))
        while not self.http_server.started:
            if self._http_task.done():
                self._http_task.result()
                raise StartupError(f"the HTTP server could not start on {self.settings.http.host}:{self.settings.http.port}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._http_socket is not None:  # bound, but the start failed before serving on it
            self._http_socket.close()
            self._http_socket = None
        if self.http_server is not None:
            self.http_server.should_exit = True
            if self._http_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._http_task, 10)
        for adapter in reversed(self.adapters):
            with contextlib.suppress(Exception):
                await adapter.stop()
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.services is not None:
            await self.services.db.dispose()
