"""Pinned raid posts and raids in forum topics, through the real PTB against the fake Bot API.

A pinned raid's post is pinned while it runs and unpinned at its end, the unpin owed through the
outbox until Telegram took it (a transient failure is finished by the sweep or a restarted adapter).
A raid started in a forum topic posts, edits and reports there, and its lock closes and reopens that
topic instead of muting the group.
"""

from __future__ import annotations

from adapters.telegram import TelegramAdapter
from bot.scheduler import NubiScheduler
from core.clock import FakeClock
from core.events import RaidStarted
from core.outbox import FIRST_RETRY, unpin_key
from core.services import Services
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.test_telegram_adapter import (  # noqa: F401  (fixtures)
    GROUP,
    MOD,
    ORIGINAL,
    URL,
    adapter,
    calls,
    config_for,
    fake,
    fake_time,
    patient_waits,
    press_all,
    running,
    say,
    start_raid,
)


def raid_id(services: Services) -> int:
    return services.recorder.of(RaidStarted)[-1].raid_id


async def end_now(services: Services, clock: FakeClock, adapter: TelegramAdapter) -> None:  # noqa: F811
    clock.advance(seconds=601)
    assert await services.raids.end_overdue()
    await adapter.drain()


# -- pins --------------------------------------------------------------------------------------------


async def test_a_pinned_raid_post_is_pinned_while_it_runs_and_unpinned_at_its_end(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_pin_messages=True)
    post = await start_raid(fake, "pin")
    await adapter.drain()
    raid = raid_id(services)
    assert fake.chat(GROUP).pinned == [post.message_id]
    [pin] = fake.calls_for("pinChatMessage")
    assert pin.ok and pin.params["disable_notification"] is True  # the post itself was the news
    progress = await services.raids.progress(raid)
    assert progress.pin and progress.progress_ref == {"chat_id": GROUP, "message_id": post.message_id,
                                                      "pinned": True}

    await end_now(services, clock, adapter)
    assert fake.chat(GROUP).pinned == []
    [unpin] = fake.calls_for("unpinChatMessage")
    assert unpin.ok and unpin.params["message_id"] == post.message_id
    assert not await services.outbox.pending(unpin_key(raid))
    assert any(m.text.startswith(f"Raid #{raid} report") for m in fake.sent_messages(GROUP))


async def test_the_pin_setting_pins_each_raid_and_nopin_opts_out(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_pin_messages=True)
    reply = await say(fake, GROUP, MOD, "/settings set pin true")
    assert reply.text == "pin is now true here."
    first = await start_raid(fake)
    await adapter.drain()
    assert fake.chat(GROUP).pinned == [first.message_id]

    await say(fake, GROUP, MOD, "/raid end")  # the report answers
    await adapter.drain()
    assert fake.chat(GROUP).pinned == []
    await start_raid(fake, "nopin")
    await adapter.drain()
    assert fake.chat(GROUP).pinned == [] and len(fake.calls_for("pinChatMessage")) == 1
    assert not (await services.raids.progress(raid_id(services))).pin


async def test_without_the_right_to_pin_the_raid_runs_unpinned_with_one_clear_notice(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)  # no can_pin_messages
    post = await start_raid(fake, "pin")
    await calls(fake, "sendMessage", 2, GROUP)
    await adapter.drain()
    raid = raid_id(services)
    [refused] = fake.calls_for("pinChatMessage")
    assert not refused.ok and "not enough rights" in (refused.description or "")
    [notice] = [m for m in fake.sent_messages(GROUP) if "couldn't pin" in (m.text or "")]
    assert notice.text == ("I couldn't pin the raid post: I need to be an admin allowed to pin messages. "
                           "The raid runs unpinned.")
    assert notice.reply_to_message_id == post.message_id
    assert "pinned" not in ((await services.raids.progress(raid)).progress_ref or {})
    [joined] = await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    assert joined.startswith(f"Joined raid #{raid}")

    await end_now(services, clock, adapter)
    assert fake.calls_for("unpinChatMessage") == []  # nothing was pinned: nothing to undo
    assert not await services.outbox.pending(unpin_key(raid))


async def test_an_unpin_that_failed_is_retried_by_the_sweep_and_finished_by_a_restarted_adapter(
    services: Services, fake: FakeTelegramAPI, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_pin_messages=True)
    sched = NubiScheduler(services)  # not started: its sweep is called step by step
    try:
        async with running(services, config_for(fake)) as first:
            post = await start_raid(fake, "pin")
            await first.drain()
            raid = raid_id(services)
            fake.fail_next("unpinChatMessage", error_code=502, times=2)  # a bad gateway, twice
            await end_now(services, clock, first)
            assert fake.chat(GROUP).pinned == [post.message_id]  # still pinned, and still owed
            assert await services.outbox.pending(unpin_key(raid))

            clock.advance(seconds=FIRST_RETRY)
            await sched.sweep()  # the sweep republishes it: this attempt meets the second 502
            await first.drain()
            assert len(fake.calls_for("unpinChatMessage")) == 2
            assert fake.chat(GROUP).pinned == [post.message_id]

        clock.advance(seconds=2 * FIRST_RETRY)
        async with running(services, config_for(fake)) as second:  # a new process: no sweep needed
            await second.drain()
            assert fake.chat(GROUP).pinned == []
            assert not await services.outbox.pending(unpin_key(raid))
            await sched.sweep()
            await second.drain()
        assert [c.ok for c in fake.calls_for("unpinChatMessage")] == [False, False, True]  # done exactly once
    finally:
        await sched.stop()


