"""schemathesis against the served OpenAPI document: no 5xx, and every response matches the schema.

A real uvicorn server runs nubi's app in its own thread and loop (schemathesis calls it over HTTP
with a synchronous client), on a fresh SQLite database with one raid to act on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from adapters.http.app import create_app
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import build_services
from migrations import upgrade
from tests.pg import free_port


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url)
    port = free_port()
    started = threading.Event()
    holder: dict[str, uvicorn.Server] = {}

    def serve() -> None:
        async def main() -> None:
            # the fuzzer sends far more than a client would: lift the per-address rate limit for it
            services = build_services(Settings(database={"url": url}, http={"rate_limit_per_minute": 1_000_000}))
            raid = await services.raids.start(ChatRef("telegram", "-1"), RaidSpec("https://x.com/a/status/1"))
            await services.raids.join(raid.id, MemberRef("telegram", "1", "one"))
            server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port,
                                                   log_level="error", lifespan="on"))
            holder["server"] = server
            task = asyncio.create_task(server.serve())
            while not server.started:  # uvicorn offers no event for this  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            started.set()
            await task
            await services.db.dispose()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    yield f"http://127.0.0.1:{port}"
    holder["server"].should_exit = True
    thread.join(20)


@pytest.fixture(scope="module")
def api_schema(api_url: str):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


# One test runs every operation of the schema as a subtest (about 2 s each on a loaded 2-core machine):
# the suite's 120 s per test is too tight for the whole API, which grows with each route.
@pytest.mark.timeout(600)
@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_responses_match_the_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.response_schema_conformance,
        ]
    )


def test_oversized_bodies_are_refused_with_the_documented_error(api_url: str) -> None:
    import httpx

    big = {"agentId": "6f1c3e2a-9b7d-4e5f-8a1b-2c3d4e5f6a7b", "userId": "6f1c3e2a-9b7d-4e5f-8a1b-2c3d4e5f6a7c",
           "metadata": {"blob": "x" * 2_000_000}}
    r = httpx.post(f"{api_url}/api/messaging/sessions", json=big, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    meta = dict(big, metadata={"blob": "x" * 20_000})
    r = httpx.post(f"{api_url}/api/messaging/sessions", json=meta, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["details"]["field"] == "metadata"
