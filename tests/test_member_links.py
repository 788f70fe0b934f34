"""One member everywhere: `/link account` codes between Telegram and Discord, refusals, and the
moderator's `/member merge`, which keeps every point (every board equals the ledger after).

The real PTB Application against the fake Bot API and the real discord.py client against the fake
Discord API, sharing one set of real services, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import ForeignKey, func, select

from adapters.http.app import create_app
from adapters.telegram import TelegramAdapter
from core.clock import FakeClock
from core.config import TelegramConfig
from core.directory import ChatRef, MemberRef, find_community
from core.errors import NubiError
from core.member_links.merge import MEMBER_COLUMNS
from core.member_links.service import UsedCode
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import (
    AuditEntry,
    Base,
    LeaderboardWindow,
    Member,
    MemberScoreSlice,
    Raid,
    RaidParticipant,
)
from core.targets import member_by_identity
from core.windows import window_start
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeMessage, FakeTelegramAPI, make_command_update
from tests.ledger_check import assert_boards_equal_ledger, ledger_rows, window_sums
from tests.test_discord_adapter import GUILD_ID, MEMBER_ID, Bot, as_mod, guild, make_bot, slash
from tests.test_discord_servers import answer

GROUP = -100777
MOD = 7
ALICE, BOB, CAROL = 501, 502, 503
URL = "https://x.com/nubi/status/4242"
CODE = re.compile(r"Your link code: ([A-Z2-9]{4}-[A-Z2-9]{4})")


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def tg(services: Services) -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        fake.add_chat(GROUP, title="Raid Group")
        fake.set_member(GROUP, MOD, "administrator", first_name="Mod")
        adapter = TelegramAdapter(services, TelegramConfig(token=fake.token, api_base_url=fake.base_url,
                                                           edit_interval_seconds=0.5, messages_per_minute=30))
        await adapter.start()
        try:
            yield fake
        finally:
            await adapter.stop()


@pytest.fixture
async def dc(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild()):
        yield b


async def say(fake: FakeTelegramAPI, chat_id: int, user: int, text: str, **kw: Any) -> FakeMessage:
    """Send a command; the bot's next message in that chat."""
    before = len(fake.calls_for("sendMessage", chat_id))
    fake.push_update(make_command_update(chat_id, user, text, **kw))
    sent = (await fake.wait_for_calls("sendMessage", chat_id=chat_id, count=before + 1))[before]
    assert sent.ok, sent.description
    return fake.message(chat_id, sent.result["message_id"])


async def dm(fake: FakeTelegramAPI, user: int, text: str) -> FakeMessage:
    return await say(fake, user, user, text, chat_type="private", username=f"user{user}")


async def group(fake: FakeTelegramAPI, user: int, text: str) -> FakeMessage:
    return await say(fake, GROUP, user, text, username=f"user{user}", first_name=f"User{user}")


async def tg_raid(services: Services, *raiders: tuple[int, tuple[str, ...]]) -> None:
    """A raid in the group (set up through core: the group's message budget is for the commands under
    test): each raider joins and claims their actions, then a moderator ends it."""
    chat = ChatRef("telegram", str(GROUP), "Raid Group")
    progress = await services.raids.start(chat, RaidSpec(URL, {"like": 100, "repost": 25}, duration_seconds=600),
                                          by=MemberRef("telegram", str(MOD), "Mod", "mod"))
    for user, actions in raiders:
        who = MemberRef("telegram", str(user), f"User{user}", f"user{user}")
        await services.raids.join(progress.id, who, is_moderator=False)
        for action in actions:
            await services.raids.claim(progress.id, who, action)
    await services.raids.end(progress.id, reason="ended by a moderator", cause="ended_by_moderator")


async def member(services: Services, platform: str, user: int) -> int | None:
    return await services.db.read(lambda s: member_by_identity(s, platform, str(user)))


async def community(services: Services, platform: str, external_id: int) -> int:
    found = await services.db.read(lambda s: find_community(s, ChatRef(platform, str(external_id))))
    assert found is not None
    return found


async def members(services: Services) -> int:
    return await services.db.read(lambda s: s.scalar(select(func.count()).select_from(Member)))


async def code_from(text: str) -> str:
    found = CODE.search(text)
    assert found, text
    return found[1]


async def discord_says(bot: Bot, options: dict[str, Any], user_id: int = MEMBER_ID) -> tuple[str, bool]:
    payload = slash("link", options, user_id=user_id, username=f"d{user_id}")
    response = await bot.h.dispatch_interaction(payload)
    assert response is not None
    if response.content is not None:
        return response.content, response.ephemeral
    message = bot.fake.original_response(int(payload["id"]))  # deferred first on a slow machine
    assert message is not None
    return message.content, response.ephemeral


