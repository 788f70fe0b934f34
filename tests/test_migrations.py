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


def test_head_revision_read_from_the_files_agrees_with_alembic() -> None:
    """`nubi run` compares the database with head_revision() (no Alembic in the server); Alembic's own
    chain must end there."""
    assert head_revision() == revisions()[-1]
