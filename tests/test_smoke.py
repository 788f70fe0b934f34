"""The smoke set: what CI also runs on the lowest dependency versions pyproject.toml allows.

It proves the floors are true: the migrations build both databases, a raid runs through the real
core from start to report on each, and the HTTP app starts and answers.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text

from adapters.http.app import create_app
from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import Services

pytestmark = pytest.mark.smoke

CHAT = ChatRef("telegram", "-100777", "Smoke")


async def test_a_raid_runs_from_start_to_report(services: Services) -> None:
    started = await services.raids.start(
        CHAT, RaidSpec("https://x.com/nubi/status/7", {"like": 2}), by=MemberRef("telegram", "1", "mod", "mod")
    )
    for i in (2, 3):
        who = MemberRef("telegram", str(i), f"m{i}", f"m{i}")
        await services.raids.join(started.id, who)
        await services.raids.claim(started.id, who, "like")
    progress = await services.raids.progress(started.id)
    assert progress.status == "completed"
    report = await services.raids.report(started.id)
    assert report is not None and report["participants"] == 2


async def test_concurrent_commands_share_batches(services: Services) -> None:
    """Commands arriving together go through group commit (the batch path every floor must carry)."""
    started = await services.raids.start(CHAT, RaidSpec("https://x.com/nubi/status/8", {"like": 100}))
    members = [MemberRef("telegram", str(100 + i), f"b{i}", f"b{i}") for i in range(40)]
    await asyncio.gather(*(services.raids.join(started.id, m) for m in members))
    await asyncio.gather(*(services.raids.claim(started.id, m, "like") for m in members))
    progress = await services.raids.progress(started.id)
    assert progress.participants == 40
    assert {o.action: o.count for o in progress.objectives} == {"like": 40}


async def test_the_http_app_starts_and_answers(services: Services) -> None:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        health = await client.get("/api/messaging/sessions/health")
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        docs = await client.get("/openapi.json")
        assert docs.status_code == 200 and "/api/raids" in docs.json()["paths"]


def test_group_commit_defaults_per_database() -> None:
    """Unset, group commit is on for SQLite (one writer) and off for PostgreSQL (a transaction per
    command on the pool); an operator's explicit choice wins on both."""
    from core.config import DatabaseConfig

    sqlite, pg = "sqlite+aiosqlite:///nubi.db", "postgresql+asyncpg://nubi@127.0.0.1/nubi"
    assert DatabaseConfig().group_commit_for(sqlite) is True
    assert DatabaseConfig().group_commit_for(pg) is False
    assert DatabaseConfig(group_commit=True).group_commit_for(pg) is True
    assert DatabaseConfig(group_commit=False).group_commit_for(sqlite) is False


async def test_nubi_services_follow_the_default(db_url: str) -> None:
    from core.config import DatabaseConfig, Settings
    from core.services import build_services

    services = build_services(Settings(database=DatabaseConfig(url=db_url)))
    try:
        assert services.db.group_commit is db_url.startswith("sqlite")
        await test_concurrent_commands_share_batches(services)  # the cap and counts hold either way
    finally:
        await services.db.dispose()


async def test_postgresql_holds_its_pool_size_one_connection_per_command(db_url: str) -> None:
    """`database.pool_size` is how many connections a process holds (unset: five per core, at most
    20); a command that asks for a second connection while it holds one is refused at once,
    where `pool_size` such commands would otherwise wait for each other forever."""
    import os

    import asyncpg

    from core.config import DatabaseConfig, Settings
    from core.services import build_services
    from core.storage.lanes import default_size

    if db_url.startswith("sqlite"):
        pytest.skip("SQLite holds one writer and its readers, not a pool")
    assert default_size() == min(20, 5 * len(os.sched_getaffinity(0)))
    services = build_services(Settings(database=DatabaseConfig(url=db_url, pool_size=3)))
    watcher = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        assert services.db.pool_size == 3
        sleeps = [asyncio.create_task(services.db.read_sql(lambda q: q.value("SELECT pg_sleep(0.3)")))
                  for _ in range(8)]
        await asyncio.sleep(0.15)
        held = await watcher.fetchval(  # the sleeps running at once (other backends may be connected too)
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active'"
            " AND query = 'SELECT pg_sleep(0.3)'")
        await asyncio.gather(*sleeps)  # the other five waited their turn
        assert held == 3

        async def nested(q):  # type: ignore[no-untyped-def]
            await q.run("UPDATE nubi_sessions SET status = status WHERE false")
            await services.db.read_sql(lambda other: other.value("SELECT 1"))

        with pytest.raises(RuntimeError, match="asked for a second one"):
            await services.db.write_sql(nested)
        started = []

        async def spawner(q):  # type: ignore[no-untyped-def]
            await q.run("UPDATE nubi_sessions SET status = status WHERE false")
            started.append(asyncio.create_task(services.db.read_sql(lambda other: other.value("SELECT 2"))))

        await services.db.write_sql(spawner)
        assert await started[0] == 2  # a task it started is a command of its own
        assert await services.db.read(lambda s: s.scalar(text("SELECT 1"))) == 1  # nothing left stuck
    finally:
        await watcher.close()
        await services.db.dispose()
