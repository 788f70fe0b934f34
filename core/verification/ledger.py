"""The X read budget, per raid and per UTC day, kept in the database so a restart does not reset it.

A job reserves what it may spend before it reads and gives back what it did not use; reserving is
one transaction over row-locked counters, so concurrent sweeps in several processes never
overdraw. A crash between the two leaves the reservation spent: the budget errs on the cheap side.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.upsert import insert
from core.storage.verification_models import XReadUsage


def day_key(at: datetime) -> str:
    return at.date().isoformat()


def next_day(at: datetime) -> datetime:
    """When the daily budget refills: the next UTC midnight."""
    return (at + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def _keys(raid_id: int | None, day: str, per_raid: int, per_day: int) -> list[tuple[str, str, int]]:
    keys = [("day", day, per_day)]
    if raid_id is not None:
        keys.append(("raid", str(raid_id), per_raid))
    return keys


async def reserve(
    s: AsyncSession, raid_id: int | None, day: str, want: int, *, per_raid: int, per_day: int
) -> tuple[int, str | None]:
    """Reserve up to `want` reads; returns (granted, the scope that fell short: 'raid'/'day'/None)."""
    keys = _keys(raid_id, day, per_raid, per_day)
    for scope, key, _ in keys:
        await s.execute(
            insert(s, XReadUsage)
            .values(scope=scope, key=key, reads=0)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
        )
    available: dict[str, int] = {}
    for scope, key, limit in keys:
        spent = await s.scalar(
            select(XReadUsage.reads).where(XReadUsage.scope == scope, XReadUsage.key == key).with_for_update()
        )
        available[scope] = max(0, limit - (spent or 0))
    granted = min(want, *available.values())
    short = min(available, key=lambda k: available[k]) if granted < want else None
    if granted > 0:
        for scope, key, _ in keys:
            await s.execute(
                update(XReadUsage)
                .where(XReadUsage.scope == scope, XReadUsage.key == key)
                .values(reads=XReadUsage.reads + granted)
            )
    return granted, short


async def refund(s: AsyncSession, raid_id: int | None, day: str, unused: int) -> None:
    if unused <= 0:
        return
    for scope, key, _ in _keys(raid_id, day, 0, 0):
        await s.execute(
            update(XReadUsage)
            .where(XReadUsage.scope == scope, XReadUsage.key == key)
            .values(reads=XReadUsage.reads - unused)
        )


async def spent(s: AsyncSession, scope: str, key: str) -> int:
    return (
        await s.scalar(select(XReadUsage.reads).where(XReadUsage.scope == scope, XReadUsage.key == key))
    ) or 0
