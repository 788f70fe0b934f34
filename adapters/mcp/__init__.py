"""MCP adapter: raid tools and resources for AI agents, over stdio (`nubi mcp`) or HTTP at /mcp."""

from .server import build_mcp
from .transport import mcp_http_app, mcp_lifespan, run_stdio

__all__ = ["build_mcp", "mcp_http_app", "mcp_lifespan", "run_stdio"]
