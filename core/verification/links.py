"""Proving an X handle with a one-time code, and recording handle conflicts for moderators.

`/link <handle>` records the link (LinkService); with the X API the bot then hands out a code the
member posts from that account, and `/link verify` finds it with one recent-search read. The code
is bound to the member and the handle, expires, and is spent by a successful proof.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.directory import MemberRef, ensure_member
from core.errors import Conflict
from core.i18n import _, ngettext
from core.links import LinkService
from core.moderation import audit
from core.raids.urls import normalize_handle
from core.storage.models import CommunityMember, Member
from core.storage.upsert import insert
from core.storage.verification_models import XLink, XLinkConflict

from . import ledger
from .base import Deferred, OpenReader, XAccount

if TYPE_CHECKING:
    from core.services import Services

log = logging.getLogger(__name__)

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: codes get typed by hand
CODE_TTL = timedelta(minutes=30)
CLOCK_SKEW = timedelta(minutes=2)  # X's timestamps and ours may disagree a little
READS_PER_PROOF = 2  # the code search, then the account's age and followers for the gates


def new_code() -> str:
    return "NUBI-" + "".join(secrets.choice(CODE_ALPHABET) for _i in range(6))


class RecordingLinkService(LinkService):
    """LinkService that also records a refused handle, so moderators can see and settle the conflict."""

    async def link(self, member: MemberRef, handle: str) -> tuple[int, str]:
        try:
            return await super().link(member, handle)
        except Conflict:
            await self._record_conflict(member, normalize_handle(handle))
            raise

    async def _record_conflict(self, member: MemberRef, handle: str) -> None:
        now = self.clock.now()

        async def op(s: AsyncSession) -> None:
            claimant = await ensure_member(s, member, now)
            owner = await s.scalar(select(Member.id).where(Member.x_handle == handle))
            s.add(XLinkConflict(handle=handle, owner_member_id=owner, claimant_member_id=claimant, at=now))
            # Visible in the audit log of every community either member is known in.
            people = [m for m in (claimant, owner) if m is not None]
            communities = (
                await s.scalars(select(CommunityMember.community_id).where(CommunityMember.member_id.in_(people)).distinct())
            ).all()
            for community_id in communities:
                await audit(s, community_id, "x_link_conflict", now, actor=claimant, target=owner,
                            reason=f"@{handle} is already linked to another member", data={"handle": handle})

        await self.db.write(op)
        log.warning("X handle conflict: @%s asked for by %s:%s", handle, member.platform, member.external_id)

    async def conflicts(
        self, *, handle: str | None = None, community_id: int | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Refused handle links, newest first. With `community_id`: only those asked for by a member of
        that community (a moderator sees their own members' refusals, not another community's people)."""
        owner, claimant = aliased(Member), aliased(Member)

        async def op(s: AsyncSession) -> list[dict[str, Any]]:
            q = (
                select(XLinkConflict, claimant.display_name, owner.display_name)
                .join(claimant, claimant.id == XLinkConflict.claimant_member_id)
                .outerjoin(owner, owner.id == XLinkConflict.owner_member_id)
                .order_by(XLinkConflict.id.desc())
                .limit(limit)
            )
            if handle is not None:
                q = q.where(XLinkConflict.handle == normalize_handle(handle))
            if community_id is not None:
                known = select(CommunityMember.member_id).where(CommunityMember.community_id == community_id)
                q = q.where(XLinkConflict.claimant_member_id.in_(known))
            return [
                {"id": c.id, "handle": c.handle, "ownerMemberId": c.owner_member_id, "ownerName": owner_name,
                 "claimantMemberId": c.claimant_member_id, "claimantName": claimant_name, "at": c.at.isoformat()}
                for c, claimant_name, owner_name in (await s.execute(q)).all()
            ]

        return await self.db.read(op)


