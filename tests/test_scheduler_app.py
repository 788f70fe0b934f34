"""The scheduler only triggers; the app starts, serves and stops cleanly with no tokens."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bot import preflight
from bot.app import NubiApp
from bot.scheduler import NubiScheduler
from core.config import Settings
from core.directory import ChatRef, MemberRef
from core.events import AnnouncementDue, RaidEnded
from core.raids.model import RaidSpec
from core.services import Services
from migrations import downgrade, upgrade
from tests.pg import free_port

CHAT = ChatRef("telegram", "-42", "g")
ROOT = Path(__file__).resolve().parent.parent


async def test_reconcile_brings_rows_up_to_now(services: Services, clock) -> None:
    raid = await services.raids.start(CHAT, RaidSpec("https://x.com/a/status/1"), by=MemberRef("telegram", "1", "m"))
    await services.raids.join(raid.id, MemberRef("telegram", "2", "a"))
    await services.locks.lock(raid.community_id, {"can_send_messages": True}, raid.ends_at + timedelta(minutes=5),
                              raid_id=None)
    session = await services.sessions.create(services.settings.agents[0].id, str(uuid.uuid4()))
    sched = NubiScheduler(services)
    assert (await sched.reconcile())["raids_ended"] == 0
    clock.advance(minutes=40)
    done = await sched.reconcile()
    assert done["raids_ended"] == 1 and done["locks_released"] == 1 and done["sessions_expired"] == 1
    assert [e.status for e in services.recorder.of(RaidEnded)] == ["timeout"]
    assert (await sched.reconcile()) == {"raids_ended": 0, "locks_released": 0, "lock_releases_retried": 0,
                                         "sessions_expired": 0, "windows_closed": 0, "claims_unsettled": 0,
                                         "announcements": 0}
    clock.advance(seconds=10)  # no adapter confirmed the release: every sweep from now asks again
    assert (await sched.reconcile())["lock_releases_retried"] == 1
    assert (await sched.reconcile())["lock_releases_retried"] == 1
    assert session.id


async def test_jobs_fire_on_time(services: Services, clock) -> None:
    sched = NubiScheduler(services)
    await sched.start()
    try:
        raid = await services.raids.start(CHAT, RaidSpec("https://x.com/a/status/1"))
        assert sched.scheduler.get_job(f"raid-end:{raid.id}") is not None  # armed from the event
        sched.arm_raid_end(raid.id, datetime.now(UTC) + timedelta(seconds=0.3))
        for _ in range(50):
            await asyncio.sleep(0.05)
            if services.recorder.of(RaidEnded):
                break
        assert [e.raid_id for e in services.recorder.of(RaidEnded)] == [raid.id]
        cid = raid.community_id
        s = await services.schedules.add(cid, "* * * * *", "week")
        await sched.sync_schedules()
        assert sched.scheduler.get_job(f"schedule:{s.id}") is not None
        await sched.fire_schedule(s.id, clock.now().replace(second=0, microsecond=0) + timedelta(minutes=1))
        assert len(services.recorder.of(AnnouncementDue)) == 1
    finally:
        await sched.stop()


async def test_app_serves_without_tokens(tmp_path: Path) -> None:
    settings = Settings(database={"url": f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"}, http={"port": 0})
    app = NubiApp(settings)
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}") as client:
            r = await client.get("/api/messaging/sessions/health")
            assert r.status_code == 200 and r.json()["status"] == "healthy"
            page = await client.get("/")
            assert page.status_code == 200 and "nubi" in page.text.lower()
            mcp = await client.post(  # MCP over streamable HTTP, with its session manager running
                "/mcp/",
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                    "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "test", "version": "1"}}},
                headers={"Accept": "application/json, text/event-stream"},
            )
            assert mcp.status_code == 200 and "nubi" in mcp.text
        assert app.scheduler is not None and app.scheduler.scheduler.running
        assert app.adapters == []  # no tokens, no chat adapters
    finally:
        await app.stop()


# What `nubi run` leaves unloaded until it is needed (issue #11: memory): chat adapters without a
# token, the MCP SDK until /mcp is called, Alembic (migrations run in a child process), and the
# client and Redis libraries python-socketio would bring along.
NOT_LOADED = ("discord", "telegram", "mcp", "alembic", "aiohttp", "requests", "redis")
STARTS = """
import asyncio, json, sys
from bot.app import NubiApp
from core.config import Settings

async def main():
    app = NubiApp(Settings(database={"url": sys.argv[1]}, http={"port": 0}))
    await app.start()
    try:
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))))
    finally:
        await app.stop()

asyncio.run(main())
"""


def test_an_idle_server_loads_only_what_it_uses(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBI_")} | {"PYTHONPATH": str(ROOT)}
    for start in ("new database, migrated by a child process", "database at head"):
        done = subprocess.run([sys.executable, "-c", STARTS, url, *NOT_LOADED], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "[]", (start, done.stdout)


async def test_start_migrates_only_a_database_behind_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    children: list[str] = []

    async def child(u: str) -> None:
        children.append(u)

    monkeypatch.setattr(preflight, "migrate_in_child", child)
    await preflight.migrate_async(url)  # no database yet
    upgrade(url)
    await preflight.migrate_async(url)  # at head: one query, no child
    downgrade(url, "0006")
    await preflight.migrate_async(url)
    assert children == [url, url]


def test_nubi_run_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBI_")}
    env |= {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.db'}", "NUBI_HTTP_PORT": str(port),
            "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/messaging/sessions/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                break
            import time

            time.sleep(0.1)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "nubi is running" in out and "Traceback" not in err
        assert (tmp_path / "run.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_app_runs_telegram_in_webhook_mode(tmp_path: Path) -> None:
    from tests.fakes.telegram_api import FakeTelegramAPI, make_command_update

    async with FakeTelegramAPI() as fake:
        fake.add_chat(-100777, "supergroup", title="Raiders")
        settings = Settings(
            database={"url": f"sqlite+aiosqlite:///{tmp_path / 'tg.db'}"},
            http={"port": 0},
            telegram={"token": fake.token, "api_base_url": fake.base_url, "mode": "webhook",
                      "webhook_url": "https://bot.example.org/telegram/webhook", "webhook_secret": "s3cret"},
        )
        app = NubiApp(settings)
        await app.start()
        try:
            assert fake.calls_for("setWebhook")[0].params["secret_token"] == "s3cret"
            update = make_command_update(-100777, 42, "/help", chat_title="Raiders")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}") as client:
                refused = await client.post("/telegram/webhook", json=update)
                assert refused.status_code == 403
                ok = await client.post("/telegram/webhook", json=update,
                                       headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"})
                assert ok.status_code == 200
            await fake.wait_for_calls("sendMessage", chat_id=-100777)
            assert "nubi raids" in fake.sent_messages(-100777)[-1].text
        finally:
            await app.stop()
