"""Benchmark 1, the burst: N members join one raid and claim 3 actions each, all at once.

Four runs on fresh databases of the same kind, in this order:
  per command  the fair baseline (bench/burst_sql.py): core's statements on the bare driver, one
               transaction per command; SQLite: stdlib sqlite3 on one writer thread, one thread hop
               per command; PostgreSQL: asyncpg on core's connection budget (the default
               database.pool_size), prepared statements;
  waves        the same commands hand-batched: what arrived while the previous transaction ran, in
               one transaction on one writer;
  core         services.raids.join(...) then .claim(...) x3 per member, exactly as the adapters
               call them, asyncio.gather over every member, with the configured defaults
               (`database.group_commit` unset: every write batched on SQLite, on PostgreSQL
               the contended ones, which join and claim are);
  bulk         the same final rows in one bulk transaction: the ceiling.
Each run ends with a fingerprint of what it wrote: runs without failures must agree, or the
comparison is void, and every run must have stored exactly the commands it answered. Failed
commands are counted by error, not raised. A short sequential sample afterwards gives the service
time of one command with no queue, and its statement count.

The all-at-once burst's p99 is bounded below by its own queue (the last of N commands issued
together waits for the N-1 before it: N / throughput), so latency is also measured the way members
arrive: a steady stream at half the per-command baseline's burst rate (members start on schedule
whether or not earlier ones were answered, for PACED_SECONDS), the same offered load for core and
the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import pstats
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bot.app import settle_heap
from core.clock import FakeClock
from core.config import DatabaseConfig
from core.directory import ChatRef, MemberRef
from core.events import EventBus
from core.raids.model import RaidSpec
from core.services import Services, build_services
from core.storage import driver
from core.storage.db import Database

from . import burst_sql
from .env import Figure, Raw, Report, Target, bench_settings, open_loop, percentile

ACTIONS = ("like", "repost", "reply")
CHAT = ChatRef("telegram", "-100424242", "Burst raiders")
SERIAL_MEMBERS = 100
PACED_SECONDS = 15.0
PACED_SHARE = 0.5  # of the per-command baseline's burst rate
P99_TARGET_MS = 25.0
P99_VS_BASELINE = 2.0  # core's steady-stream p99 at most this multiple of the per-command baseline's


def member(i: int) -> MemberRef:
    return MemberRef("telegram", str(7_000_000 + i), f"raider {i}", f"raider{i}")


class Tally:
    """Latencies of the commands that succeeded and a count of the ones that failed, by error."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures: Counter[str] = Counter()

    async def time(self, call: Awaitable[Any]) -> bool:
        t = time.perf_counter()
        try:
            await call
        except Exception as exc:  # a burst must finish and say what failed, not stop at the first
            self.failures[f"{type(exc).__module__}.{type(exc).__qualname__}"] += 1
            return False
        self.latencies.append(time.perf_counter() - t)
        return True


Flow = Callable[[MemberRef, Tally], Awaitable[None]]


@dataclass
class Run:
    name: str
    seconds: float
    tally: Tally
    fingerprint: dict[str, Any]
    statements: float | None = None  # per command
    commits: int | None = None

    @property
    def done(self) -> int:
        return len(self.tally.latencies)

    @property
    def failed(self) -> int:
        return sum(self.tally.failures.values())

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def ms(self, pct: float) -> float:
        return percentile(self.tally.latencies, pct) * 1000


async def _start_raid(services: Services, n: int) -> int:
    spec = RaidSpec("https://x.com/nubi/status/1", objectives={a: 1_000_000 for a in ACTIONS},
                    duration_seconds=24 * 3600, max_participants=max(1, min(n, 100_000)))
    return (await services.raids.start(CHAT, spec)).id


