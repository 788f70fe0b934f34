"""The remembered raid -> community lookup answers from the database it was asked about."""

from __future__ import annotations

import shutil
from pathlib import Path

from core import catalog
from core.clock import FakeClock
from core.config import Settings
from core.directory import ChatRef
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.db import Database

URL = "https://x.com/nubi/status/4242"


async def test_two_databases_with_the_same_raid_id_keep_their_own_communities(tmp_path: Path, sqlite_template: Path) -> None:
    """Database A: raid #2 is in its community #2. Database B: raid #2 replaced #1 in community #1."""
    answers = []
    for name, chats in (("a", ["-1", "-2"]), ("b", ["-9", "-9"])):
        shutil.copy(sqlite_template, tmp_path / f"{name}.db")
        db = Database(f"sqlite+aiosqlite:///{tmp_path / name}.db")
        try:
            svc = Services(db, FakeClock(), Settings(), EventBus())
            raids = [await svc.raids.start(ChatRef("telegram", c), RaidSpec(URL, replace=True)) for c in chats]
            assert raids[-1].id == 2
            answers.append((await catalog.community_of_raid(db, 2), raids[-1].community_id))
        finally:
            await db.dispose()
    assert answers == [(2, 2), (1, 1)]
