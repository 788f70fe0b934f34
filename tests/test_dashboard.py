"""The dashboard: its read API over a real server, and the page itself in headless Chromium."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.http.app import create_app
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.raids.model import RaidSpec
from core.services import Services
from tests.conftest import IN_CI
from tests.test_realtime import read_json_line, running

ADMIN_KEY = "admin-key-for-dashboard-1"
TEAM_KEY = "team-key-for-dashboard-2"
ALPHA = ChatRef("telegram", "-1002", "Alpha Squad")
LIVE = ChatRef("discord", "9001", "nubi raiders", channel="90010")
TEAM = ChatRef("web", "team", "Team web")
URL = "https://x.com/nubi/status/4242"
JS_DIR = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    if getattr(request, "param", "open") == "keys":
        return Settings(http={"api_keys": [{"key": ADMIN_KEY}, {"key": TEAM_KEY, "community": "web:team"}]})
    return Settings()


def raider(i: int, platform: str = "telegram") -> MemberRef:
    names = ["Ada", "Bashir", "Chen", "Dana", "Eko", "Farah", "Goran", "Hana", "Ivo", "Juno"]
    return MemberRef(platform, str(700 + i), names[i % len(names)], names[i % len(names)].lower())


async def ended_raid(services: Services, clock) -> int:
    """A finished raid with members, claims and metrics snapshots, as the page shows under 'Ended'."""
    raid = await services.raids.start(ALPHA, RaidSpec(URL, {"like": 4, "repost": 3}), by=raider(0))
    for i in range(4):
        clock.advance(seconds=60)
        await services.raids.join(raid.id, raider(i))
        await services.raids.claim(raid.id, raider(i), "like")
        await services.raids.snapshot(raid.id)
    await services.raids.end(raid.id, reason="time is up")
    return raid.id


async def test_read_api_and_static_files(services: Services, clock) -> None:
    old = await ended_raid(services, clock)
    live = await services.raids.start(LIVE, RaidSpec(URL, {"like": 5}), by=raider(0, "discord"))
    await services.raids.join(live.id, raider(1, "discord"))
    await services.raids.claim(live.id, raider(1, "discord"), "like")
    await services.raids.snapshot(live.id)
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        active = (await http.get("/api/dashboard/raids")).json()["raids"]
        assert [(r["id"], r["participants"], r["actions"]) for r in active] == [(live.id, 1, 1)]
        ended = (await http.get("/api/dashboard/raids", params={"status": "ended"})).json()["raids"]
        assert [r["id"] for r in ended] == [old] and ended[0]["report"]["participants"] == 4
        assert ended[0]["report"]["objectives"][0] == {"action": "like", "target": 4, "count": 4, "met": True}
        detail = (await http.get(f"/api/dashboard/raids/{live.id}")).json()
        assert detail["raid"]["top"][0]["name"] == "Bashir" and detail["report"] is None
        assert [m["actions"] for m in detail["metrics"]] == [1]
        assert len((await http.get(f"/api/dashboard/raids/{old}")).json()["metrics"]) == 4
        board = (await http.get(f"/api/dashboard/communities/{ended[0]['communityId']}/leaderboard",
                                params={"window": "all"})).json()
        assert [e["name"] for e in board["entries"]][:1] and len(board["entries"]) == 4
        assert (await http.get("/api/dashboard/communities/1/leaderboard", params={"window": "year"})).status_code == 400
        shown = (await http.get(f"/api/dashboard/communities/{ended[0]['communityId']}/settings")).json()
        assert shown["settings"] == {} and shown["effective"]["verification"] == "honor"
        missing = await http.get("/api/dashboard/raids/424242")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "RAID_NOT_FOUND"
        me = (await http.get("/api/dashboard/me")).json()
        assert me == {"keysRequired": False, "scope": "all", "community": None, "communityId": None}
        page = await http.get("/")
        assert page.status_code == 200 and '<script src="/static/socket.io.min.js?v=' in page.text
        client_js = await http.get("/static/socket.io.min.js")
        assert client_js.status_code == 200 and "Socket.IO v4" in client_js.text[:200]
        assert (await http.get("/static/dashboard.js")).status_code == 200
        assert (await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).status_code == 200


@pytest.mark.parametrize("settings", ["keys"], indirect=True)
async def test_read_api_needs_a_key_and_respects_its_scope(services: Services) -> None:
    await services.raids.start(LIVE, RaidSpec(URL), by=raider(0, "discord"))
    team = await services.raids.start(TEAM, RaidSpec(URL), by=raider(0, "web"))
    async with running(create_app(services)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/")).status_code == 200  # the page itself is open; it asks for a key
        assert (await http.get("/api/dashboard/raids")).status_code == 401
        admin = await http.get("/api/dashboard/raids", headers={"X-API-KEY": ADMIN_KEY})
        assert len(admin.json()["raids"]) == 2
        scoped = await http.get("/api/dashboard/raids", headers={"X-API-KEY": TEAM_KEY})
        assert [r["id"] for r in scoped.json()["raids"]] == [team.id]
        assert (await http.get("/api/dashboard/me")).status_code == 401
        me = (await http.get("/api/dashboard/me", headers={"X-API-KEY": TEAM_KEY})).json()
        assert me == {"keysRequired": True, "scope": "community", "community": "web:team", "communityId": team.community_id}
        me = (await http.get("/api/dashboard/me", headers={"X-API-KEY": ADMIN_KEY})).json()
        assert me == {"keysRequired": True, "scope": "all", "community": None, "communityId": None}
        other = admin.json()["raids"][0]["id"] if admin.json()["raids"][0]["id"] != team.id else admin.json()["raids"][1]["id"]
        assert (await http.get(f"/api/dashboard/raids/{other}", headers={"X-API-KEY": TEAM_KEY})).status_code == 403


def browser_or_skip() -> str:
    node = shutil.which("node")
    reason = None
    if not CHROMIUM.exists():
        reason = "Chromium is not installed (apt-get install chromium)"
    elif node is None:
        reason = "node is not installed"
    elif not (JS_DIR / "node_modules" / "playwright-core").is_dir():
        reason = "tests/js/node_modules is missing (run npm install in tests/js)"
    if reason:
        if IN_CI:
            pytest.fail(f"required under CI: {reason}")
        pytest.skip(reason)
    return node  # type: ignore[return-value]


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await read_json_line(self.proc.stdout)
        assert reply["step"] != "error", reply
        return reply


async def start_browser(node: str, url: str, tmp_path: Path, *extra: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "dashboard_browser.mjs"), url, str(tmp_path / "profile"), *extra,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        loaded = await read_json_line(proc.stdout, within=30)
        assert loaded == {"step": "loaded"}, loaded
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc


@pytest.mark.parametrize("settings", ["keys"], indirect=True)
async def test_dashboard_asks_for_a_key_and_shows_only_its_community(services: Services, tmp_path: Path) -> None:
    node = browser_or_skip()
    team = await services.raids.start(TEAM, RaidSpec(URL), by=raider(0, "web"))
    other = await services.raids.start(LIVE, RaidSpec(URL), by=raider(0, "discord"))
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path, TEAM_KEY)
        try:
            browser = Browser(proc)
            assert (await browser.ask(do="card", raidId=team.id))["participants"] == "0"
            await services.raids.join(other.id, raider(1, "discord"))
            await services.raids.join(team.id, raider(1, "web"))
            await browser.ask(do="counter", raidId=team.id, expect="1", within=2000)
            shown = await browser.ask(do="text", selector="#active", expect="Team web", within=1000)
            assert "nubi raiders" not in shown["text"]  # another community's raid stays out of sight
            assert (await browser.ask(do="quit"))["problems"] == []
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def test_dashboard_follows_raids_live(services: Services, clock, tmp_path: Path) -> None:
    node = browser_or_skip()
    await ended_raid(services, clock)
    async with running(create_app(services)) as url:
        proc = await start_browser(node, url, tmp_path)
        try:
            browser = Browser(proc)

            live = await services.raids.start(LIVE, RaidSpec(URL, {"like": 8, "repost": 5, "reply": 3}),
                                              by=raider(0, "discord"))
            await services.community_settings.change(live.community_id, {"timezone": "Europe/Berlin"}, actor=None)
            assert (await browser.ask(do="card", raidId=live.id))["participants"] == "0"
            await services.raids.join(live.id, raider(0, "discord"))
            moved = await browser.ask(do="counter", raidId=live.id, expect="1", within=2000)
            assert moved["ms"] <= 2000

            for i in range(1, 7):  # a few minutes of raid, with the snapshots the chart draws
                clock.advance(seconds=60)
                await services.raids.join(live.id, raider(i, "discord"))
                for action in ("like", "repost", "reply")[: 1 + i % 3]:
                    await services.raids.claim(live.id, raider(i, "discord"), action)
                await services.raids.snapshot(live.id)
            await browser.ask(do="counter", raidId=live.id, expect="7", within=3000)
            await browser.ask(do="text", selector="#community-board", expect="pt", within=3000)
            await browser.ask(do="text", selector="#community-settings", expect="Europe/Berlin", within=3000)
            await browser.ask(do="text", selector="#ended", expect="Alpha Squad", within=3000)
            note = await browser.ask(do="text", selector="#chart-note", expect="6 metrics snapshots", within=7000)
            assert "plus live updates" in note["text"]

            shot = tmp_path / "dashboard.png"
            await browser.ask(do="screenshot", path=str(shot), width=1280, height=900)
            narrow = tmp_path / "dashboard-narrow.png"
            await browser.ask(do="screenshot", path=str(narrow), width=390, height=844)
            await services.raids.end(live.id, status="cancelled")  # the card moves to the ended raids
            await browser.ask(do="text", selector="#active-count", expect="0", within=3000)
            await browser.ask(do="text", selector="#ended", expect="nubi raiders", within=3000)
            done = await browser.ask(do="quit")
            assert done["problems"] == []
            assert await asyncio.wait_for(proc.wait(), 20) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    for png in (shot, narrow):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
