"""Proof links: a member backs a reply or quote claim with the URL of their own post.

Without the X API the URL is all there is: it must be a status of the member's linked handle.
With it, one batched lookup per 100 proofs checks the author, that the post replies to or quotes
the raid's post, and that it was made inside the raid window; copied texts are held for moderators.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict

from core.errors import ValidationError
from core.i18n import _
from core.raids.model import action_word
from core.raids.urls import parse_status_url

from .base import ClaimInfo, Deferred, Outcome, Raider, RaidInfo, Verdict, VerifyContext, XPost, XReader

PROOF_ACTIONS = ("reply", "quote")
_URL = re.compile(r"https?://\S+")
_MENTION = re.compile(r"@\w+")
_PUNCT = re.compile(r"[\s.,!?;:'\"()\[\]{}*_~-]+")

REASON_TEXT = {
    "not_found": "the post was not found on X (deleted, protected or never there)",
    "wrong_author": "the post is not by the member's linked handle",
    "not_reply": "the post does not reply to the raid's post",
    "not_quote": "the post does not quote the raid's post",
    "outside_window": "the post was made outside the raid's time window",
    "duplicate_text": "another member posted the same text",
    "link_unproven": "the member's X handle is not proven",
    "gate_age": "the linked X account is younger than this community allows",
    "gate_followers": "the linked X account has fewer followers than this community asks",
    "gate_unknown": "the linked X account's age or followers are unknown",
}


def fingerprint(text: str) -> str | None:
    """A hash of a post's words without links, mentions, case and punctuation; None if nothing is left.

    Emoji stay in: a wall of identical emoji replies is exactly what the duplicate check is for.
    """
    words = _PUNCT.sub(" ", _MENTION.sub(" ", _URL.sub(" ", text.lower()))).strip()
    return hashlib.sha1(words.encode()).hexdigest() if words else None


def check_proof_url(action: str, proof_url: str | None, handle: str | None) -> str:
    """The status id of a well-formed proof; a friendly ValidationError otherwise (checked at claim time)."""
    if not proof_url:
        raise ValidationError(
            _("This raid checks {actions} by link: send /claim {action} <link to your {word}>.").format(
                actions=action_word(action, plural=True), action=action, word=action_word(action)), field="proof"
        )
    parsed = parse_status_url(proof_url)
    if parsed is None:
        raise ValidationError(
            _("That link is not an X post. Send the link of your {word}, like https://x.com/you/status/123.").format(
                word=action_word(action)),
            field="proof",
        )
    if handle is None:
        raise ValidationError(_("Link your X handle first with /link <handle>, then claim with the link."), field="proof")
    if parsed[0].lower() != handle.lower():
        raise ValidationError(_("That post is by @{author}, but your linked handle is @{handle}.").format(
            author=parsed[0], handle=handle), field="proof")
    return parsed[1]


def pick_originals(
    candidates: dict[int, list[tuple[XPost, str | None]]], seen: dict[str, set[int]]
) -> dict[int, tuple[XPost, str | None] | None]:
    """Per member, a post whose text no other member used (None when every one of theirs is a copy)."""
    users: dict[str, set[int]] = defaultdict(set)
    for text_hash, members in seen.items():
        users[text_hash] |= members
    for member_id, posts in candidates.items():
        for _post, text_hash in posts:
            if text_hash is not None:
                users[text_hash].add(member_id)
    return {
        member_id: next(((p, h) for p, h in posts if h is None or users[h] <= {member_id}), None)
        for member_id, posts in candidates.items()
    }


def _problem(raid: RaidInfo, claim: ClaimInfo, raider: Raider | None, post: XPost | None) -> str | None:
    if post is None:
        return "not_found"
    if raider is None or post.handle != raider.handle:
        return "wrong_author"
    target = raid.post_id or ""
    if claim.action == "reply" and not (
        post.refers("replied_to", target) or (post.conversation_id == target and post.id != target)
    ):
        return "not_reply"
    if claim.action == "quote" and not post.refers("quoted", target):
        return "not_quote"
    if not raid.in_window(post.created_at):
        return "outside_window"
    return None


class ProofLinkVerifier:
    tier = "proof_link"

    @staticmethod
    def _due(ctx: VerifyContext) -> list[ClaimInfo]:
        return [
            c
            for c in ctx.claims
            if c.state == "pending" and c.flag is None and c.action in PROOF_ACTIONS and c.proof_url
        ]

    def estimate(self, ctx: VerifyContext) -> int:
        if ctx.raid.post_id is None:
            return 0
        return math.ceil(len(self._due(ctx)) / 100) + 1  # the proofs, then the target's public metrics

    async def verify(self, ctx: VerifyContext, reader: XReader | None) -> Verdict:
        verdict = Verdict()
        if reader is None or ctx.raid.post_id is None:
            return verdict
        due = self._due(ctx)
        ids = {c.claim_id: parsed[1] for c in due if (parsed := parse_status_url(c.proof_url or ""))}
        try:
            posts = {p.id: p for p in await reader.posts(sorted(set(ids.values())))} if ids else {}
        except Deferred as exc:
            verdict.deferred = exc
            return verdict
        passed: dict[str, dict[int, list[tuple[XPost, str | None]]]] = {a: {} for a in PROOF_ACTIONS}
        claims: dict[tuple[int, str], ClaimInfo] = {}
        for claim in due:
            raider = ctx.raiders.get(claim.member_id)
            post = posts.get(ids.get(claim.claim_id, ""))
            problem = _problem(ctx.raid, claim, raider, post)
            if problem is None and raider is not None:
                problem = ("link_unproven" if not raider.proven else None) or ctx.gates.failure(raider, ctx.now)
            if problem is not None:
                state = "flagged" if problem in ("link_unproven", "gate_unknown") else "rejected"
                verdict.outcomes.append(_outcome(claim, state, problem, post))
                continue
            assert post is not None
            passed[claim.action][claim.member_id] = [(post, fingerprint(post.text))]
            claims[(claim.member_id, claim.action)] = claim
        for action, candidates in passed.items():
            for member_id, chosen in pick_originals(candidates, ctx.fingerprints).items():
                claim = claims[(member_id, action)]
                if chosen is None:
                    post, text_hash = candidates[member_id][0]
                    verdict.outcomes.append(_outcome(claim, "flagged", "duplicate_text", post, text_hash))
                else:
                    verdict.outcomes.append(_outcome(claim, "verified", "proof_ok", chosen[0], chosen[1]))
        try:
            verdict.metrics = await reader.metrics(ctx.raid.post_id)
        except Deferred as exc:
            verdict.deferred = exc
        return verdict


def _outcome(claim: ClaimInfo, state: str, reason: str, post: XPost | None, text_hash: str | None = None) -> Outcome:
    return Outcome(
        claim.claim_id, claim.member_id, claim.action, state, reason, REASON_TEXT.get(reason, ""),
        post.id if post else None, text_hash,
    )
