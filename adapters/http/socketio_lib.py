"""python-socketio for nubi's server, loaded without the client and message-queue libraries it does not use.

socketio's package imports every client and manager it has, and their modules import aiohttp,
requests and redis where installed (each inside `try: import ... except ImportError`): about 30 MiB
of an idle `nubi run` that serves Socket.IO and uses none of them. So while socketio loads for a
server without Redis, those libraries read as not installed (the same path socketio takes when they
are missing); libraries already loaded, or loaded later by anyone else, are unaffected. With
realtime.redis_url set, socketio loads as usual, and if it was loaded without redis before (several
apps in one process, as in tests), its Redis managers are loaded again, now with redis.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

CLIENT_SIDE = ("aiohttp", "requests", "websocket", "redis", "valkey")  # what socketio's clients and managers import
_hidden: set[str] = set()  # what was hidden while socketio loaded


def load(*, redis: bool = False) -> ModuleType:
    """The socketio package; `redis` when the server uses AsyncRedisManager."""
    if "socketio" not in sys.modules and not redis:
        hide = [name for name in CLIENT_SIDE if name not in sys.modules]
        for name in hide:
            sys.modules[name] = None  # type: ignore[assignment]  # the documented "not installed" mark
        try:
            import socketio
        finally:
            for name in hide:
                if sys.modules.get(name, ...) is None:
                    del sys.modules[name]
        _hidden.update(hide)
    import socketio

    if redis and _hidden & {"redis", "valkey"}:
        _hidden.difference_update({"redis", "valkey"})
        for name in ("socketio.redis_manager", "socketio.async_redis_manager"):
            importlib.reload(sys.modules[name])  # the same module objects, now with redis bound
    return socketio
