"""How the browser-facing files leave the server: compressed, cached correctly, and an HTML page at the rate limit.

The dashboard and /docs are read by people on phones and slow links: Swagger UI's bundle is 1.5 MB and
socket.io's client 46 KiB raw, so they are sent gzip-compressed when the browser asks for it. The
dashboard's own files are referenced from the page with a content hash (`?v=...`), which lets a
browser keep them for a year and still see a new release at once; everything else is revalidated
with its ETag on every use. A person who reloads the page past the rate limit gets a short HTML page
saying when to come back, not a JSON error meant for programs.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import HTMLResponse

PAGES = ("/", "/docs")  # HTML pages a browser opens directly
COMPRESSED = ("/", "/static/", "/docs", "/openapi.json")
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"  # keep it, but ask (ETag / If-None-Match) before each use


@lru_cache(maxsize=64)
def _digest(path: Path, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def version(path: Path) -> str:
    """A short content hash of a static file, recomputed only when the file changes."""
    return _digest(path, path.stat().st_mtime_ns)


def versioned_page(page: Path, static_dir: Path) -> str:
    """The page with each `/static/NAME` reference carrying NAME's content hash."""
    html = page.read_text(encoding="utf-8")
    for asset in sorted(static_dir.iterdir()):
        if asset.is_file() and asset != page:
            ref = f'"/static/{asset.name}"'
            html = html.replace(ref, f'"/static/{asset.name}?v={version(asset)}"')
    return html


def rate_limited_page(retry_after: str | None) -> HTMLResponse:
    wait = retry_after if retry_after and retry_after.isdigit() else "a few"
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>nubi · slow down</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1c2233}}
a{{color:#3b3bb3}}</style></head>
<body><main><h1>Too many requests</h1>
<p>This address has made more requests in the last minute than the server allows.
Please wait {escape(wait)} seconds, then <a href="">reload the page</a>.</p></main></body></html>"""
    headers = {"Cache-Control": "no-store"}
    if retry_after:
        headers["Retry-After"] = retry_after
    return HTMLResponse(body, status_code=429, headers=headers)


class BrowserAssets:
    """Pure ASGI middleware in front of the whole app (outside the rate limiter, so it sees its 429s)."""

    def __init__(self, app: Any, static_dir: Path) -> None:
        self.app = app
        self.static_dir = static_dir
        self.gzip = GZipMiddleware(app, minimum_size=500, compresslevel=6)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = Headers(scope=scope)
        page = path in PAGES and "text/html" in headers.get("accept", "")
        cache = self._cache_control(path, scope.get("query_string", b"").decode("latin-1"))

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and cache and message["status"] in (200, 304):
                MutableHeaders(scope=message)["Cache-Control"] = cache
            await send(message)

        inner = self.gzip if path == "/" or path.startswith(COMPRESSED[1:]) else self.app
        if not page:
            await inner(scope, receive, send_wrapped)
            return
        await self._page(inner, scope, receive, send_wrapped)

    async def _page(self, inner: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Swap a 429 meant for programs for an HTML page meant for the person at the browser."""
        limited: dict[str, Any] = {}

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                limited["retry"] = Headers(raw=message.get("headers", [])).get("retry-after")
                return
            if limited:
                if not message.get("more_body", False):
                    await rate_limited_page(limited.get("retry"))(scope, receive, send)
                return
            await send(message)

        await inner(scope, receive, watch)

    def _cache_control(self, path: str, query: str) -> str | None:
        if not path.startswith("/static/"):
            return REVALIDATE if path in PAGES or path.startswith("/docs/") else None
        name = path[len("/static/"):]
        asset = self.static_dir / name
        if "/" in name or not asset.is_file():
            return None
        wanted = dict(p.partition("=")[::2] for p in query.split("&") if p).get("v")
        return IMMUTABLE if wanted == version(asset) else REVALIDATE
