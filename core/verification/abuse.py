"""Anti-abuse on the claim path: per-member claim rate, proof-link shape, proven links, random audits.

`screen_claim` runs inside RaidService.claim's transaction, just before the claim row is inserted,
and returns the state the claim starts in. Everything it reads is in the database, so the limits
hold across processes. Account gates (age, followers) need the X API's facts and are applied by
the verifiers, which see them (see base.Gates).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.config import RaidsConfig, Settings
from core.errors import RateLimited, ValidationError
from core.i18n import _
from core.storage.models import Community, Member, Raid, RaidAction
from core.storage.upsert import insert
from core.storage.verification_models import ClaimCheck

from .base import PARTS, Gates
from .proof import PROOF_ACTIONS, check_proof_url

# Audit picks must not be predictable by members.
_system_random = random.SystemRandom()


def gates_for(cfg: RaidsConfig) -> Gates:
    """The community's account gates. Read leniently: the two keys are optional in [raids]."""
    return Gates(getattr(cfg, "min_account_age_days", 0), getattr(cfg, "min_followers", 0))


def community_cfg(settings: Settings, community_settings: dict[str, Any] | None) -> RaidsConfig:
    from core.raids.common import community_raid_settings  # the raid modules import this module

    return community_raid_settings(settings, community_settings)


_A = RaidAction.__table__
_C = Community.__table__
_M = Member.__table__


def screen_columns(participant_id: Any, member_id: Any, community_id: Any) -> list[Any]:
    """What the screen reads, as scalar subqueries on the given columns or parameters, so one
    statement can carry them: whether this claim repeats one (bind `action`), the community's
    settings, the member's claims since `since`, and the member's X handle and whether it is proven."""
    return [
        select(_A.c.id).where(_A.c.participant_id == participant_id, _A.c.action_type == bindparam("action"))
        .scalar_subquery().label("repeated"),
        select(_C.c.settings).where(_C.c.id == community_id).scalar_subquery().label("settings"),
        select(func.count(_A.c.id))
        .where(_A.c.member_id == member_id, _A.c.source == "claim", _A.c.claimed_at > bindparam("since"))
        .scalar_subquery().label("recent"),
        select(_M.c.x_handle).where(_M.c.id == member_id).scalar_subquery().label("handle"),
        select(_M.c.x_handle_verified).where(_M.c.id == member_id).scalar_subquery().label("proven"),
    ]


_FACTS = select(*screen_columns(bindparam("participant_id"), bindparam("member_id"), bindparam("community_id")))


def claim_rate_since(now: datetime) -> datetime:
    return now - timedelta(minutes=1)


def check_claim_rate(recent: int, per_minute: int) -> None:
    """At most `per_minute` new claims by one member in any rolling minute, across every raid."""
    if recent >= per_minute:
        raise RateLimited(_("You're claiming very fast. Wait a minute, then try again."))


def pick_for_audit(share: float, rng: random.Random | None = None) -> bool:
    return share > 0 and (rng or _system_random).random() < share


async def note_audit(s: AsyncSession, raid_id: int, member_id: int, action: str, now: datetime) -> None:
    """Hold the claim for a moderator; verifiers keep off flagged claims."""
    await s.execute(
        insert(s, ClaimCheck)
        .values(
            raid_id=raid_id, member_id=member_id, action_type=action, outcome="flagged", reason="audit",
            detail="picked for a random audit", checked_at=now,
        )
        .on_conflict_do_nothing(index_elements=["raid_id", "member_id", "action_type"])
    )


async def screen_claim(
    s: AsyncSession,
    settings: Settings,
    raid: Raid,
    member_id: int,
    participant_id: int,
    action: str,
    proof_url: str | None,
    now: datetime,
    state: str,
    *,
    rng: random.Random | None = None,
    facts: Any = None,
) -> str:
    """Refuse a claim that breaks a rule (raises a NubiError), else return its starting state.

    `state` is the tier's default (RaidService._initial_state). A repeated claim passes untouched:
    the insert that follows leaves the first one as it was. `facts` is a row with the columns of
    `screen_columns` when the caller already read them (RaidService.claim reads them together with
    the raid and the participant, since = now - 1 minute); else they are read here.
    """
    if facts is None:
        facts = (await s.execute(_FACTS, {
            "participant_id": participant_id, "action": action, "community_id": raid.community_id,
            "member_id": member_id, "since": claim_rate_since(now),
        })).one()
    if facts.repeated is not None:
        return state
    cfg = community_cfg(settings, facts.settings)
    check_claim_rate(facts.recent or 0, cfg.claims_per_minute)
    api = settings.x.bearer_token is not None
    handle, proven = facts.handle, facts.proven
    tier = raid.verification_tier
    if tier == "proof_link" and action in PROOF_ACTIONS:
        check_proof_url(action, proof_url, handle)
        if not api:
            state = "unverifiable"  # the link's shape is all that can be checked without the API
    checked_on_x = PARTS if tier == "x_api" else PROOF_ACTIONS if tier == "proof_link" else ()
    if api and action in checked_on_x:
        if handle is None:
            raise ValidationError(_("This raid checks claims on X: link your handle first with /link <handle>."))
        if not proven:
            raise ValidationError(_("This raid checks claims on X: prove @{handle} is yours first (/link verify).").format(
                handle=handle))
    if pick_for_audit(cfg.audit_share, rng):
        await note_audit(s, raid.id, member_id, action, now)
        return "pending"
    return state
