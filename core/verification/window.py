"""Closing a raid's verification window: no claim stays `pending` forever.

After a raid ends, the X sweeps and the moderators have `[raids] verification_window_hours` to settle
its pending claims. Whatever is still pending then (held for a moderator nobody asked, flagged by a
sweep, past the read budget, a review queue left alone) becomes `unverifiable`: it earns no points, and
its claim check says why, so the report and the moderators see it apart from claims counted on a
member's word. Run by the scheduler sweep in every process: the conditional UPDATE settles each claim
once, and only the process that changed a raid's claims rebuilds its report.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.models import Community, Raid, RaidAction
from core.storage.upsert import insert
from core.storage.verification_models import ClaimCheck

from .base import WINDOW_CLOSED

if TYPE_CHECKING:
    from core.services import Services


async def close_verification_windows(services: Services) -> int:
    """Settle the pending claims of every raid whose window closed; returns how many claims."""
    from core.raids.service import community_raid_settings

    now = services.clock.now()

    async def candidates(s: AsyncSession) -> list[tuple[int, Any, Any]]:
        pending = exists().where(RaidAction.raid_id == Raid.id, RaidAction.verification == "pending")
        rows = await s.execute(
            select(Raid.id, Raid.ended_at, Community.settings)
            .join(Community, Community.id == Raid.community_id)
            .where(Raid.status != "active", Raid.ended_at.is_not(None), pending)
        )
        return [(r[0], r[1], r[2]) for r in rows.all()]

    closed = 0
    for raid_id, ended_at, community_settings in await services.db.read(candidates):
        hours = community_raid_settings(services.settings, community_settings).verification_window_hours
        if ended_at + timedelta(hours=hours) > now:
            continue
        detail = f"still pending {hours} h after the raid ended: nothing settled it (no points)"

        async def settle(s: AsyncSession, raid_id: int = raid_id, detail: str = detail) -> int:
            rows = (await s.execute(
                update(RaidAction)
                .where(RaidAction.raid_id == raid_id, RaidAction.verification == "pending")
                .values(verification="unverifiable", verified_at=now, points=0)
                .returning(RaidAction.member_id, RaidAction.action_type)
            )).all()
            if rows:
                stmt = insert(s, ClaimCheck).values([
                    {"raid_id": raid_id, "member_id": m, "action_type": a, "outcome": "unverifiable",
                     "reason": WINDOW_CLOSED, "detail": detail, "checked_at": now}
                    for m, a in rows
                ])
                await s.execute(stmt.on_conflict_do_update(
                    index_elements=["raid_id", "member_id", "action_type"],
                    set_={k: getattr(stmt.excluded, k) for k in ("outcome", "reason", "detail", "checked_at")},
                ))
            return len(rows)

        settled = await services.db.write(settle)
        if settled:
            closed += settled
            await services.raids.refresh_report(raid_id)
    return closed
