"""Faults: the database going away under load, and online backups while the bot writes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bot.backup import BackupError, backup, restore
from core.clock import SystemClock
from core.commands.service import ChatContext
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.errors import Unavailable
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database
from migrations import upgrade
from tests import pg

CHAT = ChatRef("telegram", "-7", "g")


def who(i: int) -> MemberRef:
    return MemberRef("telegram", str(i), f"m{i}")


@pytest.fixture
def own_cluster():  # type: ignore[no-untyped-def]
    """A cluster of its own: this test stops and restarts it."""
    if pg.missing_reason():
        pytest.skip(pg.missing_reason())
    cluster = pg.start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def test_postgresql_restart_under_load(own_cluster: pg.Cluster) -> None:
    url = own_cluster.url
    await asyncio.to_thread(upgrade, url)
    svc = Services(Database(url), SystemClock(), Settings(), EventBus())
    try:
        raid = (await svc.raids.start(CHAT, RaidSpec("https://x.com/a/status/1", {"like": 500}))).id
        for i in range(20):
            await svc.raids.join(raid, who(i))
            await svc.raids.claim(raid, who(i), "like")
        await asyncio.to_thread(own_cluster.stop, "fast")
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await svc.raids.join(raid, who(100))
        reply = await svc.commands.handle_text(ChatContext(CHAT, who(101)), "/join")
        assert reply is not None and reply.error and "try again" in reply.text
        assert time.monotonic() - started < 10  # a clear answer, not a hang
        await asyncio.to_thread(own_cluster.start)
        for _ in range(50):  # the pool reconnects by itself
            try:
                await svc.raids.join(raid, who(100))
                break
            except Unavailable:
                await asyncio.sleep(0.2)
        p = await svc.raids.progress(raid)
        assert p.participants == 21 and p.actions == 20  # nothing accepted before the outage was lost
    finally:
        await svc.db.dispose()


async def test_online_backup_while_writing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    await asyncio.to_thread(upgrade, url)
    svc = Services(Database(url), SystemClock(), Settings(), EventBus())
    try:
        raid = (await svc.raids.start(CHAT, RaidSpec("https://x.com/a/status/1", {"like": 5000}, max_participants=5000))).id
        stop = asyncio.Event()

        async def writer() -> int:
            n = 0
            while not stop.is_set():
                await svc.raids.join(raid, who(n))
                n += 1
            return n

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(backup, url, str(tmp_path / "copy.db"))
        stop.set()
        written = await task
    finally:
        await svc.db.dispose()
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        (participants,) = copy.execute("SELECT participant_count FROM raid_sessions").fetchone()
        (rows,) = copy.execute("SELECT count(*) FROM raid_participants").fetchone()
    finally:
        copy.close()
    assert participants == rows and 0 < rows <= written  # a consistent snapshot mid-burst
    with pytest.raises(BackupError, match="exists already"):
        backup(url, str(tmp_path / "copy.db"))
    with pytest.raises(BackupError, match="--yes"):
        restore(url, str(tmp_path / "copy.db"), yes=False)
    restore(url, str(tmp_path / "copy.db"), yes=True)
    back = sqlite3.connect(tmp_path / "live.db")
    try:
        assert back.execute("SELECT count(*) FROM raid_participants").fetchone()[0] == rows
    finally:
        back.close()
    with pytest.raises(BackupError, match="pg_dump"):
        backup("postgresql+asyncpg://u@127.0.0.1/x", str(tmp_path / "pg.db"))
