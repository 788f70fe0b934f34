"""In-memory fake of the X API v2 read endpoints nubi uses, served over real HTTP on 127.0.0.1.

It exists so the X client (and the claim-verification code above it) can be
tested against the wire format, pagination, auth and rate-limit behaviour of
the real API without network access or spending paid reads.  It is strict on
purpose: parameters, fields and search operators it does not model are
rejected with a v2 ``invalid-request`` 400, so a client typo fails loudly
instead of silently returning everything.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from aiohttp import web

EP_TWEETS = "/2/tweets"
EP_RETWEETED_BY = "/2/tweets/:id/retweeted_by"
EP_QUOTE_TWEETS = "/2/tweets/:id/quote_tweets"
EP_SEARCH_RECENT = "/2/tweets/search/recent"
EP_USER_BY_USERNAME = "/2/users/by/username/:username"

WINDOW_SECONDS = 15 * 60
_TWITTER_EPOCH_MS = 1288834974657
_SEARCH_WINDOW = timedelta(days=7)
# X refuses a search whose start_time is less than 10 s before the request (400 invalid-request;
# reported from the live API, the docs only say "YYYY-MM-DDTHH:mm:ssZ").
START_TIME_MIN_AGE = timedelta(seconds=10)
_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")
_TWEET_FIELDS = frozenset(
    {"id", "text", "edit_history_tweet_ids", "author_id", "created_at", "conversation_id",
     "referenced_tweets", "public_metrics", "in_reply_to_user_id"}
)  # fmt: skip
_USER_FIELDS = frozenset({"id", "name", "username", "created_at", "public_metrics"})
_NOT_FOUND_TYPE = "https://api.twitter.com/2/problems/resource-not-found"
_INVALID_REQUEST_TYPE = "https://api.twitter.com/2/problems/invalid-request"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received; ``endpoint`` is the route template, None for unknown paths."""

    method: str
    path: str
    query: dict[str, str]
    endpoint: str | None


@dataclass(slots=True)
class _User:
    id: str
    username: str
    name: str
    created_at: datetime
    followers: int


@dataclass(slots=True)
class _Tweet:
    id: str
    author_id: str
    text: str
    created_at: datetime
    conversation_id: str
    referenced: list[tuple[str, str]] = field(default_factory=list)
    in_reply_to_user_id: str | None = None


@dataclass(slots=True)
class _Failure:
    path_prefix: str
    status: int
    times_left: int


@dataclass(slots=True)
class _Window:
    reset: int
    used: int = 0


_Handler = Callable[[re.Match[str], dict[str, str]], dict[str, Any]]


