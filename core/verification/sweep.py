"""The X API sweep: one read of the target's reposts, quotes and replies per run, joined against
linked handles, instead of one call per member.

Matching is pure over what the reader returned, so it is tested without a network. Only proven
handles match (an unproven link could be anyone's), only posts inside the raid window count, and a
final sweep rejects a claim only when the part it depends on was read completely.
"""

from __future__ import annotations

from datetime import datetime

from .base import (
    PARTS,
    ClaimInfo,
    Credit,
    Deferred,
    Fetched,
    Outcome,
    Raider,
    Verdict,
    VerifyContext,
    XPost,
    XReader,
)
from .proof import REASON_TEXT, fingerprint, pick_originals


def counts_as(part: str, post: XPost, target: str) -> bool:
    """Does `post` do the `part` action on the target post?"""
    if part == "repost":
        return post.refers("retweeted", target)
    if part == "quote":
        return post.refers("quoted", target)
    return post.id != target and (
        post.refers("replied_to", target) or (post.conversation_id == target and bool(post.referenced))
    )


def match(
    ctx: VerifyContext, fetched: dict[str, list[XPost]], complete: set[str]
) -> tuple[list[Outcome], list[Credit]]:
    """Claims found on X become verified, unclaimed finds become credits; on a final sweep, claims
    missing from a completely read part are rejected (or held for moderators when unprovable)."""
    target = ctx.raid.post_id or ""
    by_handle = ctx.by_handle()
    claims = {(c.member_id, c.action): c for c in ctx.claims}
    outcomes: list[Outcome] = []
    credits: list[Credit] = []
    for part, posts in fetched.items():
        candidates: dict[int, list[tuple[XPost, str | None]]] = {}
        for post in posts:
            raider = by_handle.get(post.handle)
            if raider is None or not raider.proven or not raider.eligible:
                continue
            if not counts_as(part, post, target) or not ctx.raid.in_window(post.created_at):
                continue
            text_hash = None if part == "repost" else fingerprint(post.text)
            candidates.setdefault(raider.member_id, []).append((post, text_hash))
        originals = pick_originals(candidates, ctx.fingerprints)
        for member_id, posts in candidates.items():
            raider = ctx.raiders[member_id]
            claim = claims.get((member_id, part))
            if claim is not None and (claim.state != "pending" or claim.flag):
                continue  # settled already, or held for a moderator
            found = _judge(ctx, raider, part, posts, originals[member_id], claim)
            if isinstance(found, Outcome):
                outcomes.append(found)
            elif found is not None:
                credits.append(found)
        if ctx.final and part in complete:
            outcomes += _missing(ctx, part, set(candidates))
    return outcomes, credits


def _judge(
    ctx: VerifyContext,
    raider: Raider,
    part: str,
    posts: list[tuple[XPost, str | None]],
    original: tuple[XPost, str | None] | None,
    claim: ClaimInfo | None,
) -> Outcome | Credit | None:
    gate = ctx.gates.failure(raider, ctx.now)
    first, first_hash = posts[0]
    if gate is not None or original is None:
        if claim is None:
            return None  # nobody is credited past a gate or for a copied text
        reason = gate or "duplicate_text"
        state = "rejected" if reason in ("gate_age", "gate_followers") else "flagged"
        return Outcome(claim.claim_id, raider.member_id, part, state, reason, REASON_TEXT[reason], first.id, first_hash)
    post, text_hash = original
    if claim is not None:
        return Outcome(claim.claim_id, raider.member_id, part, "verified", "found", "", post.id, text_hash)
    assert post.created_at is not None  # in_window() let it through
    return Credit(raider.member_id, part, post.id, post.created_at, text_hash)


def _missing(ctx: VerifyContext, part: str, found: set[int]) -> list[Outcome]:
    out = []
    for c in ctx.claims:
        if c.action != part or c.state != "pending" or c.flag or c.member_id in found:
            continue
        raider = ctx.raiders.get(c.member_id)
        if raider is None or not raider.proven:
            out.append(Outcome(c.claim_id, c.member_id, part, "flagged", "link_unproven", REASON_TEXT["link_unproven"]))
        elif raider.eligible:
            out.append(Outcome(c.claim_id, c.member_id, part, "rejected", "not_found", f"no {part} by @{raider.handle} found on X"))
    return out


class SweepVerifier:
    tier = "x_api"

    def __init__(self, max_pages: int = 10) -> None:
        self.max_pages = max_pages

    def estimate(self, ctx: VerifyContext) -> int:
        if ctx.raid.post_id is None:
            return 0
        todo = [p for p in PARTS if p not in ctx.done_parts]
        return len(todo) * self.max_pages + 1  # each part's pages, then the target's public metrics

    async def verify(self, ctx: VerifyContext, reader: XReader | None) -> Verdict:
        verdict = Verdict()
        target = ctx.raid.post_id
        if reader is None or target is None:
            return verdict
        since = ctx.raid.started_at if ctx.final else ctx.since
        fetched: dict[str, list[XPost]] = {}
        for part in PARTS:
            if part in ctx.done_parts:
                continue
            try:
                got = await _fetch(reader, part, target, since)
            except Deferred as exc:
                verdict.deferred = verdict.deferred or exc
                continue
            fetched[part] = got.posts
            if got.complete:
                verdict.completed_parts.add(part)
        try:
            verdict.metrics = await reader.metrics(target)
        except Deferred as exc:
            verdict.deferred = verdict.deferred or exc
        verdict.outcomes, verdict.credits = match(ctx, fetched, verdict.completed_parts)
        return verdict


async def _fetch(reader: XReader, part: str, target: str, since: datetime) -> Fetched:
    if part == "repost":
        return await reader.reposts(target, since)
    if part == "quote":
        return await reader.quotes(target)
    return await reader.replies(target, since)
