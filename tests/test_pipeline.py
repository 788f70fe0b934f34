"""PostgreSQL group commit of SQL ops, pipelined (core/storage/pipeline.py): the ops of a batch run side
by side, a statement text several of them wait on goes once for all, and each op gets exactly its own
rows back, in their order. What a batch promises beyond that (one commit, failures apart) is pinned
down for both databases in test_write_batches.py and test_group_commit.py."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select, text

from core.clock import FakeClock
from core.config import DatabaseConfig, Settings
from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import build_services
from core.storage.db import Database
from core.storage.models import MemberBadge

NEW = "INSERT INTO members (display_name, x_handle_verified, created_at) VALUES ($1, $2, $3) RETURNING id"
NAME_OF = "SELECT display_name FROM members WHERE id = $1"
HOW_MANY = "SELECT count(*) FROM members WHERE display_name LIKE $1"
COUNTDOWN = "SELECT g FROM generate_series(1, $1) AS g ORDER BY g DESC"
NEW_NAMED = ("WITH m AS (INSERT INTO members (display_name, x_handle_verified, created_at) VALUES ($1, false, $2)"
             " RETURNING id, display_name) SELECT display_name, id FROM m")


@pytest.fixture
async def db(db_url: str):  # type: ignore[no-untyped-def]
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite runs a batch's ops one after another on its writer thread")
    database = Database(db_url, group_commit=True)
    try:
        yield database
    finally:
        await database.dispose()


async def names(db: Database, pattern: str) -> list[str]:
    async def op(q):  # type: ignore[no-untyped-def]
        return sorted(r[0] for r in await q.rows("SELECT display_name FROM members WHERE display_name LIKE $1",
                                                 pattern))

    return await db.read_sql(op)


async def test_ops_of_a_batch_run_side_by_side_and_get_their_own_rows(db: Database) -> None:
    """30 ops, each counting, inserting and reading back: in one batch they all count before any of them
    inserts (side by side, not one after another), and each reads back its own row."""
    now = FakeClock().now()

    def op_for(i: int):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            seen = await q.value(HOW_MANY, "side %")
            member_id = await q.value(NEW, f"side {i}", False, now)
            return seen, member_id, await q.value(NAME_OF, member_id)

        return op

    before = db.commits
    results = await asyncio.gather(*(db.write_sql(op_for(i)) for i in range(30)))
    assert db.commits - before == 1
    assert [seen for seen, _id, _name in results] == [0] * 30
    assert [name for _seen, _id, name in results] == [f"side {i}" for i in range(30)]
    assert len({member_id for _seen, member_id, _name in results}) == 30
    assert len(await names(db, "side %")) == 30


async def test_each_op_gets_its_rows_in_their_order(db: Database) -> None:
    """Ops of one batch sending the same text get none, one or many rows each, in the text's order; a
    text that is a data-modifying WITH (which cannot be wrapped) too."""
    now = FakeClock().now()

    def op_for(i: int):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            rows = await q.rows(COUNTDOWN, i)
            first = await q.row(COUNTDOWN, i)
            named = await q.row(NEW_NAMED, f"with {i}", now)
            return [r[0] for r in rows], None if first is None else first[0], named[0]

        return op

    before = db.commits
    results = await asyncio.gather(*(db.write_sql(op_for(i)) for i in range(12)))
    assert results == [(list(range(i, 0, -1)), i or None, f"with {i}") for i in range(12)]
    assert db.commits - before == 1


async def test_an_op_asking_for_a_session_runs_alone_and_once(db: Database) -> None:
    """A session's statements cannot join the pipeline: the op that asks for one (after it wrote) is run
    again alone, nothing of its first run kept, and the others commit without it."""
    now = FakeClock().now()
    runs: list[int] = []

    async def with_session(q):  # type: ignore[no-untyped-def]
        runs.append(1)
        await q.value(NEW, "alone", False, now)
        session = q.session()
        return (await session.execute(text("SELECT count(*) FROM members WHERE display_name = 'alone'"))).scalar()

    def plain(i: int):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            return await q.value(NEW, f"plain {i}", False, now)

        return op

    ops: list[Any] = [plain(i) for i in range(10)]
    ops.insert(4, with_session)
    results = await asyncio.gather(*(db.write_sql(op) for op in ops))
    assert results[4] == 1 and len(runs) == 2  # the second run, alone, saw only its own row
    assert await names(db, "alone") == ["alone"]
    assert len(await names(db, "plain %")) == 10


async def test_a_failing_statement_sent_by_several_ops_fails_only_the_ops_it_fails(db: Database) -> None:
    """One pipelined text, sent by eight ops, fails for three of them (a foreign key): the batch is rolled
    back, those eight run again alone, five succeed; the ops that sent other texts are not touched."""
    now = FakeClock().now()
    orphan = "INSERT INTO member_identities (member_id, platform, external_id, username) VALUES ($1, $2, $3, $4)"

    def identity(i: int, bad: bool):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            member_id = await q.value(NEW, f"ident {i}", False, now)
            await q.run(orphan, 987_654_321 if bad else member_id, "telegram", f"pipe-{i}", None)
            return member_id

        return op

    def plain(i: int):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            return await q.value(NEW, f"other {i}", False, now)

        return op

    ops: list[Any] = [identity(i, i in (1, 4, 6)) for i in range(8)] + [plain(i) for i in range(6)]
    outcomes = await asyncio.gather(*(db.write_sql(op) for op in ops), return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [1, 4, 6]
    assert await names(db, "ident %") == [f"ident {i}" for i in (0, 2, 3, 5, 7)]
    assert len(await names(db, "other %")) == 6


async def test_by_default_postgresql_batches_only_the_contended_writes(db_url: str) -> None:
    """`database.group_commit` unset on PostgreSQL: a raid's joins and claims (which all update the
    raid's rows) share batches; every other write has a transaction of its own on the pool."""
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite batches every write by default")
    config = DatabaseConfig(url=db_url)
    assert (config.group_commit_for(db_url), config.batch_contended()) == (False, True)
    services = build_services(Settings(database=config))
    try:
        db = services.db
        assert (db.group_commit, db.batch_contended) == (False, True)
        people = [MemberRef("telegram", str(7000 + i), f"p{i}", f"p{i}") for i in range(40)]
        raid = (await services.raids.start(ChatRef("telegram", "-1007", "Pipes"),
                                           RaidSpec("https://x.com/nubi/status/7", {"like": 100}), by=people[0])).id
        before = db.commits
        await services.raids.join(raid, people[0])  # nothing else running: at once, no batch
        assert db.commits == before
        await asyncio.gather(*(services.raids.join(raid, m) for m in people[1:]))
        await asyncio.gather(*(services.raids.claim(raid, m, "like") for m in people))
        assert 2 <= db.commits - before <= 12  # 80 commands in a few batches
        progress = await services.raids.progress(raid)
        assert (progress.participants, progress.objectives[0].count) == (40, 40)
        before = db.commits
        agent = services.settings.agents[0].id
        await asyncio.gather(*(services.sessions.create(agent, str(uuid.uuid4())) for _ in range(10)))
        assert db.commits == before  # not batched: each its own transaction
    finally:
        await services.db.dispose()


