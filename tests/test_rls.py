"""Row-level security on PostgreSQL: a query for community A cannot see or write B's rows, even when
the code forgot its WHERE clause; global work sees everything; and migration 0003 goes up and down.

The app connects as a login role in `nubi_app` (not the tables' owner), as docs/rls.md tells operators.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

import core.storage.verification_models  # noqa: F401  (its tables are in Base.metadata too)
from adapters.http.app import create_app
from core.clock import FakeClock
from core.config import ApiKey, Settings
from core.directory import ChatRef, MemberRef
from core.errors import RaidNotFound
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from core.storage.models import Base
from core.storage.rls import RowSecurityBypassed, community_scope
from migrations import alembic_config, downgrade, upgrade
from tests import pg
from tests.conftest import make_pg_database

LOGIN = "nubi_web_test"
URL = "https://x.com/nubi/status/42"
A, B = ChatRef("telegram", "-1001", "Alpha"), ChatRef("telegram", "-1002", "Beta")
SCOPING_COLUMNS = {"community_id", "raid_id", "session_id", "schedule_id"}


@dataclass
class World:
    svc: Services
    owner_url: str
    app_url: str
    a: int  # community ids
    b: int
    raid_a: int
    raid_b: int


def member(n: int) -> MemberRef:
    return MemberRef("telegram", str(n), f"raider{n}")


async def _login_role(cluster: pg.Cluster) -> None:
    conn = await asyncpg.connect(cluster.url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            f"""DO $$ BEGIN
                  CREATE ROLE {LOGIN} LOGIN IN ROLE nubi_app;
                EXCEPTION WHEN duplicate_object THEN NULL;
                END $$"""
        )
    finally:
        await conn.close()


async def _database(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(owner URL, app URL) of a fresh database at head, the app role ready."""
    cluster = request.getfixturevalue("pg_cluster")
    if cluster is None:
        pytest.skip(f"PostgreSQL not available here: {pg.missing_reason()} (under CI this fails)")
    owner_url = await make_pg_database(cluster, request.getfixturevalue("pg_template"))
    await _login_role(cluster)
    return owner_url, owner_url.replace("//postgres@", f"//{LOGIN}@")


@pytest.fixture
async def world(request: pytest.FixtureRequest) -> AsyncIterator[World]:
    owner_url, app_url = await _database(request)
    settings = Settings()
    svc = Services(Database(app_url, row_level_security=True), FakeClock(), settings, EventBus())
    try:
        # Global work (no scope), as the scheduler and chat adapters do: two communities, a raid each
        # with a join, a claim and a metrics snapshot, ended (so it has a report), and a session with a message.
        raids = {}
        for chat, who in ((A, 1), (B, 2)):
            raid = await svc.raids.start(chat, RaidSpec(URL, {"like": 3}), by=member(who))
            await svc.raids.join(raid.id, member(who))
            await svc.raids.claim(raid.id, member(who), "like")
            assert await svc.raids.snapshot(raid.id)
            assert await svc.raids.end(raid.id)
            session = await svc.sessions.create(settings.agents[0].id, str(uuid.uuid4()), session_type="community",
                                                community_id=raid.community_id)
            await svc.sessions.send_message(session.id, f"hello from {chat.title}")
            raids[chat] = raid
        await svc.sessions.create(settings.agents[0].id, str(uuid.uuid4()))  # no community: visible to all
        yield World(svc, owner_url, app_url, raids[A].community_id, raids[B].community_id, raids[A].id, raids[B].id)
    finally:
        await svc.db.dispose()


async def _column(db: Database, sql: str, **params: Any) -> set[Any]:
    return set((await db.read(lambda s: s.execute(text(sql), params))).scalars())


# Each query forgets the community filter, the bug row-level security is there to contain.
FORGOTTEN = {
    "communities": "SELECT id FROM communities",
    "raid_sessions": "SELECT community_id FROM raid_sessions",
    "raid_objectives": "SELECT raid_id FROM raid_objectives",
    "raid_participants": "SELECT raid_id FROM raid_participants",
    "raid_actions": "SELECT raid_id FROM raid_actions",
    "raid_metrics": "SELECT raid_id FROM raid_metrics",
    "raid_reports": "SELECT raid_id FROM raid_reports",
    "member_scores": "SELECT community_id FROM member_scores",
    "community_members": "SELECT community_id FROM community_members",
    "nubi_sessions": "SELECT community_id FROM nubi_sessions WHERE session_type = 'community'",
    "session_messages": "SELECT content FROM session_messages",
}