# ---------------------------------------------------------------------------------------------- tests


async def test_a_code_from_telegram_redeemed_on_discord_makes_one_member(
    services: Services, tg: FakeTelegramAPI, dc: Bot, clock: FakeClock
) -> None:
    await tg_raid(services, (ALICE, ("like", "repost")))
    raid = await dc.start_raid()
    await dc.press(f"nubi:join:{raid}", MEMBER_ID, "alice_dc")
    await dc.press(f"nubi:claim:{raid}:like", MEMBER_ID, "alice_dc")
    alice_tg, alice_dc = await member(services, "telegram", ALICE), await member(services, "discord", MEMBER_ID)
    assert alice_tg is not None and alice_dc is not None and alice_tg != alice_dc

    # In the group, before Alice has started the bot: no code in the group, a hint instead.
    note = await group(tg, ALICE, "/link account")
    assert "open a private chat with me" in note.text and not CODE.search(note.text)
    # She starts the bot: now the code goes to her private chat and the group only hears where it went.
    tg.add_chat(ALICE)
    before = len(tg.sent_messages(ALICE))
    note = await group(tg, ALICE, "/link account")
    assert note.text == "I sent you a link code in our private chat." and not CODE.search(note.text)
    [private] = tg.sent_messages(ALICE)[before:]
    code = await code_from(private.text)

    text, ephemeral = await discord_says(dc, {"code": code})
    assert ephemeral
    assert "Linked: your accounts (telegram, discord) are one member now" in text, text
    one = await member(services, "telegram", ALICE)
    assert one == await member(services, "discord", MEMBER_ID) == min(alice_tg, alice_dc)
    assert await services.db.read(lambda s: s.get(Member, max(alice_tg, alice_dc))) is None

    # one score: each community's board has her once, with what she earned there; the ledger agrees
    tg_community, dc_community = await community(services, "telegram", GROUP), await community(services, "discord",
                                                                                               GUILD_ID)
    for cid in (tg_community, dc_community):
        board = await services.boards.board(cid, "all")
        assert [e.member_id for e in board] == [one]
    await assert_boards_equal_ledger(services, [tg_community, dc_community], clock.now())
    context = await services.context.for_member(one)
    assert context["member"]["platforms"] == ["telegram", "discord"]
    assert {c["id"] for c in context["communities"]} == {tg_community, dc_community}
    assert "Accounts: telegram, discord" in (await dm(tg, ALICE, "/me")).text
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        for path in (f"/api/communities/{dc_community}/leaderboard", f"/api/dashboard/communities/{dc_community}/leaderboard"):
            entries = (await http.get(path, params={"window": "all"})).json()["entries"]
            assert [e["platforms"] for e in entries] == [["telegram", "discord"]], (path, entries)
        context = (await http.get(f"/api/context/members/{one}")).json()
        assert context["member"]["platforms"] == ["telegram", "discord"]
    audit = await services.moderation.audit_log(tg_community)
    assert audit[0]["action"] == "member_link" and audit[0]["data"]["kept"] == one

    # the code was used; a fresh one from the same person is "linked already"
    text, _ = await discord_says(dc, {"code": code}, user_id=MEMBER_ID + 1)
    assert "That code has been used already" in text
    code = await code_from((await dm(tg, ALICE, "/link account")).text)
    text, _ = await discord_says(dc, {"code": code})
    assert "These accounts are linked already." in text


async def test_bad_codes_get_short_replies_and_change_nothing(
    services: Services, tg: FakeTelegramAPI, dc: Bot, clock: FakeClock
) -> None:
    tg.add_chat(BOB)
    code = await code_from((await dm(tg, BOB, "/link account")).text)
    count = await members(services)

    text, ephemeral = await discord_says(dc, {"code": "ZZZZ-ZZZZ"})
    assert ephemeral and "I don't know that code" in text
    text, _ = await discord_says(dc, {"code": "not a code!"})
    assert "That is not a link code" in text
    assert "Send this code from your other account" in (await dm(tg, BOB, f"/link account {code}")).text
    clock.advance(minutes=11)
    text, _ = await discord_says(dc, {"code": code.lower()})
    assert "That code has expired (codes last 10 minutes)" in text
    assert await members(services) == count + 1  # the Discord member nubi met; nobody merged
    assert await member(services, "telegram", BOB) != await member(services, "discord", MEMBER_ID)

    # a new request replaces the old code; the new one works from Discord
    old = await code_from((await dm(tg, BOB, "/link account")).text)
    new = await code_from((await dm(tg, BOB, "/link account")).text)
    assert "I don't know that code" in (await discord_says(dc, {"code": old}))[0]
    assert "Linked" in (await discord_says(dc, {"code": new}))[0]


