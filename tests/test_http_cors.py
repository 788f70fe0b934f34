"""CORS is off unless configured; then only the listed origins get the headers (preflight included)."""

from __future__ import annotations

import httpx

from adapters.http.app import create_app
from core.config import Settings
from core.events import EventBus
from core.services import Services
from core.storage.db import Database


async def _get(app, origin: str, method: str = "GET") -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        if method == "OPTIONS":
            return await client.options("/api/agents", headers={
                "Origin": origin, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-API-KEY"})
        return await client.get("/api/agents", headers={"Origin": origin})


async def test_cors_off_by_default_and_scoped_when_configured(db_url: str, clock) -> None:
    plain = Services(Database(db_url), clock, Settings(), EventBus())
    allowed = Services(Database(db_url), clock, Settings(http={"cors_origins": ["https://dash.example.org"]}),
                       EventBus())
    try:
        r = await _get(create_app(plain), "https://dash.example.org")
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        app = create_app(allowed)
        ok = await _get(app, "https://dash.example.org")
        assert ok.headers["access-control-allow-origin"] == "https://dash.example.org"
        other = await _get(app, "https://evil.example.com")
        assert "access-control-allow-origin" not in other.headers
        pre = await _get(app, "https://dash.example.org", "OPTIONS")
        assert pre.status_code == 200 and "X-API-KEY".lower() in pre.headers["access-control-allow-headers"].lower()
    finally:
        await plain.db.dispose()
        await allowed.db.dispose()
