"""Milestone badges: set from chat, validated, earned exactly once (even when claims race), announced
once through the outbox, shown on /me and the boards, and kept when points drop again.

Real services on SQLite and PostgreSQL; the Telegram parts drive python-telegram-bot against the fake
Bot API. Discord (roles) is in tests/test_badges_discord.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from adapters.http.app import create_app
from adapters.telegram import TelegramAdapter
from core.directory import ChatRef, MemberRef
from core.errors import ValidationError
from core.events import BadgeEarned
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import MemberBadge
from core.storage.outbox_models import ChatPost
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.ledger_check import assert_boards_equal_ledger
from tests.test_targets import member_of, say
from tests.test_telegram_adapter import ORIGINAL, config_for, running

GROUP = -100777
MOD, RAIDER, OTHER = 7, 301, 302
URL = "https://x.com/nubi/status/4242"
CHAT = ChatRef("telegram", str(GROUP), "Badge Group")


async def badge_rows(services: Services) -> list[tuple[int, int, str]]:
    async def op(s):  # type: ignore[no-untyped-def]
        rows = await s.execute(select(MemberBadge.member_id, MemberBadge.threshold, MemberBadge.name)
                               .order_by(MemberBadge.member_id, MemberBadge.threshold))
        return [tuple(r) for r in rows.all()]

    return await services.db.read(op)


async def owed_posts(services: Services, kind: str) -> list[str]:
    async def op(s):  # type: ignore[no-untyped-def]
        return list((await s.scalars(select(ChatPost.key).where(ChatPost.kind == kind).order_by(ChatPost.id))).all())

    return await services.db.read(op)


async def sweep(services: Services) -> None:
    """What the scheduler's sweep does: republish every owed outbox row."""
    for due in await services.outbox.due():
        await services.bus.publish(due)


# -- core -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, says", [
    ("100", "'100' has no ':'"),
    ("0:Zero", "whole number from 1 to"),
    ("-5:Minus", "whole number from 1 to"),
    ("ten:Raider", "whole number from 1 to"),
    ("100:", "has no badge name"),
    ("100:Raider, 100:Again", "100 points named twice"),
    ("100:Raider, 200:raider", "'Raider' is used twice"),
    ("100:" + "x" * 40, "longer than 32 characters"),
    ("100:Raider role=", "role= names no role"),
    (",,", "no milestone given"),
    (", ".join(f"{i}:B{i}" for i in range(1, 22)), "at most 20 milestones"),
])
async def test_bad_milestones_are_refused_and_change_nothing(services: Services, value: str, says: str) -> None:
    cid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}))).community_id
    await services.community_settings.change(cid, {"badges": "50:Keep"}, actor=None)
    with pytest.raises(ValidationError) as refused:
        await services.community_settings.change(cid, {"badges": value}, actor=None)
    assert says in refused.value.message and refused.value.field == "badges"
    assert "Write them as <points>:<name>" in refused.value.message
    assert (await services.community_settings.show(cid))["settings"] == {"badges": "50:Keep"}


async def test_two_claims_racing_over_a_milestone_award_it_once(services: Services) -> None:
    """Either claim alone crosses the milestone; they commit in some order, the badge is written once."""
    raid = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5, "repost": 5, "reply": 5}))
    members = [MemberRef("telegram", str(500 + i), f"racer{i}") for i in range(4)]
    joined = [await services.raids.join(raid.id, m) for m in members]
    for j in joined:
        assert j.bonus  # the early-bird bonus: every member starts above zero, below the milestone
    top = max(j.bonus for j in joined)
    await services.community_settings.change(raid.community_id, {"badges": f"{top + 1}:Racer, 10000:Legend"},
                                             actor=None)
    await asyncio.gather(*(services.raids.claim(raid.id, m, a) for m in members for a in ("like", "repost", "reply")))
    rows = await badge_rows(services)
    assert sorted(t for _m, t, _n in rows) == [top + 1] * len(members)
    assert len({m for m, _t, _n in rows}) == len(members)
    assert len(await owed_posts(services, "badge")) == len(members)  # one announcement each
    assert await owed_posts(services, "badge_role") == []  # Telegram has no roles
    await assert_boards_equal_ledger(services, [raid.community_id], services.clock.now())


