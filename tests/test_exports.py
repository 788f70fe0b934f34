"""Boards are whole: CSV exports stream every row, JSON boards page with offset up to a documented size."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.http.app import create_app
from core.directory import ChatRef, MemberRef
from core.export import EXPORT_PAGE
from core.leaderboards import MAX_PAGE
from core.raids.model import RaidSpec
from core.services import Services

RAIDERS = 700
assert RAIDERS > EXPORT_PAGE  # the exports cross a page boundary


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def crowd_raid(services: Services) -> tuple[int, int]:
    spec = RaidSpec("https://x.com/nubi/status/42", {"like": 1000, "repost": 1000}, max_participants=1000)
    p = await services.raids.start(ChatRef("telegram", "-1001", "Crowd"), spec)
    raiders = [MemberRef("telegram", str(5000 + i), f"raider{i}") for i in range(RAIDERS)]
    for start in range(0, RAIDERS, 100):
        batch = raiders[start:start + 100]
        await asyncio.gather(*(services.raids.join(p.id, m) for m in batch))
        await asyncio.gather(*(services.raids.claim(p.id, m, "like") for m in batch))
    return p.id, p.community_id


def rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_a_raid_of_700_exports_700_and_pages_through_json(services: Services, client: httpx.AsyncClient) -> None:
    raid_id, community_id = await crowd_raid(services)

    board = rows((await client.get(f"/api/raids/{raid_id}/leaderboard.csv")).text)
    assert board[0] == ["rank", "member_id", "name", "points"] and len(board) == RAIDERS + 1
    assert [int(r[0]) for r in board[1:]] == list(range(1, RAIDERS + 1))
    assert len({r[1] for r in board[1:]}) == RAIDERS

    paged = []
    for offset in range(0, RAIDERS + MAX_PAGE, MAX_PAGE):
        r = await client.get(f"/api/raids/{raid_id}/leaderboard", params={"top": MAX_PAGE, "offset": offset})
        assert r.status_code == 200, r.text
        paged += [(str(e["rank"]), str(e["memberId"])) for e in r.json()["entries"]]
    assert paged == [(r[0], r[1]) for r in board[1:]]  # the same order, no gaps, nothing twice

    community = rows((await client.get(f"/api/communities/{community_id}/leaderboard.csv",
                                       params={"window": "week"})).text)
    assert len(community) == RAIDERS + 1 and {r[1] for r in community[1:]} == {r[1] for r in board[1:]}
    page = (await client.get(f"/api/communities/{community_id}/leaderboard",
                             params={"window": "week", "top": MAX_PAGE, "offset": RAIDERS - 50})).json()
    assert [e["rank"] for e in page["entries"]] == list(range(RAIDERS - 49, RAIDERS + 1))

    too_big = await client.get(f"/api/communities/{community_id}/leaderboard", params={"top": MAX_PAGE + 1})
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "VALIDATION_ERROR"
    negative = await client.get(f"/api/raids/{raid_id}/leaderboard", params={"offset": -1})
    assert negative.status_code == 400 and negative.json()["error"]["code"] == "VALIDATION_ERROR"

    await services.raids.end(raid_id)
    report = rows((await client.get(f"/api/raids/{raid_id}/report.csv")).text)
    raiders = [r for r in report if r[0] == "raider"]
    assert len(raiders) == RAIDERS and [r[1] for r in raiders] == [r[0] for r in board[1:]]
    assert ["summary", "participants", str(RAIDERS), ""] in report
