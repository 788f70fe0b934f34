"""The dashboard for everyone: axe-core (WCAG 2.1 A/AA) in Chromium finds nothing in any state, every
control works from the keyboard and shows its focus, a polite live region speaks at most every 5 s,
and the figures read right (seconds of a short raid, final figures of an ended one, a time axis whose
labels differ, a scale for the raiders line)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from adapters.http.app import create_app
from core.directory import ChatRef
from core.i18n import _, use_language
from core.raids.model import RaidSpec
from core.services import Services
from tests.test_dashboard import (
    ADMIN_KEY,
    ALPHA,
    LIVE,
    URL,
    Browser,
    browser_or_skip,
    linked_member,
    raider,
    settings,
    start_browser,
)
from tests.test_realtime import running

__all__ = ["settings"]  # the fixture: "keys" configures an admin key and a web:team key
pytestmark = pytest.mark.parametrize("settings", ["keys"], indirect=True)
STATUSES = ("completed", "timeout", "failed", "cancelled")


async def ended_raids(services: Services, clock) -> dict[str, int]:
    """One ended raid of each status; the timeout one lasted 31 seconds and has no metrics snapshot."""
    ids = {}
    for i, status in enumerate(STATUSES):
        raid = await services.raids.start(ChatRef("telegram", f"-10{i}", f"Squad {status}"), RaidSpec(URL, {"like": 2}),
                                          by=raider(i))
        await services.raids.join(raid.id, raider(i))
        await services.raids.claim(raid.id, raider(i), "like")
        clock.advance(seconds=31 if status == "timeout" else 95)
        await services.raids.end(raid.id, status=status)
        ids[status] = raid.id
    return ids


async def assert_no_violations(b: Browser, state: str) -> None:
    found = (await b.ask(do="axe"))["violations"]
    assert found == [], f"{state}: {found}"


async def test_every_state_passes_axe_and_works_from_the_keyboard(services: Services, clock, tmp_path: Path) -> None:
    node = browser_or_skip()
    ended = await ended_raids(services, clock)
    live = await services.raids.start(LIVE, RaidSpec(URL, {"like": 6, "repost": 4}), by=raider(0, "discord"))
    for i in range(3):
        clock.advance(seconds=20)
        await services.raids.join(live.id, raider(i, "discord"))
        await services.raids.claim(live.id, raider(i, "discord"), "like")
        await services.raids.snapshot(live.id)
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path, "--no-key")
        try:
            b = Browser(proc)
            waiting = await b.ask(do="text", selector="#no-active", expect="Sign in with an API key", within=3000)
            assert "No active raid" not in waiting["text"]
            await assert_no_violations(b, "waiting for a key")

            await b.ask(do="fill", selector="#apikey", value=ADMIN_KEY)
            await b.ask(do="key", selector="#keyform button[type=submit]", key="Enter")
            await b.ask(do="visible", selector="#conn.live")
            await b.ask(do="text", selector="#signed-in", expect="all communities", within=3000)
            await b.ask(do="card", raidId=live.id)
            for status, raid_id in ended.items():  # every badge is on screen for axe to measure
                badge = await b.ask(do="text", selector=f'#ended [data-raid-id="{raid_id}"] .tag.status', expect=status,
                                    within=3000)
                assert badge["text"] == status
            await b.ask(do="text", selector="#detail-title", expect=f"Raid #{live.id}", within=3000)
            await b.ask(do="visible", selector="#end-raid")
            await assert_no_violations(b, "signed in, active raid shown, every status badge")

            # an ended raid's card, chosen with the keyboard alone
            card = f'#ended [data-raid-id="{ended["timeout"]}"]'
            pressed = await b.ask(do="key", selector=f"{card} .select", key="Enter")
            assert pressed["tag"] == "button" and pressed["focusVisible"] and not pressed["outline"].startswith("none")
            await b.ask(do="text", selector="#detail-title", expect=f"Raid #{ended['timeout']}", within=3000)
            assert (await b.ask(do="attr", selector=f"{card} .select", name="aria-pressed"))["value"] == "true"
            assert (await b.ask(do="attr", selector=f'#active [data-raid-id="{live.id}"] .select',
                                name="aria-pressed"))["value"] == "false"
            assert "Duration31 s" in (await b.ask(do="text", selector=card, expect="31 s", within=1000))["text"]
            note = await b.ask(do="text", selector="#chart-note", expect="Final figures", within=3000)
            assert "50% done, 1 raiders, 1 actions (0 metrics snapshots)" in note["text"]
            assert "snapshot yet" not in note["text"]
            await b.ask(do="visible", selector="#end-raid", hidden=True)
            times = (await b.ask(do="texts", selector="#chart .time-tick"))["texts"]
            assert len(times) >= 2 and len(set(times)) == len(times), times  # 31 s: labels in seconds, all different
            scale = (await b.ask(do="texts", selector="#chart .raider-tick"))["texts"]
            assert scale[0] == "0" and int(scale[-1]) >= 1, scale
            await assert_no_violations(b, "ended raid shown")

            # the leaderboard window: a pressed-button group, Space works
            day = '.windows button[data-window="day"]'
            await b.ask(do="key", selector=day, key=" ")
            assert (await b.ask(do="attr", selector=day, name="aria-pressed"))["value"] == "true"
            assert (await b.ask(do="attr", selector='.windows button[data-window="week"]', name="aria-pressed"))["value"] == "false"

            # back to the live raid: its scale covers its raiders; progress reaches the live region, throttled
            await b.ask(do="key", selector=f'#active [data-raid-id="{live.id}"] .select', key=" ")
            await b.ask(do="text", selector="#detail-title", expect=f"Raid #{live.id}", within=3000)
            scale = (await b.ask(do="texts", selector="#chart .raider-tick"))["texts"]
            assert int(scale[-1]) >= 3, scale
            await b.ask(do="listen")
            for i in range(3, 9):
                await services.raids.join(live.id, raider(i, "discord"))
                await services.raids.claim(live.id, raider(i, "discord"), "repost" if i % 2 else "like")
                await asyncio.sleep(0.4)
            await b.ask(do="counter", raidId=live.id, expect="9", within=3000)
            await asyncio.sleep(6)
            said = (await b.ask(do="heard"))["said"]
            assert said, "the live region said nothing"
            assert all(later["t"] - earlier["t"] >= 4900 for earlier, later in zip(said, said[1:], strict=False)), said
            assert len(said) <= 3  # 6 s of updates every 0.4 s: two or three summaries, not fifteen
            assert f"Raid {live.id} in nubi raiders:" in said[-1]["text"] and "9 raiders" in said[-1]["text"]
            assert (await b.ask(do="attr", selector="#announcer", name="aria-live"))["value"] == "polite"
            await assert_no_violations(b, "live raid after updates")
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_badges_platforms_and_the_community_language_show_live_and_pass_axe(
    services: Services, tmp_path: Path
) -> None:
    """A member linked across Telegram and Discord is one line of each board with both markers; their
    badge shows beside them and a new one arrives live; board titles are in the community's language."""
    node = browser_or_skip()
    raid = await services.raids.start(ALPHA, RaidSpec(URL, {"like": 5, "repost": 5}), by=raider(0))
    cid = raid.community_id
    await services.community_settings.change(cid, {"language": "es", "badges": "5:Raider, 300:Veteran"}, actor=None)
    await services.raids.join(raid.id, raider(1))
    kai, _points = await linked_member(services, raid.id, cid)
    with use_language("es"):
        week, raid_title = _("This week's leaderboard"), _("Raid leaderboard")
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path, ADMIN_KEY)
        try:
            b = Browser(proc)
            await b.ask(do="text", selector="#detail-title", expect=f"Raid #{raid.id}", within=3000)
            await b.ask(do="text", selector="#community-board-title", expect=week, within=3000)
            assert (await b.ask(do="attr", selector="#community-board-title", name="lang"))["value"] == "es"
            said = await b.ask(do="text", selector="#community-language", expect="Español", within=3000)
            assert "Members read nubi in Español" in said["text"]
            assert (await b.ask(do="text", selector="#raid-board-title", expect=raid_title, within=3000))["text"] == raid_title
            for board in ("#community-board", "#raid-board"):
                line = f'{board} li[data-member-id="{kai}"]'
                await b.ask(do="text", selector=line, expect="Raider", within=3000)
                assert (await b.ask(do="count", selector=line))["count"] == 1  # one person, one line
                assert (await b.ask(do="count", selector=f"{board} li"))["count"] == 2
                assert (await b.ask(do="texts", selector=f"{line} .pf"))["texts"] == ["TG", "DC"]
                hidden = (await b.ask(do="texts", selector=f"{line} .platforms .visually-hidden"))["texts"]
                assert hidden == ["on Telegram and Discord"]
            await assert_no_violations(b, "a linked member with a badge, boards in Spanish")

            await services.moderation.adjust_points(cid, kai, 300, "hero of the week", actor=None)  # Veteran, live
            feed = await b.ask(do="text", selector="#badge-feed", expect="Veteran", within=3000)
            assert "300" in feed["text"] and "Kai" in feed["text"]
            assert (await b.ask(do="attr", selector="#badge-feed li .badge-text", name="lang"))["value"] == "es"
            await b.ask(do="text", selector=f'#community-board li[data-member-id="{kai}"] .badge-chip', expect="Veteran",
                        within=3000)
            await b.ask(do="visible", selector="#badge-feed-empty", hidden=True)
            await assert_no_violations(b, "a badge earned live")
            assert (await b.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
