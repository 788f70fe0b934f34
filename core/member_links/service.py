"""Linking accounts: one member across Telegram, Discord and the web.

`/link account` gives the member a one-time code (8 letters and digits, ten minutes, SHA-256
stored, bound to the identity that asked; a new request replaces an unused one). `/link account CODE`
from another account redeems it: the one conditional UPDATE that sets `used_at` wins, so a code
links once however many redeem it at the same time. The two members become one (core/member_links/
merge.py), the older member id stays.

Refused, and nothing changes:
- the code is unknown, expired or used; it is redeemed by the account that asked for it; the two
  accounts are one member already; they have two different X handles (one member has one handle).
Refused, and remembered for a moderator:
- both members hold points in one community (ledger rows there, or seats in one raid): linking
  would merge two places on that board. A moderator of such a community approves the refused link
  with `/member merge <member> <member>` (names resolved exactly, as core/targets.py resolves them)
  within a week; the merge is audited in every community that knows either member.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from core.clock import Clock
from core.codes import CODE_TTL, Issued, code_hash, new_code, parsed, shown
from core.directory import MemberRef, ensure_member, ordered_platforms, platforms_of
from core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from core.i18n import _
from core.moderation import audit
from core.storage.db import Database
from core.storage.ledger_models import PointsEntry
from core.storage.link_models import LinkCode
from core.storage.models import Community, CommunityMember, Member, MemberIdentity, Raid, RaidParticipant
from core.targets import member_by_identity

from .merge import merge_members

APPROVAL_TTL = timedelta(days=7)


class UnknownCode(NotFound):
    code = "LINK_CODE_UNKNOWN"


class ExpiredCode(ValidationError):
    code = "LINK_CODE_EXPIRED"


class UsedCode(Conflict):
    code = "LINK_CODE_USED"


class LinkRefused(Conflict):
    code = "LINK_REFUSED"


@dataclass(frozen=True)
class Shared:
    """A community where both members hold points."""

    community_id: int
    title: str


@dataclass(frozen=True)
class Outcome:
    member_id: int
    platforms: tuple[str, ...] = ()
    refused_in: tuple[Shared, ...] = ()  # non-empty: refused, waiting for a moderator
    members: tuple[int, int] = (0, 0)

    @property
    def linked(self) -> bool:
        return not self.refused_in




async def shared_communities(s: AsyncSession, a: int, b: int) -> list[Shared]:
    """Communities where both members hold points (ledger rows) or sat in one raid."""
    ledger = (select(PointsEntry.community_id).where(PointsEntry.member_id == a)
              .intersect(select(PointsEntry.community_id).where(PointsEntry.member_id == b)))
    ids = set((await s.scalars(ledger)).all())
    p1, p2 = aliased(RaidParticipant), aliased(RaidParticipant)
    ids |= set((await s.scalars(
        select(Raid.community_id).join(p1, p1.raid_id == Raid.id).join(p2, p2.raid_id == Raid.id)
        .where(p1.member_id == a, p2.member_id == b).distinct())).all())
    if not ids:
        return []
    rows = (await s.execute(select(Community.id, Community.title, Community.platform, Community.external_id)
                            .where(Community.id.in_(ids)).order_by(Community.id))).all()
    return [Shared(r.id, r.title or f"{r.platform} {r.external_id}") for r in rows]


async def platforms(s: AsyncSession, member_id: int) -> tuple[str, ...]:
    """The platforms a member has accounts on, each once, in a stable order."""
    found = set((await s.scalars(select(MemberIdentity.platform).where(MemberIdentity.member_id == member_id))).all())
    return tuple(ordered_platforms(found))


class MemberLinkService:
    def __init__(self, db: Database, clock: Clock, close_windows: Any = None) -> None:
        self.db = db
        self.clock = clock
        self._close_windows = close_windows  # BoardService.close_windows: winners of merged windows

    async def issue(self, who: MemberRef) -> Issued:
        now = self.clock.now()
        code = new_code()

        async def op(s: AsyncSession) -> None:
            await ensure_member(s, who, now)
            await s.execute(delete(LinkCode).where(  # an unused code of this account is replaced; old ones go
                or_(and_(LinkCode.platform == who.platform, LinkCode.external_id == who.external_id,
                         LinkCode.used_at.is_(None)),
                    LinkCode.created_at < now - APPROVAL_TTL - CODE_TTL)))
            s.add(LinkCode(code_hash=code_hash(code), platform=who.platform, external_id=who.external_id,
                           created_at=now, expires_at=now + CODE_TTL))

        await self.db.write(op)
        return Issued(shown(code), now + CODE_TTL)

    async def redeem(self, who: MemberRef, code: str) -> Outcome:
        norm = parsed(code)
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[Outcome, set[int]]:
            won = (await s.execute(
                update(LinkCode)
                .where(LinkCode.code_hash == code_hash(norm), LinkCode.used_at.is_(None), LinkCode.expires_at > now)
                .values(used_at=now, redeemer_platform=who.platform, redeemer_external_id=who.external_id)
                .returning(LinkCode.id, LinkCode.platform, LinkCode.external_id))).first()
            if won is None:
                found = (await s.execute(select(LinkCode.used_at).where(LinkCode.code_hash == code_hash(norm)))).first()
                if found is None:
                    raise UnknownCode(_("I don't know that code. Ask for a new one with /link account."))
                if found.used_at is not None:
                    raise UsedCode(_("That code has been used already. Ask for a new one with /link account."))
                raise ExpiredCode(_("That code has expired (codes last {minutes} minutes). "
                                    "Ask for a new one with /link account.").format(minutes=CODE_TTL.seconds // 60))
            if (won.platform, won.external_id) == (who.platform, who.external_id):
                raise ValidationError(_("Send this code from your other account, not from the one that asked "
                                        "for it."), field="code")
            asker = await member_by_identity(s, won.platform, won.external_id)
            if asker is None:
                raise UnknownCode(_("I don't know that code. Ask for a new one with /link account."))
            me = await ensure_member(s, who, now)
            if asker == me:
                raise LinkRefused(_("These accounts are linked already."))
            await _one_handle_or_refuse(s, asker, me)
            shared = await shared_communities(s, asker, me)
            if shared:  # remembered: a moderator of one of these communities may approve it
                await s.execute(update(LinkCode).where(LinkCode.id == won.id).values(refused_at=now))
                return Outcome(me, refused_in=tuple(shared), members=(min(asker, me), max(asker, me))), set()
            keep, gone = min(asker, me), max(asker, me)
            known = await _known_in(s, (keep, gone))
            recompute = await merge_members(s, keep, gone, now)
            found_on = await platforms(s, keep)
            for community_id in known:
                await audit(s, community_id, "member_link", now, actor=keep, target=keep,
                            data={"kept": keep, "merged": gone, "platforms": list(found_on)})
            return Outcome(keep, found_on, members=(keep, gone)), recompute

        outcome, recompute = await self.db.write(op)
        if recompute and self._close_windows is not None:
            await self._close_windows()
        return outcome

    async def merge(self, community_id: int, first: int, second: int, *, actor: int | None) -> Outcome:
        """A moderator of `community_id` approves a refused link of `first` and `second` (`actor` None:
        an API key, which names no member, as for its bans and point changes)."""
        if first == second:
            raise ValidationError(_("That is one member already."), field="member")
        now = self.clock.now()

        async def op(s: AsyncSession) -> tuple[Outcome, set[int]]:
            asker, redeemer = aliased(MemberIdentity), aliased(MemberIdentity)
            pair = (first, second)
            request = await s.scalar(
                select(LinkCode.id)
                .join(asker, and_(asker.platform == LinkCode.platform, asker.external_id == LinkCode.external_id))
                .join(redeemer, and_(redeemer.platform == LinkCode.redeemer_platform,
                                     redeemer.external_id == LinkCode.redeemer_external_id))
                .where(LinkCode.refused_at > now - APPROVAL_TTL, LinkCode.merged_at.is_(None),
                       asker.member_id.in_(pair), redeemer.member_id.in_(pair), asker.member_id != redeemer.member_id)
                .order_by(LinkCode.refused_at.desc()).limit(1))
            if request is None:
                raise PermissionDenied(_(
                    "These two have not asked to be linked: one of them sends /link account, then redeems the code "
                    "from the other account. When that is refused because both hold points here, you can merge them."))
            shared = await shared_communities(s, first, second)
            if community_id not in {c.community_id for c in shared}:
                raise PermissionDenied(_("They do not both hold points here: only a moderator of a community where "
                                         "both hold points can merge them."))
            await _one_handle_or_refuse(s, first, second)
            claimed = await s.execute(update(LinkCode).where(LinkCode.id == request, LinkCode.merged_at.is_(None))
                                      .values(merged_at=now))
            if not claimed.rowcount:
                raise LinkRefused(_("These members were merged already."))
            keep, gone = min(pair), max(pair)
            known = await _known_in(s, pair)
            recompute = await merge_members(s, keep, gone, now)
            found_on = await platforms(s, keep)
            for cid in known:
                await audit(s, cid, "member_merge", now, actor=actor, target=keep,
                            data={"kept": keep, "merged": gone, "platforms": list(found_on),
                                  "approvedIn": community_id,
                                  "sharedCommunities": [c.community_id for c in shared]})
            return Outcome(keep, found_on, members=(keep, gone)), recompute

        outcome, recompute = await self.db.write(op)
        if recompute and self._close_windows is not None:
            await self._close_windows()
        return outcome

    async def platforms(self, member_id: int) -> tuple[str, ...]:
        return await self.db.read(lambda s: platforms(s, member_id))

    async def with_platforms(self, entries: list[Any]) -> list[dict[str, Any]]:
        """Board entries (dataclasses) as dicts with each member's `platforms`."""
        found = await self.db.read(lambda s: platforms_of(s, [e.member_id for e in entries]))
        return [{**asdict(e), "platforms": found.get(e.member_id, [])} for e in entries]


async def _one_handle_or_refuse(s: AsyncSession, a: int, b: int) -> None:
    handles = {m.x_handle for m in (await s.scalars(select(Member).where(Member.id.in_((a, b))))).all()} - {None}
    if len(handles) > 1:
        first, second = sorted(str(h) for h in handles)
        raise LinkRefused(_("Your accounts have different X handles (@{first} and @{second}), and one member has "
                            "one handle, so I can't link them.").format(first=first, second=second))


async def _known_in(s: AsyncSession, members: tuple[int, int]) -> list[int]:
    """Communities that know either member (they used nubi there, or hold points there)."""
    ids = set(await s.scalars(select(CommunityMember.community_id).where(CommunityMember.member_id.in_(members))))
    ids |= set(await s.scalars(select(PointsEntry.community_id).where(PointsEntry.member_id.in_(members)).distinct()))
    return sorted(ids)