async def test_an_op_locking_a_row_runs_alone(db: Database, db_url: str) -> None:
    """Ops that read a row FOR UPDATE and write what they read cannot share a transaction (the lock keeps
    nothing out of it): each runs alone, after its batch, and none loses another's update."""
    conn = await asyncpg.connect(db_url.replace("+asyncpg", ""))
    try:
        await conn.execute("CREATE TABLE pipe_counter (id int PRIMARY KEY, n int NOT NULL)")
        await conn.execute("INSERT INTO pipe_counter VALUES (1, 0)")
        now = FakeClock().now()

        async def bump(q):  # type: ignore[no-untyped-def]
            n = await q.value("SELECT n FROM pipe_counter WHERE id = $1 FOR UPDATE", 1)
            await q.run("UPDATE pipe_counter SET n = $2 WHERE id = $1", 1, n + 1)
            return n

        def plain(i: int):  # type: ignore[no-untyped-def]
            async def op(q):  # type: ignore[no-untyped-def]
                return await q.value(NEW, f"beside {i}", False, now)

            return op

        ops = [bump if i % 2 else plain(i) for i in range(20)]
        results = await asyncio.gather(*(db.write_sql(op) for op in ops))
        assert sorted(results[1::2]) == list(range(10))
        assert await conn.fetchval("SELECT n FROM pipe_counter WHERE id = 1") == 10
        assert len(await names(db, "beside %")) == 10
    finally:
        await conn.close()


async def test_claims_in_a_community_with_badges_share_batches(services) -> None:  # type: ignore[no-untyped-def]
    """A community naming milestones: a claim asks for a session (to award a badge) only when it crosses
    one, so claims that cross none still share pipelined batches instead of each running alone."""
    if services.db.is_sqlite:
        pytest.skip("SQLite runs every op of a batch on one connection, sessions included")
    people = [MemberRef("telegram", str(8000 + i), f"b{i}", f"b{i}") for i in range(30)]
    raid = await services.raids.start(ChatRef("telegram", "-1008", "Badges"),
                                      RaidSpec("https://x.com/nubi/status/8", {"like": 100, "repost": 100}),
                                      by=people[0])
    for m in people:
        await services.raids.join(raid.id, m)
    await services.community_settings.change(raid.community_id, {"badges": "100000:Legend"}, actor=None)
    before = services.db.commits
    await asyncio.gather(*(services.raids.claim(raid.id, m, "like") for m in people))
    assert 1 <= services.db.commits - before <= 3
    assert (await services.raids.progress(raid.id)).objectives[0].count == 30
    # now one more claim each crosses a milestone: those run alone, and each badge is written once
    await services.community_settings.change(raid.community_id, {"badges": "1:First"}, actor=None)
    await asyncio.gather(*(services.raids.claim(raid.id, m, "repost") for m in people))
    async def badges(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(func.count()).select_from(MemberBadge))

    assert await services.db.read(badges) == 30
