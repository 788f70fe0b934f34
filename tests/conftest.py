"""Shared fixtures: every storage and service test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from core.clock import FakeClock
from core.config import Settings
from core.events import EventBus, EventRecorder
from core.services import Services
from core.storage.db import Database
from migrations import upgrade
from tests import pg

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pg.Cluster | None]:
    reason = pg.missing_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI: {reason}")
        yield None
        return
    cluster = pg.start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: pg.Cluster | None) -> str | None:
    """A migrated template database; each test gets a fresh copy of it."""
    if pg_cluster is None:
        return None

    async def make() -> None:
        conn = await asyncpg.connect(pg_cluster.url.replace("+asyncpg", ""))
        try:
            await conn.execute("CREATE DATABASE nubi_template")
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop may already run in this thread
        pool.submit(asyncio.run, make()).result()
    upgrade(pg_cluster.url_for("nubi_template"))
    return "nubi_template"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


async def make_pg_database(cluster: pg.Cluster, template: str) -> str:
    name = f"t_{os.getpid()}_{next(_counter)}"
    conn = await asyncpg.connect(cluster.url.replace("+asyncpg", ""))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE {template}')
    finally:
        await conn.close()
    return cluster.url_for(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> AsyncIterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "nubi.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    if cluster is None:
        pytest.skip(f"PostgreSQL not available here: {pg.missing_reason()} (under CI this fails)")
    template = request.getfixturevalue("pg_template")
    yield await make_pg_database(cluster, template)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
async def services(db_url: str, clock: FakeClock, settings: Settings) -> AsyncIterator[Services]:
    db = Database(db_url)
    svc = Services(db, clock, settings, EventBus())
    svc.recorder = EventRecorder(svc.bus)  # type: ignore[attr-defined]
    try:
        yield svc
    finally:
        await db.dispose()
