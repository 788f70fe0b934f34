"""Communities are what users mean: on Discord the server, not the channel.

Before 0.2.0 a Discord community was one channel. Migration 0008 renamed each such community to
`channel:<channel id>` and gave its raids, schedules and locks their channel; it could not know the
server. The Discord adapter knows it: the first time it sees a channel (a command there, or the
server's channel list when the gateway connects) it calls `adopt_channels`, which moves everything
of `channel:<id>` into the server's community, in one transaction per channel:

- raids, points ledger, schedules, chat locks, outbox posts, partner links, audit log and sessions
  change owner;
- cached score tables (member_scores, member_score_slices) are added up, row by row, so every board
  still equals the ledger's sums; closed windows' winners that the merge changes are recomputed;
- bans, earned badges and what the community knows of members (moderator, exclusion) are united;
- settings: the server's own win; a server without settings takes the channel's.

The first channel of a server that has no community yet simply becomes it (renamed, ids kept).
Each merge is written to the audit log as `community_merge`. Adopting is idempotent and safe in
every process at once: the channel community is deleted in the same transaction, so a second
adopter finds nothing to do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.clock import Clock
from core.directory import LEGACY_CHANNEL, ChatRef, find_community
from core.storage.db import Database
from core.storage.fold import MEMBERSHIP, SCORES, fold
from core.storage.ledger_models import PointsEntry
from core.storage.models import (
    AuditEntry,
    Ban,
    ChatLock,
    Community,
    CommunityMember,
    LeaderboardWindow,
    MemberBadge,
    MemberScore,
    MemberScoreSlice,
    NubiSession,
    Raid,
    ScheduledAnnouncement,
)
from core.storage.outbox_models import ChatPost
from core.storage.partner_models import ChatLink, ChatLinkCode, RaidChat

log = logging.getLogger(__name__)

# Rows that only change owner.
_MOVED = (Raid, PointsEntry, ScheduledAnnouncement, ChatLock, ChatPost, AuditEntry, ChatLink, ChatLinkCode, RaidChat)



class CommunityService:
    def __init__(self, db: Database, clock: Clock, close_windows: Any = None) -> None:
        self.db = db
        self.clock = clock
        self._close_windows = close_windows  # recomputes closed windows' winners (BoardService.close_windows)

    async def adopt_channels(self, server: ChatRef, channel_ids: Iterable[str]) -> list[str]:
        """Move the old channel communities of `channel_ids` into the server's community (`server`
        without a channel). Returns the channels adopted; nothing to adopt costs one read."""
        names = [LEGACY_CHANNEL + str(c) for c in channel_ids]
        if not names:
            return []

        async def legacy(s: AsyncSession) -> list[str]:
            return list((await s.scalars(select(Community.external_id).where(
                Community.platform == server.platform, Community.external_id.in_(names)))).all())

        adopted: list[str] = []
        for name in await self.db.read(legacy):
            if await self.db.write(lambda s, name=name: self._adopt(s, server, name)):
                adopted.append(name.removeprefix(LEGACY_CHANNEL))
        if adopted:
            log.info("moved Discord channel communities %s into server %s", adopted, server.external_id)
            if self._close_windows is not None:
                await self._close_windows()
        return adopted

    async def _adopt(self, s: AsyncSession, server: ChatRef, legacy_name: str) -> bool:
        now = self.clock.now()
        src = await find_community(s, ChatRef(server.platform, legacy_name))
        if src is None:
            return False  # another process adopted it first
        server_name = f"{server.platform}:{server.external_id}"
        dst = await find_community(s, ChatRef(server.platform, server.external_id))
        if dst is None:  # the server's first channel becomes the server: every id stays
            await s.execute(update(Community).where(Community.id == src)
                            .values(external_id=server.external_id, title=server.title))
            await s.execute(update(NubiSession).where(NubiSession.community_id == src).values(community=server_name))
            dst = src
        else:
            await _merge(s, src, dst, server_name)
        s.add(AuditEntry(community_id=dst, action="community_merge", at=now,
                         reason=f"Discord channel {legacy_name.removeprefix(LEGACY_CHANNEL)} is part of this server",
                         data={"from": legacy_name, "fromId": src, "renamed": dst == src}))
        return True


async def _merge(s: AsyncSession, src: int, dst: int, server_name: str) -> None:
    """Everything of community `src` into `dst`, in the caller's transaction; `src` is deleted."""
    for model in _MOVED:
        await s.execute(update(model).where(model.community_id == src).values(community_id=dst))
    await s.execute(update(ChatLink).where(ChatLink.partner_community_id == src).values(partner_community_id=dst))
    await s.execute(update(NubiSession).where(NubiSession.community_id == src)
                    .values(community_id=dst, community=server_name))

    # Closed windows whose winners the merge changes: recomputed from the summed scores afterwards.
    touched = select(MemberScore.window, MemberScore.window_start).where(MemberScore.community_id == src).distinct()
    await s.execute(delete(LeaderboardWindow).where(
        LeaderboardWindow.community_id.in_((src, dst)),
        tuple_(LeaderboardWindow.window, LeaderboardWindow.window_start).in_(touched)))
    await s.execute(update(LeaderboardWindow).where(LeaderboardWindow.community_id == src).values(community_id=dst))

    fold_ = functools.partial(fold, s, owner="community_id", src=src, dst=dst)
    await fold_(MemberScore, key=("community_id", "window", "window_start", "member_id"), combine=SCORES)
    await fold_(MemberScoreSlice, key=("community_id", "slice_start", "member_id"), combine=SCORES)
    await fold_(CommunityMember, key=("community_id", "member_id"), combine=MEMBERSHIP)
    await fold_(Ban, key=("community_id", "member_id"))  # banned in either: banned in the server
    await fold_(MemberBadge, key=("community_id", "member_id", "threshold"))  # the server's own badge wins

    settings = dict((await s.execute(select(Community.id, Community.settings)
                                     .where(Community.id.in_((src, dst))))).all())
    if not settings.get(dst) and settings.get(src):
        await s.execute(update(Community).where(Community.id == dst).values(settings=settings[src]))
    await s.execute(delete(Community).where(Community.id == src))

