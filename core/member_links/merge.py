"""Member `gone` into member `keep`, exactly, in the caller's transaction; `gone` is deleted.

Every row that names `gone` is moved, so nothing is lost to the ON DELETE CASCADE of members.id
(`MEMBER_COLUMNS` lists each such column; tests/test_member_links.py checks it against the schema):

- identities, ledger rows (member and actor), claims, sessions' user ids, audit entries, raid
  starters, schedule authors, bans given, review and X-link records change owner;
- cached scores (member_scores, member_score_slices) are added up row by row, so every board still
  equals the ledger's sums; closed windows' winners naming `gone` name `keep`, and where both
  scored in one closed window its winners are recomputed (the caller runs close_windows after);
- what communities know of them is united (moderator, excluded: either), and so are bans and badges;
- one X handle: `keep`'s, else `gone`'s (callers refuse two different handles before this);
- a raid both took part in (only a moderator's merge gets here) keeps one seat: the earlier join
  position, the two seats' points added, `completed_all` if either had it. Of two claims of one action
  the better one stays (verified > accepted > unverifiable > pending > rejected, then the earlier);
  the other is deleted, its ledger rows now point at the kept claim (a revoke takes back both), and
  the raid's counters lose the claim counted twice. No point is added or taken.
"""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.directory import member_uuid
from core.storage.fold import MEMBERSHIP, SCORES, fold
from core.storage.ledger_models import PointsEntry
from core.storage.models import (
    AuditEntry,
    Ban,
    CommunityMember,
    LeaderboardWindow,
    Member,
    MemberBadge,
    MemberIdentity,
    MemberScore,
    MemberScoreSlice,
    NubiSession,
    Raid,
    RaidAction,
    RaidObjective,
    RaidParticipant,
    ScheduledAnnouncement,
    SessionMessage,
)
from core.storage.verification_models import ClaimCheck, XLink, XLinkConflict

# (table, column) of every foreign key to members.id, each handled below.
MEMBER_COLUMNS = frozenset({
    ("member_identities", "member_id"), ("points_ledger", "member_id"), ("points_ledger", "actor_member_id"),
    ("member_scores", "member_id"), ("member_score_slices", "member_id"), ("community_members", "member_id"),
    ("raid_participants", "member_id"), ("raid_actions", "member_id"), ("raid_actions", "reviewed_by"),
    ("raid_sessions", "started_by"), ("scheduled_announcements", "created_by"), ("bans", "member_id"),
    ("bans", "banned_by"), ("moderation_audit_log", "actor_member_id"),
    ("moderation_audit_log", "target_member_id"), ("x_links", "member_id"), ("x_link_conflicts", "owner_member_id"),
    ("x_link_conflicts", "claimant_member_id"), ("claim_checks", "member_id"), ("member_badges", "member_id"),
})
STATE_RANK = {"verified": 0, "accepted": 1, "unverifiable": 2, "pending": 3, "rejected": 4}
COUNTED = ("verified", "accepted", "unverifiable")  # the states raid counters and objectives count



