"""Partner raids (issue #14): a Telegram group and a Discord channel linked with a one-time code; a raid
started in the group with `partners` and `lock` runs in both, members on both sides join and claim the
one raid, each post is edited in place within its platform's limits, and at the end each chat gets its
lock lifted and its report exactly once, even when Discord fails on the way.

The real PTB Application against the fake Bot API and the real discord.py client against the fake
Discord API, sharing one set of real services, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from adapters.discord import posts as discord_posts
from adapters.telegram import TelegramAdapter
from core.clock import FakeClock
from core.commands import parser as p
from core.commands.service import ChatContext
from core.config import TelegramConfig
from core.directory import ChatRef, MemberRef, find_community
from core.errors import NoActiveRaid, NotFound, ValidationError
from core.outbox import FIRST_RETRY, partner_unpin_key
from core.partners import ChatLinkRefused, Lacking
from core.raids.model import RaidSpec
from core.services import Services
from core.storage.models import CommunityMember
from core.storage.partner_models import RaidChat
from core.targets import member_by_identity
from tests.fakes import telegram_api
from tests.fakes.telegram_api import FakeTelegramAPI, make_command_update
from tests.test_discord_adapter import (
    CHANNEL_ID,
    EVERYONE_BEFORE,
    GUILD_ID,
    INTERVAL,
    MOD_ID,
    MODERATORS_BEFORE,
    RAIDER_BASE,
    SEND,
    Bot,
    as_mod,
    guild,
    make_bot,
    original_text,
)
from tests.test_discord_servers import answer
from tests.test_telegram_adapter import LATENCY, ORIGINAL, press_in, running

GROUP = -100_888
MOD = 7
URL = "https://x.com/nubi/status/777"
CODE = re.compile(r"Chat link code: ([A-Z2-9]{4}-[A-Z2-9]{4})")


@pytest.fixture(autouse=True)
def patient_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_api, "WAIT_LIMIT", 30.0)


@pytest.fixture
async def tg_fake() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI(max_poll_wait=0.2) as fake:
        fake.add_chat(GROUP, title="Raid Group", permissions=ORIGINAL)
        fake.set_member(GROUP, MOD, "administrator", first_name="Mod")
        fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)
        fake.add_chat(MOD)  # the moderator started the bot: a chat link code reaches them privately
        yield fake


@pytest.fixture
async def tg(services: Services, tg_fake: FakeTelegramAPI) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(services, TelegramConfig(token=tg_fake.token, api_base_url=tg_fake.base_url,
                                                       edit_interval_seconds=INTERVAL))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


@pytest.fixture
async def dc(services: Services) -> AsyncIterator[Bot]:
    async for b in make_bot(services, guild()):
        yield b


async def group_says(fake: FakeTelegramAPI, user: int, text: str) -> str:
    """A command in the group; the bot's next message there."""
    before = len(fake.calls_for("sendMessage", GROUP))
    fake.push_update(make_command_update(GROUP, user, text, username=f"user{user}", first_name=f"User{user}"))
    sent = (await fake.wait_for_calls("sendMessage", chat_id=GROUP, count=before + 1))[before]
    assert sent.ok, sent.description
    return fake.message(GROUP, sent.result["message_id"]).text


async def link_group_with_channel(services: Services, tg_fake: FakeTelegramAPI, dc: Bot) -> None:
    """`/community link` in the group (the code goes to the moderator privately), `/community join CODE`
    by a moderator of the Discord channel."""
    before = len(tg_fake.sent_messages(MOD))
    note = await group_says(tg_fake, MOD, "/community link")
    assert note == "I sent you the chat link code in our private chat."
    [private] = tg_fake.sent_messages(MOD)[before:]
    found = CODE.search(private.text)
    assert found, private.text
    linked = await answer(dc, as_mod("community join", {"code": found[1].lower()}))
    assert "Linked with Raid Group (telegram)" in linked, linked
    again = await answer(dc, as_mod("community join", {"code": found[1]}))
    assert "That code has been used already" in again, again


async def community(services: Services, platform: str, external_id: int) -> int:
    found = await services.db.read(lambda s: find_community(s, ChatRef(platform, str(external_id))))
    assert found is not None
    return found