async def _fingerprint(url: str, raid_id: int) -> dict[str, Any]:
    r = await Raw.connect(url)
    try:
        q = {
            "participants": ("SELECT count(*) FROM raid_participants WHERE raid_id = ?", raid_id),
            "claims": ("SELECT count(*) FROM raid_actions WHERE raid_id = ?", raid_id),
            "participant points": ("SELECT coalesce(sum(points), 0) FROM raid_participants WHERE raid_id = ?", raid_id),
            "completed": ("SELECT count(*) FROM raid_participants WHERE raid_id = ? AND completed_all = ?", raid_id, True),
            "raid counters": ("SELECT participant_count + action_count + points_awarded FROM raid_sessions WHERE id = ?",
                              raid_id),
            "objective counts": ("SELECT sum(count) FROM raid_objectives WHERE raid_id = ?", raid_id),
            "score rows": ("SELECT count(*) FROM member_scores",),
            "score points (all)": ("SELECT coalesce(sum(points), 0) FROM member_scores WHERE \"window\" = 'all'",),
            "members": ("SELECT count(*) FROM community_members",),
            "activity rows": ("SELECT count(*) FROM session_activity_log WHERE activity_type IN ('raid_joined', 'raid_action')",),
            "ledger rows": ("SELECT count(*) FROM points_ledger",),
            "ledger points": ("SELECT coalesce(sum(points), 0) FROM points_ledger",),
            "slice points": ("SELECT coalesce(sum(points), 0) FROM member_score_slices",),
        }
        return {k: int(await r.fetchval(*v)) for k, v in q.items()}
    finally:
        await r.close()


async def _burst(first: int, n: int, flow: Flow) -> tuple[float, Tally]:
    tally = Tally()
    t0 = time.perf_counter()
    await asyncio.gather(*(flow(member(first + i), tally) for i in range(n)))
    return time.perf_counter() - t0, tally


async def _paced(first: int, n: int, flow: Flow, members_per_second: float) -> tuple[float, Tally]:
    """Open loop: member i starts at i / rate seconds, answered or not."""
    tally = Tally()
    t0 = time.perf_counter()
    await open_loop(n, members_per_second, lambda i: flow(member(first + i), tally))
    return time.perf_counter() - t0, tally


def paced_members(commands_per_second: float) -> tuple[int, float]:
    """(members, members per second) of the paced run for a commands-per-second rate."""
    per_second = max(1.0, commands_per_second / (1 + len(ACTIONS)))
    return max(1, int(per_second * PACED_SECONDS)), per_second


async def _serial(first: int, n: int, flow: Flow) -> tuple[float, Tally]:
    tally = Tally()
    t0 = time.perf_counter()
    for i in range(n):
        await flow(member(first + i), tally)
    return time.perf_counter() - t0, tally


async def run_core(url: str, n: int, clock: FakeClock, profile: Path | None, paced_rate: float,
                   group_commit: bool | None = None) -> tuple[Run, Run, Run]:
    settings = bench_settings(url)
    if group_commit is None:  # the configured default, exactly as `nubi run` builds it
        services = build_services(settings, clock=clock)
    else:
        services = Services(Database(url, group_commit=group_commit, batch_contended=group_commit), clock,
                            settings, EventBus())
    db = services.db
    try:
        raid_id = await _start_raid(services, n)

        def flow_for(rid: int) -> Flow:
            async def flow(m: MemberRef, tally: Tally) -> None:
                if await tally.time(services.raids.join(rid, m)):
                    for action in ACTIONS:
                        await tally.time(services.raids.claim(rid, m, action))

            return flow

        commits0 = db.commits
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        seconds, tally = await _burst(0, n, flow_for(raid_id))
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(profile))
        burst = Run("core", seconds, tally, await _fingerprint(url, raid_id), commits=db.commits - commits0)

        # The sequential sample: one command in flight, its statements counted (outside the timed burst).
        statements = 0

        def count(*args: Any) -> None:
            nonlocal statements
            # transaction control (BEGIN IMMEDIATE, SAVEPOINT...) is not counted, as for the baseline
            if len(args) < 3 or not str(args[2]).startswith(("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK")):
                statements += 1

        serial_raid = await _start_raid(services, SERIAL_MEMBERS)
        for engine in db.statement_engines():
            event.listen(engine, "before_cursor_execute", count)
        with counting_driver_statements(count):
            seconds, tally = await _serial(n, SERIAL_MEMBERS, flow_for(serial_raid))
        serial = Run("core", seconds, tally, {}, statements=statements / max(1, len(tally.latencies)))
        for engine in db.statement_engines():
            event.remove(engine, "before_cursor_execute", count)

        count_paced, per_second = paced_members(paced_rate)
        paced_raid = await _start_raid(services, count_paced)
        seconds, tally = await _paced(n + SERIAL_MEMBERS, count_paced, flow_for(paced_raid), per_second)
        return burst, serial, Run("core", seconds, tally, {})
    finally:
        await db.dispose()