async def merge_members(s: AsyncSession, keep: int, gone: int, now: datetime) -> set[int]:
    """Returns the communities whose closed windows were dropped to be recomputed.

    Both member rows are locked first (PostgreSQL; SQLite has one writer): a concurrent join or claim
    of `gone` waits, then fails on the deleted member and is answered "try again", rather than
    committing a row this merge did not see, which the cascade would delete."""
    await s.execute(select(Member.id).where(Member.id.in_((keep, gone))).with_for_update())
    shared_raids = (await s.scalars(
        select(RaidParticipant.raid_id).where(RaidParticipant.member_id == keep)
        .intersect(select(RaidParticipant.raid_id).where(RaidParticipant.member_id == gone)))).all()
    for raid_id in shared_raids:
        await _one_seat(s, raid_id, keep, gone)
    await s.execute(update(RaidParticipant).where(RaidParticipant.member_id == gone).values(member_id=keep))
    await s.execute(update(RaidAction).where(RaidAction.member_id == gone).values(member_id=keep))
    await s.execute(update(RaidAction).where(RaidAction.reviewed_by == gone).values(reviewed_by=keep))
    mine = select(ClaimCheck.raid_id, ClaimCheck.action_type).where(ClaimCheck.member_id == keep)
    for raid_id, action in (await s.execute(mine)).all():
        await s.execute(delete(ClaimCheck).where(ClaimCheck.raid_id == raid_id, ClaimCheck.action_type == action,
                                                 ClaimCheck.member_id == gone))
    await s.execute(update(ClaimCheck).where(ClaimCheck.member_id == gone).values(member_id=keep))

    await s.execute(update(PointsEntry).where(PointsEntry.member_id == gone).values(member_id=keep))
    await s.execute(update(PointsEntry).where(PointsEntry.actor_member_id == gone).values(actor_member_id=keep))
    recompute = await _closed_windows(s, keep, gone)
    await _sum_scores(s, keep, gone)

    fold_ = functools.partial(fold, s, owner="member_id", src=gone, dst=keep)
    await fold_(CommunityMember, key=("community_id", "member_id"), combine=MEMBERSHIP)
    await fold_(Ban, key=("community_id", "member_id"))  # banned where either was
    await s.execute(update(Ban).where(Ban.banned_by == gone).values(banned_by=keep))
    # Badges: each earned by either is kept once (the keeper's where both earned one), never announced again.
    await fold_(MemberBadge, key=("community_id", "member_id", "threshold"))

    await _one_handle(s, keep, gone)
    await s.execute(update(XLinkConflict).where(XLinkConflict.owner_member_id == gone).values(owner_member_id=keep))
    await s.execute(update(XLinkConflict).where(XLinkConflict.claimant_member_id == gone)
                    .values(claimant_member_id=keep))
    await s.execute(update(Raid).where(Raid.started_by == gone).values(started_by=keep))
    await s.execute(update(ScheduledAnnouncement).where(ScheduledAnnouncement.created_by == gone)
                    .values(created_by=keep))
    await s.execute(update(AuditEntry).where(AuditEntry.actor_member_id == gone).values(actor_member_id=keep))
    await s.execute(update(AuditEntry).where(AuditEntry.target_member_id == gone).values(target_member_id=keep))
    old_uuid, new_uuid = member_uuid(gone), member_uuid(keep)
    await s.execute(update(NubiSession).where(NubiSession.user_id == old_uuid).values(user_id=new_uuid))
    await s.execute(update(SessionMessage).where(SessionMessage.author_id == old_uuid).values(author_id=new_uuid))

    await s.execute(update(MemberIdentity).where(MemberIdentity.member_id == gone).values(member_id=keep))
    await s.execute(delete(Member).where(Member.id == gone))
    return recompute


async def _sum_scores(s: AsyncSession, keep: int, gone: int) -> None:
    fold_ = functools.partial(fold, s, owner="member_id", src=gone, dst=keep, combine=SCORES)
    await fold_(MemberScore, key=("community_id", "window", "window_start", "member_id"))
    await fold_(MemberScoreSlice, key=("community_id", "slice_start", "member_id"))


async def _closed_windows(s: AsyncSession, keep: int, gone: int) -> set[int]:
    """Closed windows naming `gone`: winners renamed, or dropped where both scored (recomputed later)."""
    mine = MemberScore.__table__.alias("mine")
    theirs = MemberScore.__table__.alias("theirs")
    both = set((await s.execute(
        select(mine.c.community_id, mine.c.window, mine.c.window_start)
        .join(theirs, and_(theirs.c.community_id == mine.c.community_id, theirs.c.window == mine.c.window,
                           theirs.c.window_start == mine.c.window_start, theirs.c.member_id == gone))
        .where(mine.c.member_id == keep, mine.c.window != "all"))).all())
    communities = select(MemberScore.community_id).where(MemberScore.member_id == gone).distinct()
    dropped: set[int] = set()
    for row in (await s.scalars(select(LeaderboardWindow).where(LeaderboardWindow.community_id.in_(communities)))):
        if (row.community_id, row.window, row.window_start) in both:
            await s.execute(delete(LeaderboardWindow).where(LeaderboardWindow.id == row.id))
            dropped.add(row.community_id)
        elif any(w.get("memberId") == gone for w in row.winners):
            row.winners = [{**w, "memberId": keep} if w.get("memberId") == gone else w for w in row.winners]
    await s.flush()
    return dropped


