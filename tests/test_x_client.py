"""XClient against FakeXAPI: pagination, batching, mapping, rate limits, retries, auth and budgets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.x.client import (
    BudgetExhausted,
    RateLimited,
    ReadBudget,
    XApiError,
    XAuthError,
    XClient,
)
from tests.fakes.x_api import EP_USER_BY_USERNAME, WINDOW_SECONDS, FakeXAPI

TOKEN = "test-token"
NOW = 1_750_000_000.0  # fixed fake clock so reset times are predictable


@pytest.fixture
async def fake() -> AsyncIterator[FakeXAPI]:
    async with FakeXAPI(TOKEN, now=NOW) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(fake: FakeXAPI, sleeps: list[float]) -> Callable[..., XClient]:
    """Factory so tests can vary token/budget/retries; every client shares the fake clock and sleeps."""

    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)

    def factory(token: str = TOKEN, **overrides: Any) -> XClient:
        kwargs: dict[str, Any] = {"base_url": fake.base_url, "clock": fake.utcnow, "sleep": record_sleep}
        return XClient(token, **kwargs | overrides)

    return factory


@pytest.fixture
async def client(make_client: Callable[..., XClient]) -> AsyncIterator[XClient]:
    async with make_client() as c:
        yield c


def _add_users(fake: FakeXAPI, prefix: str, count: int) -> list[str]:
    names = [f"{prefix}{i}" for i in range(count)]
    for name in names:
        fake.add_user(name)
    return names


# -- pagination ------------------------------------------------------------------


async def test_retweeted_by_follows_pagination_token(fake: FakeXAPI, client: XClient) -> None:
    fake.page_size = 100
    fake.add_user("author")
    tweet = fake.add_tweet("author", "raid me")
    joined = datetime(2020, 5, 17, 8, 30, tzinfo=UTC)
    fake.add_user("veteran", created_at=joined, followers=1234)
    fake.add_tweet("veteran", retweet_of=tweet)
    reposters = _add_users(fake, "rt", 149)
    for name in reposters:
        fake.add_tweet(name, retweet_of=tweet)

    users = await client.retweeted_by(tweet)

    assert {u.username for u in users} == {*reposters, "veteran"}
    assert len(users) == 150
    assert client.reads == 2
    first, second = fake.requests_to(f"/2/tweets/{tweet}/retweeted_by")
    assert first.query["max_results"] == "100"
    assert "pagination_token" not in first.query
    assert second.query["pagination_token"]
    veteran = next(u for u in users if u.username == "veteran")
    assert veteran.created_at == joined
    assert veteran.followers_count == 1234


async def test_max_pages_truncates_pagination(fake: FakeXAPI, client: XClient) -> None:
    fake.page_size = 10
    fake.add_user("author")
    tweet = fake.add_tweet("author", "raid me")
    for name in _add_users(fake, "rt", 35):
        fake.add_tweet(name, retweet_of=tweet)

    users = await client.retweeted_by(tweet, max_pages=2)

    assert len(users) == 20
    assert client.reads == 2


async def test_quote_tweets_paginate_and_map_authors(fake: FakeXAPI, client: XClient) -> None:
    fake.page_size = 10
    fake.add_user("author")
    tweet = fake.add_tweet("author", "raid me")
    quoters = _add_users(fake, "q", 25)
    for name in quoters:
        fake.add_tweet(name, f"look at this, from {name}", quote_of=tweet)

    quotes = await client.quote_tweets(tweet)

    assert client.reads == 3
    assert len(quotes) == 25
    assert {q.author_username for q in quotes} == set(quoters)
    assert all(q.referenced == [("quoted", tweet)] for q in quotes)
    assert all(q.text == f"look at this, from {q.author_username}" for q in quotes)
    requests = fake.requests_to(f"/2/tweets/{tweet}/quote_tweets")
    assert [("pagination_token" in r.query) for r in requests] == [False, True, True]


async def test_search_recent_follows_next_token(fake: FakeXAPI, client: XClient) -> None:
    fake.page_size = 10
    fake.add_user("author")
    root = fake.add_tweet("author", "raid me")
    replies = {fake.add_tweet(name, "gm", reply_to=root) for name in _add_users(fake, "r", 23)}
    fake.add_tweet("author", "unrelated")

    found = await client.search_recent(f"conversation_id:{root}")

    assert {t.id for t in found} == replies | {root}
    assert client.reads == 3
    requests = fake.requests_to("/2/tweets/search/recent")
    assert [r.query.get("next_token") is not None for r in requests] == [False, True, True]
    assert all("pagination_token" not in r.query for r in requests)
    assert all(t.conversation_id == root for t in found)


async def test_search_recent_since_filters_and_old_since_is_dropped(fake: FakeXAPI, client: XClient) -> None:
    fake.add_user("author")
    now = fake.utcnow()
    root = fake.add_tweet("author", "raid me", created_at=now - timedelta(hours=3))
    early = fake.add_tweet("author", "early", reply_to=root, created_at=now - timedelta(hours=2))
    late = fake.add_tweet("author", "late", reply_to=root, created_at=now - timedelta(minutes=5))

    recent = await client.search_recent(f"conversation_id:{root}", since=now - timedelta(hours=1))
    everything = await client.search_recent(f"conversation_id:{root}", since=now - timedelta(days=30))

    assert [t.id for t in recent] == [late]
    assert {t.id for t in everything} == {root, early, late}
    first, second = fake.requests_to("/2/tweets/search/recent")
    assert first.query["start_time"] == (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "start_time" not in second.query


async def test_fake_refuses_a_start_time_less_than_10_s_old(fake: FakeXAPI) -> None:
    """X's rule, as the live API answers it: 400 invalid-request naming the parameter."""
    import httpx

    fake.add_user("author")
    root = fake.add_tweet("author", "raid me", created_at=fake.utcnow() - timedelta(hours=1))
    params = {"query": f"conversation_id:{root}"}
    async with httpx.AsyncClient(base_url=fake.base_url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        too_new = (fake.utcnow() - timedelta(seconds=9)).strftime("%Y-%m-%dT%H:%M:%SZ")
        refused = await http.get("/2/tweets/search/recent", params=params | {"start_time": too_new})
        old_enough = (fake.utcnow() - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        allowed = await http.get("/2/tweets/search/recent", params=params | {"start_time": old_enough})

    assert refused.status_code == 400
    body = refused.json()
    assert body["type"] == "https://api.twitter.com/2/problems/invalid-request"
    assert body["errors"][0]["parameters"] == {"start_time": [too_new]}
    assert "minimum of 10 seconds prior to the request time" in body["errors"][0]["message"]
    assert allowed.status_code == 200


async def test_search_recent_moves_a_fresh_since_10_s_back(fake: FakeXAPI, client: XClient) -> None:
    """A sweep right after a raid starts asks from the raid's start, 1 s ago: X would answer 400."""
    fake.add_user("author")
    fake.add_user("raider")
    now = fake.utcnow()
    root = fake.add_tweet("author", "raid me", created_at=now - timedelta(hours=1))
    reply = fake.add_tweet("raider", "gm", reply_to=root, created_at=now - timedelta(milliseconds=500))

    found = await client.search_recent(f"conversation_id:{root}", since=now - timedelta(seconds=1))

    assert [t.id for t in found] == [reply]
    (request,) = fake.requests_to("/2/tweets/search/recent")
    sent = datetime.strptime(request.query["start_time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert sent <= now - timedelta(seconds=10)


async def test_search_recent_rejects_naive_since(client: XClient) -> None:
    with pytest.raises(ValueError):
        await client.search_recent("gm", since=datetime(2025, 1, 1))  # noqa: DTZ001 - the point of the test
    assert client.reads == 0


async def test_search_operators_for_reposts_and_handle_proof(fake: FakeXAPI, client: XClient) -> None:
    fake.add_user("author")
    fake.add_user("Raider")
    tweet = fake.add_tweet("author", "raid me")
    repost = fake.add_tweet("Raider", retweet_of=tweet)
    proof = fake.add_tweet("Raider", "linking my account: NUBI-7F3K")
    fake.add_tweet("author", "NUBI-7F3K")  # right code, wrong handle

    reposts = await client.search_recent(f"retweets_of_tweet_id:{tweet}")
    proofs = await client.search_recent('from:raider "NUBI-7F3K"')

    assert [(t.id, t.author_username, t.referenced) for t in reposts] == [
        (repost, "Raider", [("retweeted", tweet)])
    ]
    assert reposts[0].text == "RT @author: raid me"
    assert [t.id for t in proofs] == [proof]


# -- lookups -----------------------------------------------------------------------


async def test_get_tweets_batches_100_ids_per_request(fake: FakeXAPI, client: XClient) -> None:
    names = _add_users(fake, "u", 5)
    ids = [fake.add_tweet(names[i % 5], f"post {i}") for i in range(250)]

    tweets = await client.get_tweets(ids + ids[:10])  # duplicates must not cost extra reads

    assert client.reads == 3
    assert [len(r.query["ids"].split(",")) for r in fake.requests_to("/2/tweets")] == [100, 100, 50]
    assert [t.id for t in tweets] == ids
    assert all(t.author_username == names[int(t.text.split()[1]) % 5] for t in tweets)


async def test_get_tweets_maps_references_authors_and_metrics(fake: FakeXAPI, client: XClient) -> None:
    user_ids = {name: fake.add_user(name) for name in ("alice", "bob", "carol", "dave")}
    posted = datetime(2025, 6, 15, 12, 0, 5, tzinfo=UTC)
    root = fake.add_tweet("alice", "raid me", created_at=posted)
    reply = fake.add_tweet("bob", "gm", reply_to=root)
    quote = fake.add_tweet("carol", "this", quote_of=root)
    repost = fake.add_tweet("dave", retweet_of=root)

    tweets = {t.id: t for t in await client.get_tweets([root, reply, quote, repost, "1"])}

    assert set(tweets) == {root, reply, quote, repost}  # unknown id "1" omitted
    assert tweets[root].created_at == posted
    assert (tweets[root].author_id, tweets[root].author_username) == (user_ids["alice"], "alice")
    assert tweets[root].referenced == []
    assert tweets[root].public_metrics["reply_count"] == 1
    assert tweets[root].public_metrics["quote_count"] == 1
    assert tweets[root].public_metrics["retweet_count"] == 1
    assert (tweets[reply].author_username, tweets[reply].referenced) == ("bob", [("replied_to", root)])
    assert tweets[reply].conversation_id == root
    assert (tweets[quote].author_username, tweets[quote].referenced) == ("carol", [("quoted", root)])
    assert (tweets[repost].author_username, tweets[repost].referenced) == ("dave", [("retweeted", root)])


async def test_public_metrics_requests_only_metrics(fake: FakeXAPI, client: XClient) -> None:
    fake.add_user("alice")
    fake.add_user("bob")
    root = fake.add_tweet("alice", "raid me")
    other = fake.add_tweet("alice", "quiet")
    fake.add_tweet("bob", retweet_of=root)
    fake.add_tweet("bob", "gm", reply_to=root)

    metrics = await client.public_metrics([root, other, "1"])

    assert set(metrics) == {root, other}
    assert (metrics[root]["retweet_count"], metrics[root]["reply_count"]) == (1, 1)
    assert metrics[other]["retweet_count"] == 0
    (request,) = fake.requests
    assert request.query["tweet.fields"] == "public_metrics"
    assert "expansions" not in request.query


async def test_user_by_username(fake: FakeXAPI, client: XClient) -> None:
    joined = datetime(2019, 1, 2, 3, 4, 5, tzinfo=UTC)
    user_id = fake.add_user("Raider_1", created_at=joined, followers=42)

    found = await client.user_by_username("@raider_1")
    missing = await client.user_by_username("nobody")
    invalid = await client.user_by_username("not a handle!")

    assert found is not None
    assert (found.id, found.username, found.created_at, found.followers_count) == (
        user_id,
        "Raider_1",
        joined,
        42,
    )
    assert missing is None
    assert invalid is None
    assert client.reads == 2  # the invalid handle never hits the API


async def test_not_found_yields_empty(fake: FakeXAPI, client: XClient) -> None:
    fake.add_user("alice")
    tweet = fake.add_tweet("alice", "raid me")
    fake.fail_next("/2/tweets/", status=404)
    fake.fail_next("/2/users/", status=404)

    assert await client.quote_tweets(tweet) == []
    assert await client.user_by_username("alice") is None
    assert await client.retweeted_by("123456") == []  # unknown tweet: 200 with a not-found error
    assert client.reads == 3


# -- rate limits -------------------------------------------------------------------


async def test_429_raises_rate_limited_until_reset(
    fake: FakeXAPI, make_client: Callable[..., XClient]
) -> None:
    fake.add_user("alice")
    fake.rate_limits[EP_USER_BY_USERNAME] = 2
    reset_at = datetime.fromtimestamp(int(NOW) + WINDOW_SECONDS, UTC)
    async with make_client() as first, make_client() as second:
        assert await first.user_by_username("alice") is not None
        assert await first.user_by_username("alice") is not None
        assert first.rate_limits[EP_USER_BY_USERNAME].remaining == 0

        # A client that saw remaining=0 refuses locally instead of wasting a request.
        with pytest.raises(RateLimited) as local:
            await first.user_by_username("alice")
        assert (local.value.endpoint, local.value.reset_at, local.value.usage_capped) == (
            EP_USER_BY_USERNAME,
            reset_at,
            False,
        )
        assert len(fake.requests) == 2

        # A client without that knowledge gets the server's 429.
        with pytest.raises(RateLimited) as remote:
            await second.user_by_username("alice")
        assert len(fake.requests) == 3
        assert remote.value.reset_at == reset_at
        assert not remote.value.usage_capped

        fake.now = reset_at.timestamp() + 1
        assert await first.user_by_username("alice") is not None
        assert await second.user_by_username("alice") is not None


async def test_usage_cap_raises_rate_limited_usage_capped(
    fake: FakeXAPI, client: XClient, sleeps: list[float]
) -> None:
    fake.usage_capped = True

    with pytest.raises(RateLimited) as exc:
        await client.search_recent("gm")

    assert exc.value.usage_capped
    assert exc.value.reset_at is None
    assert exc.value.endpoint == "/2/tweets/search/recent"
    assert client.reads == 1
    assert sleeps == []


# -- retries and errors ------------------------------------------------------------


async def test_5xx_is_retried_with_backoff(fake: FakeXAPI, client: XClient, sleeps: list[float]) -> None:
    fake.add_user("alice")
    fake.fail_next("/2/users/", status=503, times=2)

    user = await client.user_by_username("alice")

    assert user is not None and user.username == "alice"
    assert client.reads == 3
    assert sleeps == [1.0, 2.0]


async def test_5xx_gives_up_after_max_retries(
    fake: FakeXAPI, make_client: Callable[..., XClient], sleeps: list[float]
) -> None:
    fake.fail_next("/2/users/", status=500, times=10)
    async with make_client(max_retries=3) as client:
        with pytest.raises(XApiError) as exc:
            await client.user_by_username("alice")

    assert exc.value.status == 500
    assert exc.value.title == "Internal Server Error"
    assert client.reads == 4
    assert sleeps == [1.0, 2.0, 4.0]


async def test_transport_errors_are_retried_then_raise(
    make_client: Callable[..., XClient], sleeps: list[float]
) -> None:
    with socket.socket() as probe:  # grab a free port, then leave it closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(base_url=f"http://127.0.0.1:{port}", max_retries=2) as client:
        with pytest.raises(XApiError) as exc:
            await client.user_by_username("alice")

    assert exc.value.status is None
    assert client.reads == 3
    assert sleeps == [1.0, 2.0]


async def test_bad_token_raises_auth_error_without_retry(
    fake: FakeXAPI, make_client: Callable[..., XClient], sleeps: list[float]
) -> None:
    async with make_client(token="wrong") as client:
        with pytest.raises(XAuthError) as exc:
            await client.user_by_username("alice")

    assert exc.value.status == 401
    assert client.reads == 1
    assert sleeps == []


async def test_403_is_an_auth_error_and_400_an_api_error(fake: FakeXAPI, client: XClient) -> None:
    fake.fail_next("/2/users/", status=403)
    fake.fail_next("/2/tweets", status=400)

    with pytest.raises(XAuthError) as forbidden:
        await client.user_by_username("alice")
    with pytest.raises(XApiError) as bad:
        await client.get_tweets(["1"])

    assert forbidden.value.status == 403
    assert bad.value.status == 400 and not isinstance(bad.value, XAuthError)
    assert client.reads == 2


# -- budgets ---------------------------------------------------------------------------


async def test_budget_exhaustion_sends_nothing(fake: FakeXAPI, make_client: Callable[..., XClient]) -> None:
    async with make_client(budget=ReadBudget(0)) as client:
        with pytest.raises(BudgetExhausted):
            await client.user_by_username("alice")

    assert fake.requests == []
    assert client.reads == 0


async def test_budget_stops_pagination_midway(fake: FakeXAPI, make_client: Callable[..., XClient]) -> None:
    fake.add_user("author")
    tweet = fake.add_tweet("author", "raid me")
    for name in _add_users(fake, "rt", 150):
        fake.add_tweet(name, retweet_of=tweet)
    budget = ReadBudget(1)

    async with make_client(budget=budget) as client:
        with pytest.raises(BudgetExhausted):
            await client.retweeted_by(tweet)

    assert len(fake.requests) == 1
    assert (client.reads, budget.remaining) == (1, 0)


def test_read_budget_is_all_or_nothing() -> None:
    budget = ReadBudget(2)

    assert not budget.try_spend(3)
    assert budget.spent == 0
    assert budget.try_spend(2)
    assert not budget.try_spend()
    assert budget.remaining == 0