def _expected(w: World, table: str) -> tuple[Any, Any]:
    """What FORGOTTEN[table] returns for community A's rows and for B's."""
    if table == "session_messages":
        return "hello from Alpha", "hello from Beta"
    if table in ("communities", "raid_sessions", "member_scores", "community_members", "nubi_sessions"):
        return w.a, w.b
    return w.raid_a, w.raid_b


async def test_a_scope_sees_only_its_rows_even_without_a_filter(world: World) -> None:
    db = world.svc.db
    for table, sql in FORGOTTEN.items():
        a, b = _expected(world, table)
        assert await _column(db, sql) == {a, b}, table  # global work sees every community
        with community_scope(world.a):
            assert await _column(db, sql) == {a}, table
        with community_scope(world.b):
            assert await _column(db, sql) == {b}, table
    with community_scope(world.a):  # sessions of no community stay visible inside a scope
        assert await _column(db, "SELECT count(*) FROM nubi_sessions WHERE community_id IS NULL") == {1}
    # The setting is transaction-local: the pooled connection carries nothing into global work.
    assert await _column(db, "SELECT community_id FROM raid_sessions") == {world.a, world.b}


async def test_a_scope_cannot_write_another_communitys_rows(world: World) -> None:
    db = world.svc.db
    m = (await _column(db, "SELECT id FROM members LIMIT 1")).pop()
    refused = [
        ("INSERT INTO bans (community_id, member_id, created_at) VALUES (:b, :m, now())", {"b": world.b, "m": m}),
        ("INSERT INTO raid_participants (raid_id, member_id, join_position, joined_at, points, claims_count,"
         " completed_all) VALUES (:r, :m, 99, now(), 0, 0, false)", {"r": world.raid_b, "m": m}),
        ("UPDATE raid_sessions SET community_id = :b WHERE id = :r", {"b": world.b, "r": world.raid_a}),
    ]
    with community_scope(world.a):
        for sql, params in refused:
            with pytest.raises(DBAPIError, match="row-level security"):
                await db.write(lambda s, sql=sql, params=params: s.execute(text(sql), params))
        changed = await db.write(lambda s: s.execute(text("UPDATE raid_sessions SET end_reason = 'scoped'")))
        deleted = await db.write(lambda s: s.execute(text("DELETE FROM raid_reports")))
        assert (changed.rowcount, deleted.rowcount) == (1, 1)  # the unfiltered writes touched A's rows only
    assert await _column(db, "SELECT end_reason FROM raid_sessions WHERE id = :r", r=world.raid_b) == {None}
    assert await _column(db, "SELECT raid_id FROM raid_reports") == {world.raid_b}


async def test_the_services_work_inside_a_scope_and_cannot_reach_out(world: World) -> None:
    svc = world.svc
    with community_scope(world.a):
        raid = await svc.raids.start(A, RaidSpec(URL, {"like": 2}), by=member(3))  # its own community row
        await svc.raids.join(raid.id, member(3))
        assert (await svc.raids.claim(raid.id, member(3), "like")).points > 0
        assert (await svc.raids.progress(raid.id)).participants == 1
        with pytest.raises(RaidNotFound):
            await svc.raids.progress(world.raid_b)
        with pytest.raises(DBAPIError, match="row-level security"):
            await svc.raids.start(B, RaidSpec(URL, {"like": 2}), by=member(3))
    assert raid.community_id == world.a
    assert await _column(svc.db, "SELECT count(*) FROM raid_sessions WHERE community_id = :b", b=world.b) == {1}


async def test_off_changes_nothing_and_an_exempt_role_is_refused(world: World) -> None:
    off = Database(world.app_url)  # same role, row_level_security off: a scope is not sent
    owner = Database(world.owner_url, row_level_security=True)  # the superuser owner is exempt
    try:
        with community_scope(world.a):
            assert await _column(off, "SELECT community_id FROM raid_sessions") == {world.a, world.b}
            with pytest.raises(RowSecurityBypassed, match="superuser"):
                await owner.read(lambda s: s.execute(text("SELECT 1")))
    finally:
        await off.dispose()
        await owner.dispose()
    upgrade(world.app_url)  # `nubi run` checks the revision as the app role: already at head, a no-op


