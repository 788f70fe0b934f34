"""Where discord.py talks to: `[discord] api_base_url` and `gateway_url`.

discord.py 2.7 keeps both as public class attributes: `discord.http.Route.BASE` (every REST route,
including the interaction webhooks, is built on it) and `DiscordWebSocket.DEFAULT_GATEWAY` (an
unsharded client, or a sharded one with a fixed shard count, connects there without asking
`GET /gateway/bot`; a sharded client without a count asks that route, which is under the REST base).
They are process-wide, so they are set before each client is built: one Discord bot per process.
"""

from __future__ import annotations

import discord
import yarl
from discord.gateway import DiscordWebSocket

from core.config import DiscordConfig


def use_endpoints(config: DiscordConfig) -> None:
    """Point discord.py's REST client and gateway at the configured addresses."""
    discord.http.Route.BASE = config.api_base_url.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.gateway_url)