@contextlib.contextmanager
def counting_driver_statements(count: Callable[..., None]) -> Iterator[None]:
    """Count the statements core sends straight to the driver (core/storage/driver.py) too."""
    saved = []
    for cls in (driver.SqliteSql, driver.PgSql):
        for name in ("row", "rows", "run", "value"):
            if name not in cls.__dict__:  # inherited: Sql.value counts through its own row()
                continue
            original = getattr(cls, name)

            def counted(self: Any, *args: Any, _original: Any = original) -> Any:
                count()
                return _original(self, *args)

            saved.append((cls, name, original))
            setattr(cls, name, counted)
    try:
        yield
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


async def _open_runner(url: str, sqlite: bool, waves: bool) -> burst_sql.Runner:
    if sqlite:
        alone: burst_sql.Runner = burst_sql.SqlitePerCommand(url.split("///", 1)[1])
        return burst_sql.SqliteWaves(alone) if waves else alone
    if waves:  # one writer: a second one's waves would deadlock on the raid's rows
        return burst_sql.PgWaves(await burst_sql.PgPerCommand.open(url, 1))
    return await burst_sql.PgPerCommand.open(url)


async def run_baseline(url: str, n: int, clock: FakeClock, sqlite: bool, waves: bool) -> tuple[Run, Run | None, Run | None]:
    """A baseline's burst; the per-command one also runs the serial sample and the steady stream."""
    name = "waves" if waves else "per command"
    setup = Services(Database(url), clock, bench_settings(url), EventBus())
    raid_id = await _start_raid(setup, n)
    serial_raid = await _start_raid(setup, SERIAL_MEMBERS)
    paced_raid = await _start_raid(setup, 100_000)
    await setup.db.dispose()
    burst_sql.OBJECTIVES.clear()
    runner = await _open_runner(url, sqlite, waves)
    now = clock.now()

    def flow_for(rid: int) -> Flow:
        async def flow(m: MemberRef, tally: Tally) -> None:
            if await tally.time(runner(burst_sql.join(rid, m, now))):
                for action in ACTIONS:
                    await tally.time(runner(burst_sql.claim(rid, m, action, now)))

        return flow

    try:
        seconds, tally = await _burst(0, n, flow_for(raid_id))
        burst = Run(name, seconds, tally, await _fingerprint(url, raid_id),
                    commits=getattr(runner, "transactions", None))
        if waves:
            return burst, None, None
        before = runner.statements
        seconds, tally = await _serial(n, SERIAL_MEMBERS, flow_for(serial_raid))
        serial = Run(name, seconds, tally, {}, statements=(runner.statements - before) / max(1, len(tally.latencies)))
        count_paced, per_second = paced_members(PACED_SHARE * burst.rate)
        seconds, tally = await _paced(n + SERIAL_MEMBERS, count_paced, flow_for(paced_raid), per_second)
        return burst, serial, Run(name, seconds, tally, {})
    finally:
        await runner.close()


