"""The raid and community REST API through the real ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapters.http.app import create_app
from core.clock import FakeClock
from core.config import ApiKey
from core.events import RaidEnded
from core.services import Services
from core.storage.models import (
    AuditEntry,
    Community,
    Member,
    NubiSession,
    Raid,
    RaidAction,
    RaidParticipant,
    ScheduledAnnouncement,
)

URL = "https://twitter.com/nubi/status/42?s=20"
CHAT = {"platform": "telegram", "id": "-100123", "title": "Raiders"}


def member(i: int) -> dict[str, str]:
    return {"platform": "web", "id": f"user-{i}", "name": f"raider{i}"}


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def start(client: httpx.AsyncClient, community: dict[str, str] = CHAT, **extra: Any) -> dict[str, Any]:
    body = {"community": community, "targetUrl": URL, "objectives": {"like": 5, "repost": 2}, **extra}
    r = await client.post("/api/raids", json=body)
    assert r.status_code == 201, r.text
    return r.json()


async def join(client: httpx.AsyncClient, raid: int, *who: int) -> list[int]:
    ids = []
    for i in who:
        r = await client.post(f"/api/raids/{raid}/join", json={"member": member(i)})
        assert r.status_code == 200, r.text
        ids.append(r.json()["memberId"])
    return ids


async def claim(client: httpx.AsyncClient, raid: int, who: int, action: str) -> httpx.Response:
    return await client.post(f"/api/raids/{raid}/claims", json={"member": member(who), "action": action})


async def counts(services: Services) -> dict[str, int]:
    tables = (Community, Raid, Member, RaidParticipant, RaidAction, NubiSession, ScheduledAnnouncement, AuditEntry)

    async def op(s: Any) -> dict[str, int]:
        return {t.__tablename__: await s.scalar(select(func.count()).select_from(t)) for t in tables}

    return await services.db.read(op)


def assert_error(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["timestamp"]
    if field is not None:
        assert err["details"]["field"] == field, err


async def test_raid_lifecycle(client: httpx.AsyncClient, services: Services) -> None:
    raid = await start(client, durationSeconds=600)
    rid = raid["id"]
    assert raid["targetUrl"] == "https://x.com/nubi/status/42" and raid["status"] == "active"
    assert raid["chat"] == {"platform": "telegram", "id": "-100123", "title": "Raiders"}
    assert [(o["action"], o["target"], o["count"]) for o in raid["objectives"]] == [("like", 5, 0), ("repost", 2, 0)]
    assert raid["timeLeftSeconds"] == 600 and raid["sessionId"]
    listed = (await client.get("/api/communities")).json()["communities"]
    assert [(c["id"], c["platform"], c["externalId"]) for c in listed] == [(raid["communityId"], "telegram", "-100123")]

    ids = await join(client, rid, 0, 1, 2)
    again = (await client.post(f"/api/raids/{rid}/join", json={"member": member(0)})).json()
    assert again == {"raidId": rid, "memberId": ids[0], "position": 1, "already": True, "bonus": 0}

    first = (await claim(client, rid, 0, "like")).json()
    assert first["verification"] == "unverifiable" and first["points"] > 0 and not first["already"]
    assert (await claim(client, rid, 0, "like")).json()["already"] is True
    for who, action in ((0, "repost"), (1, "like"), (2, "like")):
        assert (await claim(client, rid, who, action)).status_code == 200
    assert_error(await claim(client, rid, 9, "like"), 409, "NOT_PARTICIPANT")
    assert_error(await claim(client, rid, 1, "quote"), 400, "UNKNOWN_OBJECTIVE")

    board = (await client.get(f"/api/raids/{rid}/leaderboard", params={"top": 2})).json()
    assert [e["memberId"] for e in board["entries"]] == [ids[0], ids[1]]
    assert board["entries"][0]["claims"] == 2 and board["entries"][0]["rank"] == 1
    progress = (await client.get(f"/api/raids/{rid}")).json()
    assert (progress["participants"], progress["actions"]) == (3, 4)
    assert progress["top"][0]["memberId"] == ids[0]  # camelCase even where core returns snake_case
    assert_error(await client.get(f"/api/raids/{rid}/report"), 404, "NOT_FOUND")

    ended = (await client.post(f"/api/raids/{rid}/end")).json()
    assert ended == {"raidId": rid, "ended": True, "status": "timeout"}
    assert (await client.post(f"/api/raids/{rid}/end", json={"cancel": True})).json()["ended"] is False
    assert len(services.recorder.of(RaidEnded)) == 1
    assert_error(await client.post(f"/api/raids/{rid}/join", json={"member": member(5)}), 409, "RAID_ENDED")

    report = (await client.get(f"/api/raids/{rid}/report")).json()
    assert (report["status"], report["participants"], report["actions"], report["objectivesMet"]) == ("timeout", 3, 4, 0)
    assert report["topRaiders"][0]["memberId"] == ids[0] and report["claimsByState"]["unverifiable"] == 4
    r = await client.get(f"/api/raids/{rid}/report.csv")
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert ["summary", "status", "timeout", ""] in rows and ["objective", "like", "3", "5"] in rows
    rows = list(csv.reader(io.StringIO((await client.get(f"/api/raids/{rid}/leaderboard.csv")).text)))
    assert rows[0] == ["rank", "member_id", "name", "points"] and rows[1][:3] == ["1", str(ids[0]), "raider0"]
    listed = (await client.get("/api/raids", params={"status": "timeout"})).json()["raids"]
    assert [x["id"] for x in listed] == [rid]
    assert (await client.get("/api/raids", params={"status": "active"})).json()["raids"] == []


async def test_review_queue(client: httpx.AsyncClient) -> None:
    raid = await start(client, verification="review")
    rid, cid = raid["id"], raid["communityId"]
    await join(client, rid, 1, 2)
    c1, c2 = [(await claim(client, rid, i, "like")).json() for i in (1, 2)]
    assert (c1["verification"], c1["points"]) == ("pending", 0)
    queue = (await client.get(f"/api/communities/{cid}/review")).json()["items"]
    assert [(i["claimId"], i["action"], i["name"]) for i in queue] == [(c1["claimId"], "like", "raider1"),
                                                                         (c2["claimId"], "like", "raider2")]

    ok = (await client.post(f"/api/claims/{c1['claimId']}/review", json={"decision": "accept"})).json()
    assert ok["verification"] == "accepted" and ok["points"] > 0 and not ok["already"]
    no = (await client.post(f"/api/claims/{c2['claimId']}/review", json={"decision": "reject"})).json()
    assert (no["verification"], no["points"]) == ("rejected", 0)
    again = (await client.post(f"/api/claims/{c1['claimId']}/review", json={"decision": "reject"})).json()
    assert again["already"] is True and again["verification"] == "accepted"
    assert (await client.get(f"/api/communities/{cid}/review")).json()["items"] == []
    progress = (await client.get(f"/api/raids/{rid}")).json()
    assert (progress["actions"], progress["pendingClaims"]) == (1, 0)
    assert_error(await client.post("/api/claims/99999/review", json={"decision": "accept"}), 404, "NOT_FOUND")
    assert_error(await client.post(f"/api/claims/{c1['claimId']}/review", json={"decision": "maybe"}),
                 400, "VALIDATION_ERROR", "decision")


async def test_metrics_snapshots(client: httpx.AsyncClient, services: Services, clock: FakeClock) -> None:
    rid = (await start(client, durationSeconds=600))["id"]
    await join(client, rid, 1)
    assert await services.raids.snapshot(rid)
    clock.advance(seconds=60)
    await join(client, rid, 2)
    await claim(client, rid, 2, "like")
    assert await services.raids.snapshot(rid)
    snaps = (await client.get(f"/api/raids/{rid}/metrics")).json()["snapshots"]
    assert [(s["participants"], s["actions"], s["timeLeftSeconds"]) for s in snaps] == [(1, 0, 600), (2, 1, 540)]
    assert snaps[1]["completionPct"] == 10.0 and snaps[1]["engagementScore"] == 0.5


async def test_boards_and_history(client: httpx.AsyncClient, services: Services, clock: FakeClock) -> None:
    raid = await start(client)
    rid, cid = raid["id"], raid["communityId"]
    ids = await join(client, rid, 1, 2)
    await claim(client, rid, 1, "like")
    await claim(client, rid, 1, "repost")
    await claim(client, rid, 2, "like")
    week = (await client.get(f"/api/communities/{cid}/leaderboard", params={"window": "week"})).json()
    assert week["windowStart"] == "2026-01-05T00:00:00+00:00"  # the FakeClock starts on a Monday
    assert [e["memberId"] for e in week["entries"]] == ids and week["entries"][0]["points"] > week["entries"][1]["points"]
    await client.post(f"/api/raids/{rid}/end")

    clock.advance(days=7)
    assert await services.boards.close_windows() >= 2
    history = (await client.get(f"/api/communities/{cid}/history", params={"window": "week"})).json()["windows"]
    assert len(history) == 1 and history[0]["windowStart"] == "2026-01-05T00:00:00+00:00"
    assert [w["memberId"] for w in history[0]["winners"]] == ids
    assert {w["window"] for w in (await client.get(f"/api/communities/{cid}/history")).json()["windows"]} == {"day", "week"}
    assert (await client.get(f"/api/communities/{cid}/leaderboard", params={"window": "week"})).json()["entries"] == []
    all_time = (await client.get(f"/api/communities/{cid}/leaderboard")).json()
    assert all_time["window"] == "all" and [e["memberId"] for e in all_time["entries"]] == ids
    r = await client.get(f"/api/communities/{cid}/leaderboard.csv", params={"window": "all"})
    rows = list(csv.reader(io.StringIO(r.text)))
    assert r.headers["content-type"].startswith("text/csv") and [row[1] for row in rows[1:]] == [str(i) for i in ids]
    assert_error(await client.get("/api/communities/999/leaderboard"), 404, "NOT_FOUND")


async def test_points_bans_and_audit(client: httpx.AsyncClient, services: Services) -> None:
    raid = await start(client)
    rid, cid = raid["id"], raid["communityId"]
    alice, bob = await join(client, rid, 1, 2)
    r = await client.post(f"/api/communities/{cid}/points", json={"memberId": alice, "points": 50, "reason": " helped "})
    assert r.status_code == 201 and r.json()["rank"] == 1
    assert r.json()["totalPoints"] == 55 and r.json()["reason"] == "helped"  # 5 early-joiner points + 50
    await client.post(f"/api/communities/{cid}/points", json={"memberId": alice, "points": -20, "reason": "oops"})
    board = (await client.get(f"/api/communities/{cid}/leaderboard", params={"window": "all"})).json()["entries"]
    assert (board[0]["memberId"], board[0]["points"]) == (alice, 35)

    before = await counts(services)
    assert_error(await client.post(f"/api/communities/{cid}/points", json={"memberId": alice, "points": 0, "reason": "x"}),
                 400, "VALIDATION_ERROR", "points")
    assert_error(await client.post(f"/api/communities/{cid}/points", json={"memberId": alice, "points": 5}),
                 400, "VALIDATION_ERROR", "reason")
    assert_error(await client.post(f"/api/communities/{cid}/points", json={"memberId": 9999, "points": 5, "reason": "x"}),
                 400, "VALIDATION_ERROR", "memberId")
    assert await counts(services) == before

    r = await client.post(f"/api/communities/{cid}/bans", json={"memberId": bob, "reason": "spam"})
    assert r.status_code == 201 and r.json()["already"] is False
    assert (await client.post(f"/api/communities/{cid}/bans", json={"memberId": bob})).json()["already"] is True
    bans = (await client.get(f"/api/communities/{cid}/bans")).json()["bans"]
    assert [(b["memberId"], b["name"], b["reason"]) for b in bans] == [(bob, "raider2", "spam")]
    assert_error(await claim(client, rid, 2, "like"), 403, "BANNED")
    assert (await client.delete(f"/api/communities/{cid}/bans/{bob}")).status_code == 204
    assert_error(await client.delete(f"/api/communities/{cid}/bans/{bob}"), 404, "NOT_FOUND")
    assert (await claim(client, rid, 2, "like")).status_code == 200

    audit = (await client.get(f"/api/communities/{cid}/audit")).json()["entries"]
    assert [(a["action"], a["amount"], a["reason"]) for a in audit] == [
        ("unban", None, None), ("ban", None, "spam"), ("points_remove", -20, "oops"), ("points_add", 50, "helped")]
    assert audit[2]["targetMemberId"] == alice


async def test_schedules_crud(client: httpx.AsyncClient, services: Services) -> None:
    cid = (await start(client))["communityId"]
    r = await client.post(f"/api/communities/{cid}/schedules", json={"cron": "0 12 * * mon", "window": "week", "top": 5})
    assert r.status_code == 201
    made = r.json()
    assert (made["cron"], made["window"], made["top"], made["tz"], made["communityId"]) == ("0 12 * * mon", "week", 5, "UTC", cid)
    before = await counts(services)
    assert_error(await client.post(f"/api/communities/{cid}/schedules", json={"cron": "every monday", "window": "week"}),
                 400, "VALIDATION_ERROR", "cron")
    assert_error(await client.post(f"/api/communities/{cid}/schedules",
                                   json={"cron": "0 12 * * mon", "window": "week", "tz": "Mars/Olympus"}),
                 400, "VALIDATION_ERROR", "tz")
    assert await counts(services) == before
    assert [s["id"] for s in (await client.get(f"/api/communities/{cid}/schedules")).json()["schedules"]] == [made["id"]]
    assert (await client.delete(f"/api/communities/{cid}/schedules/{made['id']}")).status_code == 204
    assert (await client.get(f"/api/communities/{cid}/schedules")).json()["schedules"] == []
    assert_error(await client.delete(f"/api/communities/{cid}/schedules/{made['id']}"), 404, "NOT_FOUND")


async def test_context(client: httpx.AsyncClient, services: Services) -> None:
    rid = (await start(client))["id"]
    user = str(uuid.uuid4())
    r = await client.post(f"/api/raids/{rid}/join", json={"member": {"platform": "web", "id": user, "name": "Ada"}})
    member_id = r.json()["memberId"]
    await client.post(f"/api/raids/{rid}/claims", json={"member": {"platform": "web", "id": user}, "action": "like"})
    ctx = (await client.get(f"/api/context/members/{member_id}")).json()
    assert ctx["member"]["name"] == "Ada" and [a["id"] for a in ctx["activeRaids"]] == [rid]
    assert ctx["standings"][0]["rank"] == 1 and ctx["streakDays"] == 1
    assert f"Active raid #{rid}" in ctx["text"]
    session = await services.sessions.create(services.settings.agents[0].id, user)
    by_session = (await client.get(f"/api/context/sessions/{session.id}")).json()
    assert by_session["member"]["id"] == member_id and by_session["session"]["sessionId"] == session.id
    assert_error(await client.get("/api/context/members/99999"), 404, "NOT_FOUND")
    assert_error(await client.get(f"/api/context/sessions/{uuid.uuid4()}"), 404, "SESSION_NOT_FOUND")


async def test_nubi_session_routes(client: httpx.AsyncClient, services: Services) -> None:
    agent = services.settings.agents[0].id
    body = {"agentId": agent, "raidId": "raid-1", "targetUrl": URL, "maxParticipants": 10, "duration": 900,
            "objectives": [{"type": "like", "target": "42", "count": 5, "points": 2}, {"type": "retweet", "count": 2}],
            "metadata": {"source": "nubi"}}
    r = await client.post("/api/raids/sessions", json=body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["success"] is True
    data = created["data"]
    sid, rid = data["sessionId"], data["raidId"]
    assert (data["maxParticipants"], data["duration"]) == (10, 900)
    assert [(o["type"], o["count"], o["points"]) for o in data["objectives"]] == [("like", 5, 2), ("repost", 2, 2)]
    assert (await client.get(f"/api/raids/{rid}")).json()["chat"]["platform"] == "web"

    listed = (await client.get("/api/raids/sessions")).json()
    assert listed["success"] and listed["data"]["total"] == 1 and listed["data"]["sessions"][0]["sessionId"] == sid
    got = (await client.get(f"/api/raids/sessions/{sid}")).json()
    assert got["data"]["progress"] == {"status": "active", "participantCount": 0, "totalActions": 0,
                                       "completionRate": 0.0, "timeRemaining": 900}
    joined = (await client.post(f"/api/raids/sessions/{sid}/join",
                                json={"telegramId": "777", "telegramUsername": "alice", "twitterUsername": "al"})).json()
    assert joined["success"] and joined["data"]["participant"]["position"] == 1
    action = {"participantId": "777", "actionType": "retweet", "targetId": "42", "points": 999}
    recorded = (await client.post(f"/api/raids/sessions/{sid}/actions", json=action)).json()["data"]
    assert recorded["recorded"] is True and recorded["claim"]["action"] == "repost"
    assert 0 < recorded["claim"]["points"] < 999  # points come from the raid, never from the client
    assert (await client.post(f"/api/raids/sessions/{sid}/actions", json=action)).json()["data"]["recorded"] is False

    board = (await client.get(f"/api/raids/sessions/{sid}/leaderboard")).json()["data"]["leaderboard"]
    assert [(e["rank"], e["name"], e["actionsCompleted"]) for e in board] == [(1, "alice", 1)]
    await services.raids.snapshot(rid)
    metrics = (await client.get(f"/api/raids/sessions/{sid}/metrics")).json()["data"]
    assert (metrics["metrics"]["participantCount"], metrics["metrics"]["totalActions"]) == (1, 1)
    assert len(metrics["snapshots"]) == 1

    assert_error(await client.get(f"/api/raids/sessions/{uuid.uuid4()}"), 404, "SESSION_NOT_FOUND")
    assert_error(await client.get("/api/raids/sessions/not-a-uuid/metrics"), 404, "SESSION_NOT_FOUND")
    assert_error(await client.post("/api/raids/sessions", json={**body, "agentId": str(uuid.uuid4())}),
                 404, "AGENT_NOT_FOUND")
    assert_error(await client.post(f"/api/raids/sessions/{sid}/actions", json={**action, "actionType": "dance"}),
                 400, "VALIDATION_ERROR", "actionType")


async def test_validation_errors_change_nothing(client: httpx.AsyncClient, services: Services) -> None:
    raid = await start(client)
    await join(client, raid["id"], 1)
    before = await counts(services)
    other = {"platform": "telegram", "id": "-200"}
    cases = [
        ({"community": other, "targetUrl": "http://x.com/a/status/1"}, "targetUrl"),
        ({"community": other, "targetUrl": "https://x.com/a"}, "targetUrl"),
        ({"community": other, "targetUrl": URL, "durationSeconds": 30}, "durationSeconds"),
        ({"community": other, "targetUrl": URL, "durationSeconds": 25 * 3600}, "durationSeconds"),
        ({"community": other, "targetUrl": URL, "objectives": {"dance": 3}}, "objectives"),
        ({"community": other, "targetUrl": URL, "durationMinutes": 5}, "durationMinutes"),
        ({"community": {"platform": "myspace", "id": "1"}, "targetUrl": URL}, "community.platform"),
        ({"targetUrl": URL}, "community"),
    ]
    for body, field in cases:
        assert_error(await client.post("/api/raids", json=body), 400, "VALIDATION_ERROR", field)
    assert_error(await client.post(f"/api/raids/{raid['id']}/claims", json={"member": member(1), "action": "dance"}),
                 400, "VALIDATION_ERROR", "action")
    assert_error(await client.post(f"/api/raids/{raid['id']}/join", json={"member": {"platform": "web"}}),
                 400, "VALIDATION_ERROR", "member.id")
    assert_error(await client.post("/api/raids/sessions", json={"targetUrl": URL, "duration": 10}),
                 400, "VALIDATION_ERROR", "duration")
    assert_error(await client.get(f"/api/communities/{raid['communityId']}/leaderboard", params={"window": "year"}),
                 400, "VALIDATION_ERROR", "window")
    assert_error(await client.get("/api/raids", params={"status": "paused"}), 400, "VALIDATION_ERROR", "status")
    r = await client.post("/api/raids", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert await counts(services) == before


async def test_api_key_scoping(services: Services) -> None:
    services.settings.http.api_keys = [ApiKey(key="admin-key"), ApiKey(key="scoped-key", community="telegram:-1")]
    transport = httpx.ASGITransport(app=create_app(services))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://localhost", headers={"X-API-KEY": "admin-key"}) as admin,
        httpx.AsyncClient(transport=transport, base_url="http://localhost", headers={"X-API-KEY": "scoped-key"}) as scoped,
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as anonymous,
    ):
        mine = await start(admin, {"platform": "telegram", "id": "-1"}, verification="review")
        theirs = await start(admin, {"platform": "telegram", "id": "-2"}, verification="review")
        await join(admin, theirs["id"], 1)
        their_claim = (await claim(admin, theirs["id"], 1, "like")).json()["claimId"]
        await admin.post(f"/api/raids/{theirs['id']}/end")

        assert_error(await anonymous.get("/api/raids"), 401, "UNAUTHORIZED")
        assert_error(await scoped.get("/api/raids", headers={"X-API-KEY": "wrong"}), 401, "UNAUTHORIZED")
        assert [x["id"] for x in (await admin.get("/api/raids")).json()["raids"]] == [theirs["id"], mine["id"]]
        assert [x["id"] for x in (await scoped.get("/api/raids")).json()["raids"]] == [mine["id"]]
        assert [c["externalId"] for c in (await scoped.get("/api/communities")).json()["communities"]] == ["-1"]
        assert [s["raidId"] for s in (await scoped.get("/api/raids/sessions")).json()["data"]["sessions"]] == [mine["id"]]

        # its own community: read and act
        assert (await scoped.get(f"/api/raids/{mine['id']}")).status_code == 200
        await join(scoped, mine["id"], 2)
        assert (await claim(scoped, mine["id"], 2, "like")).status_code == 200
        assert (await scoped.get(f"/api/communities/{mine['communityId']}/leaderboard")).status_code == 200
        assert (await scoped.get(f"/api/raids/sessions/{mine['sessionId']}")).status_code == 200

        # another community: refused, reads included
        tid, tcid = theirs["id"], theirs["communityId"]
        before = await counts(services)
        refused = [
            await scoped.get(f"/api/raids/{tid}"),
            await scoped.get("/api/raids", params={"communityId": tcid}),
            await scoped.post(f"/api/raids/{tid}/join", json={"member": member(3)}),
            await claim(scoped, tid, 1, "repost"),
            await scoped.get(f"/api/raids/{tid}/leaderboard"),
            await scoped.get(f"/api/raids/{tid}/report.csv"),
            await scoped.post(f"/api/raids/{tid}/end"),
            await scoped.get(f"/api/communities/{tcid}"),
            await scoped.get(f"/api/communities/{tcid}/leaderboard", params={"window": "week"}),
            await scoped.get(f"/api/communities/{tcid}/leaderboard.csv"),
            await scoped.get(f"/api/communities/{tcid}/audit"),
            await scoped.post(f"/api/communities/{tcid}/schedules", json={"cron": "0 12 * * mon", "window": "week"}),
            await scoped.post(f"/api/claims/{their_claim}/review", json={"decision": "accept"}),
            await scoped.get(f"/api/raids/sessions/{theirs['sessionId']}"),
            await scoped.post("/api/raids", json={"community": {"platform": "telegram", "id": "-2"}, "targetUrl": URL}),
            await scoped.get("/api/context/members/1"),
        ]
        for r in refused:
            assert_error(r, 403, "FORBIDDEN")
        assert await counts(services) == before
        assert (await admin.get(f"/api/raids/{tid}/report.csv")).status_code == 200

        # a raid a scoped key starts lands in its own community
        r = await scoped.post("/api/raids", json={"community": {"platform": "telegram", "id": "-1"},
                                                   "targetUrl": URL, "replace": True})
        assert r.status_code == 201 and r.json()["communityId"] == mine["communityId"]
        r = await scoped.post("/api/raids/sessions", json={"targetUrl": URL, "replace": True})
        assert r.status_code == 201 and r.json()["data"]["communityId"] == mine["communityId"]


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/api/raids", "post"), ("/api/raids", "get"), ("/api/raids/{raid_id}", "get"),
        ("/api/raids/{raid_id}/join", "post"), ("/api/raids/{raid_id}/claims", "post"),
        ("/api/raids/{raid_id}/leaderboard", "get"), ("/api/raids/{raid_id}/metrics", "get"),
        ("/api/raids/{raid_id}/report", "get"), ("/api/raids/{raid_id}/report.csv", "get"),
        ("/api/raids/{raid_id}/end", "post"), ("/api/claims/{claim_id}/review", "post"),
        ("/api/claims/{claim_id}/revoke", "post"),
        ("/api/communities", "get"), ("/api/communities/{community_id}/leaderboard", "get"),
        ("/api/communities/{community_id}/leaderboard.csv", "get"), ("/api/communities/{community_id}/history", "get"),
        ("/api/communities/{community_id}/review", "get"), ("/api/communities/{community_id}/points", "post"),
        ("/api/communities/{community_id}/link-conflicts", "get"),
        ("/api/communities/{community_id}/audit", "get"), ("/api/communities/{community_id}/schedules", "post"),
        ("/api/communities/{community_id}/bans", "post"), ("/api/context/members/{member_id}", "get"),
        ("/api/context/sessions/{session_id}", "get"), ("/api/raids/sessions", "post"),
        ("/api/raids/sessions/{session_id}/actions", "post"), ("/api/raids/sessions/{session_id}/metrics", "get"),
    ]:
        assert paths[path][method]["summary"], (path, method)
    assert "RaidOut" in spec["components"]["schemas"]
    assert "targetUrl" in spec["components"]["schemas"]["RaidCreate"]["properties"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.text.lower()


async def test_claim_states_end_cause_and_refused_links_over_rest(services: Services, client: httpx.AsyncClient) -> None:
    from core.directory import MemberRef
    from core.errors import Conflict

    raid = await start(client, verification="review")
    a, b = await join(client, raid["id"], 1, 2)
    pending = (await claim(client, raid["id"], 1, "like")).json()
    assert pending["verification"] == "pending"
    accepted = await client.post(f"/api/claims/{pending['claimId']}/review", json={"decision": "accept"})
    assert accepted.status_code == 200 and accepted.json()["verification"] == "accepted"  # a moderator, not a machine

    ended = await client.post(f"/api/raids/{raid['id']}/end", json={})
    assert ended.json()["ended"] is True
    got = (await client.get(f"/api/raids/{raid['id']}")).json()
    assert got["endCause"] == "ended_by_moderator"  # before the deadline, objectives unmet: not "time ran out"
    report = (await client.get(f"/api/raids/{raid['id']}/report")).json()
    assert (report["endCause"], report["endedBecause"], report["final"]) == ("ended_by_moderator",
                                                                             "ended by a moderator", True)
    assert report["claimsByState"]["accepted"] == 1 and report["claimsByState"]["verified"] == 0
    rows = list(csv.reader(io.StringIO((await client.get(f"/api/raids/{raid['id']}/report.csv")).text)))
    assert ["summary", "endCause", "ended_by_moderator", ""] in rows

    await services.links.link(MemberRef("web", "user-1", "raider1"), "alice")
    with pytest.raises(Conflict):
        await services.links.link(MemberRef("web", "user-2", "raider2"), "alice")
    with pytest.raises(Conflict):
        await services.links.link(MemberRef("discord", "elsewhere", "mallory"), "alice")
    r = await client.get(f"/api/communities/{raid['communityId']}/link-conflicts")
    assert r.status_code == 200, r.text
    (conflict,) = r.json()["conflicts"]  # mallory is no member of this community
    assert (conflict["handle"], conflict["claimantMemberId"], conflict["ownerMemberId"]) == ("alice", b, a)
    assert conflict["claimantName"] == "raider2"
    assert_error(await client.get("/api/communities/999999/link-conflicts"), 404, "NOT_FOUND")
