"""/mcp for `nubi run`: the MCP server is built on the first request, not at start.

Most deployments never call /mcp, and the SDK with its models costs about 20 MiB of the server's
memory. The first request imports it (on a worker thread, so the event loop keeps answering), builds
the same app `mcp_http_app` returns and starts its session manager; later requests go straight to it.
Concurrent first requests wait for the one build. Access is unchanged: the main app's HostGuard and
GuardMiddleware run before this, and the built app keeps its AdminKeyOnly check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from core.services import Services


class LazyMcp:
    """An ASGI app to mount at /mcp; enter `lifespan()` in the main app's lifespan (Starlette runs no
    lifespan for a mounted app), so the session manager, if it was started, stops with the server."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.app: Any = None  # the built MCP app, once a request asked for it
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self.runner: asyncio.Task[None] | None = None  # holds the session manager open, once built
        self._closed = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = self.app if self.app is not None else await self._build()
        await app(scope, receive, send)

    async def _build(self) -> Any:
        async with self._lock:
            if self.app is not None:
                return self.app
            if self._closed:
                raise RuntimeError("the server is stopping: MCP is not started any more")
            transport = await asyncio.to_thread(_import_transport)
            app = transport.mcp_http_app(self.services)
            started = asyncio.Event()
            self.runner = asyncio.create_task(self._run(transport.mcp_lifespan(app), started))
            waiting = asyncio.create_task(started.wait())
            await asyncio.wait({self.runner, waiting}, return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            if not started.is_set():  # the session manager failed to start: say why, try again next time
                runner, self.runner = self.runner, None
                runner.result()
            self.app = app
            return app

    async def _run(self, lifespan: Any, started: asyncio.Event) -> None:
        """Hold the session manager open in a task of its own (its task group must be left by the task
        that entered it), until the main app stops."""
        async with lifespan:
            started.set()
            await self._stop.wait()

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._closed = True
            self._stop.set()
            if self.runner is not None:
                await self.runner


def _import_transport() -> Any:
    from . import transport

    return transport
