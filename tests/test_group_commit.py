"""What the group-commit executor promises (core/storage/db.py, core/storage/executor.py), on both
databases: ops waiting together share one transaction, each in a savepoint; an op that fails leaves
nothing behind while the others commit; every caller is answered only after its commit; no op runs
twice unless its first run was rolled back (PostgreSQL: a deadlock is retried after the batch)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from sqlalchemy import func, select, text, update

from core.clock import FakeClock
from core.directory import _NEW_MEMBER
from core.errors import RaidFull
from core.i18n import _, use_language
from core.storage.db import Database
from core.storage.models import Member


def adder(name: str, now: Any, runs: list[str] | None = None):  # type: ignore[no-untyped-def]
    async def op(s):  # type: ignore[no-untyped-def]
        if runs is not None:
            runs.append(name)
        return await s.scalar(_NEW_MEMBER, {"b_name": name, "b_now": now})

    return op


async def count(db: Database, name: str) -> int:
    async def op(s):  # type: ignore[no-untyped-def]
        return await s.scalar(select(func.count()).select_from(Member).where(Member.display_name == name))

    return await db.read(op)


@pytest.fixture
async def db(db_url: str):  # type: ignore[no-untyped-def]
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_failing_op_leaves_nothing_and_its_batch_commits(db: Database) -> None:
    now = FakeClock().now()
    runs: list[str] = []

    async def wrote_three_then_failed(s):  # type: ignore[no-untyped-def]
        runs.append("doomed")
        for _i in range(3):
            await s.scalar(_NEW_MEMBER, {"b_name": "doomed", "b_now": now})
        s.add(Member(display_name="doomed", x_handle_verified=False, created_at=now))
        await s.flush()
        raise ValueError("no")

    ops = [adder(f"kept{i}", now, runs) for i in range(12)]
    ops.insert(6, wrote_three_then_failed)
    before = db.commits
    outcomes = await asyncio.gather(*(db.write(op) for op in ops), return_exceptions=True)
    assert isinstance(outcomes[6], ValueError)
    assert all(isinstance(o, int) for i, o in enumerate(outcomes) if i != 6)
    assert db.commits - before <= 3  # they shared transactions
    assert await count(db, "doomed") == 0
    assert [await count(db, f"kept{i}") for i in range(12)] == [1] * 12
    assert sorted(runs) == sorted(["doomed", *(f"kept{i}" for i in range(12))])  # each op ran once


async def test_a_lone_failing_op_leaves_nothing(db: Database) -> None:
    now = FakeClock().now()

    async def doomed(s):  # type: ignore[no-untyped-def]
        await s.scalar(_NEW_MEMBER, {"b_name": "alone", "b_now": now})
        raise LookupError("no")

    with pytest.raises(LookupError):
        await db.write(doomed)
    assert await count(db, "alone") == 0
    assert isinstance(await db.write(adder("after", now)), int)  # the writer goes on


async def test_each_caller_is_answered_only_after_its_commit(db: Database) -> None:
    """The moment a caller hears back, another connection already sees what its op wrote."""
    now = FakeClock().now()
    seen: list[int] = []

    async def command(i: int) -> None:
        await db.write(adder(f"visible{i}", now))
        seen.append(await count(db, f"visible{i}"))

    await asyncio.gather(*(command(i) for i in range(40)))
    assert seen == [1] * 40


async def test_an_op_waits_for_the_slowest_op_of_its_batch(db: Database) -> None:
    """Answered after commit also when a later op of the same batch is still running."""
    if db.is_sqlite:
        pytest.skip("a SQLite batch runs whole on the writer thread; nothing to observe in between")
    now = FakeClock().now()

    async def slow(s):  # type: ignore[no-untyped-def]
        await s.execute(text("SELECT pg_sleep(0.4)"))
        return "slow"

    before = db.commits
    fast = asyncio.ensure_future(db.write(adder("fast", now)))  # queued together: one batch
    later = asyncio.ensure_future(db.write(slow))
    await asyncio.sleep(0.2)  # the batch of fast + slow is in pg_sleep now
    assert not fast.done()
    assert await count(db, "fast") == 0  # not committed yet, so not answered yet
    assert isinstance(await fast, int) and await later == "slow"
    assert await count(db, "fast") == 1
    assert db.commits - before == 1


async def test_a_deadlocked_op_is_run_again_after_its_batch(db: Database, db_url: str) -> None:
    """A real deadlock with another client: PostgreSQL aborts our op's statement, its savepoint is
    rolled back (nothing of that run kept), its batch commits, and it runs again alone."""
    if db.is_sqlite:
        pytest.skip("SQLite has one writer: no deadlocks")
    now = FakeClock().now()
    a, b = await db.write(adder("row a", now)), await db.write(adder("row b", now))
    runs: list[int] = []

    async def victim(s):  # type: ignore[no-untyped-def]
        runs.append(len(runs) + 1)
        await s.execute(update(Member).where(Member.id == b).values(display_name=f"b by run {len(runs)}"))
        await s.execute(update(Member).where(Member.id == a).values(display_name=f"a by run {len(runs)}"))
        return len(runs)

    other = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SET LOCAL deadlock_timeout = '20s'")  # our backend detects the cycle first
        await other.execute("UPDATE members SET display_name = 'a by other' WHERE id = $1", a)
        ops = [adder(f"sibling{i}", now) for i in range(5)]
        ops.insert(0, victim)
        done = asyncio.ensure_future(asyncio.gather(*(db.write(op) for op in ops)))
        await asyncio.sleep(0.3)  # the victim holds row b and waits for row a
        await other.execute("UPDATE members SET display_name = 'b by other' WHERE id = $1", b)
        await tx.commit()
        outcomes = await asyncio.wait_for(done, 30)
    finally:
        await other.close()
    assert runs == [1, 2] and outcomes[0] == 2
    assert all(isinstance(o, int) for o in outcomes[1:])
    assert [await count(db, f"sibling{i}") for i in range(5)] == [1] * 5
    assert await count(db, "a by run 2") == 1 and await count(db, "b by run 2") == 1
    assert await count(db, "a by run 1") == 0 and await count(db, "b by run 1") == 0


async def test_a_failing_statement_does_not_make_its_op_run_again(db: Database) -> None:
    now = FakeClock().now()
    runs: list[str] = []

    async def bad_sql(s):  # type: ignore[no-untyped-def]
        runs.append("bad")
        await s.scalar(_NEW_MEMBER, {"b_name": "bad", "b_now": now})
        await s.execute(text("SELECT no_such_column FROM members"))

    ops = [adder(f"good{i}", now, runs) for i in range(8)]
    ops.insert(3, bad_sql)
    outcomes = await asyncio.gather(*(db.write(op) for op in ops), return_exceptions=True)
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [3]
    assert runs.count("bad") == 1 and len(runs) == 9
    assert await count(db, "bad") == 0


async def test_an_unread_result_survives_its_session(db: Database) -> None:
    """As with AsyncSession: an op may return a result its caller reads after the session is gone."""
    now = FakeClock().now()
    await asyncio.gather(*(db.write(adder("returned", now)) for _ in range(3)))

    def listing(s):  # type: ignore[no-untyped-def]
        return s.scalars(select(Member).where(Member.display_name == "returned"))

    rows = await db.read(listing)
    assert [m.display_name for m in rows.all()] == ["returned"] * 3
    written = await asyncio.gather(*(db.write(listing) for _ in range(2)))  # a batch of two
    assert all(len(r.all()) == 3 for r in written)


async def test_ops_batched_together_each_speak_their_callers_language(db: Database) -> None:
    """Callers from communities with different languages share a batch (and the writer task, or a
    thread, runs it): an error an op raises is worded in its own caller's language."""
    now = FakeClock().now()

    async def full(s):  # type: ignore[no-untyped-def]
        await s.scalar(_NEW_MEMBER, {"b_name": "probe", "b_now": now})
        raise RaidFull(_("The raid is full."))

    async def in_language(lang: str) -> str:
        with use_language(lang):
            try:
                await db.write(full)
            except RaidFull as exc:
                return exc.message
        raise AssertionError("the op did not fail")

    langs = ["es", "ru", "en"] * 4
    said = await asyncio.gather(*(in_language(lang) for lang in langs))
    words = {"es": "El raid está completo.", "ru": "В рейде нет мест.", "en": "The raid is full."}
    assert said == [words[lang] for lang in langs]
    with use_language("ru"):
        assert await db.read(lambda s: _noop_word(s)) == "Участвовать"


