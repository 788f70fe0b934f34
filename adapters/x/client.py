"""Async read-only client for the X (Twitter) API v2, used to verify raid claims.

Claim verification runs as background sweeps that must never stall the bot, so
the client deliberately refuses to wait out rate limits: it raises
:class:`RateLimited` (with the reset time when known) and lets the caller
reschedule.  Every HTTP request is counted in :attr:`XClient.reads` and can be
charged against a :class:`Budget`, because X bills and caps reads per project.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self

import httpx

__all__ = [
    "DEFAULT_TWEET_FIELDS",
    "EP_QUOTE_TWEETS",
    "EP_RETWEETED_BY",
    "EP_SEARCH_RECENT",
    "EP_TWEETS",
    "EP_USER_BY_USERNAME",
    "Budget",
    "BudgetExhausted",
    "RateLimitState",
    "RateLimited",
    "ReadBudget",
    "Tweet",
    "User",
    "XApiError",
    "XAuthError",
    "XClient",
    "XError",
]

log = logging.getLogger(__name__)

DEFAULT_TWEET_FIELDS: tuple[str, ...] = (
    "author_id",
    "created_at",
    "conversation_id",
    "referenced_tweets",
    "public_metrics",
    "text",
)
_USER_FIELDS = "created_at,public_metrics"
_IDS_PER_LOOKUP = 100  # hard cap of GET /2/tweets?ids=
_PAGE_SIZE = 100  # max_results ceiling shared by every paginated endpoint used here
_MAX_BACKOFF = 30.0  # keeps a misconfigured max_retries from parking a sweep for hours
_SEARCH_WINDOW = timedelta(days=7)  # recent search rejects older start_time values
# X answers 400 when start_time is less than 10 s before the request; 15 s leaves room for clock skew.
_START_TIME_MIN_AGE = timedelta(seconds=15)
_USAGE_CAPPED_TYPE = "https://api.twitter.com/2/problems/usage-capped"
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")

# Endpoint keys: X reports rate limits per route template, so state is keyed the same way.
EP_TWEETS = "/2/tweets"
EP_RETWEETED_BY = "/2/tweets/:id/retweeted_by"
EP_QUOTE_TWEETS = "/2/tweets/:id/quote_tweets"
EP_SEARCH_RECENT = "/2/tweets/search/recent"
EP_USER_BY_USERNAME = "/2/users/by/username/:username"


class XError(Exception):
    """Base class so callers can catch every client failure in one place."""


class XApiError(XError):
    """The API answered with an error the caller cannot fix by waiting.

    ``status`` is ``None`` when no HTTP response arrived at all (transport
    failures that outlasted the retries).
    """

    def __init__(self, status: int | None, title: str, detail: str = "") -> None:
        self.status = status
        self.title = title
        self.detail = detail
        super().__init__(f"X API error {status}: {title}" + (f" - {detail}" if detail else ""))


class XAuthError(XApiError):
    """401/403: the bearer token is wrong or the app lacks access; retrying is pointless."""


class RateLimited(XError):
    """The endpoint is rate limited or the monthly usage cap is hit; defer, don't sleep.

    ``reset_at`` is when the 15-minute window reopens, or ``None`` when unknown
    (always ``None`` for usage caps, which last until the billing period ends).
    """

    def __init__(self, endpoint: str, reset_at: datetime | None, usage_capped: bool = False) -> None:
        self.endpoint = endpoint
        self.reset_at = reset_at
        self.usage_capped = usage_capped
        what = "usage cap exceeded" if usage_capped else "rate limited"
        when = f" until {reset_at.isoformat()}" if reset_at else ""
        super().__init__(f"{endpoint}: {what}{when}")


class BudgetExhausted(XError):
    """The read budget refused a request; raised before anything is sent."""


class Budget(Protocol):
    """Anything that can ration reads, e.g. a per-day budget shared by several sweeps."""

    def try_spend(self, n: int = 1) -> bool:
        """Reserve ``n`` reads; return False (spending nothing) if that would overdraw."""
        ...


class ReadBudget:
    """In-memory :class:`Budget` with a fixed number of reads, for one process or one sweep."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.spent = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.spent

    def try_spend(self, n: int = 1) -> bool:
        """All-or-nothing so a refused request never leaves a partial charge behind."""
        if n > self.remaining:
            return False
        self.spent += n
        return True


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """Last rate-limit headers seen for one endpoint."""

    limit: int
    remaining: int
    reset_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    name: str
    created_at: datetime | None
    followers_count: int | None


@dataclass(frozen=True, slots=True)
class Tweet:
    """A post; ``referenced`` holds ``(type, id)`` pairs, type in replied_to/quoted/retweeted."""

    id: str
    text: str
    author_id: str | None
    author_username: str | None
    created_at: datetime | None
    conversation_id: str | None
    referenced: list[tuple[str, str]] = field(default_factory=list)
    public_metrics: dict[str, int] = field(default_factory=dict)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value).astimezone(UTC)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_user(raw: Mapping[str, Any]) -> User:
    metrics = raw.get("public_metrics") or {}
    return User(
        id=raw["id"],
        username=raw["username"],
        name=raw.get("name", ""),
        created_at=_parse_time(raw.get("created_at")),
        followers_count=metrics.get("followers_count"),
    )