def at_most_one_edit_per_interval(times: list[float]) -> None:
    """However many changes, a post sees no three edits within one interval (one flush per interval;
    a slow read may bring two closer)."""
    assert all(b - a >= INTERVAL - LATENCY for a, b in zip(times, times[2:], strict=False)), times


async def until(check: Any, what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_a_partner_raid_across_a_telegram_group_and_a_discord_channel(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(discord_posts, "SERVER_ERROR_RETRY", 0.05)
    await link_group_with_channel(services, tg_fake, dc)
    listed = await group_says(tg_fake, MOD, "/community chats")
    assert listed.startswith("Chats linked with this one:\n#") and f"(discord, <#{CHANNEL_ID}>)" in listed, listed

    # The moderator starts one raid in the group: locked and posted in both chats.
    post_text = await group_says(tg_fake, MOD, f"/raid start {URL} likes=10 reposts=5 duration=10m lock partners")
    await until(lambda: any(m.embeds for m in dc.visible()), "the raid post in the Discord channel")
    await tg.drain()
    await dc.adapter.posts.drain()
    [raid] = [r.id for r in await services.raids.list()]
    [tg_post] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} — live")]
    assert post_text == tg_post.text and "Chat is locked for the raid." in tg_post.text
    dc_post = dc.raid_post()
    assert dc_post.embeds[0]["title"] == f"Raid #{raid} — live"
    assert "Chat is locked for the raid." in dc_post.embeds[0]["description"]
    [row] = await services.db.read(_rows)
    assert row.progress_ref == {"channel_id": str(CHANNEL_ID), "message_id": str(dc_post.id),
                                "guild_id": str(GUILD_ID)}
    assert not any(tg_fake.chat(GROUP).permissions.values())  # both chats locked
    assert int(dc.everyone()["deny"]) & SEND  # type: ignore[index]

    # Members on both sides: three in the group, three in the channel, and the channel's moderator.
    for user in (1000, 1001, 1002):
        joined = await press_in(tg_fake, GROUP, user, f"tg{user}", tg_post.message_id, f"nubi:join:{raid}")
        assert joined.startswith(f"Joined raid #{raid} as raider #"), joined
        liked = await press_in(tg_fake, GROUP, user, f"tg{user}", tg_post.message_id, f"nubi:claim:{raid}:like")
        assert liked.startswith("Like claimed"), liked
    reposted = await press_in(tg_fake, GROUP, 1000, "tg1000", tg_post.message_id, f"nubi:claim:{raid}:repost")
    assert reposted.startswith("Repost claimed"), reposted
    for i in range(3):
        joined = await dc.press(f"nubi:join:{raid}", RAIDER_BASE + i, f"dc{i}")
        assert joined is not None and joined.content.startswith(f"Joined raid #{raid} as raider #"), joined
        liked = await dc.press(f"nubi:claim:{raid}:like", RAIDER_BASE + i, f"dc{i}")
        assert liked is not None and liked.content.startswith("Like claimed"), liked
    reposted_dc = await dc.press(f"nubi:claim:{raid}:repost", RAIDER_BASE, "dc0")
    assert reposted_dc is not None and reposted_dc.content.startswith("Repost claimed")
    by_mod = await answer(dc, as_mod("join", {}))
    assert f"joined raid #{raid} as raider #7" in by_mod, by_mod
    # The raid's community's bans hold in the partner chat too.
    tg_community = await community(services, "telegram", GROUP)
    banned = await services.raids.join(raid, MemberRef("discord", str(RAIDER_BASE + 9), "dc9"), is_moderator=None)
    assert banned.position == 8
    await services.moderation.ban(tg_community, banned.member_id, "spam", actor=None)
    refused = await dc.press(f"nubi:claim:{raid}:like", RAIDER_BASE + 9, "dc9")
    assert refused is not None and refused.content == "You are banned from raids here."

    await tg.drain()
    await dc.adapter.posts.drain()
    progress = await services.raids.progress(raid)
    assert (progress.participants, progress.actions) == (8, 8)
    assert {o.action: o.count for o in progress.objectives} == {"like": 6, "repost": 2}
    # one board, the raid's community's: members of both platforms, the Discord moderator on it too
    # (a moderator of the partner chat is not recorded as one of the raid's community)
    raiders = {await services.db.read(lambda s, p=platform, u=user: member_by_identity(s, p, str(u)))
               for platform, user in [("telegram", 1000), ("telegram", 1001), ("telegram", 1002),
                                      ("discord", RAIDER_BASE), ("discord", RAIDER_BASE + 1),
                                      ("discord", RAIDER_BASE + 2), ("discord", MOD_ID)]}
    mod_member = await services.db.read(lambda s: member_by_identity(s, "discord", str(MOD_ID)))
    board = {e.member_id for e in await services.raids.leaderboard(raid, top=20)}
    assert len(raiders) == 7 and raiders <= board <= raiders | {banned.member_id}
    flag = await services.db.read(lambda s: s.scalar(select(CommunityMember.is_moderator).where(
        CommunityMember.community_id == tg_community, CommunityMember.member_id == mod_member)))
    assert flag is False
    assert await services.boards.board(await community(services, "discord", GUILD_ID), "all") == []
    assert raiders <= {e.member_id for e in await services.boards.board(tg_community, "all", top=20)}

    # Each post edited in place, within its platform's limits, and showing the same numbers.
    tg_edits = [c for c in tg_fake.calls_for("editMessageText", GROUP) if c.ok]
    assert tg_edits and len(tg_edits) < 15
    at_most_one_edit_per_interval([c.at for c in tg_edits])
    dc_path = f"/channels/{CHANNEL_ID}/messages/{dc_post.id}"
    dc_edits = [c for c in dc.fake.calls_to(dc_path, "PATCH") if c.status == 200]
    assert dc_edits and len(dc_edits) < 15
    at_most_one_edit_per_interval([c.at for c in dc_edits])
    assert "Raiders: 8/500" in tg_fake.message(GROUP, tg_post.message_id).text
    assert "Raiders: 8/500" in dc.raid_post().embeds[0]["description"]
    assert "Likes: ██████░░░░ 6/10" in dc.raid_post().embeds[0]["description"]

    # The end: Discord refuses the report once and the lock's restore once; each chat still gets its
    # report exactly once and its permissions back.
    dc.fake.fail_next("POST", f"/channels/{CHANNEL_ID}/messages", status=503)
    dc.fake.fail_next("PUT", f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", status=503)
    clock.advance(seconds=601)
    assert await services.raids.end_overdue() == [raid]
    await tg.drain()
    await dc.adapter.posts.drain()

    def dc_reports() -> list[Any]:
        return [m for m in dc.fake.channel_messages(CHANNEL_ID)
                if m.embeds and m.embeds[0]["title"].startswith(f"Raid #{raid} report")]

    await until(lambda: dc_reports(), "the Discord report, after the 503")
    [tg_report] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")]
    assert tg_report.reply_to_message_id == tg_post.message_id and "Raiders: 8" in tg_report.text
    [dc_report] = dc_reports()
    assert int(dc_report.json["message_reference"]["message_id"]) == dc_post.id
    assert "Raiders: 8" in dc_report.embeds[0]["description"]
    assert tg_fake.chat(GROUP).permissions == ORIGINAL
    assert f"Raid #{raid} — time ran out" in tg_fake.message(GROUP, tg_post.message_id).text
    assert dc.raid_post().embeds[0]["title"] == f"Raid #{raid} — time ran out"

    # Discord's restore failed once: the sweep's retry puts the overwrites back exactly.
    assert [i.platform for i in await services.locks.pending_releases()] == ["discord"]
    clock.advance(seconds=11)
    await services.locks.retry_releases()
    assert dc.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    assert await services.locks.pending_releases() == []
    # A sweep later finds nothing owed: no second post, report or restore anywhere.
    assert [d for d in await services.outbox.due() if d.raid_id == raid] == []
    await tg.drain()
    await dc.adapter.posts.drain()
    assert len([m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")]) == 1
    assert len(dc_reports()) == 1
    restores = [c for c in tg_fake.calls_for("setChatPermissions", GROUP) if c.ok]
    assert len(restores) == 2  # the lock, then its release: once each
    assert len([c for c in dc.fake.calls_to(f"/channels/{CHANNEL_ID}/permissions/{GUILD_ID}", "PUT")
                if c.status < 300]) == 2


async def _rows(s: Any) -> list[RaidChat]:
    return list((await s.scalars(select(RaidChat))).all())


# -- core: links, codes, who may act where -----------------------------------------------------------

TG_A = ChatRef("telegram", "-100501", "Group A")
TG_B = ChatRef("telegram", "-100502", "Group B")
DC_C = ChatRef("discord", "930000000000000777", "Server C", "930000000000000778")
DC_C_OTHER = ChatRef("discord", "930000000000000777", "Server C", "930000000000000779")
STARTER = MemberRef("telegram", "7", "Mod", "mod")


async def linked(services: Services, a: ChatRef, b: ChatRef) -> None:
    issued = await services.partners.issue(a)
    await services.partners.join(b, issued.code)


async def test_a_code_links_two_chats_once_both_ways_and_unlink_removes_both(services: Services, clock: FakeClock) -> None:
    issued = await services.partners.issue(TG_A)
    with pytest.raises(ValidationError):
        await services.partners.join(TG_A, issued.code)  # not in the chat that asked for it
    with pytest.raises(ValidationError):
        await services.partners.join(DC_C, "nonsense")
    with pytest.raises(NotFound):
        await services.partners.join(DC_C, "ABCD-EFGH")
    outcomes = await asyncio.gather(services.partners.join(DC_C, issued.code),
                                    services.partners.join(TG_B, issued.code), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == sorted(["PartnerChat", ChatLinkRefused.__name__])
    assert [o.chat for o in outcomes if not isinstance(o, BaseException)] == [TG_A]  # type: ignore[union-attr]
    [winner] = [c for c in (DC_C, TG_B) if await services.partners.chats(c)]
    [here] = await services.partners.chats(TG_A)
    assert here.chat == winner and [c.chat for c in await services.partners.chats(winner)] == [TG_A]
    assert await services.partners.chats(DC_C_OTHER) == []  # a link is the channel's, not the whole server's

    expired = await services.partners.issue(TG_A)
    clock.advance(minutes=11)
    with pytest.raises(NotFound):
        await services.partners.join(DC_C_OTHER, expired.code)

    assert not await services.partners.unlink(winner, 999_999)
    [there] = await services.partners.chats(winner)
    assert await services.partners.unlink(winner, there.link_id)
    assert await services.partners.chats(TG_A) == [] and await services.partners.chats(winner) == []


async def test_only_raids_started_with_partners_are_owed_in_the_partner_chat(services: Services) -> None:
    await linked(services, TG_A, DC_C)
    alone = await services.raids.start(TG_A, RaidSpec(URL, {"like": 5}, duration_seconds=600), by=STARTER)
    assert await services.partners.raid_chats(alone.id) == []
    keys = {d.key for d in await services.outbox.due() if d.raid_id == alone.id}
    assert keys == {f"raid:{alone.id}"}
    await services.raids.end(alone.id, status="cancelled")

    services.settings.raids.partners = True  # the setting, where no `partners` option says otherwise
    together = await services.raids.start(TG_A, RaidSpec(URL, {"like": 5}, duration_seconds=600), by=STARTER)
    [row] = await services.partners.raid_chats(together.id)
    assert row.chat == DC_C
    owed = {(d.key, d.platform) for d in await services.outbox.due() if d.raid_id == together.id}
    assert owed == {(f"raid:{together.id}", "telegram"), (f"raid:{together.id}:{row.id}", "discord")}
    assert await services.partners.raid_chats(together.id, "telegram") == []

    # the partner channel joins the raid; the rest of the server does not
    assert await services.raids.active_raid(DC_C) == (together.id, True)
    assert await services.raids.active_raid(TG_A) == (together.id, False)
    with pytest.raises(NoActiveRaid):
        await services.raids.active_raid(DC_C_OTHER)
    with pytest.raises(NoActiveRaid):
        await services.raids.active_raid_id(DC_C, partners=False)
    def pressed_in(chat: ChatRef, user: str) -> ChatContext:
        return ChatContext(chat, MemberRef("discord", user, f"d{user}"), is_moderator=True)

    joined = await services.commands.press(pressed_in(DC_C, "11"), f"nubi:join:{together.id}")
    assert joined.text == f"Joined raid #{together.id} as raider #1! +5 early bird"
    elsewhere = await services.commands.press(pressed_in(DC_C_OTHER, "12"), f"nubi:join:{together.id}")
    assert elsewhere.text == "That button belongs to a raid in another chat."
    # a partner chat's moderator does not end the linked chat's raid
    ended = await services.commands.execute(pressed_in(DC_C, "11"), p.RaidEnd())
    assert ended.error and ended.text == "There is no active raid here right now."
    assert (await services.raids.progress(together.id)).active

    await services.raids.end(together.id, reason="ended by a moderator", cause="ended_by_moderator")
    owed = {d.key for d in await services.outbox.due() if d.raid_id == together.id}
    assert {f"report:{together.id}", f"report:{together.id}:{row.id}"} <= owed


def test_the_community_commands_and_the_partners_option_parse() -> None:
    assert p.parse("/community link") == p.CommunityLink()
    assert p.parse("/community join k7qf m2xa") == p.CommunityJoin("k7qfm2xa")
    assert p.parse("/community chats") == p.CommunityChats()
    assert p.parse("/community unlink #3") == p.CommunityUnlink(3)
    for wrong in ("/community", "/community join", "/community unlink x", "/community link now"):
        with pytest.raises(p.CommandError):
            p.parse(wrong)
    assert p.parse(f"/raid start {URL} partners").partners is True  # type: ignore[union-attr]
    assert p.parse(f"/raid start {URL} nopartners").partners is False  # type: ignore[union-attr]
    assert p.parse(f"/raid start {URL}").partners is None  # type: ignore[union-attr]
    assert isinstance(p.CommunityJoin("x"), p.MODERATOR_TYPES)


async def test_a_discord_raid_runs_in_its_partner_telegram_group_too(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot, clock: FakeClock,
) -> None:
    """The other way round: linked from Discord, started there; the Telegram group gets its post (edited
    within its budget), its lock, and at the end its report and its permissions back once, though
    Telegram fails the report's first send and the lock's first restore."""
    code = CODE.search(await answer(dc, as_mod("community link", {})))
    assert code, "no code"
    assert await group_says(tg_fake, MOD, f"/community join {code[1]}") == (
        f"Linked with {dc.h.client.get_guild(GUILD_ID).name} (discord, <#{CHANNEL_ID}>). "  # type: ignore[union-attr]
        "Raids started in either chat with partners run in both.")

    raid = await dc.start_raid(partners=True, lock=True)
    await until(lambda: any(m.text.startswith(f"Raid #{raid} — live") for m in tg_fake.sent_messages(GROUP)),
                "the raid post in the Telegram group")
    await tg.drain()
    [tg_post] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} — live")]
    assert "Chat is locked for the raid." in tg_post.text
    assert not any(tg_fake.chat(GROUP).permissions.values())
    for user in (1000, 1001):
        joined = await press_in(tg_fake, GROUP, user, f"tg{user}", tg_post.message_id, f"nubi:join:{raid}")
        assert joined.startswith(f"Joined raid #{raid} as raider #"), joined
        liked = await press_in(tg_fake, GROUP, user, f"tg{user}", tg_post.message_id, f"nubi:claim:{raid}:like")
        assert liked.startswith("Like claimed"), liked
    joined_here = await group_says(tg_fake, 1002, "/join")
    assert f"joined raid #{raid} as raider #3" in joined_here, joined_here
    pressed = await dc.press(f"nubi:join:{raid}", RAIDER_BASE, "dc0")
    assert pressed is not None and pressed.content.startswith(f"Joined raid #{raid} as raider #4")
    await tg.drain()
    await dc.adapter.posts.drain()
    progress = await services.raids.progress(raid)
    assert (progress.participants, progress.actions) == (4, 2)
    assert "Raiders: 4/500" in tg_fake.message(GROUP, tg_post.message_id).text
    assert "Raiders: 4/500" in dc.raid_post().embeds[0]["description"]
    edits = [c for c in tg_fake.calls_for("editMessageText", GROUP) if c.ok]
    assert edits and len(edits) < 8
    at_most_one_edit_per_interval([c.at for c in edits])

    tg_fake.fail_next("sendMessage", 502)
    tg_fake.fail_next("setChatPermissions", 500)
    clock.advance(minutes=31)
    assert await services.raids.end_overdue() == [raid]
    await until(lambda: any(m.text.startswith(f"Raid #{raid} report") for m in tg_fake.sent_messages(GROUP)),
                "the Telegram report, after the 502")
    await tg.drain()
    await dc.adapter.posts.drain()
    [report] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")]
    assert report.reply_to_message_id == tg_post.message_id and "Raiders: 4" in report.text
    assert len([m for m in dc.visible() if m.embeds and "report" in m.embeds[0]["title"]]) == 1
    assert f"Raid #{raid} — time ran out" in tg_fake.message(GROUP, tg_post.message_id).text
    assert dc.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])

    assert [i.platform for i in await services.locks.pending_releases()] == ["telegram"]
    clock.advance(seconds=11)
    await services.locks.retry_releases()
    await tg.drain()
    assert tg_fake.chat(GROUP).permissions == ORIGINAL
    assert await services.locks.pending_releases() == []
    assert [d for d in await services.outbox.due() if d.raid_id == raid] == []
    assert len([m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} report")]) == 1


# -- pins in partner chats, and the rights each partner chat is checked for at the start ---------------


async def test_a_pinned_partner_raid_tells_the_moderator_what_the_discord_channel_lacks_and_runs_unpinned_there(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot, clock: FakeClock,
) -> None:
    """The Discord channel's role has no Pin Messages: the raid starts all the same, the moderator's
    answer in the group names the channel, the permission and what is skipped there, the channel gets
    its post unpinned with a notice, and nothing is unpinned there at the end."""
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator", can_restrict_members=True, can_pin_messages=True)
    await link_group_with_channel(services, tg_fake, dc)
    await group_says(tg_fake, MOD, f"/raid start {URL} likes=10 duration=10m lock pin partners")
    await until(lambda: any("Partner chat" in (m.text or "") for m in tg_fake.sent_messages(GROUP)), "the note")
    await until(lambda: any("couldn't pin" in (m.content or "") for m in dc.visible()), "the channel's notice")
    await tg.drain()
    await dc.adapter.posts.drain()
    [raid] = [r.id for r in await services.raids.list()]
    [note] = [m for m in tg_fake.sent_messages(GROUP) if "Partner chat" in (m.text or "")]
    name = dc.h.client.get_guild(GUILD_ID).name  # type: ignore[union-attr]
    assert note.text == (f"Partner chat {name} (discord, <#{CHANNEL_ID}>): I'm missing Pin Messages there. "
                         "Its raid post there won't be pinned.")
    [tg_post] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} — live")]
    assert tg_fake.chat(GROUP).pinned == [tg_post.message_id]  # the group's own post is pinned
    dc_post = dc.raid_post()
    assert dc.fake.pinned(CHANNEL_ID) == []
    [refused] = dc.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/{dc_post.id}", "PUT")
    assert refused.status == 403
    [notice] = [m for m in dc.visible() if "couldn't pin" in (m.content or "")]
    assert notice.content == ("I couldn't pin the raid post: I need the Pin Messages permission in this channel. "
                              "The raid runs unpinned here.")
    assert int(notice.json["message_reference"]["message_id"]) == dc_post.id
    [row] = await services.partners.raid_chats(raid)
    assert "pinned" not in (row.progress_ref or {})
    assert int(dc.everyone()["deny"]) & SEND  # type: ignore[index]  # the lock it may do, it did

    clock.advance(seconds=601)
    assert await services.raids.end_overdue() == [raid]
    await tg.drain()
    await dc.adapter.posts.drain()
    assert tg_fake.chat(GROUP).pinned == []
    assert dc.fake.calls_to(f"/channels/{CHANNEL_ID}/messages/pins/*", "DELETE") == []  # nothing to undo
    assert not await services.outbox.pending(partner_unpin_key(raid, row.id))
    assert [d for d in await services.outbox.due() if d.raid_id == raid] == []


async def test_a_pinned_partner_raid_from_discord_names_the_rights_the_telegram_group_lacks(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot,
) -> None:
    """Started on Discord with lock and pin: the Telegram group's bot may not pin there nor restrict
    members; the moderator's answer says so, with what the raid skips in that group."""
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator")  # an admin without those two rights
    code = CODE.search(await answer(dc, as_mod("community link", {})))
    assert code, "no code"
    await group_says(tg_fake, MOD, f"/community join {code[1]}")
    payload = as_mod("raid start", {"url": URL, "likes": 10, "minutes": 30, "lock": True, "pin": True,
                                    "partners": True})
    await dc.h.dispatch_interaction(payload)
    await dc.adapter.posts.drain()
    await until(lambda: any("couldn't pin" in (m.text or "") for m in tg_fake.sent_messages(GROUP)), "the notice")
    await tg.drain()
    text = original_text(dc, payload)
    assert text.endswith(
        "\nPartner chat Raid Group (telegram): I'm missing the admin right to restrict members, the admin right "
        "to pin messages there. The raid runs unlocked there. Its raid post there won't be pinned."), text
    assert tg_fake.chat(GROUP).pinned == [] and tg_fake.chat(GROUP).permissions == ORIGINAL


async def test_a_partner_group_whose_lock_telegram_refuses_is_told_in_its_language(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot, clock: FakeClock,
) -> None:
    """Started on Discord with lock: the partner group's bot may not restrict members there, so Telegram
    refuses the lock; the group gets one notice, in Spanish (its language), as a reply to its raid post,
    and the raid runs unlocked there while the channel is locked."""
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator")  # an admin without the right to restrict
    code = CODE.search(await answer(dc, as_mod("community link", {})))
    assert code, "no code"
    await group_says(tg_fake, MOD, f"/community join {code[1]}")
    assert "Español" in await group_says(tg_fake, MOD, "/settings set language es")
    raid = await dc.start_raid(partners=True, lock=True)
    await until(lambda: any("No pude bloquear" in (m.text or "") for m in tg_fake.sent_messages(GROUP)), "the notice")
    await tg.drain()
    [refused] = tg_fake.calls_for("setChatPermissions", GROUP)
    assert not refused.ok and "not enough rights" in (refused.description or "")
    [tg_post] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid}")]
    [notice] = [m for m in tg_fake.sent_messages(GROUP) if "No pude bloquear" in (m.text or "")]
    assert notice.text == ("No pude bloquear el chat para este raid: necesito ser admin con permiso para "
                           "restringir miembros. El raid sigue sin bloqueo.")
    assert notice.reply_to_message_id == tg_post.message_id
    assert tg_fake.chat(GROUP).permissions == ORIGINAL
    assert int(dc.everyone()["deny"]) & SEND  # type: ignore[index]  # the channel's own lock holds
    assert await services.locks.active(await community(services, "telegram", GROUP)) is None

    clock.advance(minutes=31)
    assert await services.raids.end_overdue() == [raid]
    await tg.drain()
    await dc.adapter.posts.drain()
    assert len([m for m in tg_fake.sent_messages(GROUP) if "No pude bloquear" in (m.text or "")]) == 1
    assert tg_fake.calls_for("setChatPermissions", GROUP) == [refused]  # nothing to put back there


async def test_a_partner_channel_whose_lock_discord_refuses_is_told_in_its_language(
    services: Services, tg_fake: FakeTelegramAPI, tg: TelegramAdapter, dc: Bot,
) -> None:
    """Started in the group with lock: Discord refuses the partner channel's overwrite; the channel gets
    one notice in Russian (its language), its lock record is released, and the group stays locked."""
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator", can_restrict_members=True)
    await link_group_with_channel(services, tg_fake, dc)
    await answer(dc, as_mod("settings set", {"key": "language", "value": "ru"}))
    dc.fake.fail_next("PUT", f"/channels/{CHANNEL_ID}/permissions/*", status=403)
    await group_says(tg_fake, MOD, f"/raid start {URL} likes=10 duration=10m lock partners")
    def notes() -> list[str]:
        return [m.content for m in dc.visible() if m.content and "Не удалось закрыть" in m.content]

    await until(lambda: bool(notes()), "the channel's notice")
    await tg.drain()
    await dc.adapter.posts.drain()
    assert notes() == ["Не удалось закрыть этот канал: мне нужно право «Управлять правами» («Управлять ролями») "
                       "здесь. Рейд идёт без блокировки."]
    assert dc.overwrites() == sorted([EVERYONE_BEFORE, MODERATORS_BEFORE], key=lambda o: o["id"])
    assert not any(tg_fake.chat(GROUP).permissions.values())  # the group's own lock holds
    assert await services.locks.active(await community(services, "discord", GUILD_ID), str(CHANNEL_ID)) is None


async def test_partner_chats_whose_platform_does_not_run_here_are_named_as_unchecked(services: Services) -> None:
    await linked(services, TG_A, DC_C)
    await linked(services, TG_A, TG_B)
    ctx = ChatContext(TG_A, STARTER, is_moderator=True)
    reply = await services.commands.execute(ctx, p.parse(f"/raid start {URL} likes=5 pin partners"))
    assert reply.raid is not None and reply.raid.active and reply.quiet  # the raid runs all the same
    notes = reply.extra["partner_notes"]
    assert notes.text.split("\n") == [  # type: ignore[attr-defined]
        "Partner chat Server C (discord, <#930000000000000778>): I can't check my rights there, because my "
        "discord side does not run in this process.",
        "Partner chat Group B (telegram): I can't check my rights there, because my telegram side does not run "
        "in this process.",
    ]

    async def broken(chat: ChatRef, lock: bool, pin: bool) -> list[Lacking]:
        raise TimeoutError("no answer")

    async def fine(chat: ChatRef, lock: bool, pin: bool) -> list[Lacking]:
        return []

    services.partners.checkers.update(discord=broken, telegram=fine)
    await services.raids.end(reply.raid.id, status="cancelled")
    again = await services.commands.execute(ctx, p.parse(f"/raid start {URL} likes=5 partners"))
    assert again.extra["partner_notes"].text == (  # type: ignore[attr-defined]
        "Partner chat Server C (discord, <#930000000000000778>): I couldn't check my rights there just now.")
    services.partners.checkers.update(discord=fine)
    await services.raids.end(again.raid.id, status="cancelled")  # type: ignore[union-attr]
    quiet = await services.commands.execute(ctx, p.parse(f"/raid start {URL} likes=5 partners"))
    assert "partner_notes" not in quiet.extra


async def test_an_unpin_owed_in_a_partner_group_is_finished_by_a_restarted_adapter(
    services: Services, tg_fake: FakeTelegramAPI, dc: Bot, clock: FakeClock,
) -> None:
    """Started on Discord with pin: the partner group's post is pinned; Telegram fails its unpin at the
    end, so the unpin stays owed, and a new Telegram adapter (a restart) finishes it, once."""
    tg_fake.set_member(GROUP, tg_fake.bot_id, "administrator", can_pin_messages=True)
    config = TelegramConfig(token=tg_fake.token, api_base_url=tg_fake.base_url, edit_interval_seconds=INTERVAL)
    async with running(services, config) as first:
        code = CODE.search(await answer(dc, as_mod("community link", {})))
        assert code, "no code"
        await group_says(tg_fake, MOD, f"/community join {code[1]}")
        raid = await dc.start_raid(partners=True, pin=True)
        await until(lambda: bool(tg_fake.chat(GROUP).pinned), "the pin in the partner group")
        await first.drain()
        [tg_post] = [m for m in tg_fake.sent_messages(GROUP) if m.text.startswith(f"Raid #{raid} — live")]
        assert tg_fake.chat(GROUP).pinned == [tg_post.message_id]
        [row] = await services.partners.raid_chats(raid)
        assert (row.progress_ref or {}).get("pinned") is True
        tg_fake.fail_next("unpinChatMessage", error_code=502)
        clock.advance(minutes=31)
        assert await services.raids.end_overdue() == [raid]
        await until(lambda: bool(tg_fake.calls_for("unpinChatMessage")), "the unpin attempt")
        await first.drain()
        assert tg_fake.chat(GROUP).pinned == [tg_post.message_id]
        assert await services.outbox.pending(partner_unpin_key(raid, row.id))

    clock.advance(seconds=FIRST_RETRY * 4)
    async with running(services, config) as second:  # a new process finishes what is owed on start
        await second.drain()
        assert tg_fake.chat(GROUP).pinned == []
        assert not await services.outbox.pending(partner_unpin_key(raid, row.id))
    assert [c.ok for c in tg_fake.calls_for("unpinChatMessage")] == [False, True]  # done exactly once