async def test_a_badge_stays_when_points_drop_and_is_not_announced_again(services: Services) -> None:
    raid = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}))
    cid = raid.community_id
    await services.community_settings.change(cid, {"badges": "20:Twenty"}, actor=None)
    await services.raids.join(raid.id, MemberRef("telegram", "900", "nine"))
    member_id = await member_of(services, 900)
    await services.moderation.adjust_points(cid, member_id, 30, "welcome", actor=None)
    assert [(t, n) for _m, t, n in await badge_rows(services)] == [(20, "Twenty")]
    await services.moderation.adjust_points(cid, member_id, -25, "oops", actor=None)  # below the milestone
    assert await services.badges.of_member(cid, member_id) == ["Twenty"]  # kept
    await services.moderation.adjust_points(cid, member_id, 25, "back", actor=None)  # crossed again
    assert len(await badge_rows(services)) == 1
    assert len(await owed_posts(services, "badge")) == 1  # announced once, ever
    # a milestone renamed later: the badge keeps the name it was earned with
    await services.community_settings.change(cid, {"badges": "20:Renamed"}, actor=None)
    await services.moderation.adjust_points(cid, member_id, 1, "more", actor=None)
    assert await services.badges.of_member(cid, member_id) == ["Twenty"]


async def test_telegram_has_no_roles_and_web_communities_neither(services: Services) -> None:
    cid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}))).community_id
    with pytest.raises(ValidationError) as refused:
        await services.community_settings.change(cid, {"badges": "10:Ten role=@Tens"}, actor=None)
    assert refused.value.message == "badges: Telegram has no roles to grant; remove role= from the milestones."
    assert (await services.community_settings.show(cid))["settings"] == {}


async def test_every_way_to_earn_a_badge_publishes_it_once_for_live_views(services: Services) -> None:
    """A join bonus, a claim, a moderator's accept and a points change each publish BadgeEarned after their
    commit (the dashboard's live feed); crossing a milestone again publishes nothing."""
    raid = await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}, verification="review"))
    cid = raid.community_id
    await services.community_settings.change(cid, {"badges": "5:Joiner, 8:Claimer, 500:Big"}, actor=None)
    first, second = MemberRef("telegram", "950", "first"), MemberRef("telegram", "951", "second")
    await services.raids.join(raid.id, first)  # +5 early bird: Joiner
    pending = await services.raids.claim(raid.id, first, "like")
    assert pending.verification == "pending" and pending.points == 0
    assert [e.threshold for e in services.recorder.of(BadgeEarned)] == [5]
    await services.raids.review(pending.claim_id, True)  # accepted: Claimer
    await services.raids.join(raid.id, second)  # Joiner for the second member
    member_id = await member_of(services, 950)
    await services.moderation.adjust_points(cid, member_id, 500, "prize", actor=None)  # Big
    await services.moderation.adjust_points(cid, member_id, -500, "oops", actor=None)
    await services.moderation.adjust_points(cid, member_id, 500, "again", actor=None)  # crossed again: kept, quiet
    second_id = await member_of(services, 951)
    published = [(e.community_id, e.member_id, e.threshold, e.name, e.raid_id)
                 for e in services.recorder.of(BadgeEarned)]
    assert published == [(cid, member_id, 5, "Joiner", raid.id), (cid, member_id, 8, "Claimer", raid.id),
                         (cid, second_id, 5, "Joiner", raid.id), (cid, member_id, 500, "Big", None)]
    assert sorted((m, t) for m, t, _n in await badge_rows(services)) == sorted((m, t) for _c, m, t, _n, _r in published)


# -- Telegram, end to end ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as server:
        server.add_chat(GROUP, title="Badge Group", permissions=ORIGINAL)
        server.set_member(GROUP, MOD, "administrator", first_name="Mod")
        yield server


@pytest.fixture
async def adapter(services: Services, fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    async with running(services, config_for(fake)) as started:
        yield started


def badge_posts(fake: FakeTelegramAPI) -> list[str]:
    return [c.params["text"] for c in fake.calls_for("sendMessage", GROUP) if "badge!" in str(c.params.get("text"))]


async def badges_posted(fake: FakeTelegramAPI, n: int) -> None:
    """Wait (a little) for the adapter's background sends of `n` badge announcements."""
    for _ in range(100):
        if len(badge_posts(fake)) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(badge_posts(fake))} badge announcements, not {n}")


