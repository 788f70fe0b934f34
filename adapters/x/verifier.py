"""Binds the X API client to core verification: the XReader it needs, the sweep entry points the
scheduler calls, and the /link proof hooks.

Each job opens its own XClient with a ReadBudget of exactly the reads core reserved for it from the
persisted per-raid and per-day budgets, so a job can never overspend, and every client failure
becomes a core `Deferred`: a rate limit or usage cap postpones a sweep, it never fails a raid.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from adapters.x.client import (
    BudgetExhausted,
    RateLimited,
    ReadBudget,
    Tweet,
    XApiError,
    XAuthError,
    XClient,
)
from core.verification.base import Deferred, Fetched, OpenReader, XAccount, XPost
from core.verification.links import LinkProver
from core.verification.runner import SweepReport, VerificationRunner

if TYPE_CHECKING:
    from core.services import Services

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAGES = 10  # per part and sweep: 1,000 reposts, quotes or replies


def _post(t: Tweet) -> XPost:
    return XPost(t.id, t.author_id, t.author_username, t.text, t.created_at, t.conversation_id, tuple(t.referenced))


class ClientReader:
    """core.verification.base.XReader over XClient."""

    def __init__(self, client: XClient, *, max_pages: int = MAX_PAGES) -> None:
        self.client = client
        self.max_pages = max_pages

    @property
    def reads(self) -> int:
        return self.client.reads

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RateLimited as exc:
            raise Deferred("usage_capped" if exc.usage_capped else "rate_limited", exc.reset_at, str(exc)) from exc
        except BudgetExhausted as exc:
            raise Deferred("budget", None, str(exc)) from exc
        except XAuthError as exc:
            raise Deferred("auth", None, str(exc)) from exc
        except XApiError as exc:
            raise Deferred("unavailable", None, str(exc)) from exc

    async def _pages(self, call: Awaitable[list[Tweet]]) -> Fetched:
        before = self.client.reads
        tweets = await self._call(call)
        # Using every allowed page means there may be more: absence then proves nothing.
        return Fetched([_post(t) for t in tweets], self.client.reads - before < self.max_pages)

    async def posts(self, ids: Sequence[str]) -> list[XPost]:
        return [_post(t) for t in await self._call(self.client.get_tweets(ids))]

    async def reposts(self, post_id: str, since: datetime) -> Fetched:
        return await self._pages(
            self.client.search_recent(f"retweets_of_tweet_id:{post_id}", since, max_pages=self.max_pages)
        )

    async def quotes(self, post_id: str) -> Fetched:
        return await self._pages(self.client.quote_tweets(post_id, max_pages=self.max_pages))

    async def replies(self, post_id: str, since: datetime) -> Fetched:
        return await self._pages(
            self.client.search_recent(f"conversation_id:{post_id}", since, max_pages=self.max_pages)
        )

    async def metrics(self, post_id: str) -> dict[str, int]:
        return (await self._call(self.client.public_metrics([post_id]))).get(post_id, {})

    async def account(self, handle: str) -> XAccount | None:
        user = await self._call(self.client.user_by_username(handle))
        return XAccount(user.id, user.username, user.created_at, user.followers_count) if user else None

    async def find_code(self, handle: str, code: str, since: datetime) -> list[XPost]:
        tweets = await self._call(self.client.search_recent(f'from:{handle} "{code}"', since, max_pages=1))
        return [_post(t) for t in tweets]


def reader_opener(services: Services, *, max_pages: int = MAX_PAGES) -> OpenReader | None:
    """Opens a ClientReader limited to the reads granted; None when no bearer token is configured."""
    x = services.settings.x
    if x.bearer_token is None:
        return None
    token = x.bearer_token.get_secret_value()

    @asynccontextmanager
    async def open_reader(allowance: int) -> AsyncIterator[ClientReader]:
        client = XClient(token, base_url=x.base_url, clock=services.clock.now, budget=ReadBudget(allowance))
        try:
            yield ClientReader(client, max_pages=max_pages)
        finally:
            await client.aclose()

    return open_reader


def runner(services: Services) -> VerificationRunner:
    return VerificationRunner(services, reader_opener(services), max_pages=MAX_PAGES)


async def run_sweep(services: Services, raid_id: int, final: bool = False) -> SweepReport | None:
    """Verify one raid now (`final` once it has ended). Never raises: a scheduler job must survive."""
    try:
        return await runner(services).run(raid_id, final=final)
    except Exception:
        log.exception("x sweep of raid %d failed", raid_id)
        return None


async def run_due(services: Services) -> list[SweepReport]:
    """The scheduler's periodic job: every raid whose sweep is due, interval or final."""
    try:
        due = await runner(services).due()
    except Exception:
        log.exception("listing due x sweeps failed")
        return []
    reports = []
    for raid_id, final in due:
        report = await run_sweep(services, raid_id, final)
        if report is not None:
            reports.append(report)
    return reports


def install(services: Services) -> bool:
    """Set the /link proof hooks when the X API is configured; False (links stay unproven) otherwise."""
    opener = reader_opener(services)
    if opener is None:
        return False
    prover = LinkProver(services, opener)
    services.link_challenge = prover.challenge  # type: ignore[assignment]
    services.link_verifier = prover.verify  # type: ignore[assignment]
    return True
