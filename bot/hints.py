"""What `nubi run` prints once it is up: where it is, and, when no chat platform is configured yet,
what to do next. A newcomer who started it with no tokens sees an empty dashboard; these lines say
how to get a raid on it and where tokens go."""

from __future__ import annotations

import json

from core.config import Settings

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def base_url(settings: Settings, port: int) -> str:
    host = settings.http.host
    if host in WILDCARD_HOSTS:
        host = "127.0.0.1"  # listening everywhere: this machine reaches it on loopback
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def start_raid_curl(url: str, *, api_key: bool) -> str:
    """One shell line that starts a raid over the REST API (POST /api/raids)."""
    body = {
        "community": {"platform": "web", "id": "try-nubi", "title": "Trying nubi"},
        "targetUrl": "https://x.com/nubi/status/1800000000000000000",
        "objectives": {"like": 10, "repost": 5},
        "durationSeconds": 600,
    }
    key = " -H 'X-API-KEY: <your key>'" if api_key else ""
    return (f"curl -X POST {url}/api/raids -H 'content-type: application/json'{key} "
            f"-d '{json.dumps(body, separators=(',', ':'))}'")


def running_banner(settings: Settings, port: int) -> str:
    url = base_url(settings, port)
    lines = [f"nubi is running at {url} (Ctrl-C stops it)",
             f"  dashboard:  {url}/",
             f"  API docs:   {url}/docs"]
    if settings.http.enabled and settings.telegram.token is None and settings.discord.token is None:
        lines += [
            "No chat platform is configured yet. What to do next:",
            "  watch a whole raid:   nubi demo            (synthetic members, a throwaway database)",
            f"  start one over HTTP:  {start_raid_curl(url, api_key=bool(settings.http.api_keys))}",
            "  connect a bot:        set NUBI_TELEGRAM_TOKEN (from @BotFather, see docs/telegram.md) and/or",
            "                        NUBI_DISCORD_TOKEN in the environment or in config.toml, then restart nubi run",
        ]
    if not settings.http.enabled:
        lines = ["nubi is running (HTTP is off: http.enabled = false; Ctrl-C stops it)"]
    return "\n".join(lines)