class LinkProver:
    """The `link_challenge` and `link_verifier` hooks of Services, over an X reader."""

    def __init__(self, services: Services, open_reader: OpenReader, *, ttl: timedelta = CODE_TTL) -> None:
        self.s = services
        self.open_reader = open_reader
        self.ttl = ttl

    async def challenge(self, member: MemberRef, handle: str) -> str:
        """Called right after /link recorded `handle`: hand out a fresh code (unless already proven)."""
        now = self.s.clock.now()
        h = normalize_handle(handle)
        code = new_code()

        async def op(s: AsyncSession) -> bool:
            member_id = await ensure_member(s, member, now)
            proven = await s.scalar(select(Member.x_handle_verified).where(Member.id == member_id, Member.x_handle == h))
            if proven:
                return True
            stmt = insert(s, XLink).values(member_id=member_id, handle=h, code=code, issued_at=now, expires_at=now + self.ttl)
            await s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["member_id"],
                    set_={"handle": h, "code": code, "issued_at": now, "expires_at": now + self.ttl, "proven_at": None,
                          "x_user_id": None, "account_created_at": None, "followers": None},  # a new handle, new facts
                )
            )
            return False

        if await self.s.db.write(op):
            return _("@{handle} is linked and already proven.").format(handle=h)
        minutes = int(self.ttl.total_seconds() // 60)
        return ngettext(
            "Linked @{handle}, not proven yet. To prove it is yours, post this from @{handle} within {minutes} "
            "minute:\n{code}\nthen send /link verify. Until then your X actions can't be checked automatically.",
            "Linked @{handle}, not proven yet. To prove it is yours, post this from @{handle} within {minutes} "
            "minutes:\n{code}\nthen send /link verify. Until then your X actions can't be checked automatically.",
            minutes,
        ).format(handle=h, minutes=minutes, code=code)

    async def verify(self, member: MemberRef) -> str:
        now = self.s.clock.now()

        async def load(s: AsyncSession) -> tuple[int, str | None, bool, XLink | None]:
            member_id = await ensure_member(s, member, now)
            handle, proven = (await s.execute(select(Member.x_handle, Member.x_handle_verified).where(Member.id == member_id))).one()
            return member_id, handle, proven, await s.get(XLink, member_id)

        member_id, handle, proven, pending = await self.s.db.write(load)
        if handle is None:
            return _("Link a handle first: /link <your X handle>.")
        if proven:
            return _("@{handle} is already proven.").format(handle=handle)
        if pending is None or pending.handle != handle or pending.code is None or pending.issued_at is None:
            return _("Send /link {handle} to get a code first.").format(handle=handle)
        assert pending.expires_at is not None
        if pending.expires_at <= now:
            return _("Your code has expired. Send /link {handle} for a new one.").format(handle=handle)
        try:
            found, account = await self._search(handle, pending.code, pending.issued_at, pending.expires_at)
        except Deferred as exc:
            log.info("link proof for @%s deferred: %s", handle, exc)
            if exc.reason in ("day_budget", "budget"):
                return _("The bot's X reads for today are used up. Try /link verify again tomorrow.")
            return _("X is not answering right now. Try /link verify again in a few minutes.")
        if not found:
            until = pending.expires_at.strftime("%H:%M UTC")
            return _("I couldn't find a post from @{handle} with {code} yet. New posts can take a minute "
                     "to show up in search: try /link verify again (the code works until {until}).").format(
                handle=handle, code=pending.code, until=until)
        if not await self._prove(member_id, handle, account, now):
            return _("Your link changed meanwhile. Send /link {handle} for a new code.").format(handle=handle)
        return _("Proven: @{handle} is yours. Your X actions can now be verified automatically.").format(handle=handle)

    async def _search(
        self, handle: str, code: str, issued_at: datetime, expires_at: datetime
    ) -> tuple[bool, XAccount | None]:
        now = self.s.clock.now()
        day = ledger.day_key(now)
        x = self.s.settings.x
        granted, short = await self.s.db.write(
            lambda s: ledger.reserve(s, None, day, READS_PER_PROOF, per_raid=0, per_day=x.reads_per_day)
        )
        if granted == 0:
            raise Deferred("day_budget", ledger.next_day(now))
        used = 0
        try:
            async with self.open_reader(granted) as reader:
                try:
                    posts = await reader.find_code(handle, code, issued_at - CLOCK_SKEW)
                    found = any(
                        p.handle == handle and p.created_at is not None
                        and issued_at - CLOCK_SKEW <= p.created_at <= expires_at and code.lower() in p.text.lower()
                        for p in posts
                    )
                    account = None
                    if found and granted > 1:
                        try:
                            account = await reader.account(handle)
                        except Deferred:
                            account = None  # proven all the same; gates will see unknown facts
                    return found, account
                finally:
                    used = reader.reads
        finally:
            await self.s.db.write(lambda s: ledger.refund(s, None, day, granted - used))

    async def _prove(self, member_id: int, handle: str, account: XAccount | None, now: datetime) -> bool:
        async def op(s: AsyncSession) -> bool:
            won = await s.scalar(
                update(Member)
                .where(Member.id == member_id, Member.x_handle == handle)
                .values(x_handle_verified=True)
                .returning(Member.id)
            )
            if won is None:
                return False
            await s.execute(
                update(XLink)
                .where(XLink.member_id == member_id, XLink.handle == handle)
                .values(
                    code=None, proven_at=now,
                    x_user_id=account.id if account else None,
                    account_created_at=account.created_at if account else None,
                    followers=account.followers if account else None,
                )
            )
            return True

        return await self.s.db.write(op)