async def test_rls_missing_from_the_database_is_refused(request: pytest.FixtureRequest) -> None:
    owner_url, app_url = await _database(request)
    downgrade(owner_url, "0002")
    db = Database(app_url, row_level_security=True)
    try:
        with pytest.raises(RowSecurityBypassed, match="without row-level security"):
            await db.read(lambda s: s.execute(text("SELECT 1")))
    finally:
        await db.dispose()


async def test_a_scoped_api_key_cannot_see_another_community(world: World) -> None:
    svc = world.svc
    svc.settings.http.api_keys = [ApiKey(key="key-a", community="telegram:-1001"), ApiKey(key="admin"),
                                  ApiKey(key="key-new", community="telegram:-1009")]
    app = create_app(svc)

    async def forgot_the_filter() -> dict[str, int]:
        return {"raids": (await _column(svc.db, "SELECT count(*) FROM raid_sessions")).pop()}

    app.fastapi.add_api_route("/api/test/raid-count", forgot_the_filter)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:

        async def count(key: str) -> int:
            r = await client.get("/api/test/raid-count", headers={"X-API-KEY": key})
            assert r.status_code == 200, r.text
            return r.json()["raids"]

        async def start(key: str, chat_id: str) -> None:
            body = {"community": {"platform": "telegram", "id": chat_id}, "targetUrl": URL, "objectives": {"like": 1}}
            r = await client.post("/api/raids", json=body, headers={"X-API-KEY": key})
            assert r.status_code == 201, r.text

        assert (await count("key-a"), await count("admin")) == (1, 2)
        await start("key-a", "-1001")  # a scoped request's own writes go through
        assert (await count("key-a"), await count("admin")) == (2, 3)
        r = await client.get(f"/api/raids/{world.raid_b}", headers={"X-API-KEY": "key-a"})
        assert r.status_code == 404  # the route's own query no longer finds it (its check would say 403)
        # A key whose community has no row yet reads nothing until its first raid creates it.
        assert await count("key-new") == 0
        await start("key-new", "-1009")
        assert (await count("key-new"), await count("key-a"), await count("admin")) == (1, 2, 4)


# -- the migration -----------------------------------------------------------------------------------


async def _rls_state(url: str) -> tuple[set[str], int]:
    """(tables with row-level security on, number of policies)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            tables = set((await conn.execute(text("SELECT relname FROM pg_class WHERE relrowsecurity"))).scalars())
            policies = (await conn.execute(text("SELECT count(*) FROM pg_policies"))).scalar_one()
            return tables, policies
    finally:
        await engine.dispose()


async def _version_and_tables(url: str) -> tuple[str, set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            return version, set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def _scoped_tables() -> set[str]:
    return {t.name for t in Base.metadata.sorted_tables if SCOPING_COLUMNS & set(t.columns.keys())} | {"communities"}


async def test_migration_0003_down_and_up(db_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    version, tables = await _version_and_tables(db_url)
    assert version == head  # later revisions keep the scope on the tables they add
    postgres = db_url.startswith("postgresql")
    if postgres:
        # Every table that belongs to a community (directly, or through a raid, session or schedule) is covered.
        assert await _rls_state(db_url) == (_scoped_tables(), len(_scoped_tables()))
    downgrade(db_url, "0002")
    at_0002, older_tables = await _version_and_tables(db_url)
    # later tables went with their migrations
    assert at_0002 == "0002" and older_tables <= tables and "member_score_slices" not in older_tables
    assert "claim_checks" in older_tables
    if postgres:
        assert await _rls_state(db_url) == (set(), 0)
    upgrade(db_url)
    assert await _version_and_tables(db_url) == (head, tables)
    if postgres:
        assert await _rls_state(db_url) == (_scoped_tables(), len(_scoped_tables()))


async def test_the_app_role_may_use_every_table(request: pytest.FixtureRequest) -> None:
    owner_url, _app_url = await _database(request)
    engine = create_async_engine(owner_url)
    try:
        async with engine.connect() as conn:
            missing = [
                t.name for t in Base.metadata.sorted_tables
                if not (await conn.execute(text(
                    "SELECT has_table_privilege('nubi_app', :t, 'SELECT, INSERT, UPDATE, DELETE')"), {"t": t.name}
                )).scalar_one()
            ]
            superuser = (await conn.execute(text(
                f"SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = '{LOGIN}'"))).scalar_one()
    finally:
        await engine.dispose()
    assert missing == [] and superuser is False
