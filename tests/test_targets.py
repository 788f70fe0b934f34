"""Exact targets and presses in their own chat, through the real PTB Application and the fake Bot API.

A moderator's command acts on the member the platform names (a mention entity, a reply, an id) or
on the one member of the community whose username is exactly the one typed; everything else is
refused and nothing changes. A raid's buttons act only in the raid's own chat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from adapters.telegram import TelegramAdapter
from core import catalog
from core.services import Services
from core.storage.models import CommunityMember, MemberIdentity, RaidParticipant
from tests.fakes import telegram_api
from tests.fakes.telegram_api import (
    FakeMessage,
    FakeTelegramAPI,
    make_callback_update,
    make_command_update,
    text_mention,
)
from tests.test_telegram_adapter import ORIGINAL, URL, calls, config_for, running

GROUP = -100777
OTHER = -100888
MOD = 7
JOHNX, JOHN, NONAME, JANE, STRANGER, OTHER_MOD = 201, 202, 205, 206, 301, 302


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as server:
        server.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        server.add_chat(OTHER, title="Other Group", permissions=ORIGINAL)
        server.set_member(GROUP, MOD, "administrator", first_name="Mod")
        server.set_member(OTHER, OTHER_MOD, "administrator", first_name="Boss")
        yield server


@pytest.fixture
async def adapter(services: Services, fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    async with running(services, config_for(fake)) as started:
        yield started


async def say(fake: FakeTelegramAPI, chat_id: int, user: int, text: str, **kw: Any) -> FakeMessage:
    before = len(fake.calls_for("sendMessage", chat_id))
    fake.push_update(make_command_update(chat_id, user, text, chat_title="Raid Group", **kw))
    sent = (await calls(fake, "sendMessage", before + 1, chat_id))[before]
    assert sent.ok, sent.description
    return fake.message(chat_id, sent.result["message_id"])


async def member_of(services: Services, user_id: int) -> int:
    found = await services.db.read(lambda s: s.scalar(select(MemberIdentity.member_id).where(
        MemberIdentity.platform == "telegram", MemberIdentity.external_id == str(user_id))))
    assert found is not None
    return int(found)


async def group_id(services: Services, chat_id: int = GROUP) -> int:
    found = await catalog.community_id_of(services.db, "telegram", str(chat_id))
    assert found is not None
    return found


async def banned(services: Services) -> list[int]:
    return [b["memberId"] for b in await catalog.bans(services.db, await group_id(services))]


async def all_time(services: Services) -> dict[int, int]:
    return {e.member_id: e.points for e in await services.boards.board(await group_id(services), "all", top=50)}


async def test_a_ban_hits_exactly_the_member_named(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    # johnxdoe used the bot first: a pattern match on "john_doe" (the "_" wildcard) would find them
    await say(fake, GROUP, JOHNX, "/me", username="johnxdoe", first_name="Johnx")
    await say(fake, GROUP, JOHN, "/me", username="john_doe", first_name="John")
    johnx, john = await member_of(services, JOHNX), await member_of(services, JOHN)

    answer = await say(fake, GROUP, MOD, "/ban @John_Doe spam")  # usernames compare case-insensitively
    assert answer.text == "@John_Doe is banned from raids here."
    assert await banned(services) == [john]
    assert johnx not in await banned(services)

    answer = await say(fake, GROUP, MOD, f"/unban {JOHN}")  # a numeric Telegram id is exact too
    assert answer.text == f"{JOHN} may raid again."
    assert await banned(services) == []


async def test_patterns_strangers_and_shared_names_are_refused(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    await say(fake, GROUP, JOHNX, "/me", username="johnxdoe", first_name="Johnx")
    await say(fake, GROUP, JOHN, "/me", username="john_doe", first_name="John")
    await say(fake, OTHER, STRANGER, "/me", username="far_away", first_name="Far")  # known, in another group
    before = await all_time(services)

    refused = await say(fake, GROUP, MOD, "/points add @% 500 x")
    assert refused.text.startswith("@% is not a member's name")
    refused = await say(fake, GROUP, MOD, "/points add john% 500 x")
    assert refused.text.startswith("john% is not a member's name")
    unknown = await say(fake, GROUP, MOD, "/ban @far_away")
    assert unknown.text.startswith("I don't know @far_away here")
    unknown = await say(fake, GROUP, MOD, f"/ban {STRANGER}")
    assert unknown.text.startswith(f"I don't know {STRANGER} here")
    nobody = await say(fake, GROUP, MOD, "/ban")
    assert nobody.text.startswith("Name a member")

    # a username changes hands: johnxdoe is remembered under the name john_doe now goes by
    await say(fake, GROUP, JOHNX, "/me", username="jd_twin", first_name="Johnx")
    await say(fake, GROUP, JOHN, "/me", username="jd_twin", first_name="John")
    shared = await say(fake, GROUP, MOD, "/points add @jd_twin 5 thanks")
    assert shared.text.startswith("@jd_twin could be more than one member here")

    assert await all_time(services) == before
    assert await banned(services) == []


async def test_mentions_and_replies_name_members_without_a_username(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    said = await say(fake, GROUP, NONAME, "/me", username=None, first_name="Quiet")
    [asked] = [m for m in fake.chat(GROUP).messages.values() if m.text == "/me" and m.from_user["id"] == NONAME]
    assert said.reply_to_message_id == asked.message_id

    answer = await say(fake, GROUP, MOD, "/ban", reply_to=asked.message_id)  # a reply names its author
    assert answer.text == "Quiet is banned from raids here."
    assert await banned(services) == [await member_of(services, NONAME)]

    # Jane has no username and never used the bot: Telegram links her name to her account
    text = "/points add Jane Roe 5 great thread"
    answer = await say(fake, GROUP, MOD, text, entities=[text_mention(text, "Jane Roe", JANE, "Jane")])
    assert answer.text == f"5 points added to {JANE}: great thread"
    assert (await all_time(services))[await member_of(services, JANE)] == 5


async def test_a_press_acts_only_in_the_raids_own_chat(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter
) -> None:
    post = await say(fake, GROUP, MOD, f"/raid start {URL} likes=10 duration=10m")
    await adapter.drain()
    [raid] = await services.raids.list(status="active")
    elsewhere = await say(fake, OTHER, OTHER_MOD, "/help")  # any message of the other chat carries the press
    refused_at = len(fake.calls_for("answerCallbackQuery"))
    for data in (f"nubi:join:{raid.id}", f"nubi:claim:{raid.id}:like"):
        fake.push_update(make_callback_update(OTHER, OTHER_MOD, elsewhere.message_id, data, chat_title="Other Group"))
    answers = (await calls(fake, "answerCallbackQuery", refused_at + 2))[refused_at:]
    assert [a.params.get("text") for a in answers] == ["That button belongs to a raid in another chat."] * 2

    def rows(s: Any) -> Any:
        return s.execute(select(RaidParticipant.id).where(RaidParticipant.raid_id == raid.id))

    assert (await services.db.read(rows)).all() == []
    # the other chat's admin got no moderator flag (nor any row) in the raid's community
    home = await group_id(services)
    flags = await services.db.read(lambda s: s.scalars(select(CommunityMember.member_id).where(
        CommunityMember.community_id == home, CommunityMember.is_moderator.is_(True))))
    assert set(flags.all()) == {await member_of(services, MOD)}

    joined_at = len(fake.calls_for("answerCallbackQuery"))
    fake.push_update(make_callback_update(GROUP, JOHN, post.message_id, f"nubi:join:{raid.id}"))
    [joined] = (await calls(fake, "answerCallbackQuery", joined_at + 1))[joined_at:]
    assert joined.params.get("text", "").startswith(f"Joined raid #{raid.id} as raider #1")