# -- forum topics ------------------------------------------------------------------------------------


async def test_a_raid_started_in_a_topic_posts_edits_and_reports_there_and_the_lock_closes_the_topic(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_manage_topics=True, can_pin_messages=True,
                    can_restrict_members=True)
    other = fake.add_topic(GROUP, "Chat")
    topic = fake.add_topic(GROUP, "Raids").message_thread_id
    post = await say(fake, GROUP, MOD, f"/raid start {URL} likes=100 duration=10m lock pin", topic=topic)
    await adapter.drain()
    raid = raid_id(services)
    assert post.message_thread_id == topic and post.text.startswith(f"Raid #{raid} — live")
    assert "Chat is locked for the raid." in post.text
    assert fake.chat(GROUP).topics[topic].closed and not other.closed
    assert fake.chat(GROUP).permissions == ORIGINAL and fake.calls_for("setChatPermissions") == []
    assert fake.chat(GROUP).pinned == [post.message_id]
    progress = await services.raids.progress(raid)
    assert progress.thread == str(topic)
    lock = await services.locks.active(progress.community_id)
    assert lock is not None and lock.saved_permissions == {"topic_id": topic}

    await press_all(fake, [(1000, "a", f"nubi:join:{raid}")], post.message_id)
    status = await say(fake, GROUP, MOD, "/raid status", topic=topic)  # replies go to the topic too
    assert status.message_thread_id == topic
    await adapter.drain()
    assert "Raiders: 1/500" in fake.message(GROUP, post.message_id).text

    await end_now(services, clock, adapter)
    [report] = [m for m in fake.sent_messages(GROUP) if (m.text or "").startswith(f"Raid #{raid} report")]
    assert report.message_thread_id == topic and report.reply_to_message_id == post.message_id
    assert not fake.chat(GROUP).topics[topic].closed
    assert fake.chat(GROUP).pinned == []
    assert fake.chat(GROUP).permissions == ORIGINAL and fake.calls_for("setChatPermissions") == []
    assert await services.locks.active(progress.community_id) is None
    assert await services.locks.pending_releases("telegram") == []
    assert all(m.message_thread_id == topic for m in fake.sent_messages(GROUP))


async def test_a_topic_raid_without_the_right_to_manage_topics_runs_unlocked_with_a_notice(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_restrict_members=True)
    topic = fake.add_topic(GROUP, "Raids").message_thread_id
    post = await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 duration=10m lock", topic=topic)
    await calls(fake, "sendMessage", 2, GROUP)
    await adapter.drain()
    raid = raid_id(services)
    [refused] = fake.calls_for("closeForumTopic")
    assert not refused.ok
    [notice] = [m for m in fake.sent_messages(GROUP) if "couldn't close this topic" in (m.text or "")]
    assert notice.message_thread_id == topic and notice.reply_to_message_id == post.message_id
    assert "Chat is locked" not in post.text and not fake.chat(GROUP).topics[topic].closed
    assert fake.calls_for("reopenForumTopic") == []  # the lock never held: nothing to reopen
    progress = await services.raids.progress(raid)
    assert await services.locks.active(progress.community_id) is None
    assert fake.chat(GROUP).permissions == ORIGINAL

    await end_now(services, clock, adapter)
    assert await services.locks.pending_releases("telegram") == []



async def test_a_topic_reopened_by_an_admin_during_the_raid_still_releases_and_a_closed_one_stays_closed(
    services: Services, fake: FakeTelegramAPI, adapter: TelegramAdapter, clock: FakeClock  # noqa: F811
) -> None:
    fake.set_member(GROUP, fake.bot_id, "administrator", can_manage_topics=True)
    topic = fake.add_topic(GROUP, "Raids").message_thread_id
    await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 duration=10m lock", topic=topic)
    await adapter.drain()
    community = (await services.raids.progress(raid_id(services))).community_id
    assert fake.chat(GROUP).topics[topic].closed
    fake.chat(GROUP).topics[topic].closed = False  # an admin reopened it by hand
    await end_now(services, clock, adapter)
    [reopen] = fake.calls_for("reopenForumTopic")
    assert not reopen.ok and "TOPIC_NOT_MODIFIED" in (reopen.description or "")
    assert await services.locks.pending_releases("telegram") == [] and await services.locks.active(community) is None

    closed = fake.add_topic(GROUP, "Archive", closed=True).message_thread_id
    post = await say(fake, GROUP, MOD, f"/raid start {URL} likes=5 duration=10m lock", topic=closed)
    await adapter.drain()
    assert "Chat is locked for the raid." in post.text  # closed for the raid, as it was already
    await end_now(services, clock, adapter)
    assert fake.chat(GROUP).topics[closed].closed  # and still closed, as before the raid
    assert len(fake.calls_for("reopenForumTopic")) == 1
    assert await services.locks.pending_releases("telegram") == []
