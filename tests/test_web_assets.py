"""Browser-facing files: /docs works with no network, assets leave compressed and cached correctly,
and a person past the rate limit gets an HTML page."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from pathlib import Path

import httpx
import pytest

from adapters.http.app import create_app
from adapters.http.dashboard import STATIC_DIR
from core.config import Settings
from core.services import Services
from tests.test_dashboard import JS_DIR, browser_or_skip
from tests.test_realtime import running

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # nothing here depends on the database
GZIP = {"Accept-Encoding": "gzip"}


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    return Settings(http={"rate_limit_per_minute": getattr(request, "param", 600)})


async def test_static_files_are_sent_gzip_compressed(services: Services) -> None:
    raw = (STATIC_DIR / "socket.io.min.js").read_bytes()
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        async with http.stream("GET", "/static/socket.io.min.js", headers=GZIP) as res:
            wire = b"".join([chunk async for chunk in res.aiter_raw()])
        assert res.status_code == 200 and res.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in res.headers["vary"].lower()
        assert gzip.decompress(wire) == raw and len(wire) < len(raw) / 2
        plain = await http.get("/static/socket.io.min.js", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == raw
        for path in ("/", "/static/dashboard.js", "/docs", "/docs/static/swagger-ui-bundle.js", "/openapi.json"):
            res = await http.get(path, headers=GZIP)
            assert res.status_code == 200 and res.headers.get("content-encoding") == "gzip", path


async def test_page_assets_carry_their_hash_and_are_cached_for_good(services: Services) -> None:
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        page = await http.get("/")
        assert page.headers["cache-control"] == "no-cache"  # the page itself is revalidated on every load
        refs = re.findall(r'"(/static/[^"?]+)\?v=([0-9a-f]{12})"', page.text)
        assert {r for r, _ in refs} >= {"/static/dashboard.js", "/static/dashboard.css", "/static/socket.io.min.js"}
        for ref, v in refs:
            res = await http.get(ref, params={"v": v})
            assert res.status_code == 200 and res.headers["cache-control"] == "public, max-age=31536000, immutable"
        stale = await http.get("/static/dashboard.js", params={"v": "000000000000"})
        assert stale.headers["cache-control"] == "no-cache"  # an old page's reference is revalidated
        bare = await http.get("/static/dashboard.js")
        assert bare.headers["cache-control"] == "no-cache" and bare.headers["etag"]
        again = await http.get("/static/dashboard.js", headers={"If-None-Match": bare.headers["etag"]})
        assert again.status_code == 304
        docs_js = await http.get("/docs/static/swagger-ui-bundle.js")
        assert docs_js.headers["cache-control"] == "no-cache" and docs_js.headers["etag"]


@pytest.mark.parametrize("settings", [3], indirect=True)
async def test_a_browser_past_the_rate_limit_gets_a_page(services: Services) -> None:
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        for _ in range(3):
            assert (await http.get("/", headers=html)).status_code == 200
        page = await http.get("/", headers=html)
        assert page.status_code == 429 and page.headers["content-type"].startswith("text/html")
        assert int(page.headers["retry-after"]) >= 1 and "Too many requests" in page.text
        assert f"wait {page.headers['retry-after']} seconds" in page.text
        program = await http.get("/", headers={"Accept": "application/json"})
        assert program.status_code == 429 and program.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
        api = await http.get("/api/dashboard/raids", headers=html)
        assert api.status_code == 429 and api.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"


async def test_docs_show_the_operations_with_no_network(services: Services, tmp_path: Path) -> None:
    node = browser_or_skip()
    async with running(create_app(services)) as url:
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "docs_offline.mjs"), url, str(tmp_path / "profile"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert "error" not in result, (result, err.decode()[-2000:])
    spec = create_app(services).fastapi.openapi()
    expected = sum(1 for ops in spec["paths"].values() for m in ops if m in ("get", "post", "patch", "put", "delete"))
    assert result["operations"] == expected and expected > 30
    assert result["refused"] == [] and result["problems"] == []  # nothing was even asked of another host