def _parse_tweets(body: Mapping[str, Any]) -> list[Tweet]:
    """Turn one v2 page into Tweets, resolving authors from ``includes.users``."""
    usernames = {u["id"]: u["username"] for u in body.get("includes", {}).get("users", [])}
    return [
        Tweet(
            id=raw["id"],
            text=raw.get("text", ""),
            author_id=raw.get("author_id"),
            author_username=usernames.get(raw.get("author_id", "")),
            created_at=_parse_time(raw.get("created_at")),
            conversation_id=raw.get("conversation_id"),
            referenced=[(ref["type"], ref["id"]) for ref in raw.get("referenced_tweets", [])],
            public_metrics=dict(raw.get("public_metrics") or {}),
        )
        for raw in body.get("data", [])
    ]


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    """Error bodies from proxies/load balancers are often HTML; don't let that mask the status."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


class XClient:
    """Bearer-token (app-only) X API v2 reader.

    ``clock`` must return aware UTC datetimes; it decides whether a remembered
    rate-limit window is still closed.  ``sleep`` is only used for retry
    backoff on 5xx/transport errors, never for rate limits.
    """

    def __init__(
        self,
        bearer_token: str,
        *,
        base_url: str = "https://api.x.com",
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff_base: float = 1.0,
        max_pages: int = 10,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: Budget | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=timeout,
            headers={"Authorization": f"Bearer {bearer_token}", "User-Agent": "nubi-x-client"},
        )
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._max_pages = max_pages
        self._clock = clock
        self._sleep = sleep
        self._budget = budget
        self._rate_limits: dict[str, RateLimitState] = {}
        self.reads = 0

    @property
    def rate_limits(self) -> Mapping[str, RateLimitState]:
        """Read-only view of the latest rate-limit state per endpoint, for scheduling sweeps."""
        return MappingProxyType(self._rate_limits)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- public read methods -------------------------------------------------

    async def get_tweets(
        self, ids: Iterable[str], fields: Iterable[str] = DEFAULT_TWEET_FIELDS
    ) -> list[Tweet]:
        """Look up tweets by id; unknown, deleted or protected ids are silently omitted."""
        unique = list(dict.fromkeys(ids))  # duplicates would cost reads for nothing
        tweet_fields = ",".join(fields)
        tweets: list[Tweet] = []
        for batch in _chunks(unique, _IDS_PER_LOOKUP):
            params = {"ids": ",".join(batch), "tweet.fields": tweet_fields, "expansions": "author_id"}
            body = await self._get(EP_TWEETS, "/2/tweets", params)
            if body is not None:
                tweets.extend(_parse_tweets(body))
        return tweets

    async def public_metrics(self, ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Cheap engagement refresh: only public_metrics, no author expansion."""
        unique = list(dict.fromkeys(ids))
        metrics: dict[str, dict[str, int]] = {}
        for batch in _chunks(unique, _IDS_PER_LOOKUP):
            params = {"ids": ",".join(batch), "tweet.fields": "public_metrics"}
            body = await self._get(EP_TWEETS, "/2/tweets", params)
            for raw in (body or {}).get("data", []):
                metrics[raw["id"]] = dict(raw.get("public_metrics") or {})
        return metrics

    async def retweeted_by(self, tweet_id: str, *, max_pages: int | None = None) -> list[User]:
        """Users who reposted ``tweet_id`` (most recent first)."""
        params = {"max_results": str(_PAGE_SIZE), "user.fields": _USER_FIELDS}
        path = f"/2/tweets/{tweet_id}/retweeted_by"
        return [
            _parse_user(raw)
            async for body in self._paginate(EP_RETWEETED_BY, path, params, "pagination_token", max_pages)
            for raw in body.get("data", [])
        ]

    async def quote_tweets(
        self,
        tweet_id: str,
        *,
        fields: Iterable[str] = DEFAULT_TWEET_FIELDS,
        max_pages: int | None = None,
    ) -> list[Tweet]:
        """Quote posts of ``tweet_id`` (most recent first)."""
        params = {"max_results": str(_PAGE_SIZE), "tweet.fields": ",".join(fields), "expansions": "author_id"}
        path = f"/2/tweets/{tweet_id}/quote_tweets"
        return [
            tweet
            async for body in self._paginate(EP_QUOTE_TWEETS, path, params, "pagination_token", max_pages)
            for tweet in _parse_tweets(body)
        ]

    async def search_recent(
        self,
        query: str,
        since: datetime | None = None,
        *,
        fields: Iterable[str] = DEFAULT_TWEET_FIELDS,
        max_pages: int | None = None,
    ) -> list[Tweet]:
        """Recent-search (last 7 days), e.g. ``conversation_id:<id>`` or ``from:<handle> "<code>"``.

        A ``since`` older than the 7-day window is dropped rather than sent,
        because the API rejects it with a 400 while its default window already
        covers everything that could match. A ``since`` less than 10 seconds
        ago is moved back (X refuses those with a 400 too): reading a few
        seconds more costs nothing, callers filter by time themselves.
        """
        params = {
            "query": query,
            "max_results": str(_PAGE_SIZE),
            "tweet.fields": ",".join(fields),
            "expansions": "author_id",
        }
        if since is not None:
            if since.tzinfo is None:
                raise ValueError("since must be timezone-aware")
            now = self._clock()
            if since > now - _SEARCH_WINDOW:
                params["start_time"] = _format_time(min(since, now - _START_TIME_MIN_AGE))
        return [
            tweet
            async for body in self._paginate(
                EP_SEARCH_RECENT, "/2/tweets/search/recent", params, "next_token", max_pages
            )
            for tweet in _parse_tweets(body)
        ]

    async def user_by_username(self, username: str) -> User | None:
        """Resolve a handle; None for unknown/suspended users and for strings that can't be handles.

        Invalid handles are answered locally so user typos don't spend reads on a guaranteed 400.
        """
        handle = username.removeprefix("@")
        if not _USERNAME_RE.fullmatch(handle):
            return None
        body = await self._get(
            EP_USER_BY_USERNAME, f"/2/users/by/username/{handle}", {"user.fields": _USER_FIELDS}
        )
        data = (body or {}).get("data")
        return _parse_user(data) if data else None

    # -- transport -------------------------------------------------------------

    async def _paginate(
        self,
        endpoint: str,
        path: str,
        params: dict[str, str],
        token_param: str,
        max_pages: int | None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield page bodies following ``meta.next_token`` until exhausted or ``max_pages``."""
        limit = self._max_pages if max_pages is None else max_pages
        page_params = dict(params)
        for _ in range(limit):
            body = await self._get(endpoint, path, page_params)
            if body is None:
                return
            yield body
            token = body.get("meta", {}).get("next_token")
            if not token:
                return
            page_params[token_param] = token
        log.warning("%s %s: stopped after max_pages=%d, results truncated", endpoint, path, limit)

    def _check_rate_limit(self, endpoint: str) -> None:
        """Refuse locally when the last response said the window is spent, saving a wasted 429."""
        state = self._rate_limits.get(endpoint)
        if state is not None and state.remaining <= 0 and state.reset_at > self._clock():
            raise RateLimited(endpoint, state.reset_at)

    def _record_rate_limit(self, endpoint: str, response: httpx.Response) -> datetime | None:
        """Remember the endpoint's rate-limit headers; return the reset time if present."""
        headers = response.headers
        try:
            reset_at = datetime.fromtimestamp(int(headers["x-rate-limit-reset"]), UTC)
        except (KeyError, ValueError):
            return None
        try:
            limit = int(headers["x-rate-limit-limit"])
            remaining = int(headers["x-rate-limit-remaining"])
        except (KeyError, ValueError):
            return reset_at
        self._rate_limits[endpoint] = RateLimitState(limit, remaining, reset_at)
        return reset_at

    async def _get(self, endpoint: str, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        """One logical GET with retries; returns the JSON body, or None when the resource is gone."""
        attempt = 0
        while True:
            self._check_rate_limit(endpoint)
            if self._budget is not None and not self._budget.try_spend(1):
                raise BudgetExhausted(f"read budget exhausted before {endpoint}")
            self.reads += 1
            try:
                response = await self._http.get(path, params=params)
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise XApiError(None, type(exc).__name__, str(exc)) from exc
                log.info("%s: %r, retrying", endpoint, exc)
            else:
                reset_at = self._record_rate_limit(endpoint, response)
                status = response.status_code
                if status < 500 or attempt >= self._max_retries:
                    return self._handle(endpoint, response, reset_at)
                log.info("%s: HTTP %d, retrying", endpoint, status)
            await self._sleep(min(self._backoff_base * 2**attempt, _MAX_BACKOFF))
            attempt += 1

    @staticmethod
    def _handle(endpoint: str, response: httpx.Response, reset_at: datetime | None) -> dict[str, Any] | None:
        status = response.status_code
        body = _json_or_empty(response)
        if 200 <= status < 300:
            for error in body.get("errors", []):
                # Partial errors (deleted/protected items) are normal in v2; the data is still good.
                log.debug("%s: partial error %s", endpoint, error.get("detail") or error.get("title"))
            return body
        if status == 404:
            return None
        if status == 429:
            usage_capped = body.get("type") == _USAGE_CAPPED_TYPE
            raise RateLimited(endpoint, None if usage_capped else reset_at, usage_capped)
        title = str(body.get("title") or response.reason_phrase or "HTTP error")
        # Invalid-request problems put the useful part (which parameter) in errors[].message.
        parts = [str(body["detail"])] if "detail" in body else []
        parts += [str(e["message"]) for e in body.get("errors", []) if isinstance(e, dict) and "message" in e]
        detail = "; ".join(parts)
        if status in (401, 403):
            raise XAuthError(status, title, detail)
        raise XApiError(status, title, detail)