async def _one_handle(s: AsyncSession, keep: int, gone: int) -> None:
    rows = {m.id: m for m in (await s.scalars(select(Member).where(Member.id.in_((keep, gone))))).all()}
    kept, other = rows[keep], rows[gone]
    if kept.x_handle is None and other.x_handle is not None:
        handle, proven = other.x_handle, other.x_handle_verified
        other.x_handle = None
        await s.flush()  # the handle is unique: off `gone` before it is on `keep`
        kept.x_handle, kept.x_handle_verified = handle, proven
        await s.execute(delete(XLink).where(XLink.member_id == keep))
        await s.execute(update(XLink).where(XLink.member_id == gone).values(member_id=keep))
    else:
        await s.execute(delete(XLink).where(XLink.member_id == gone))
    await s.flush()


async def _one_seat(s: AsyncSession, raid_id: int, keep: int, gone: int) -> None:
    seats = (await s.scalars(select(RaidParticipant).where(
        RaidParticipant.raid_id == raid_id, RaidParticipant.member_id.in_((keep, gone)))
        .order_by(RaidParticipant.join_position))).all()
    first, second = seats
    claims: dict[str, list[RaidAction]] = {}
    for a in (await s.scalars(select(RaidAction).where(RaidAction.participant_id.in_((first.id, second.id))))).all():
        claims.setdefault(a.action_type, []).append(a)
    twice = 0
    for action, pair in claims.items():
        if len(pair) < 2:
            continue
        kept, dropped = sorted(pair, key=lambda a: (STATE_RANK.get(a.verification, 9), a.claimed_at, a.id))
        await s.execute(update(PointsEntry).where(PointsEntry.claim_id == dropped.id).values(claim_id=kept.id))
        if kept.member_id != keep:  # the check that stays is the kept claim's
            await s.execute(delete(ClaimCheck).where(ClaimCheck.raid_id == raid_id, ClaimCheck.member_id == keep,
                                                     ClaimCheck.action_type == action))
        else:
            await s.execute(delete(ClaimCheck).where(ClaimCheck.raid_id == raid_id, ClaimCheck.member_id == gone,
                                                     ClaimCheck.action_type == action))
        if dropped.verification in COUNTED:
            twice += 1
            await s.execute(update(RaidObjective).where(RaidObjective.raid_id == raid_id,
                                                        RaidObjective.action_type == action)
                            .values(count=RaidObjective.count - 1))
        await s.execute(delete(RaidAction).where(RaidAction.id == dropped.id))
    await s.flush()
    await s.execute(update(RaidAction).where(RaidAction.participant_id == second.id)
                    .values(participant_id=first.id, member_id=keep))
    merged = {
        "points": first.points + second.points,
        "claims_count": first.claims_count + second.claims_count - twice,
        "completed_all": first.completed_all or second.completed_all,
        "last_scored_at": max((t for t in (first.last_scored_at, second.last_scored_at) if t is not None),
                              default=None),
        "joined_at": min(first.joined_at, second.joined_at),
    }
    await s.execute(delete(RaidParticipant).where(RaidParticipant.id == second.id))
    await s.flush()
    await s.execute(update(RaidParticipant).where(RaidParticipant.id == first.id).values(member_id=keep, **merged))
    await s.execute(update(Raid).where(Raid.id == raid_id).values(
        participant_count=Raid.participant_count - 1, action_count=Raid.action_count - twice))