async def test_accounts_with_points_in_one_community_need_a_moderator_and_every_point_is_kept(
    services: Services, tg: FakeTelegramAPI, clock: FakeClock
) -> None:
    # Two Telegram accounts of one person, both raiding in the group: in one raid (the same claim
    # twice), on different days and weeks, with a moderator's adjustment in between.
    await tg_raid(services, (ALICE, ("like", "repost")), (BOB, ("like",)))
    clock.advance(days=8)
    await group(tg, MOD, "/points add @user501 7 helping out")
    await tg_raid(services, (BOB, ("like", "repost")), (CAROL, ("like",)))
    clock.advance(days=1)
    await tg_raid(services, (ALICE, ("repost",)), (BOB, ("like",)))
    await services.boards.close_windows()
    cid = await community(services, "telegram", GROUP)
    alice, bob = await member(services, "telegram", ALICE), await member(services, "telegram", BOB)
    assert alice is not None and bob is not None
    rows_before = await ledger_rows(services, cid)
    total = {m: sum(r.points for r in rows_before if r.member_id == m) for m in (alice, bob)}
    await assert_boards_equal_ledger(services, [cid], clock.now())

    tg.add_chat(ALICE)
    code = await code_from((await dm(tg, ALICE, "/link account")).text)
    refused = await group(tg, BOB, f"/link account {code}")
    assert "Not linked: both accounts already hold points in Raid Group" in refused.text
    assert f"/member merge #{alice} #{bob}" in refused.text
    assert await member(services, "telegram", BOB) == bob != alice  # nothing changed
    assert [(r.id, r.member_id, r.points) for r in await ledger_rows(services, cid)] == \
        [(r.id, r.member_id, r.points) for r in rows_before]

    # only a moderator, only for members who asked to be linked
    assert "only moderators" in (await group(tg, CAROL, f"/member merge #{alice} #{bob}")).text
    carol = await member(services, "telegram", CAROL)
    assert "have not asked to be linked" in (await group(tg, MOD, f"/member merge #{alice} #{carol}")).text
    assert "I don't know #999" in (await group(tg, MOD, f"/member merge #{alice} #999")).text

    merged = await group(tg, MOD, f"/member merge @user501 #{bob}")
    assert f"@user501 and #{bob} are one member now (#{alice}, on telegram)" in merged.text, merged.text
    assert await member(services, "telegram", BOB) == alice
    rows_after = await ledger_rows(services, cid)
    assert [(r.id, r.points) for r in rows_after] == [(r.id, r.points) for r in rows_before]
    assert {r.member_id for r in rows_after} == {alice, carol}
    assert sum(r.points for r in rows_after if r.member_id == alice) == total[alice] + total[bob]
    # every stored score of every window (past ones too) and the boards of now equal the ledger
    await assert_boards_equal_ledger(services, [cid], clock.now())
    for at in (clock.now() - timedelta(days=1), clock.now() - timedelta(days=9)):
        for window in ("day", "week", "month"):
            want = {m: p for (c, w, st, m), p in window_sums(rows_after).items()
                    if w == window and st == window_start(window, at) and p > 0}
            assert {e.member_id: e.points for e in await services.boards.board(cid, window, at=at)} == want
    slices = await services.db.read(lambda s: s.execute(
        select(MemberScoreSlice.member_id, func.sum(MemberScoreSlice.points))
        .where(MemberScoreSlice.community_id == cid).group_by(MemberScoreSlice.member_id)))
    assert dict(slices.all()) == {m: sum(r.points for r in rows_after if r.member_id == m) for m in (alice, carol)}
    board = await services.boards.board(cid, "all")
    assert [e.member_id for e in board].count(alice) == 1 and bob not in [e.member_id for e in board]
    # the raid they were both in: one seat, with both seats' points; the duplicate like counted once
    first_raid = await services.db.read(lambda s: s.scalar(select(func.min(Raid.id))))
    seats = await services.db.read(lambda s: s.scalars(
        select(RaidParticipant).where(RaidParticipant.raid_id == first_raid)))
    assert sorted(p.member_id for p in seats) == [alice]
    progress = await services.raids.progress(first_raid)
    assert (progress.participants, progress.actions) == (1, 2)
    assert {o.action: o.count for o in progress.objectives} == {"like": 1, "repost": 1}
    closed = await services.db.read(lambda s: s.scalars(select(LeaderboardWindow)
                                                        .where(LeaderboardWindow.community_id == cid)))
    winners = [w["memberId"] for h in closed for w in h.winners]
    assert alice in winners and bob not in winners
    entries = await services.db.read(lambda s: s.scalars(select(AuditEntry).where(
        AuditEntry.community_id == cid, AuditEntry.action == "member_merge")))
    [entry] = list(entries)
    assert entry.data["approvedIn"] == cid and entry.target_member_id == alice
    assert "That is one member already." in (await group(tg, MOD, f"/member merge #{alice} @user502")).text


