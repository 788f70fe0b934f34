"""Revoke, reachable from every channel: the text command (Telegram through its fake Bot API, and the
command layer every text channel shares) and REST. Moderators only, in their own community, audited."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from adapters.http.app import create_app
from adapters.telegram.adapter import TelegramAdapter
from core.commands.service import ChatContext
from core.config import ApiKey, TelegramConfig
from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import RaidAction
from tests.fakes.telegram_api import FakeMessage, FakeTelegramAPI, make_command_update
from tests.ledger_check import assert_boards_equal_ledger

URL = "https://x.com/nubi/status/42"
GROUP, OTHER_GROUP, MOD, ANN = -100123, -100999, 7, 42


async def claim_ids(services: Services) -> list[int]:
    return list(await services.db.read(lambda s: s.scalars(select(RaidAction.id).order_by(RaidAction.id))))


# -- the command layer: what every text channel (Telegram, Sessions API messages, console) runs ---------


async def test_review_revoke_through_the_command_layer(services: Services) -> None:
    chat = ChatRef("web", "agent-1", "Sessions")
    mod = ChatContext(chat, MemberRef("web", "mod", "Mo", "mo"), is_moderator=True)
    ann = ChatContext(chat, MemberRef("web", "ann", "Ann", "ann"))
    other = ChatContext(ChatRef("web", "agent-2", "Elsewhere"), MemberRef("web", "mod2", "Mo2"), is_moderator=True)

    async def say(ctx: ChatContext, text: str) -> str:
        reply = await services.commands.handle_text(ctx, text)
        assert reply is not None
        return reply.text

    await say(mod, f"/raid start {URL} likes=5")
    await say(ann, "/join")
    assert "Like claimed: +" in await say(ann, "/claim like")
    [claim_id] = await claim_ids(services)
    before = await say(ann, "/me")
    assert "only moderators" in (await say(ann, f"/review revoke {claim_id}")).lower()
    assert "Revoke which claim?" in await say(mod, "/review revoke")
    assert "whole number" in await say(mod, "/review revoke many")
    assert f"no claim #{claim_id} here" in await say(other, f"/review revoke {claim_id}")
    assert await claim_ids(services) == [claim_id] and await say(ann, "/me") == before  # nothing changed

    # The only claim of a one-objective raid: its points, speed bonus and completion bonus go.
    reply = await say(mod, f"/review revoke #{claim_id} no like on the post")
    assert reply == f"Claim #{claim_id} revoked: -{1 + 3 + 10} points (no like on the post)."
    after = await say(ann, "/me")
    assert re.search(r"5 pts all time", after), after  # the early-joiner bonus stays
    assert "no accepted points" in await say(mod, f"/review revoke {claim_id}")
    community_id = (await services.raids.list())[0].community_id
    entry = (await services.moderation.audit_log(community_id))[0]
    assert (entry["action"], entry["amount"], entry["reason"]) == ("claim_revoke", -14, "no like on the post")
    assert entry["actorMemberId"] is not None
    await assert_boards_equal_ledger(services, [community_id], services.clock.now())


# -- Telegram, through the real python-telegram-bot against the fake Bot API ---------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as server:
        for chat in (GROUP, OTHER_GROUP):
            server.add_chat(chat, title=f"Group {chat}")
            server.set_member(chat, MOD, "administrator", first_name="Mod")
        yield server


@pytest.fixture
async def telegram(services: Services, fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(services, TelegramConfig(token=fake.token, api_base_url=fake.base_url))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def say(fake: FakeTelegramAPI, chat_id: int, user: int, text: str, **kw: Any) -> FakeMessage:
    before = len(fake.calls_for("sendMessage", chat_id))
    fake.push_update(make_command_update(chat_id, user, text, **kw))
    sent = (await fake.wait_for_calls("sendMessage", chat_id=chat_id, count=before + 1))[before]
    assert sent.ok, sent.description
    return fake.message(chat_id, sent.result["message_id"])


async def test_review_revoke_in_a_telegram_group(
    services: Services, fake: FakeTelegramAPI, telegram: TelegramAdapter
) -> None:
    progress = await services.raids.start(ChatRef("telegram", str(GROUP), "Group"), RaidSpec(URL, {"like": 5, "repost": 5}))
    # The raid post goes out on its own; `say` takes the next message in the group as the answer.
    await fake.wait_for_calls("sendMessage", chat_id=GROUP, count=1)
    ann = MemberRef("telegram", str(ANN), "Ann", "ann")
    joined = await services.raids.join(progress.id, ann)
    like = await services.raids.claim(progress.id, ann, "like")
    await services.raids.claim(progress.id, ann, "repost")
    [like_id, _] = await claim_ids(services)

    refused = await say(fake, GROUP, ANN, f"/review revoke {like_id}", first_name="Ann")
    assert refused.text == "Sorry, only moderators can do that here."
    elsewhere = await say(fake, OTHER_GROUP, MOD, f"/review revoke {like_id}")
    assert f"no claim #{like_id} here" in elsewhere.text
    assert (await services.boards.rank(progress.community_id, joined.member_id, "all"))[1] > joined.bonus + like.points

    done = await say(fake, GROUP, MOD, f"/review revoke {like_id} fake like")
    # The like and, since the set is no longer complete, the completion bonus the repost unlocked.
    assert done.text == f"Claim #{like_id} revoked: -{like.points + 10} points (fake like)."
    repost_points = (await services.raids.progress(progress.id)).points_awarded - joined.bonus
    assert await services.boards.rank(progress.community_id, joined.member_id, "all") == (
        1, joined.bonus + repost_points)
    await assert_boards_equal_ledger(services, [progress.community_id], services.clock.now())


# -- REST -----------------------------------------------------------------------------------------------


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    services.settings.http.api_keys = [ApiKey(key="admin-key"), ApiKey(key="scoped-key", community="telegram:-1")]
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost",
                                 headers={"X-API-KEY": "admin-key"}) as c:
        yield c


async def test_revoke_over_rest(services: Services, client: httpx.AsyncClient) -> None:
    body = {"community": {"platform": "telegram", "id": "-100123"}, "targetUrl": URL, "objectives": {"like": 5}}
    raid = (await client.post("/api/raids", json=body)).json()
    who = {"platform": "web", "id": "ann", "name": "Ann"}
    joined = (await client.post(f"/api/raids/{raid['id']}/join", json={"member": who})).json()
    claim = (await client.post(f"/api/raids/{raid['id']}/claims", json={"member": who, "action": "like"})).json()
    earned = claim["points"] + claim["completionBonus"]

    def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
        return r.json()["error"]

    path = f"/api/claims/{claim['claimId']}/revoke"
    error(await client.post(path, json={"reason": "x"}, headers={"X-API-KEY": "scoped-key"}), 403, "FORBIDDEN")
    error(await client.post("/api/claims/99999/revoke"), 404, "NOT_FOUND")
    error(await client.post(path, json={"reason": "x" * 501}), 400, "VALIDATION_ERROR")
    error(await client.post(path, json={"reason": "x", "extra": 1}), 400, "VALIDATION_ERROR")
    board = f"/api/communities/{raid['communityId']}/leaderboard"
    assert (await client.get(board)).json()["entries"][0]["points"] == joined["bonus"] + earned  # unchanged

    r = await client.post(path, json={"reason": "no like found"})
    assert r.status_code == 200, r.text
    assert r.json() == {"claimId": claim["claimId"], "verification": "rejected", "pointsRevoked": earned}
    assert (await client.get(board)).json()["entries"][0]["points"] == joined["bonus"]
    assert (await client.get(f"/api/raids/{raid['id']}")).json()["actions"] == 0
    error(await client.post(path), 409, "CONFLICT")
    audit = (await client.get(f"/api/communities/{raid['communityId']}/audit")).json()["entries"][0]
    assert (audit["action"], audit["amount"], audit["reason"]) == ("claim_revoke", -earned, "no like found")
    await assert_boards_equal_ledger(services, [raid["communityId"]], services.clock.now())
