"""Analytics (the original's SQL functions): sessions, raids, participants, claims, points."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.storage.db import Database
from core.storage.models import NubiSession, Raid, RaidAction, RaidParticipant


async def collect(db: Database) -> dict[str, Any]:
    async def op(s: AsyncSession) -> dict[str, Any]:
        by_status = dict((await s.execute(select(NubiSession.status, func.count()).group_by(NubiSession.status))).all())
        by_type = dict(
            (await s.execute(select(NubiSession.session_type, func.count()).group_by(NubiSession.session_type))).all()
        )
        ended = (
            await s.execute(
                select(NubiSession.created_at, NubiSession.ended_at).where(NubiSession.ended_at.is_not(None))
            )
        ).all()
        avg_len = (
            sum((e - c).total_seconds() for c, e in ended) / len(ended) / 60 if ended else 0.0
        )
        outcomes = dict((await s.execute(select(Raid.status, func.count()).group_by(Raid.status))).all())
        claims = dict(
            (await s.execute(select(RaidAction.verification, func.count()).group_by(RaidAction.verification))).all()
        )
        participants = await s.scalar(select(func.count()).select_from(RaidParticipant)) or 0
        members = await s.scalar(select(func.count(func.distinct(RaidParticipant.member_id)))) or 0
        points = await s.scalar(select(func.coalesce(func.sum(Raid.points_awarded), 0))) or 0
        return {
            "sessions": {"byStatus": by_status, "byType": by_type, "averageLengthMinutes": round(avg_len, 1)},
            "raids": {"byOutcome": outcomes, "total": sum(outcomes.values())},
            "participants": {"total": participants, "distinctMembers": members},
            "claims": {"byState": claims, "total": sum(claims.values())},
            "pointsAwarded": int(points),
        }

    return await db.read(op)


def render(stats: dict[str, Any]) -> str:
    s = stats
    lines = [
        "Sessions by status: " + (", ".join(f"{k} {v}" for k, v in sorted(s["sessions"]["byStatus"].items())) or "none"),
        "Sessions by type:   " + (", ".join(f"{k} {v}" for k, v in sorted(s["sessions"]["byType"].items())) or "none"),
        f"Average session length: {s['sessions']['averageLengthMinutes']} min",
        f"Raids: {s['raids']['total']} (" + (", ".join(f"{k} {v}" for k, v in sorted(s["raids"]["byOutcome"].items())) or "none") + ")",
        f"Participants: {s['participants']['total']} ({s['participants']['distinctMembers']} distinct members)",
        f"Claims: {s['claims']['total']} (" + (", ".join(f"{k} {v}" for k, v in sorted(s["claims"]["byState"].items())) or "none") + ")",
        f"Points awarded: {s['pointsAwarded']}",
    ]
    return "\n".join(lines)
