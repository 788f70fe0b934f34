"""Linking X handles to members: one handle, one member, across the whole bot."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.directory import MemberRef, ensure_member
from core.errors import Conflict
from core.i18n import _
from core.raids.urls import normalize_handle
from core.storage.db import Database
from core.storage.models import Member


class LinkService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def link(self, member: MemberRef, handle: str) -> tuple[int, str]:
        """Bind `handle` to the member (unproven). Refuses a handle that belongs to someone else."""
        h = normalize_handle(handle)
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[int, str]:
            member_id = await ensure_member(s, member, now)
            owner = await s.scalar(select(Member.id).where(Member.x_handle == h))
            if owner is not None and owner != member_id:
                raise Conflict(_("@{handle} is already linked to another member. Ask a moderator if it is yours.").format(
                    handle=h))
            await s.execute(
                update(Member)
                .where(Member.id == member_id)
                .values(x_handle=h, x_handle_verified=(owner == member_id and await _verified(s, member_id)))
            )
            return member_id, h

        try:
            return await self.db.write(op)
        except IntegrityError as exc:  # a concurrent link of the same handle won the unique constraint
            raise Conflict(_("@{handle} is already linked to another member.").format(handle=h)) from exc

    async def handle_of(self, member_id: int) -> tuple[str | None, bool]:
        async def op(s: AsyncSession) -> tuple[str | None, bool]:
            row = (await s.execute(select(Member.x_handle, Member.x_handle_verified).where(Member.id == member_id))).first()
            return (row[0], row[1]) if row else (None, False)

        return await self.db.read(op)


async def _verified(s: AsyncSession, member_id: int) -> bool:
    return bool(await s.scalar(select(Member.x_handle_verified).where(Member.id == member_id)))