async def test_telegram_badges_from_settings_to_announcement_me_and_board(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    refused = await say(fake, GROUP, MOD, '/settings set badges "10:Ten role=@Tens"')
    assert refused.text == "badges: Telegram has no roles to grant; remove role= from the milestones."
    refused = await say(fake, GROUP, MOD, "/settings set badges 10:Ten, 10:Again")
    assert refused.text.startswith("badges: 10 points named twice. Write them as <points>:<name>")
    member_try = await say(fake, GROUP, RAIDER, "/settings set badges 1:Me", username="raider")
    assert member_try.text == "Sorry, only moderators can do that here."

    done = await say(fake, GROUP, MOD, '/settings set badges "8:Rookie, 12:Striker, 1000:Legend"')
    assert done.text == "badges is now 8:Rookie, 12:Striker, 1000:Legend here."
    assert "badges = 8:Rookie, 12:Striker, 1000:Legend (set here)" in (await say(fake, GROUP, MOD, "/settings")).text

    await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 reposts=5")
    await say(fake, GROUP, RAIDER, "/join", username="raider")  # +5 early bird
    await say(fake, GROUP, RAIDER, "/claim like", username="raider")
    await say(fake, GROUP, RAIDER, "/claim repost", username="raider")
    member_id = await member_of(services, RAIDER)
    cid = (await services.raids.progress(1)).community_id
    assert (await services.boards.rank(cid, member_id))[1] >= 12

    await sweep(services)
    await badges_posted(fake, 2)
    await sweep(services)  # sent: nothing owed any more
    await asyncio.sleep(0.3)
    assert sorted(badge_posts(fake)) == [
        "🏅 Raider reached 12 points and earned the Striker badge!",
        "🏅 Raider reached 8 points and earned the Rookie badge!",
    ]
    assert await services.outbox.due() == []

    me = await say(fake, GROUP, RAIDER, "/me", username="raider")
    assert "Badges: 🏅 Rookie, 🏅 Striker" in me.text
    board = await say(fake, GROUP, RAIDER, "/leaderboard all", username="raider")
    assert "Raider 🏅 Striker — " in board.text
    raid_board = await say(fake, GROUP, RAIDER, "/leaderboard raid", username="raider")
    assert "Raider 🏅 Striker — " in raid_board.text

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(services)),
                                 base_url="http://localhost") as client:
        rest = (await client.get(f"/api/communities/{cid}/leaderboard", params={"window": "all"})).json()
    assert [(e["name"], e["badge"]) for e in rest["entries"]] == [("Raider", "Striker")]

    # a moderator takes points away: the badge stays, and earning them back announces nothing
    await services.moderation.adjust_points(cid, member_id, -10, "audit", actor=None)
    assert "Badges: 🏅 Rookie, 🏅 Striker" in (await say(fake, GROUP, RAIDER, "/me", username="raider")).text
    await services.moderation.adjust_points(cid, member_id, 10, "restored", actor=None)
    await sweep(services)
    await asyncio.sleep(0.3)
    assert len(badge_posts(fake)) == 2


async def test_rest_sets_badges_as_text_and_refuses_bad_ones(services: Services) -> None:
    cid = (await services.raids.start(CHAT, RaidSpec(URL, {"like": 5}))).community_id
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(services)),
                                 base_url="http://localhost") as client:
        path = f"/api/communities/{cid}/settings"
        bad = await client.patch(path, json={"settings": {"badges": "0:Nothing"}})
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "badges"
        bad = await client.patch(path, json={"settings": {"badges": ["100:Raider"]}})
        assert bad.status_code == 400 and "give the milestones as text" in bad.json()["error"]["message"]
        ok = await client.patch(path, json={"settings": {"badges": "500:Veteran,100:Raider"}})
        assert ok.status_code == 200
        assert ok.json()["settings"] == {"badges": "100:Raider, 500:Veteran"}
        assert ok.json()["effective"]["badges"] == "100:Raider, 500:Veteran"
        gone = await client.patch(path, json={"settings": {"badges": "none"}})
        assert gone.json()["settings"] == {} and gone.json()["effective"]["badges"] == "none"
