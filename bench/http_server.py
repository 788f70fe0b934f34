"""The servers the HTTP benchmark measures, each in a process of its own on 127.0.0.1.

  python -m bench.http_server nubi URL PORT   nubi's ASGI app (create_app) on a migrated database
  python -m bench.http_server bare PORT       a bare ASGI app: 200 and a two-byte body, no work

Both run under the same uvicorn settings and event loop as `nubi run` (bot/app.py), and nubi's app
settles its heap after startup as `nubi run` does; the bare one is the baseline, so a ratio shows what
nubi's request handling costs over the server and the load generator.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def nubi_app(url: str) -> Any:
    # Imported here, so the bare server's RSS is uvicorn's alone.
    from adapters.http.app import create_app
    from core.clock import SystemClock
    from core.config import HttpConfig
    from core.events import EventBus
    from core.services import Services
    from core.storage.db import Database

    from .env import bench_settings

    # The load generator is one address: lift the per-address rate limit out of the way.
    settings = bench_settings(url).model_copy(update={"http": HttpConfig(rate_limit_per_minute=1_000_000_000)})
    services = Services(Database(url), SystemClock(), settings, EventBus())
    return create_app(services)


def serve_nubi(url: str, port: int) -> None:
    from bot.app import settle_heap

    app = nubi_app(url)
    settle_heap()  # as `nubi run` does once it has started
    serve(app, port)


def serve(app: Any, port: int) -> None:
    uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False)
    ).run()


if __name__ == "__main__":
    if sys.argv[1] == "bare":
        serve(bare_app, int(sys.argv[2]))
    else:
        serve_nubi(sys.argv[2], int(sys.argv[3]))