async def test_two_redemptions_of_one_code_link_once(services: Services) -> None:
    asker = MemberRef("telegram", "9001", "Asker", "asker")
    issued = await services.member_links.issue(asker)
    redeemers = [MemberRef("discord", str(9100 + i), f"R{i}", f"r{i}") for i in range(5)]
    results = await asyncio.gather(*(services.member_links.redeem(r, issued.code) for r in redeemers),
                                   return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and won[0].linked
    assert len(lost) == 4 and all(isinstance(e, UsedCode) for e in lost), lost
    linked = await services.db.read(lambda s: member_by_identity(s, "telegram", "9001"))
    owners = [await services.db.read(lambda s, r=r: member_by_identity(s, r.platform, r.external_id))
              for r in redeemers]
    assert owners.count(linked) == 1


async def test_different_x_handles_are_refused(services: Services) -> None:
    a, b = MemberRef("telegram", "1", "A", "a"), MemberRef("discord", "2", "B", "b")
    await services.links.link(a, "alpha_x")
    await services.links.link(b, "beta_x")
    issued = await services.member_links.issue(a)
    with pytest.raises(NubiError, match=r"different X handles \(@alpha_x and @beta_x\)"):
        await services.member_links.redeem(b, issued.code)
    assert await services.db.read(lambda s: member_by_identity(s, "telegram", "1")) != \
        await services.db.read(lambda s: member_by_identity(s, "discord", "2"))


async def test_one_handle_moves_to_the_linked_member(services: Services) -> None:
    a, b = MemberRef("telegram", "1", "A", "a"), MemberRef("discord", "2", "B", "b")
    await services.member_links.issue(b)  # b exists, older
    await services.links.link(a, "only_handle")
    issued = await services.member_links.issue(a)
    outcome = await services.member_links.redeem(b, issued.code)
    kept = await services.db.read(lambda s: s.get(Member, outcome.member_id))
    assert kept is not None and kept.x_handle == "only_handle"


def test_the_merge_moves_every_column_that_names_a_member() -> None:
    found = {(t.name, c.name) for t in Base.metadata.sorted_tables for c in t.columns
             for fk in c.foreign_keys if isinstance(fk, ForeignKey) and fk.column.table.name == "members"}
    assert found == set(MEMBER_COLUMNS)


async def test_on_discord_a_code_is_ephemeral_and_a_moderator_merges_two_accounts_of_the_server(
    services: Services, tg: FakeTelegramAPI, dc: Bot, clock: FakeClock
) -> None:
    other = MEMBER_ID + 1
    raid = await dc.start_raid()
    for user in (MEMBER_ID, other):
        await dc.press(f"nubi:join:{raid}", user, f"d{user}")
        await dc.press(f"nubi:claim:{raid}:like", user, f"d{user}")
    first, second = await member(services, "discord", MEMBER_ID), await member(services, "discord", other)
    text, ephemeral = await discord_says(dc, {"account": True})
    assert ephemeral
    code = await code_from(text)
    text, ephemeral = await discord_says(dc, {"code": code}, user_id=other)
    assert ephemeral and f"A moderator there can approve it with /member merge #{first} #{second}" in text

    refused = await dc.h.dispatch_interaction(slash("member merge", {"first": f"#{first}", "second": f"#{second}"},
                                                     user_id=other, username="d"))
    assert refused is not None and refused.ephemeral and refused.content == "Sorry, only moderators can do that here."
    payload = as_mod("member merge", {"first": f"<@{MEMBER_ID}>", "second": f"#{second}"})
    text = await answer(dc, payload)
    assert f"are one member now (#{first}, on discord); every point of both is kept." in text, text
    cid = await community(services, "discord", GUILD_ID)
    await assert_boards_equal_ledger(services, [cid], clock.now())
    assert [e.member_id for e in await services.boards.board(cid, "all")] == [first]
    assert (await services.raids.progress(raid)).participants == 1

    # the merged member links a Telegram account the usual way: the code from Telegram's private chat
    tg.add_chat(CAROL)
    code = await code_from((await dm(tg, CAROL, "/link account")).text)
    text, _ = await discord_says(dc, {"code": code}, user_id=other)
    assert "Linked: your accounts (telegram, discord) are one member now" in text
    assert await member(services, "telegram", CAROL) == first