class _BadRequest(Exception):
    """Raised by handlers to answer with a v2 invalid-request problem."""

    def __init__(self, parameter: str, value: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.value = value
        self.message = message


def _iso(value: datetime) -> str:
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _require_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    return value.astimezone(UTC)


def _problem(status: int, title: str, detail: str, type_: str = "about:blank") -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": type_, "status": status}


def _check_params(query: Mapping[str, str], allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    for name in query:
        if name not in allowed:
            raise _BadRequest(
                name, query[name], f"The query parameter [{name}] is not one of [{','.join(allowed)}]"
            )


def _field_set(query: Mapping[str, str], name: str, known: frozenset[str]) -> set[str]:
    requested = {f for f in query.get(name, "").split(",") if f}
    for unknown in sorted(requested - known):
        raise _BadRequest(name, unknown, f"The `{name}` value [{unknown}] is not modelled by FakeXAPI")
    return requested


def _max_results(query: Mapping[str, str], low: int, high: int, default: int) -> int:
    raw = query.get("max_results")
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _BadRequest(
            "max_results",
            raw,
            f"The `max_results` query parameter value [{raw}] is not between {low} and {high}",
        )
    return int(raw)


class FakeXAPI:
    """Fake X API v2 server.

    Mutable knobs, all safe to change while running: ``now`` (fake epoch
    seconds driving rate-limit windows and the 7-day search window),
    ``page_size`` (caps every page below ``max_results`` to force pagination),
    ``rate_limits`` (requests per 15-minute window, keyed by endpoint template)
    and ``usage_capped``.
    """

    def __init__(
        self,
        bearer_token: str = "test-token",
        *,
        page_size: int | None = None,
        rate_limit: int = 450,
        now: float | None = None,
    ) -> None:
        self.bearer_token = bearer_token
        self.page_size = page_size
        self.now = time.time() if now is None else now
        self.usage_capped = False
        self.rate_limits: dict[str, int] = {
            ep: rate_limit
            for ep in (EP_TWEETS, EP_RETWEETED_BY, EP_QUOTE_TWEETS, EP_SEARCH_RECENT, EP_USER_BY_USERNAME)
        }
        self.requests: list[RecordedRequest] = []
        self._users: dict[str, _User] = {}  # keyed by lower-cased username, as X handles are case-insensitive
        self._users_by_id: dict[str, _User] = {}
        self._tweets: dict[str, _Tweet] = {}
        self._windows: dict[str, _Window] = {}
        self._failures: list[_Failure] = []
        self._page_tokens: dict[str, tuple[str, int]] = {}
        self._seq = itertools.count()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._routes: list[tuple[str, re.Pattern[str], _Handler]] = [
            (EP_TWEETS, re.compile(r"/2/tweets"), self._tweets_lookup),
            (EP_SEARCH_RECENT, re.compile(r"/2/tweets/search/recent"), self._search_recent),
            (EP_RETWEETED_BY, re.compile(r"/2/tweets/(?P<id>[^/]+)/retweeted_by"), self._retweeted_by),
            (EP_QUOTE_TWEETS, re.compile(r"/2/tweets/(?P<id>[^/]+)/quote_tweets"), self._quote_tweets),
            (
                EP_USER_BY_USERNAME,
                re.compile(r"/2/users/by/username/(?P<username>[^/]+)"),
                self._user_by_username,
            ),
        ]

    # -- lifecycle ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeXAPI is not started")
        return self._base_url

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- test-facing helpers -------------------------------------------------------

    def utcnow(self) -> datetime:
        """The fake clock as an aware datetime, to hand to a client as its ``clock``."""
        return datetime.fromtimestamp(self.now, UTC)

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    def fail_next(self, path_prefix: str, status: int = 503, times: int = 1) -> None:
        """Answer the next ``times`` requests under ``path_prefix`` with ``status`` (after auth)."""
        self._failures.append(_Failure(path_prefix, status, times))

    def add_user(
        self,
        username: str,
        *,
        created_at: datetime | None = None,
        followers: int = 0,
        name: str | None = None,
    ) -> str:
        if username.lower() in self._users:
            raise ValueError(f"user {username!r} already exists")
        created = self.utcnow() if created_at is None else _require_aware(created_at)
        user = _User(self._snowflake(created), username, name or username, created, followers)
        self._users[username.lower()] = user
        self._users_by_id[user.id] = user
        return user.id

    def add_tweet(
        self,
        author: str,
        text: str = "",
        *,
        created_at: datetime | None = None,
        reply_to: str | None = None,
        quote_of: str | None = None,
        retweet_of: str | None = None,
    ) -> str:
        """Create a post by username ``author``; a retweet copies the original's text like X does."""
        user = self._users[author.lower()]
        created = self.utcnow() if created_at is None else _require_aware(created_at)
        tweet_id = self._snowflake(created)
        tweet = _Tweet(tweet_id, user.id, text, created, conversation_id=tweet_id)
        if retweet_of is not None:
            if reply_to is not None or quote_of is not None:
                raise ValueError("a retweet cannot also be a reply or a quote")
            original = self._tweets[retweet_of]
            tweet.text = f"RT @{self._users_by_id[original.author_id].username}: {original.text}"
            tweet.referenced.append(("retweeted", retweet_of))
        if quote_of is not None:
            if quote_of not in self._tweets:
                raise KeyError(quote_of)
            tweet.referenced.append(("quoted", quote_of))
        if reply_to is not None:
            parent = self._tweets[reply_to]
            tweet.conversation_id = parent.conversation_id
            tweet.in_reply_to_user_id = parent.author_id
            tweet.referenced.append(("replied_to", reply_to))
        self._tweets[tweet_id] = tweet
        return tweet_id

    # -- HTTP plumbing ---------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        endpoint, handler, match = None, None, None
        if request.method == "GET":
            for ep, pattern, candidate in self._routes:
                if (m := pattern.fullmatch(request.path)) is not None:
                    endpoint, handler, match = ep, candidate, m
                    break
        self.requests.append(RecordedRequest(request.method, request.path, query, endpoint))

        if request.headers.get("Authorization") != f"Bearer {self.bearer_token}":
            return web.json_response(_problem(401, "Unauthorized", "Unauthorized"), status=401)
        if self.usage_capped:
            body = _problem(429, "UsageCapExceeded", "Usage cap exceeded: Monthly product cap",
                            "https://api.twitter.com/2/problems/usage-capped")  # fmt: skip
            body.update(period="Monthly", scope="Product")
            del body["status"]  # the real usage-cap body carries no status member
            return web.json_response(body, status=429)
        for failure in self._failures:
            if failure.times_left > 0 and request.path.startswith(failure.path_prefix):
                failure.times_left -= 1
                phrase = HTTPStatus(failure.status).phrase
                return web.json_response(_problem(failure.status, phrase, phrase), status=failure.status)
        if endpoint is None or handler is None or match is None:
            return web.json_response(_problem(404, "Not Found", "Not Found"), status=404)

        allowed, headers = self._consume_rate_limit(endpoint)
        if not allowed:
            return web.json_response(
                _problem(429, "Too Many Requests", "Too Many Requests"), status=429, headers=headers
            )
        try:
            return web.json_response(handler(match, query), headers=headers)
        except _BadRequest as exc:
            body = {
                "errors": [{"parameters": {exc.parameter: [exc.value]}, "message": exc.message}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": _INVALID_REQUEST_TYPE,
            }
            return web.json_response(body, status=400, headers=headers)

    def _consume_rate_limit(self, endpoint: str) -> tuple[bool, dict[str, str]]:
        limit = self.rate_limits[endpoint]
        window = self._windows.get(endpoint)
        if window is None or self.now >= window.reset:
            window = self._windows[endpoint] = _Window(reset=int(self.now) + WINDOW_SECONDS)
        allowed = window.used < limit
        if allowed:
            window.used += 1
        headers = {
            "x-rate-limit-limit": str(limit),
            "x-rate-limit-remaining": str(limit - window.used),
            "x-rate-limit-reset": str(window.reset),
        }
        return allowed, headers

    def _snowflake(self, created: datetime) -> str:
        """Time-ordered ids like X's, so sorting by id sorts by creation time."""
        millis = max(int(created.timestamp() * 1000) - _TWITTER_EPOCH_MS, 0)
        return str((millis << 22) | (next(self._seq) & 0x3FFFFF))

    def _paginate(
        self, items: list[Any], query: dict[str, str], token_params: tuple[str, ...], max_results: int
    ) -> tuple[list[Any], dict[str, Any]]:
        """Slice one page; tokens are opaque and bound to the query they were issued for."""
        key_query = {k: v for k, v in query.items() if k not in token_params}
        key = repr(sorted(key_query.items()))
        offset = 0
        for name in token_params:
            if name in query:
                bound_key, offset = self._page_tokens.get(query[name], (None, 0))
                if bound_key != key:
                    raise _BadRequest(name, query[name], f"The `{name}` query parameter value is invalid")
        size = min(max_results, self.page_size or max_results)
        page = items[offset : offset + size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if offset + size < len(items):
            token = secrets.token_hex(12)
            self._page_tokens[token] = (key, offset + size)
            meta["next_token"] = token
        return page, meta

    # -- rendering ---------------------------------------------------------------------

    def _render_user(self, user: _User, fields: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": user.id, "name": user.name, "username": user.username}
        if "created_at" in fields:
            out["created_at"] = _iso(user.created_at)
        if "public_metrics" in fields:
            out["public_metrics"] = {
                "followers_count": user.followers,
                "following_count": 0,
                "tweet_count": sum(1 for t in self._tweets.values() if t.author_id == user.id),
                "listed_count": 0,
                "like_count": 0,
            }
        return out

    def _render_tweet(self, tweet: _Tweet, fields: set[str], expand_author: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"id": tweet.id, "text": tweet.text, "edit_history_tweet_ids": [tweet.id]}
        if "author_id" in fields or expand_author:
            out["author_id"] = tweet.author_id
        if "created_at" in fields:
            out["created_at"] = _iso(tweet.created_at)
        if "conversation_id" in fields:
            out["conversation_id"] = tweet.conversation_id
        if "in_reply_to_user_id" in fields and tweet.in_reply_to_user_id:
            out["in_reply_to_user_id"] = tweet.in_reply_to_user_id
        if "referenced_tweets" in fields and tweet.referenced:
            out["referenced_tweets"] = [{"type": kind, "id": ref} for kind, ref in tweet.referenced]
        if "public_metrics" in fields:
            refs = [r for t in self._tweets.values() for r in t.referenced if r[1] == tweet.id]
            out["public_metrics"] = {
                "retweet_count": sum(1 for kind, _ in refs if kind == "retweeted"),
                "reply_count": sum(1 for kind, _ in refs if kind == "replied_to"),
                "like_count": 0,
                "quote_count": sum(1 for kind, _ in refs if kind == "quoted"),
                "bookmark_count": 0,
                "impression_count": 0,
            }
        return out

    def _tweet_body(
        self, tweets: list[_Tweet], query: dict[str, str], meta: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Assemble ``data``/``includes``/``meta``, omitting empty members like the real API."""
        fields = _field_set(query, "tweet.fields", _TWEET_FIELDS)
        user_fields = _field_set(query, "user.fields", _USER_FIELDS)
        expansions = {e for e in query.get("expansions", "").split(",") if e}
        for unknown in sorted(expansions - {"author_id"}):
            raise _BadRequest(
                "expansions", unknown, f"The `expansions` value [{unknown}] is not modelled by FakeXAPI"
            )
        body: dict[str, Any] = {}
        if tweets:
            body["data"] = [self._render_tweet(t, fields, "author_id" in expansions) for t in tweets]
            if "author_id" in expansions:
                author_ids = dict.fromkeys(t.author_id for t in tweets)
                body["includes"] = {
                    "users": [self._render_user(self._users_by_id[a], user_fields) for a in author_ids]
                }
        if meta is not None:
            body["meta"] = meta
        return body

    def _not_found(self, resource_type: str, parameter: str, value: str, what: str) -> dict[str, Any]:
        return {
            "value": value,
            "detail": f"Could not find {resource_type} with {what}: [{value}].",
            "title": "Not Found Error",
            "resource_type": resource_type,
            "parameter": parameter,
            "resource_id": value,
            "type": _NOT_FOUND_TYPE,
        }

    # -- endpoints ---------------------------------------------------------------------

    def _tweets_lookup(self, _match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        _check_params(query, ("ids", "tweet.fields", "expansions", "user.fields"))
        ids = [i for i in query.get("ids", "").split(",") if i]
        if not 1 <= len(ids) <= 100 or not all(i.isdigit() for i in ids):
            raise _BadRequest(
                "ids", query.get("ids", ""), "`ids` must be 1 to 100 comma-separated numeric ids"
            )
        found = [self._tweets[i] for i in ids if i in self._tweets]
        body = self._tweet_body(found, query)
        missing = [i for i in ids if i not in self._tweets]
        if missing:
            body["errors"] = [self._not_found("tweet", "ids", i, "ids") for i in missing]
        return body

    def _retweeted_by(self, match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        _check_params(query, ("max_results", "pagination_token", "user.fields"))
        tweet_id = match["id"]
        if tweet_id not in self._tweets:
            return {"errors": [self._not_found("tweet", "id", tweet_id, "id")]}
        user_fields = _field_set(query, "user.fields", _USER_FIELDS)
        retweets = sorted(
            (t for t in self._tweets.values() if ("retweeted", tweet_id) in t.referenced),
            key=lambda t: int(t.id),
            reverse=True,
        )
        users = [self._users_by_id[t.author_id] for t in retweets]
        page, meta = self._paginate(users, query, ("pagination_token",), _max_results(query, 1, 100, 100))
        body: dict[str, Any] = {"meta": meta}
        if page:
            body["data"] = [self._render_user(u, user_fields) for u in page]
        return body

    def _quote_tweets(self, match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        _check_params(query, ("max_results", "pagination_token", "tweet.fields", "expansions", "user.fields"))
        tweet_id = match["id"]
        if tweet_id not in self._tweets:
            return {"errors": [self._not_found("tweet", "id", tweet_id, "id")]}
        quotes = sorted(
            (t for t in self._tweets.values() if ("quoted", tweet_id) in t.referenced),
            key=lambda t: int(t.id),
            reverse=True,
        )
        page, meta = self._paginate(quotes, query, ("pagination_token",), _max_results(query, 10, 100, 10))
        return self._tweet_body(page, query, meta)

    def _search_recent(self, _match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        _check_params(
            query,
            ("query", "start_time", "max_results", "next_token", "pagination_token",
             "tweet.fields", "expansions", "user.fields"),
        )  # fmt: skip
        if not query.get("query"):
            raise _BadRequest("query", "", "The `query` query parameter can not be empty")
        now = self.utcnow()
        earliest = now - _SEARCH_WINDOW
        if "start_time" in query:
            try:
                start = _require_aware(datetime.fromisoformat(query["start_time"]))
            except ValueError:
                raise _BadRequest("start_time", query["start_time"], "Invalid 'start_time'") from None
            if start < earliest:
                raise _BadRequest(
                    "start_time", query["start_time"], f"'start_time' must be on or after {_iso(earliest)}"
                )
            if start > now - START_TIME_MIN_AGE:
                raise _BadRequest(
                    "start_time", query["start_time"],
                    f"Invalid 'start_time':'{query['start_time']}'. "
                    "'start_time' must be a minimum of 10 seconds prior to the request time.",
                )
            earliest = start
        predicate = self._compile_query(query["query"])
        hits = sorted(
            (t for t in self._tweets.values() if earliest <= t.created_at <= now and predicate(t)),
            key=lambda t: int(t.id),
            reverse=True,
        )
        page, meta = self._paginate(
            hits, query, ("next_token", "pagination_token"), _max_results(query, 10, 100, 10)
        )
        if page:
            meta = {"newest_id": page[0].id, "oldest_id": page[-1].id, **meta}
        return self._tweet_body(page, query, meta)

    def _user_by_username(self, match: re.Match[str], query: dict[str, str]) -> dict[str, Any]:
        _check_params(query, ("user.fields",))
        username = match["username"]
        if not _USERNAME_RE.fullmatch(username):
            raise _BadRequest(
                "username",
                username,
                f"The `username` query parameter value [{username}] does not match ^[A-Za-z0-9_]{{1,15}}$",
            )
        user = self._users.get(username.lower())
        if user is None:
            return {"errors": [self._not_found("user", "username", username, "username")]}
        return {"data": self._render_user(user, _field_set(query, "user.fields", _USER_FIELDS))}

    def _compile_query(self, text: str) -> Callable[[_Tweet], bool]:
        """AND of terms: keywords, "phrases", ``-negation`` and a few operators; anything else is a 400."""
        checks: list[Callable[[_Tweet], bool]] = []
        for term in re.findall(r'-?"[^"]*"|\S+', text):
            negate = term.startswith("-")
            term = term.removeprefix("-")
            check = self._compile_term(term, text)
            checks.append((lambda t, c=check: not c(t)) if negate else check)
        return lambda tweet: all(check(tweet) for check in checks)

    def _compile_term(self, term: str, text: str) -> Callable[[_Tweet], bool]:
        if term.startswith('"'):
            phrase = term.strip('"').lower()
            return lambda t: phrase in t.text.lower()
        if term in ("OR", "AND") or term.startswith("(") or term.endswith(")"):
            raise _BadRequest("query", text, f"FakeXAPI does not model `{term}` in queries")
        if ":" not in term:
            word = term.lower()
            return lambda t: word in t.text.lower()
        op, value = term.split(":", 1)
        if op == "from":
            handle = value.lower()
            return lambda t: self._users_by_id[t.author_id].username.lower() == handle
        if op == "conversation_id":
            return lambda t: t.conversation_id == value
        if op == "retweets_of_tweet_id":
            return lambda t: ("retweeted", value) in t.referenced
        if op == "quotes_of_tweet_id":
            return lambda t: ("quoted", value) in t.referenced
        if op == "in_reply_to_tweet_id":
            return lambda t: ("replied_to", value) in t.referenced
        if op == "is" and value in ("retweet", "quote", "reply"):
            kind = {"retweet": "retweeted", "quote": "quoted", "reply": "replied_to"}[value]
            return lambda t: any(k == kind for k, _ in t.referenced)
        raise _BadRequest("query", text, f"FakeXAPI does not model the operator `{term}`")
