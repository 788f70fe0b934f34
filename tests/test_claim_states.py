"""Issue 12 (C) through the Telegram adapter: honest claim states, claims that settle, final reports.

The real PTB Application against the fake Bot API, the real services on SQLite and PostgreSQL, and
for the x_api tier the real XClient against the fake X API (its clock follows the services' clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.scheduler import NubiScheduler
from core.clock import FakeClock
from core.config import Settings, XConfig
from core.directory import MemberRef
from core.services import Services
from core.storage.models import Member, Raid, RaidAction
from core.storage.outbox_models import ChatPost
from core.storage.verification_models import ClaimCheck, XLink
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeMessage, FakeTelegramAPI, make_command_update
from tests.fakes.x_api import FakeXAPI
from tests.test_telegram_adapter import GROUP, MOD, ORIGINAL, ShiftedClock, calls, config_for, running, say

URL = "https://x.com/nubi/status/42"
TOKEN = "x-token"
ALICE, BOB = 101, 102


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(clock=ShiftedClock(), max_poll_wait=0.2) as server:
        server.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        server.set_member(GROUP, MOD, "administrator", first_name="Mod")
        for user, name in ((ALICE, "alice"), (BOB, "bob")):
            server.set_member(GROUP, user, "member", first_name=name)
        yield server


@pytest.fixture
async def x(clock: FakeClock) -> AsyncIterator[FakeXAPI]:
    async with FakeXAPI(TOKEN, now=clock.now().timestamp()) as server:
        for name in ("nubi", "alice", "bob"):
            server.add_user(name)
        yield server


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """No X token unless the test asks for the fake X API (`x` fixture)."""
    if "x" not in request.fixturenames:
        return Settings()
    server: FakeXAPI = request.getfixturevalue("x")
    return Settings(x=XConfig(bearer_token=TOKEN, base_url=server.base_url, sweep_interval_seconds=60))


def tick(clock: FakeClock, x: FakeXAPI | None = None, **delta: float) -> None:
    clock.advance(**delta)
    if x is not None:
        x.now = clock.now().timestamp()


async def quiet(fake: FakeTelegramAPI, user: int, text: str) -> None:
    """A command whose answer is a post the events draw (e.g. /raid start): wait for that post."""
    before = len(fake.calls_for("sendMessage", GROUP))
    fake.push_update(make_command_update(GROUP, user, text))
    await calls(fake, "sendMessage", before + 1, GROUP)


async def report_message(fake: FakeTelegramAPI, raid_id: int) -> FakeMessage:
    for _ in range(200):
        for m in fake.sent_messages(GROUP):
            if m.text.startswith(f"Raid #{raid_id} report"):
                return fake.message(GROUP, m.message_id)
        await asyncio.sleep(0.05)
    raise AssertionError("no report was posted")


async def states(services: Services, raid_id: int) -> dict[str, str]:
    async def op(s: Any) -> dict[str, str]:
        rows = (await s.execute(select(RaidAction.action_type, RaidAction.verification)
                                .where(RaidAction.raid_id == raid_id))).all()
        return {a: v for a, v in rows}

    return await services.db.read(op)


async def raid_id_of(services: Services) -> int:
    return await services.db.read(lambda s: s.scalar(select(Raid.id).order_by(Raid.id.desc()).limit(1)))


async def prove(services: Services, user: int, handle: str) -> None:
    """A member whose X handle is linked and proven (what /link verify would have stored)."""
    member_id, h = await services.links.link(MemberRef("telegram", str(user), handle, handle), handle)

    async def op(s: Any) -> None:
        await s.execute(update(Member).where(Member.id == member_id).values(x_handle_verified=True))
        s.add(XLink(member_id=member_id, handle=h))

    await services.db.write(op)


# -- claim states ---------------------------------------------------------------------------------


async def test_a_moderator_accepting_a_like_is_accepted_not_verified(services: Services, fake: FakeTelegramAPI) -> None:
    async with running(services, config_for(fake)) as adapter:
        await quiet(fake, MOD, f"/raid start {URL} likes=5 reposts=5 duration=10m verify=review")
        raid = await raid_id_of(services)
        await say(fake, GROUP, ALICE, "/join")
        claimed = await say(fake, GROUP, ALICE, "/claim like")
        assert "waiting for verification" in claimed.text
        (item,) = await services.raids.review_queue(raid_id=raid)

        answer = await say(fake, GROUP, MOD, f"/review accept {item.claim_id}")
        assert "accepted" in answer.text
        assert await states(services, raid) == {"like": "accepted"}
        again = await say(fake, GROUP, MOD, f"/review accept {item.claim_id}")
        assert "already settled (accepted by a moderator)" in again.text
        me = await say(fake, GROUP, ALICE, "/me")
        assert "claims: 1 accepted by a moderator" in me.text and "verified" not in me.text

        await say(fake, GROUP, MOD, "/raid end")
        report = await report_message(fake, raid)
        await adapter.drain()
        assert "1 accepted by a moderator" in report.text and "verified" not in report.text
        stored = await services.raids.report(raid)
        assert stored is not None and stored["claimsByState"]["accepted"] == 1
        assert stored["claimsByState"]["verified"] == 0


async def test_claims_nothing_can_check_settle_at_once(services: Services, fake: FakeTelegramAPI) -> None:
    """proof_link checks replies and quotes by their link: a repost claim has no link to check."""
    async with running(services, config_for(fake)):
        await quiet(fake, MOD, f"/raid start {URL} reposts=5 replies=5 duration=10m verify=proof_link")
        raid = await raid_id_of(services)
        await say(fake, GROUP, ALICE, "/join")

        claimed = await say(fake, GROUP, ALICE, "/claim repost")

        assert claimed.text.startswith("Repost claimed: +")  # counted now, never a pending that waits forever
        assert await states(services, raid) == {"repost": "unverifiable"}
        assert await services.raids.review_queue(raid_id=raid) == []


async def test_an_x_api_raid_without_a_token_is_refused(services: Services, fake: FakeTelegramAPI) -> None:
    async with running(services, config_for(fake)):
        answer = await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 verify=x_api")

    assert "NUBI_X_BEARER_TOKEN" in answer.text and "[x]" in answer.text
    assert "Traceback" not in answer.text
    assert await raid_id_of(services) is None  # nothing was written


async def test_pending_claims_become_unverifiable_when_the_window_closes(
    services: Services, fake: FakeTelegramAPI, clock: FakeClock
) -> None:
    async with running(services, config_for(fake)) as adapter:
        await quiet(fake, MOD, f"/raid start {URL} likes=5 reposts=5 duration=10m verify=review")
        raid = await raid_id_of(services)
        await say(fake, GROUP, ALICE, "/join")
        await say(fake, GROUP, ALICE, "/claim repost")
        await say(fake, GROUP, MOD, "/raid end")
        report = await report_message(fake, raid)
        assert "1 pending review" in report.text and "Not final yet" in report.text

        sweep = NubiScheduler(services)
        tick(clock, hours=23)
        assert (await sweep.reconcile()).get("claims_unsettled", 0) == 0  # the window is still open
        tick(clock, hours=2)
        assert (await sweep.reconcile())["claims_unsettled"] == 1
        assert (await sweep.reconcile()).get("claims_unsettled", 0) == 0  # once
        await adapter.drain()

        assert await states(services, raid) == {"repost": "unverifiable"}
        check = await services.db.read(lambda s: s.scalar(select(ClaimCheck).where(ClaimCheck.raid_id == raid)))
        assert (check.outcome, check.reason) == ("unverifiable", "window_closed") and "24 h" in check.detail
        edited = fake.message(GROUP, report.message_id)  # the same message, edited in place
        assert "1 not settled in time (no points)" in edited.text and "Not final yet" not in edited.text
        assert sum(1 for m in fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")) == 1
        stored = await services.raids.report(raid)
        assert stored is not None and stored["final"] and stored["unsettledAtClose"] == 1


# -- the X sweep and the final report ------------------------------------------------------------------


async def test_first_sweep_verifies_and_the_report_posted_at_raid_end_is_made_final(
    services: Services, fake: FakeTelegramAPI, x: FakeXAPI, clock: FakeClock
) -> None:
    from adapters.x.verifier import run_due

    target = x.add_tweet("nubi", "raid me", created_at=clock.now() - timedelta(hours=1))
    await prove(services, ALICE, "alice")
    await prove(services, BOB, "bob")
    async with running(services, config_for(fake)) as adapter:
        await quiet(fake, MOD, f"/raid start https://x.com/nubi/status/{target} likes=5 reposts=5 duration=10m "
                               "verify=x_api")
        raid = await raid_id_of(services)
        for user in (ALICE, BOB):
            await say(fake, GROUP, user, "/join")
            await say(fake, GROUP, user, "/claim repost")
        x.add_tweet("alice", retweet_of=target)
        tick(clock, x, seconds=1)

        (first,) = await run_due(services)  # one second after the start: X must not answer 400

        assert (first.final, first.deferred, first.verified) == (False, None, 1)
        searches = [r for r in x.requests_to("/2/tweets/search/recent")]
        assert searches and all("start_time" in r.query for r in searches)
        x.add_tweet("bob", retweet_of=target)  # after the first sweep, before the end
        tick(clock, x, seconds=11)
        await say(fake, GROUP, MOD, "/raid end")  # 12 s in
        report = await report_message(fake, raid)
        assert "Ended: ended by a moderator" in report.text and "time ran out" not in report.text
        assert "1 pending review" in report.text and "Not final yet" in report.text

        tick(clock, x, seconds=30)
        (final,) = await run_due(services)
        await adapter.drain()

        assert (final.final, final.deferred, final.verified) == (True, None, 1)
        edited = fake.message(GROUP, report.message_id)
        assert "2 verified on X" in edited.text and "pending" not in edited.text and "Not final" not in edited.text
        assert "Ended: ended by a moderator" in edited.text
        stored = await services.raids.report(raid)
        assert stored is not None and (stored["endCause"], stored["final"]) == ("ended_by_moderator", True)


# -- the outbox ----------------------------------------------------------------------------------------


async def test_a_raid_post_telegram_refused_is_sent_later_exactly_once(
    services: Services, fake: FakeTelegramAPI, clock: FakeClock
) -> None:
    """Today's loss: the post was marked posted before it was sent. Now it stays owed until sent."""
    async with running(services, config_for(fake)) as adapter:
        fake.fail_next("sendMessage", 400, "Bad Request: not enough rights to send text messages to the chat")
        fake.push_update(make_command_update(GROUP, MOD, f"/raid start {URL} likes=5 duration=10m"))
        await calls(fake, "sendMessage", 1, GROUP)
        await adapter.drain()
        raid = await raid_id_of(services)
        assert fake.sent_messages(GROUP) == []
        row = await services.db.read(lambda s: s.scalar(select(ChatPost).where(ChatPost.key == f"raid:{raid}")))
        assert row.sent_at is None and row.attempts == 1 and "not enough rights" in row.last_error.lower()

        sweep = NubiScheduler(services)
        await sweep.republish_unposted()  # not due yet: it waits a moment after a failure
        await adapter.drain()
        assert fake.sent_messages(GROUP) == []
        tick(clock, seconds=6)
        await sweep.republish_unposted()
        await adapter.drain()
        await sweep.republish_unposted()
        await adapter.drain()

        posts = [m for m in fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} — live")]
        assert len(posts) == 1
        progress = await services.raids.progress(raid)
        assert progress.progress_ref == {"chat_id": GROUP, "message_id": posts[0].message_id}


async def test_moderators_see_refused_handle_links_of_their_community(
    services: Services, fake: FakeTelegramAPI
) -> None:
    from core.errors import Conflict

    async with running(services, config_for(fake)):
        await quiet(fake, MOD, f"/raid start {URL} likes=5 duration=10m")
        for user, name in ((ALICE, "alice"), (BOB, "bob")):  # members of this community: they raided here
            await say(fake, GROUP, user, "/join", first_name=name)
        await say(fake, GROUP, ALICE, "/link alice", first_name="alice")
        taken = await say(fake, GROUP, BOB, "/link alice", first_name="bob")
        assert "alice" in taken.text.lower()
        with pytest.raises(Conflict):  # someone elsewhere, in no community of this chat
            await services.links.link(MemberRef("discord", "999", "mallory"), "alice")

        listed = await say(fake, GROUP, MOD, "/review links")
        refused = await say(fake, GROUP, BOB, "/review links")

    assert "@alice: asked for by bob" in listed.text and "held by alice" in listed.text
    assert "mallory" not in listed.text  # another community's refusal
    assert "@alice" not in refused.text  # members are not moderators
