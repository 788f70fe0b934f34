"""One migration set builds the same schema on SQLite and PostgreSQL, and goes down again."""

from __future__ import annotations

import asyncio
import concurrent.futures

from alembic import command
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from migrations import alembic_config, downgrade, head_revision, revisions, upgrade

SEVEN = {"nubi_sessions", "raid_sessions", "raid_participants", "raid_actions", "raid_metrics", "raid_reports",
         "session_activity_log"}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def _in_thread(fn, *args):  # type: ignore[no-untyped-def]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


async def test_up_check_down_up(db_url: str) -> None:
    tables = await _tables(db_url)
    assert SEVEN <= tables and {"communities", "members", "member_scores", "chat_locks", "bans",
                                "moderation_audit_log", "leaderboard_windows", "session_messages"} <= tables
    _in_thread(command.check, alembic_config(db_url))  # models and migrations agree
    downgrade(db_url, "base")
    assert await _tables(db_url) <= {"alembic_version"}
    upgrade(db_url)
    assert SEVEN <= await _tables(db_url)


async def test_sqlite_batch_migrations_keep_child_rows(tmp_path) -> None:
    """Migrations run with foreign keys off on SQLite, so a table rebuild cannot cascade-delete."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        fk = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    await engine.dispose()
    assert fk == 0  # a plain connection (what alembic uses) does not enable them; ours do
    await asyncio.sleep(0)


async def test_0008_gives_discord_rows_their_channel_and_marks_the_old_community(db_url: str) -> None:
    """A Discord community of before (a channel) comes out as `channel:<id>`, every raid, schedule and
    session of it naming the channel; down again restores the old names."""
    from core.clock import FakeClock
    from core.config import Settings
    from core.directory import ChatRef, MemberRef
    from core.events import EventBus
    from core.raids.model import RaidSpec
    from core.services import Services
    from core.storage.db import Database

    async def rows() -> dict[str, list[tuple[object, ...]]]:
        engine = create_async_engine(db_url)
        try:
            async with engine.connect() as conn:
                out = {}
                for name, sql in {
                    "communities": "SELECT platform, external_id FROM communities ORDER BY id",
                    "raids": "SELECT channel_id FROM raid_sessions ORDER BY id",
                    "schedules": "SELECT channel_id FROM scheduled_announcements ORDER BY id",
                    "sessions": "SELECT community FROM nubi_sessions ORDER BY community",
                }.items():
                    try:
                        out[name] = [tuple(r) for r in (await conn.exec_driver_sql(sql)).all()]
                    except Exception:  # the column is not there at this revision
                        await conn.rollback()
                        out[name] = []
                return out
        finally:
            await engine.dispose()

    db = Database(db_url)
    svc = Services(db, FakeClock(), Settings(), EventBus())
    try:
        # the state 0008 leaves a channel community in, made through core; and a Telegram group beside it
        old = await svc.raids.start(ChatRef("discord", "channel:555", "raids", channel="555"),
                                    RaidSpec("https://x.com/a/status/1"), by=MemberRef("discord", "1", "mod"))
        await svc.schedules.add(old.community_id, "0 12 * * mon", "week", channel="555")
        await svc.raids.start(ChatRef("telegram", "-100", "group"), RaidSpec("https://x.com/a/status/2"))
    finally:
        await db.dispose()
    migrated = await rows()

    downgrade(db_url, "0007")
    before = await rows()
    assert before["communities"] == [("discord", "555"), ("telegram", "-100")]
    assert before["sessions"] == [("discord:555",), ("telegram:-100",)]

    upgrade(db_url)
    assert await rows() == migrated
    assert migrated["communities"] == [("discord", "channel:555"), ("telegram", "-100")]
    assert migrated["raids"] == [("555",), ("",)] and migrated["schedules"] == [("555",)]
    assert migrated["sessions"] == [("discord:channel:555",), ("telegram:-100",)]


def test_head_revision_read_from_the_files_agrees_with_alembic() -> None:
    """`nubi run` compares the database with head_revision() (no Alembic in the server); Alembic's own
    chain must end there."""
    assert head_revision() == revisions()[-1]
