"""Partner chats and member merges over REST and MCP (issue #14), on SQLite and PostgreSQL.

The same services as `/community link|join|chats|unlink`, `/raid start ... partners` and `/member merge`:
a code made over REST links two chats, a raid started over REST or MCP with `partners` shows its partner
chats (and, once the real Telegram adapter posted there through the fake Bot API, that the post went
up), and a merge over REST or MCP keeps every point and is audited. Callers that are not the
community's moderators are refused on REST, MCP and in chat, and nothing changes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapters.http.app import create_app
from adapters.telegram import TelegramAdapter
from core.clock import FakeClock
from core.commands.service import ChatContext
from core.config import ApiKey, TelegramConfig
from core.directory import ChatRef, MemberRef, ensure_community
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import AuditEntry
from core.storage.partner_models import ChatLink, ChatLinkCode
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.ledger_check import assert_boards_equal_ledger, ledger_rows
from tests.test_access_policy import mcp as mcp_rpc
from tests.test_mcp import http_session, ok, refused, serve

A = ChatRef("telegram", "-100201", "Alpha Raiders")
B = ChatRef("telegram", "-100202", "Beta Raiders")
SERVER = ChatRef("discord", "9001", "Gamma Server", "9101")
ADMIN, A_KEY, OTHER_KEY = "admin-key-partners", "a-key-partners", "other-key-partners"
URL = "https://x.com/nubi/status/1414"
CHAT_A = {"platform": "telegram", "id": A.external_id, "title": A.title}


@pytest.fixture
async def api(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    services.settings.http.api_keys = [ApiKey(key=ADMIN), ApiKey(key=A_KEY, community="telegram:-100201"),
                                       ApiKey(key=OTHER_KEY, community="telegram:-100999")]
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


def as_(key: str) -> dict[str, str]:
    return {"X-API-KEY": key}


def error(r: httpx.Response, status: int, code: str, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and err["timestamp"], err
    if field is not None:
        assert err["details"]["field"] == field, err


async def communities(services: Services, *chats: ChatRef) -> list[int]:
    """The chats as the chat adapters leave them once nubi has seen them."""
    now = services.clock.now()
    return [await services.db.write(lambda s, c=c: ensure_community(s, c, now)) for c in chats]


async def link_rows(services: Services) -> list[tuple[int, int, str, int, str]]:
    return list(await services.db.read(lambda s: s.execute(
        select(ChatLink.id, ChatLink.community_id, ChatLink.channel_id, ChatLink.partner_community_id,
               ChatLink.partner_channel_id).order_by(ChatLink.id))))


async def new_code(api: httpx.AsyncClient, community_id: int, key: str = ADMIN, **body: Any) -> str:
    r = await api.post(f"/api/communities/{community_id}/chat-link-codes", json=body, headers=as_(key))
    assert r.status_code == 201, r.text
    return str(r.json()["code"])


async def test_link_code_redeem_list_and_unlink_over_rest(services: Services, api: httpx.AsyncClient,
                                                          clock: FakeClock) -> None:
    a, server = await communities(services, A, SERVER)
    issued = await api.post(f"/api/communities/{a}/chat-link-codes", headers=as_(A_KEY))
    assert issued.status_code == 201, issued.text
    body = issued.json()
    assert body["communityId"] == a and body["channel"] is None and len(body["code"]) == 9
    code = body["code"]

    # refused, each with the documented error, and no link is written; the code stays good
    links = f"/api/communities/{server}/chat-links"
    error(await api.post(f"/api/communities/{a}/chat-links", json={"code": code}, headers=as_(A_KEY)),
          400, "VALIDATION_ERROR", "code")  # redeemed in the chat that asked for it
    error(await api.post(links, json={"code": code}, headers=as_(ADMIN)), 400, "VALIDATION_ERROR", "channel")
    error(await api.post(f"/api/communities/{a}/chat-link-codes", json={"channel": "5"}, headers=as_(A_KEY)),
          400, "VALIDATION_ERROR", "channel")  # a Telegram community is one chat
    error(await api.post(links, json={"code": "not a code", "channel": "9101"}, headers=as_(ADMIN)),
          400, "VALIDATION_ERROR", "code")
    error(await api.post(links, json={"code": "ABCD-EFGH", "channel": "9101"}, headers=as_(ADMIN)),
          404, "NOT_FOUND")
    error(await api.post(links, json={"code": code, "channel": "9101", "extra": 1}, headers=as_(ADMIN)),
          400, "VALIDATION_ERROR", "extra")
    error(await api.post(links, json={"code": code, "channel": "9101"}, headers=as_(A_KEY)), 403, "FORBIDDEN")
    error(await api.post(f"/api/communities/{a}/chat-link-codes", headers=as_(OTHER_KEY)), 403, "FORBIDDEN")
    for command in ("/community link", f"/community join {code}", "/community chats"):  # nor a chat member
        reply = await services.commands.handle_text(ChatContext(SERVER, MemberRef("discord", "77", "m")), command)
        assert reply is not None and reply.text == "Sorry, only moderators can do that here.", command
    error(await api.post("/api/communities/999999/chat-links", json={"code": code}, headers=as_(ADMIN)),
          404, "NOT_FOUND")
    assert await link_rows(services) == []

    linked = await api.post(links, json={"code": code.lower().replace("-", " "), "channel": "9101"},
                            headers=as_(ADMIN))
    assert linked.status_code == 201, linked.text
    assert {k: v for k, v in linked.json().items() if k not in ("id", "createdAt")} == {
        "channel": "9101", "partner": {"platform": "telegram", "id": A.external_id, "title": A.title, "channel": None}}
    error(await api.post(links, json={"code": code, "channel": "9102"}, headers=as_(ADMIN)),
          409, "CHAT_LINK_REFUSED")  # a code links once

    mine = await api.get(f"/api/communities/{a}/chat-links", headers=as_(A_KEY))
    assert mine.status_code == 200, mine.text
    [link] = mine.json()["links"]
    assert link["channel"] is None and link["partner"] == {"platform": "discord", "id": SERVER.external_id,
                                                           "title": SERVER.title, "channel": "9101"}
    # what `/community chats` lists in the group is what REST lists
    assert [c.link_id for c in await services.partners.chats(A)] == [link["id"]]
    assert [c.chat.channel for c in await services.partners.chats(SERVER)] == [None]
    theirs = (await api.get(links, headers=as_(ADMIN))).json()["links"]
    assert [(x["channel"], x["partner"]["id"]) for x in theirs] == [("9101", A.external_id)]
    error(await api.get(links, headers=as_(A_KEY)), 403, "FORBIDDEN")

    # a link is removed by its own community, both directions at once
    rows = await link_rows(services)
    error(await api.delete(f"/api/communities/{a}/chat-links/{theirs[0]['id']}", headers=as_(A_KEY)),
          404, "NOT_FOUND")  # the other side's number is not a link of this community
    error(await api.delete(f"/api/communities/{server}/chat-links/{theirs[0]['id']}", headers=as_(A_KEY)),
          403, "FORBIDDEN")
    assert await link_rows(services) == rows and len(rows) == 2
    gone = await api.delete(f"/api/communities/{a}/chat-links/{link['id']}", headers=as_(A_KEY))
    assert gone.status_code == 204, gone.text
    assert await link_rows(services) == []
    assert (await api.get(links, headers=as_(ADMIN))).json()["links"] == []
    error(await api.delete(f"/api/communities/{a}/chat-links/{link['id']}", headers=as_(A_KEY)), 404, "NOT_FOUND")

    # an expired code: NOT_FOUND, as in chat; a new code replaces the chat's unused one
    old = await new_code(api, a)
    clock.advance(minutes=11)
    error(await api.post(links, json={"code": old, "channel": "9101"}, headers=as_(ADMIN)), 404, "NOT_FOUND")
    await new_code(api, a)
    await new_code(api, a)
    unused = await services.db.read(lambda s: s.scalar(select(func.count()).select_from(ChatLinkCode).where(
        ChatLinkCode.community_id == a, ChatLinkCode.used_at.is_(None))))
    assert unused == 1


# -- partner raids over REST and MCP, posted by the real Telegram adapter ---------------------------


@pytest.fixture
async def tg_fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        for chat in (A, B):
            fake.add_chat(int(chat.external_id), title=chat.title)
            fake.set_member(int(chat.external_id), fake.bot_id, "administrator")
        yield fake


@pytest.fixture
async def tg(services: Services, tg_fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(services, TelegramConfig(token=tg_fake.token, api_base_url=tg_fake.base_url))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def until_true(check: Any, what: str) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_a_partner_raid_over_rest_and_mcp_shows_its_partner_chats(
    services: Services, api: httpx.AsyncClient, tg_fake: FakeTelegramAPI, tg: TelegramAdapter
) -> None:
    a, b = await communities(services, A, B)
    code = await new_code(api, a, A_KEY)
    assert (await api.post(f"/api/communities/{b}/chat-links", json={"code": code}, headers=as_(ADMIN))).status_code == 201
    partner = {"platform": "telegram", "id": B.external_id, "title": B.title, "channel": None}

    def chats(raid: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "posted"} for c in raid["partnerChats"]]

    started = await api.post("/api/raids", json={"community": CHAT_A, "targetUrl": URL, "objectives": {"like": 3},
                                                 "partners": True}, headers=as_(A_KEY))
    assert started.status_code == 201, started.text
    raid = started.json()
    assert chats(raid) == [partner]
    # the adapter posts in the partner group through the outbox; the raid then shows that post went up
    await tg_fake.wait_for_calls("sendMessage", chat_id=int(B.external_id))

    async def posted(raid_id: int) -> bool:
        got = (await api.get(f"/api/raids/{raid_id}", headers=as_(A_KEY))).json()
        return bool(got["partnerChats"] and got["partnerChats"][0]["posted"])

    await until_true(lambda: posted(raid["id"]), "the partner post is marked as posted")
    listed = (await api.get("/api/raids", headers=as_(A_KEY))).json()["raids"]
    assert [(r["id"], r["partnerChats"]) for r in listed] == [(raid["id"], [{**partner, "posted": True}])]

    async with serve(services) as base, http_session(f"{base}/mcp/", key=ADMIN) as s:
        assert (await ok(s, "get_raid", raid_id=raid["id"]))["partnerChats"] == [{**partner, "posted": True}]
        active = [r for r in (await s.read_resource("nubi://raids/active")).contents]
        assert '"partnerChats"' in active[0].text  # type: ignore[union-attr]
        args = {"chat_platform": "telegram", "chat_id": A.external_id, "url": URL, "replace": True}
        by_mcp = await ok(s, "start_raid", **args, partners=True)
        assert chats(by_mcp) == [partner]
        await until_true(lambda: posted(by_mcp["id"]), "the partner post of the MCP raid is marked as posted")
        rest_view = (await api.get(f"/api/raids/{by_mcp['id']}", headers=as_(A_KEY))).json()
        assert rest_view["partnerChats"] == (await ok(s, "get_raid", raid_id=by_mcp["id"]))["partnerChats"]
        assert (await ok(s, "start_raid", **args, partners=False))["partnerChats"] == []
        # omitted: the community's setting decides, on either entry point
        assert (await ok(s, "start_raid", **args))["partnerChats"] == []
        patched = await api.patch(f"/api/communities/{a}/settings", json={"settings": {"partners": True}},
                                  headers=as_(A_KEY))
        assert patched.status_code == 200, patched.text
        assert chats(await ok(s, "start_raid", **args)) == [partner]
    by_setting = await api.post("/api/raids", json={"community": CHAT_A, "targetUrl": URL, "replace": True},
                                headers=as_(A_KEY))
    assert chats(by_setting.json()) == [partner]
    alone = await api.post("/api/raids", json={"community": CHAT_A, "targetUrl": URL, "replace": True,
                                               "partners": False}, headers=as_(A_KEY))
    assert alone.json()["partnerChats"] == []
    error(await api.post("/api/raids", json={"community": CHAT_A, "targetUrl": URL, "partners": "yes please"},
                         headers=as_(A_KEY)), 400, "VALIDATION_ERROR", "partners")


# -- member merges ------------------------------------------------------------------------------------


async def refused_pair(services: Services, first: MemberRef, second: MemberRef) -> None:
    """`/link account` from `first`, redeemed from `second`: refused (both hold points), waiting for a moderator."""
    issued = await services.member_links.issue(first)
    outcome = await services.member_links.redeem(second, issued.code)
    assert not outcome.linked


async def test_member_merge_over_rest_and_mcp_keeps_every_point_and_is_audited(
    services: Services, api: httpx.AsyncClient, clock: FakeClock
) -> None:
    people = {n: MemberRef(p, i, n, n) for n, p, i in (("alice", "telegram", "501"), ("bob", "discord", "601"),
                                                      ("carol", "telegram", "503"), ("dave", "discord", "604"))}
    raid = await services.raids.start(A, RaidSpec(URL, {"like": 10, "repost": 5}, duration_seconds=600),
                                      by=MemberRef("telegram", "7", "mod"))
    ids = {}
    for n, who in people.items():
        ids[n] = (await services.raids.join(raid.id, who)).member_id
        await services.raids.claim(raid.id, who, "like")
    await services.raids.claim(raid.id, people["bob"], "repost")
    a = raid.community_id
    await services.moderation.adjust_points(a, ids["bob"], 7, "helping out", actor=None)
    await services.raids.end(raid.id, reason="ended by a moderator", cause="ended_by_moderator")
    await refused_pair(services, people["alice"], people["bob"])
    await refused_pair(services, people["carol"], people["dave"])
    before = await ledger_rows(services, a)
    total = sum(r.points for r in before)
    held = {m: sum(r.points for r in before if r.member_id == m) for m in ids.values()}
    audits = await services.db.read(lambda s: s.scalar(select(func.count()).select_from(AuditEntry)))

    async def unchanged() -> None:
        assert [(r.id, r.member_id, r.points) for r in await ledger_rows(services, a)] == \
            [(r.id, r.member_id, r.points) for r in before]
        assert await services.db.read(lambda s: s.scalar(select(func.count()).select_from(AuditEntry))) == audits

    # not the community's moderators: refused in chat, over REST and over MCP alike, nothing changes
    member = ChatContext(A, MemberRef("telegram", "503", "carol"), is_moderator=False)
    reply = await services.commands.handle_text(member, f"/member merge #{ids['alice']} #{ids['bob']}")
    assert reply is not None and reply.text == "Sorry, only moderators can do that here."
    merges = f"/api/communities/{a}/member-merges"
    pair = {"first": ids["alice"], "second": ids["bob"]}
    error(await api.post(merges, json=pair, headers=as_(OTHER_KEY)), 403, "FORBIDDEN")
    async with serve(services) as base, httpx.AsyncClient(base_url=base) as http:
        scoped = await mcp_rpc(http, "tools/call", {"name": "merge_members", "arguments": {
            "community_id": a, "first": ids["carol"], "second": ids["dave"]}}, A_KEY)
        assert scoped.status_code == 403 and scoped.json()["error"]["code"] == "FORBIDDEN"
    # bad input: the documented error, nothing changes
    error(await api.post(merges, json={"first": ids["alice"], "second": ids["alice"]}, headers=as_(A_KEY)),
          400, "VALIDATION_ERROR", "member")
    error(await api.post(merges, json={"first": 999_999, "second": ids["bob"]}, headers=as_(A_KEY)),
          400, "VALIDATION_ERROR", "first")
    error(await api.post(merges, json={"first": ids["alice"]}, headers=as_(A_KEY)), 400, "VALIDATION_ERROR", "second")
    error(await api.post(merges, json={"first": ids["alice"], "second": ids["carol"]}, headers=as_(A_KEY)),
          403, "FORBIDDEN")  # they never asked to be linked
    await unchanged()

    merged = await api.post(merges, json=pair, headers=as_(A_KEY))
    assert merged.status_code == 200, merged.text
    assert merged.json() == {"communityId": a, "memberId": ids["alice"], "mergedMemberId": ids["bob"],
                             "platforms": ["telegram", "discord"]}
    async with serve(services) as base, http_session(f"{base}/mcp/", key=ADMIN) as s:
        by_mcp = await ok(s, "merge_members", community_id=a, first=ids["dave"], second=ids["carol"])
        assert by_mcp == {"communityId": a, "memberId": ids["carol"], "mergedMemberId": ids["dave"],
                          "platforms": ["telegram", "discord"]}
        assert (await ok(s, "get_member_accounts", member_id=ids["carol"], community_id=a))["platforms"] == \
            ["telegram", "discord"]
        assert "no member" in (await refused(s, "get_member_accounts", member_id=ids["dave"])).content[0].text  # type: ignore[union-attr]

    # every point kept: the same ledger rows, moved to the kept members; every board equals the ledger
    after = await ledger_rows(services, a)
    assert [(r.id, r.points) for r in after] == [(r.id, r.points) for r in before]
    assert sum(r.points for r in after) == total
    assert {r.member_id for r in after} == {ids["alice"], ids["carol"]}
    for keep, gone in (("alice", "bob"), ("carol", "dave")):
        assert sum(r.points for r in after if r.member_id == ids[keep]) == held[ids[keep]] + held[ids[gone]]
    await assert_boards_equal_ledger(services, [a], clock.now())
    # audited as the chat command audits it; an API key names no member, as for its bans
    entries = list(await services.db.read(lambda s: s.scalars(select(AuditEntry).where(
        AuditEntry.community_id == a, AuditEntry.action == "member_merge").order_by(AuditEntry.id))))
    assert [(e.target_member_id, e.actor_member_id, e.data["kept"], e.data["merged"], e.data["approvedIn"])
            for e in entries] == [(ids["alice"], None, ids["alice"], ids["bob"], a),
                                  (ids["carol"], None, ids["carol"], ids["dave"], a)]
    assert all(e.data["platforms"] == ["telegram", "discord"] and e.data["sharedCommunities"] == [a]
               for e in entries)

    accounts = await api.get(f"/api/communities/{a}/members/{ids['alice']}/accounts", headers=as_(A_KEY))
    assert accounts.json() == {"communityId": a, "memberId": ids["alice"], "name": "alice",
                               "platforms": ["telegram", "discord"]}
    error(await api.get(f"/api/communities/{a}/members/{ids['bob']}/accounts", headers=as_(A_KEY)), 404, "NOT_FOUND")
    error(await api.get(f"/api/communities/{a}/members/{ids['alice']}/accounts", headers=as_(OTHER_KEY)),
          403, "FORBIDDEN")
    board = (await api.get(f"/api/communities/{a}/leaderboard", headers=as_(A_KEY))).json()["entries"]
    assert sorted(e["memberId"] for e in board) == sorted([ids["alice"], ids["carol"]])


# -- a community's own key under row-level security ---------------------------------------------------


@pytest.fixture
async def rls_services(request: pytest.FixtureRequest) -> AsyncIterator[Services]:
    from core.config import Settings
    from core.events import EventBus
    from core.storage.db import Database
    from tests.test_rls import _database

    _owner, app_url = await _database(request)
    settings = Settings(http={"api_keys": [{"key": A_KEY, "community": "telegram:-100201"}]})
    svc = Services(Database(app_url, row_level_security=True), FakeClock(), settings, EventBus())
    try:
        yield svc
    finally:
        await svc.db.dispose()


async def test_a_community_key_links_raids_and_merges_under_row_level_security(rls_services: Services) -> None:
    """The partner is another community, whose rows the key's row scope hides: linking, a raid's partner
    chats and a merge still work for the community's own key, as they do for its moderators in chat."""
    svc = rls_services
    a, _b = await communities(svc, A, B)
    code = (await svc.partners.issue(B)).code
    transport = httpx.ASGITransport(app=create_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=as_(A_KEY)) as api:
        linked = await api.post(f"/api/communities/{a}/chat-links", json={"code": code})
        assert linked.status_code == 201, linked.text
        partner = {"platform": "telegram", "id": B.external_id, "title": B.title, "channel": None}
        assert linked.json()["partner"] == partner
        assert [x["partner"] for x in (await api.get(f"/api/communities/{a}/chat-links")).json()["links"]] == [partner]
        started = await api.post("/api/raids", json={"community": CHAT_A, "targetUrl": URL, "partners": True})
        assert started.status_code == 201, started.text
        assert started.json()["partnerChats"] == [{**partner, "posted": False}]
        assert [c.chat.external_id for c in await svc.partners.raid_chats(started.json()["id"])] == [B.external_id]

        first, second = MemberRef("telegram", "501", "alice"), MemberRef("discord", "601", "bob")
        raid_id = started.json()["id"]
        for who in (first, second):
            await svc.raids.join(raid_id, who)
            await svc.raids.claim(raid_id, who, "like")
        await refused_pair(svc, first, second)
        total = sum(r.points for r in await ledger_rows(svc, a))
        ids = [(await svc.raids.join(raid_id, who)).member_id for who in (first, second)]
        merged = await api.post(f"/api/communities/{a}/member-merges", json={"first": ids[0], "second": ids[1]})
        assert merged.status_code == 200, merged.text
        assert merged.json()["platforms"] == ["telegram", "discord"]
        assert sum(r.points for r in await ledger_rows(svc, a)) == total
        unlinked = await api.delete(f"/api/communities/{a}/chat-links/{linked.json()['id']}")
        assert unlinked.status_code == 204, unlinked.text
        assert await svc.partners.chats(B) == []