async def run_bulk(url: str, n: int, clock: FakeClock) -> Run:
    setup = Database(url)
    raid_id = await _start_raid(Services(setup, clock, bench_settings(url), EventBus()), n)
    await setup.dispose()
    r = await Raw.connect(url)
    try:
        t0 = time.perf_counter()
        await burst_sql.bulk(r, raid_id, [member(i) for i in range(n)], ACTIONS, clock.now())
        seconds = time.perf_counter() - t0
    finally:
        await r.close()
    tally = Tally()
    tally.latencies = [seconds] * (4 * n)  # one transaction answers every command at once
    return Run("bulk", seconds, tally, await _fingerprint(url, raid_id))


async def bench(target: Target, report: Report, members: int, profile_dir: Path | None,
                group_commit: bool | None = None) -> None:
    db = target.kind
    if group_commit is None:
        default = DatabaseConfig()
        batched = "on" if default.group_commit_for(db) else "contended writes" if default.batch_contended() else "off"
    else:
        batched = "on" if group_commit else "off"
    print(f"\n== burst on {db}: {members} members x (1 join + {len(ACTIONS)} claims), all concurrent; "
          f"core's group commit {batched}", flush=True)
    runs: dict[str, Run] = {}
    serial: dict[str, Run] = {}
    paced: dict[str, Run] = {}
    # The per-command baseline first: its burst rate sets the steady stream's rate.
    for name in ("per command", "waves", "core", "bulk"):
        url = await target.fresh()
        clock = FakeClock()
        # The collector as `nubi run` sets it once started (what is built so far out of its sight, young
        # collections less often), before every run alike: with CPython's defaults, full collections
        # walking this process's few hundred thousand objects landed in whichever run they fell in.
        settle_heap()
        try:
            if name == "core":
                prof = profile_dir / f"burst-{db}.prof" if profile_dir else None
                runs[name], serial[name], paced[name] = await run_core(
                    url, members, clock, prof, PACED_SHARE * runs["per command"].rate, group_commit)
            elif name == "bulk":
                runs[name] = await run_bulk(url, members, clock)
            else:
                burst, one, steady = await run_baseline(url, members, clock, target.is_sqlite, name == "waves")
                runs[name] = burst
                if one is not None and steady is not None:
                    serial[name], paced[name] = one, steady
        finally:
            await target.drop(url)
        r = runs[name]
        lost = f", {r.failed} FAILED: {dict(r.tally.failures)}" if r.failed else ""
        print(f"  {name}: {r.done} commands in {r.seconds:.2f} s{lost}", flush=True)
    # Like for like: every complete run must leave the same rows; a run with failures only what it answered.
    complete = {k: r.fingerprint for k, r in runs.items() if not r.failed}
    if len({tuple(sorted(p.items())) for p in complete.values()}) > 1:
        raise RuntimeError(f"the burst runs wrote different data, the comparison is void: {complete}")
    for r in runs.values():
        joins = r.fingerprint["participants"]
        if r.fingerprint["claims"] + joins != r.done:
            raise RuntimeError(f"{r.name}: {r.done} commands answered but {joins} joins and "
                               f"{r.fingerprint['claims']} claims stored")

    core, base, waves, bulk = runs["core"], runs["per command"], runs["waves"], runs["bulk"]
    kind, db = db, f"{db} (group commit {batched})"
    per_command = ("sqlite3, 1 writer thread, 1 hop + 1 tx per command" if target.is_sqlite
                   else f"asyncpg, {burst_sql.PG_CONNECTIONS} connections, 1 tx per command")
    failed = f"; {core.failed} of {4 * members} commands FAILED ({dict(core.tally.failures)})" if core.failed else ""
    report.add(Figure("burst", db, "commands/s", core.rate, "cmd/s", per_command, base.rate,
                      target=">= 1x per-command baseline, none failed", met=core.rate >= base.rate and not core.failed,
                      note=f"{members} members, {4 * members} commands{failed}"))
    report.add(Figure("burst", db, "commands/s vs hand-batched", core.rate, "cmd/s",
                      "same commands, 1 tx per wave, 1 writer", waves.rate,
                      note=f"{waves.commits} waves" if waves.commits else ""))
    report.add(Figure("burst", db, "commands/s vs ceiling", core.rate, "cmd/s", "bulk rows, one tx", bulk.rate))
    for pct in (50, 99):
        report.add(Figure("burst", db, f"p{pct} latency, all at once", core.ms(pct), "ms", "per command", base.ms(pct),
                          higher_is_better=False,
                          note=f"bounded below by the queue: {4 * members} / throughput" if pct == 99 else ""))
    pc, pr = paced["core"], paced["per command"]
    rate = (pr.done + pr.failed) / pr.seconds
    for pct in (50, 99):
        met = None
        if pct == 99:
            met = pc.ms(99) <= P99_TARGET_MS and pc.ms(99) <= P99_VS_BASELINE * pr.ms(99) and not pc.failed
        report.add(Figure("burst", db, f"p{pct} latency, steady stream", pc.ms(pct), "ms", "per command", pr.ms(pct),
                          higher_is_better=False,
                          target=f"<= {P99_TARGET_MS:.0f} ms and <= {P99_VS_BASELINE:.0f}x the baseline's"
                          if pct == 99 else "",
                          met=met,
                          note=(f"{pc.done} commands at about {rate:,.0f}/s ({PACED_SHARE:.0%} of the per-command "
                                "burst rate)" + (f"; {pc.failed} FAILED" if pc.failed else "")) if pct == 99 else ""))
    sc, sr = serial["core"], serial["per command"]
    report.add(Figure("burst", db, "one command alone (p50, no queue)", sc.ms(50), "ms", "per command", sr.ms(50),
                      higher_is_better=False,
                      note=f"p99 {sc.ms(99):.1f} vs {sr.ms(99):.2f} ms; "
                           f"{sc.statements:.1f} vs {sr.statements:.1f} statements per command, without BEGIN/COMMIT"))
    if core.commits:
        report.notes.append(f"burst/{db}: core committed {core.commits} transactions for {core.done} commands "
                            f"({core.done / core.commits:.1f} commands per commit)")
    if profile_dir:
        prof = profile_dir / f"burst-{kind}.prof"
        print(f"  profile of the core burst (cProfile, main thread) in {prof}: own time per command by layer")
        for line in profile_layers(prof, core.done + core.failed):
            print("    " + line)


