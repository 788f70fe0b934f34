"""MCP adapter: raid tools and resources for AI agents, over stdio (`nubi mcp`) or HTTP at /mcp.

The names below load the MCP SDK (about 20 MiB) when first used, not when this package is imported:
`nubi run` mounts `LazyMcp` (adapters/mcp/mount.py), which needs none of it until a client calls /mcp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .mount import LazyMcp
    from .server import build_mcp
    from .transport import mcp_http_app, mcp_lifespan, run_stdio

__all__ = ["LazyMcp", "build_mcp", "mcp_http_app", "mcp_lifespan", "run_stdio"]

_HOMES = {"LazyMcp": "mount", "build_mcp": "server", "mcp_http_app": "transport", "mcp_lifespan": "transport",
          "run_stdio": "transport"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{home}", __name__), name)