async def _noop_word(s: Any) -> str:
    await s.scalar(select(func.count()).select_from(Member))
    return _("Join")


async def test_sqlite_checkpoints_the_wal_off_the_writers_commit(db: Database) -> None:
    """The writer's COMMIT never checkpoints (a checkpoint copies and syncs up to 1,000 pages, and the
    whole batch would wait for it); the checkpointer copies committed pages into the database file
    within a few seconds, which a reader that ignores the WAL (`immutable=1`) can see."""
    if not db.is_sqlite:
        pytest.skip("SQLite's write-ahead log")
    import sqlite3

    path = db.url.split("///", 1)[1]

    def in_main_file(name: str) -> int:
        raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return int(raw.execute("SELECT count(*) FROM members WHERE display_name = ?", (name,)).fetchone()[0])
        finally:
            raw.close()

    now = FakeClock().now()
    await asyncio.gather(*(db.write(adder("walled", now)) for _n in range(50)))
    assert await count(db, "walled") == 50
    assert in_main_file("walled") == 0  # committed into the WAL only: the COMMIT did not checkpoint
    for _tick in range(50):
        await asyncio.sleep(0.1)
        if in_main_file("walled") == 50:
            break
    assert in_main_file("walled") == 50


async def test_sqlite_read_sql_waits_on_a_reader_thread_when_the_loops_reader_is_locked_out(db: Database) -> None:
    """`read_sql` reads on the event loop's thread and never waits there for a lock: when another
    connection holds the database (here one in exclusive locking mode, before nubi's connections are
    open), the read is handed to a reader thread, which waits as reads do, and answers once the lock is
    gone."""
    if not db.is_sqlite:
        pytest.skip("SQLite's locks")
    import sqlite3

    async def op(q):  # type: ignore[no-untyped-def]
        return await q.value("SELECT count(*) FROM members WHERE display_name = $1", "nobody")

    holder = sqlite3.connect(db.url.split("///", 1)[1], isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE members SET display_name = display_name WHERE display_name = 'nobody'")
    loop = asyncio.get_running_loop()
    stalls: list[float] = []

    async def release() -> None:
        for _tick in range(6):  # the loop keeps turning while the read waits
            before = loop.time()
            await asyncio.sleep(0.05)
            stalls.append(loop.time() - before)
        holder.execute("COMMIT")
        holder.close()

    started = loop.time()
    got, _released = await asyncio.gather(db.read_sql(op), release())
    assert got == 0
    assert loop.time() - started >= 0.25  # it waited for the lock...
    assert max(stalls) < 0.2  # ...off the loop's thread
    assert await db.read_sql(op) == 0  # and the loop's reader works once the lock is gone


async def test_sqlite_sql_writes_run_on_the_loop_and_wait_on_the_writer_thread_while_another_holds_the_lock(
    db: Database,
) -> None:
    """`write_sql` ops run on the event loop's own thread, alone or batched, and never wait there for a
    lock: while another process holds the write lock, the op is handed to the writer thread, which waits
    for it (the loop keeps turning), and its write lands once the lock is gone."""
    if not db.is_sqlite:
        pytest.skip("SQLite's locks")
    import sqlite3
    import threading

    now = FakeClock().now()
    await db.write(adder("first", now))
    ran_on: list[int] = []

    def rename(old: str, new: str):  # type: ignore[no-untyped-def]
        async def op(q):  # type: ignore[no-untyped-def]
            ran_on.append(threading.get_ident())
            await q.run("UPDATE members SET display_name = $2 WHERE display_name = $1", old, new)
            return await q.value("SELECT count(*) FROM members WHERE display_name = $1", new)

        return op

    assert await db.write_sql(rename("first", "second")) == 1  # alone
    assert await asyncio.gather(*(db.write_sql(rename("second", "third")) for _n in range(5))) == [1] * 5  # a batch
    assert set(ran_on) == {threading.get_ident()}

    holder = sqlite3.connect(db.url.split("///", 1)[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, mid-transaction
    loop = asyncio.get_running_loop()
    stalls: list[float] = []

    async def release() -> None:
        for _tick in range(6):
            before = loop.time()
            await asyncio.sleep(0.05)
            stalls.append(loop.time() - before)
        holder.execute("COMMIT")
        holder.close()

    ran_on.clear()
    started = loop.time()
    got, _released = await asyncio.gather(db.write_sql(rename("third", "fourth")), release())
    assert got == 1
    assert loop.time() - started >= 0.25  # it waited for the lock...
    assert max(stalls) < 0.2  # ...off the loop's thread
    assert ran_on and threading.get_ident() not in ran_on
    assert await count(db, "fourth") == 1
    ran_on.clear()
    assert await db.write_sql(rename("fourth", "fifth")) == 1
    assert ran_on == [threading.get_ident()]  # back on the loop once the lock is gone
