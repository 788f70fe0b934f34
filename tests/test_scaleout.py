"""Several `nubi run` workers on one PostgreSQL: real processes, Redis, the fake Telegram Bot API.

Three workers serve Telegram in webhook mode and share Socket.IO rooms through Redis. Raids with a
chat lock are started through different workers, members join and claim through all of them, and
one worker is killed with SIGKILL mid-raid and restarted. Every raid must end on time exactly once
with one raid post and one completion report per chat, every accepted claim kept, every chat's
permissions restored exactly, each scheduled announcement slot posted once, and a Socket.IO client
on one worker must see a join made through another.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import socketio

from tests import pg
from tests.conftest import IN_CI, make_pg_database
from tests.fakes.telegram_api import FakeTelegramAPI

ROOT = Path(__file__).resolve().parent.parent
CHATS = (-1001001, -1001002, -1001003)
PERMISSIONS = [
    {"can_send_messages": True, "can_send_photos": True, "can_send_polls": False, "can_invite_users": True},
    {"can_send_messages": True, "can_send_photos": False, "can_send_polls": True, "can_invite_users": False},
    {"can_send_messages": True, "can_send_photos": True, "can_send_polls": True, "can_invite_users": True},
]
MEMBERS_PER_RAID = 9

pytestmark = pytest.mark.slow


def _need(binary: str) -> str:
    found = shutil.which(binary)
    if found is None:
        if IN_CI:
            pytest.fail(f"{binary} is required under CI")
        pytest.skip(f"{binary} is not installed (apt-get install redis-server)")
    return found


class Worker:
    def __init__(self, n: int, env: dict[str, str], log_dir: Path) -> None:
        self.n = n
        self.port = pg.free_port()
        self.env = env | {"NUBI_HTTP_PORT": str(self.port)}
        self.log = log_dir / f"worker{n}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=ROOT, env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if (await client.get(f"{self.url}/api/messaging/sessions/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"worker {self.n} did not come up:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def test_three_workers_one_postgresql(pg_cluster: pg.Cluster | None, pg_template: str | None,
                                            tmp_path: Path) -> None:
    if pg_cluster is None or pg_template is None:
        pytest.skip(f"PostgreSQL not available: {pg.missing_reason()}")
    redis_bin = _need("redis-server")
    url = await make_pg_database(pg_cluster, pg_template)
    redis_port = pg.free_port()
    redis = subprocess.Popen([redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",  # noqa: ASYNC220
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[Worker] = []
    async with FakeTelegramAPI() as fake:
        for chat, perms in zip(CHATS, PERMISSIONS, strict=True):
            fake.add_chat(chat, "supergroup", title=f"chat {chat}", permissions=perms)
            fake.set_member(chat, fake.bot_id, "administrator", can_restrict_members=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NUBI_", "SESSION_"))} | {
            "PYTHONPATH": str(ROOT),
            "NUBI_DATABASE_URL": url,
            "NUBI_REALTIME_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "NUBI_REALTIME_TOKEN_SECRET": "shared-by-every-worker",
            "NUBI_TELEGRAM_TOKEN": fake.token,
            "NUBI_TELEGRAM_API_BASE_URL": fake.base_url,
            "NUBI_TELEGRAM_MODE": "webhook",
            "NUBI_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/telegram/webhook",
            "NUBI_TELEGRAM_WEBHOOK_SECRET": "webhook-secret",
            "NUBI_TELEGRAM_EDIT_INTERVAL_SECONDS": "1",
            "NUBI_SCHEDULER_SWEEP_INTERVAL_SECONDS": "2",
            "NUBI_RAIDS_METRICS_INTERVAL_SECONDS": "5",
            "NUBI_RAIDS_LOCK_GRACE_MINUTES": "0",
        }
        try:
            workers = [Worker(n, env, tmp_path) for n in range(3)]
            for w in workers:
                w.start()
            await asyncio.gather(*(w.ready() for w in workers))
            await _scenario(workers, fake, url)
        finally:
            for w in workers:
                w.stop()
            redis.terminate()
            redis.wait(10)


async def _scenario(workers: list[Worker], fake: FakeTelegramAPI, url: str) -> None:
    http = httpx.AsyncClient(timeout=30)
    try:
        # One locked raid per chat, each started through a different worker.
        raids: list[int] = []
        for i, chat in enumerate(CHATS):
            r = await http.post(f"{workers[i].url}/api/raids", json={
                "community": {"platform": "telegram", "id": str(chat)},
                "targetUrl": f"https://x.com/project/status/{1000 + i}",
                "objectives": {"like": 500, "repost": 500}, "durationSeconds": 60, "lock": True})
            assert r.status_code == 201, r.text
            raids.append(r.json()["id"])
        started = time.monotonic()
        communities = {raid: (await http.get(f"{workers[0].url}/api/raids/{raid}")).json()["communityId"]
                       for raid in raids}
        sched = await http.post(f"{workers[0].url}/api/communities/{communities[raids[0]]}/schedules",
                                json={"cron": "* * * * *", "window": "all", "top": 5})
        assert sched.status_code == 201, sched.text

        # A Socket.IO client on worker A sees a join made through worker B (Redis fan-out).
        sio = socketio.AsyncClient()
        updates: list[dict[str, Any]] = []
        sio.on("raid:update", lambda data: updates.append(data))
        await sio.connect(workers[0].url, transports=["websocket"])
        ack = await sio.call("raid:subscribe", {"raidId": raids[1]}, timeout=10)
        assert ack["ok"], ack
        await asyncio.sleep(1.0)  # the Redis listener starts lazily

        # Members join and claim through every worker, round robin.
        claims: dict[int, int] = dict.fromkeys(raids, 0)
        for k in range(MEMBERS_PER_RAID):
            for raid in raids:
                w = workers[(k + raid) % 3]
                member = {"platform": "telegram", "id": str(5000 + 100 * raid + k), "name": f"raider{k}"}
                joined = await http.post(f"{w.url}/api/raids/{raid}/join", json={"member": member})
                assert joined.status_code in (200, 201), joined.text
                for action in ("like", "repost")[: 1 + k % 2]:
                    c = await http.post(f"{w.url}/api/raids/{raid}/claims", json={"member": member, "action": action})
                    assert c.status_code in (200, 201), c.text
                    claims[raid] += 1
        for _ in range(100):
            if any(u.get("type") == "participant_joined" and u.get("raidId") == raids[1] for u in updates):
                break
            await asyncio.sleep(0.1)
        assert any(u.get("type") == "participant_joined" and u.get("raidId") == raids[1] for u in updates)
        await sio.disconnect()

        # kill -9 a worker mid-raid, then bring it back.
        workers[2].kill()
        await asyncio.sleep(3)
        workers[2].start()
        await workers[2].ready()

        # Every raid ends on time (60 s), exactly once.
        deadline = started + 120
        while time.monotonic() < deadline:
            states = [(await http.get(f"{workers[0].url}/api/raids/{r}")).json()["status"] for r in raids]
            if all(s != "active" for s in states):
                break
            await asyncio.sleep(1)
        assert all(s == "timeout" for s in states), states
        assert time.monotonic() - started < 60 + 15
        await asyncio.sleep(6)  # reports, final edits and unlocks land; a few more sweeps run

        for raid in raids:
            body = (await http.get(f"{workers[1].url}/api/raids/{raid}")).json()
            assert body["participants"] == MEMBERS_PER_RAID and body["actions"] == claims[raid]  # nothing lost
            report = await http.get(f"{workers[1].url}/api/raids/{raid}/report")
            assert report.status_code == 200
    finally:
        await http.aclose()

    for chat, perms in zip(CHATS, PERMISSIONS, strict=True):
        texts = [m.text or "" for m in fake.sent_messages(chat)]
        posts = [t for t in texts if t.startswith("Raid #") and "report" not in t]
        reports = [t for t in texts if "report" in t.split("\n", 1)[0]]
        assert len(posts) == 1, texts
        assert len(reports) == 1, texts
        current = fake.chat(chat).permissions
        assert {k: current.get(k) for k in perms} == perms  # restored exactly

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        slots = await conn.fetchval("SELECT count(*) FROM announcement_runs")
        reports_stored = await conn.fetchval("SELECT count(*) FROM raid_reports")
        open_locks = await conn.fetchval("SELECT count(*) FROM chat_locks WHERE released_at IS NULL")
    finally:
        await conn.close()
    boards = [m for m in fake.sent_messages(CHATS[0]) if "leaderboard" in (m.text or "").split("\n", 1)[0].lower()]
    assert slots >= 1 and len(boards) == slots  # one post per claimed slot, whichever worker fired it
    assert reports_stored == 3 and open_locks == 0