LAYERS = (  # (label, substrings of the file path or function name), first match wins
    ("idle: epoll wait (database, driver thread, GIL)", ("select.epoll", "selectors.py")),
    ("hand-off to the aiosqlite thread (SimpleQueue.put)", ("_queue.SimpleQueue",)),
    ("SQLAlchemy ORM (session, unit of work, loading)", ("sqlalchemy/orm",)),
    ("SQLAlchemy SQL (statement build, cache key, compile)", ("sqlalchemy/sql",)),
    ("SQLAlchemy engine, pool, dialect, greenlet bridge", ("sqlalchemy", "greenlet")),
    ("driver (aiosqlite / asyncpg)", ("aiosqlite", "asyncpg")),
    ("asyncio scheduling", ("asyncio",)),
    ("nubi core", ("/core/",)),
)


def profile_layers(path: Path, commands: int) -> list[str]:
    """Own (not cumulative) time by layer, per command: where a command's time goes."""
    own: Counter[str] = Counter()
    for (file, _line, func), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(str(path)).stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{func}"
        label = next((name for name, keys in LAYERS if any(k in where for k in keys)), "other (stdlib, builtins)")
        own[label] += tottime
    total = sum(own.values())
    return [f"{t / commands * 1000:7.3f} ms  {100 * t / total:5.1f}%  {name}" for name, t in own.most_common()]
