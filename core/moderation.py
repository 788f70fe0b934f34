"""Moderation: point adjustments with a reason, bans, and the audit log every change writes to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core import badges
from core.clock import Clock
from core.errors import ValidationError
from core.events import EventBus
from core.i18n import _
from core.ledger import Entry, record
from core.storage.db import Database
from core.storage.models import AuditEntry, Ban, Member
from core.storage.upsert import insert

MAX_ADJUSTMENT = 1_000_000


async def audit(
    s: AsyncSession,
    community_id: int,
    action: str,
    at: datetime,
    *,
    actor: int | None = None,
    target: int | None = None,
    raid_id: int | None = None,
    amount: int | None = None,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    s.add(
        AuditEntry(
            community_id=community_id,
            actor_member_id=actor,
            action=action,
            target_member_id=target,
            raid_id=raid_id,
            amount=amount,
            reason=reason,
            at=at,
            data=data or {},
        )
    )


class ModerationService:
    def __init__(self, db: Database, clock: Clock, bus: EventBus | None = None) -> None:
        self.db = db
        self.clock = clock
        self.bus = bus  # a badge a points change earns is published on it (core/badges.py)

    async def adjust_points(
        self, community_id: int, member_id: int, amount: int, reason: str, *, actor: int | None
    ) -> None:
        if amount == 0 or abs(amount) > MAX_ADJUSTMENT:
            raise ValidationError(_("points must be a non-zero whole number up to {max}").format(max=MAX_ADJUSTMENT),
                                  field="points")
        if not reason or not reason.strip():
            raise ValidationError(_("a points change needs a reason"), field="reason")
        now = self.clock.now()

        async def op(s: AsyncSession) -> None:
            if await s.get(Member, member_id) is None:
                raise ValidationError(_("no such member"), field="member")
            await record(s, [Entry(community_id, member_id, amount, "manual", now, actor_id=actor,
                                   reason=reason.strip()[:500])], now=now)
            await audit(
                s, community_id, "points_add" if amount > 0 else "points_remove", now,
                actor=actor, target=member_id, amount=amount, reason=reason.strip()[:500],
            )

        with badges.collecting() as earned:
            await self.db.write(op)
        await badges.publish(self.bus, earned)

    async def ban(self, community_id: int, member_id: int, reason: str | None, *, actor: int | None) -> bool:
        now = self.clock.now()

        async def op(s: AsyncSession) -> bool:
            res = await s.execute(
                insert(s, Ban)
                .values(community_id=community_id, member_id=member_id, reason=reason, banned_by=actor, created_at=now)
                .on_conflict_do_nothing(index_elements=["community_id", "member_id"])
            )
            if res.rowcount:
                await audit(s, community_id, "ban", now, actor=actor, target=member_id, reason=reason)
            return bool(res.rowcount)

        return await self.db.write(op)

    async def unban(self, community_id: int, member_id: int, *, actor: int | None) -> bool:
        now = self.clock.now()

        async def op(s: AsyncSession) -> bool:
            res = await s.execute(delete(Ban).where(Ban.community_id == community_id, Ban.member_id == member_id))
            if res.rowcount:
                await audit(s, community_id, "unban", now, actor=actor, target=member_id)
            return bool(res.rowcount)

        return await self.db.write(op)

    async def is_banned(self, community_id: int, member_id: int) -> bool:
        return (
            await self.db.read(
                lambda s: s.scalar(select(Ban.id).where(Ban.community_id == community_id, Ban.member_id == member_id))
            )
        ) is not None

    async def audit_log(self, community_id: int, limit: int = 50) -> list[dict[str, Any]]:
        async def op(s: AsyncSession) -> list[dict[str, Any]]:
            rows = (
                await s.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.community_id == community_id)
                    .order_by(AuditEntry.id.desc())
                    .limit(limit)
                )
            ).all()
            return [
                {
                    "id": r.id,
                    "action": r.action,
                    "actorMemberId": r.actor_member_id,
                    "targetMemberId": r.target_member_id,
                    "raidId": r.raid_id,
                    "amount": r.amount,
                    "reason": r.reason,
                    "at": r.at.isoformat(),
                    "data": r.data,
                }
                for r in rows
            ]

        return await self.db.read(op)
