"""Linking X handles: proof with a one-time code through the fake X API, and one handle per member.

Runs on SQLite and PostgreSQL through the command layer, as a member would use it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from adapters.x.verifier import install
from core.clock import FakeClock
from core.commands.service import ChatContext
from core.config import Settings, XConfig
from core.directory import ChatRef, MemberRef
from core.errors import Conflict
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import Member
from core.storage.verification_models import XLink
from core.verification import ledger
from core.verification.links import RecordingLinkService
from tests.fakes.x_api import FakeXAPI

TOKEN = "link-token"
CHAT = ChatRef("telegram", "-100777", "Raiders")


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeXAPI]:
    async with FakeXAPI(TOKEN, now=clock.now().timestamp()) as server:
        yield server


@pytest.fixture
def settings(fake: FakeXAPI) -> Settings:
    return Settings(x=XConfig(bearer_token=TOKEN, base_url=fake.base_url))


def tick(clock: FakeClock, fake: FakeXAPI, **delta: float) -> None:
    clock.advance(**delta)
    fake.now = clock.now().timestamp()


def dm(i: int) -> ChatContext:
    return ChatContext(CHAT, MemberRef("telegram", str(700 + i), f"m{i}", f"m{i}"), private=True)


async def say(services: Services, ctx: ChatContext, text: str) -> str:
    reply = await services.commands.handle_text(ctx, text)
    assert reply is not None
    return reply.text


def code_in(text: str) -> str:
    found = re.search(r"NUBI-[A-Z2-9]{6}", text)
    assert found, text
    return found.group(0)


async def proof_row(services: Services, handle: str) -> tuple[bool, XLink]:
    async def op(s):  # type: ignore[no-untyped-def]
        member = (await s.scalars(select(Member).where(Member.x_handle == handle))).one()
        return member.x_handle_verified, await s.get(XLink, member.id)

    return await services.db.read(op)


async def test_link_proven_with_a_one_time_code(services: Services, fake: FakeXAPI, clock: FakeClock) -> None:
    assert install(services)
    joined = datetime(2019, 3, 1, tzinfo=UTC)
    alice_x_id = fake.add_user("Alice_X", created_at=joined, followers=42)
    fake.add_user("mallory")
    alice, bob = dm(1), dm(2)

    code = code_in(await say(services, alice, "/link @Alice_X"))
    assert "(not proven)" in await say(services, alice, "/me")
    assert "couldn't find a post" in await say(services, alice, "/link verify")
    fake.add_tweet("mallory", f"stealing {code}")  # the right code from the wrong account proves nothing
    tick(clock, fake, minutes=1)
    assert "couldn't find a post" in await say(services, alice, "/link verify")
    fake.add_tweet("Alice_X", f"verifying my nubi link: {code}")
    tick(clock, fake, minutes=1)

    assert "Proven: @alice_x" in await say(services, alice, "/link verify")

    proven, row = await proof_row(services, "alice_x")
    assert proven and row.code is None  # spent: the code proves once
    assert (row.account_created_at, row.followers, row.x_user_id) == (joined, 42, alice_x_id)
    assert "already proven" in await say(services, alice, "/link verify")
    assert "already proven" in await say(services, alice, "/link alice_x")
    assert "(not proven)" not in await say(services, alice, "/me")
    assert len(fake.requests) == 4  # three code searches, one account lookup
    assert await services.db.read(lambda s: ledger.spent(s, "day", clock.now().date().isoformat())) == 4

    # A code expires, and a fresh /link replaces it.
    fake.add_user("bob_x")
    old = code_in(await say(services, bob, "/link bob_x"))
    tick(clock, fake, minutes=31)
    fake.add_tweet("bob_x", old)
    assert "expired" in await say(services, bob, "/link verify")
    new = code_in(await say(services, bob, "/link bob_x"))
    assert new != old
    fake.add_tweet("bob_x", f"{new} ok")
    tick(clock, fake, seconds=5)
    assert "Proven" in await say(services, bob, "/link verify")


async def test_link_without_a_token_is_unproven(services: Services) -> None:
    services.settings.x.bearer_token = None
    assert not install(services)
    carol = dm(3)
    assert "unproven" in await say(services, carol, "/link @carol")
    assert "not been given" in await say(services, carol, "/link verify")
    assert "(not proven)" in await say(services, carol, "/me")
    member_id = await services.db.read(lambda s: s.scalar(select(Member.id).where(Member.x_handle == "carol")))
    assert await services.links.handle_of(member_id) == ("carol", False)


async def test_one_handle_one_member_under_concurrent_attempts(services: Services) -> None:
    services.links = RecordingLinkService(services.db, services.clock)
    raid = await services.raids.start(CHAT, RaidSpec("https://x.com/brand/status/1"))
    refs = [MemberRef("telegram", str(900 + i), f"c{i}") for i in range(12)]
    await asyncio.gather(*(services.raids.join(raid.id, r) for r in refs))

    results = await asyncio.gather(*(services.links.link(r, "@TheOne") for r in refs), return_exceptions=True)

    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1 and all(isinstance(r, Conflict) for r in results if r not in winners)
    owner = winners[0][0]
    holders = await services.db.read(lambda s: s.scalar(select(func.count()).where(Member.x_handle == "theone")))
    assert holders == 1
    conflicts = await services.links.conflicts(handle="TheOne")
    assert len(conflicts) == 11 and {c["ownerMemberId"] for c in conflicts} == {owner}
    log = await services.moderation.audit_log(raid.community_id)
    assert len([e for e in log if e["action"] == "x_link_conflict" and e["targetMemberId"] == owner]) == 11

    loser = next(r for r, res in zip(refs, results, strict=True) if isinstance(res, Conflict))
    reply = await services.commands.handle_text(ChatContext(CHAT, loser), "/link theone")
    assert reply is not None and reply.error and "already linked to another member" in reply.text
    assert len(await services.links.conflicts()) == 12
    assert (await services.links.handle_of(owner)) == ("theone", False)


async def test_concurrent_proofs_of_one_code(services: Services, fake: FakeXAPI, clock: FakeClock) -> None:
    """Two /link verify at once (two processes, a double tap): both may find the code, one proof holds."""
    assert install(services)
    fake.add_user("dora")
    dora = dm(4)
    code = code_in(await say(services, dora, "/link dora"))
    fake.add_tweet("dora", code)
    tick(clock, fake, seconds=30)

    answers = await asyncio.gather(*(say(services, dora, "/link verify") for _ in range(3)))

    assert any("Proven" in a for a in answers)
    proven, row = await proof_row(services, "dora")
    assert proven and row.code is None and row.proven_at is not None
    assert clock.now() - row.proven_at < timedelta(minutes=1)
