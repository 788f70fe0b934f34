"""The burst's baselines: core's join and claim as a careful hand-written program would run them.

The commands run core's statements, the very SQL texts of core/raids/statements.py and core/ledger.py,
in core's order and with core's decisions (first sight of a member, early-joiner bonus, the
claim-rate screen, completion bonus, the ledger's rows, score rows and quarter-hour slices), on the
bare driver. What varies is how commands meet transactions:

- per command (the fair baseline): one transaction per command. SQLite: stdlib `sqlite3` on ONE
  dedicated writer thread, the event loop awaiting `run_in_executor` once per command (one thread
  hop per command). PostgreSQL: asyncpg on core's connection budget (`lanes.default_size()`, the
  default `database.pool_size`: 10 on 2 cores), commands queued first
  come, first served for a free one; statements are prepared once per connection (asyncpg's
  statement cache).
- hand-batched: the commands that arrived while the previous transaction ran form a wave, and one
  transaction runs the whole wave on one writer (the SQLite thread; one asyncpg connection, since
  two writers' waves would deadlock on the raid's rows). No savepoints: if a command of a wave fails,
  the wave is rolled back and its commands run again one by one, each in its own transaction, so
  every command stays atomic and its outcome known.
- `bulk`: the same final rows in one transaction with bulk inserts (COPY on PostgreSQL): the ceiling.

When core's statements or rules change, this file changes with them.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import asyncpg

from core import ledger
from core.directory import MemberRef
from core.raids import scoring
from core.raids import statements as st
from core.storage.executor import (
    drive,  # a coroutine that never suspends (the sqlite3 commands), run to its result
)
from core.storage.lanes import default_size
from core.verification.abuse import claim_rate_since
from core.windows import WINDOWS, window_start

from .env import Raw

CLAIMS_PER_MINUTE = 30  # raids.claims_per_minute's default: the burst's communities keep it
PG_CONNECTIONS = default_size()  # core's budget: the default database.pool_size on this machine


class Refused(Exception):
    """A command core would refuse (raid over, not a participant): the burst expects none."""


# -- the bare connections: one SQL text for both (`$n`, as core's), tuples back ------------------


class Conn:
    statements = 0

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    @staticmethod
    def doc(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str | bytes) else value


class Lite(Conn):
    """stdlib sqlite3 on the writer thread; the coroutines never suspend (`drive` runs them)."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.sql: dict[str, str] = {}

    def _text(self, sql: str) -> str:
        out = self.sql.get(sql)
        if out is None:
            out = self.sql[sql] = sql.replace("$", "?")
        return out

    @staticmethod
    def ts(value: datetime | None) -> Any:
        return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    @staticmethod
    def when(value: Any) -> datetime:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    async def row(self, sql: str, *args: Any) -> Any:
        self.statements += 1
        return self.conn.execute(self._text(sql), args).fetchone()

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        self.statements += 1
        return self.conn.execute(self._text(sql), args).fetchall()

    async def run(self, sql: str, *args: Any) -> None:
        self.statements += 1
        self.conn.execute(self._text(sql), args)

    async def value(self, sql: str, *args: Any) -> Any:
        found = await self.row(sql, *args)
        return None if found is None else found[0]

    def close(self) -> None:
        self.conn.close()


class Pg(Conn):
    """One asyncpg connection; its statement cache prepares each SQL text once."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @staticmethod
    def ts(value: datetime | None) -> Any:
        return value

    @staticmethod
    def when(value: Any) -> datetime:
        return value  # type: ignore[no-any-return]

    async def row(self, sql: str, *args: Any) -> Any:
        self.statements += 1
        return await self.conn.fetchrow(sql, *args)

    async def rows(self, sql: str, *args: Any) -> list[Any]:
        self.statements += 1
        return list(await self.conn.fetch(sql, *args))

    async def run(self, sql: str, *args: Any) -> None:
        self.statements += 1
        await self.conn.execute(sql, *args)

    async def value(self, sql: str, *args: Any) -> Any:
        found = await self.row(sql, *args)
        return None if found is None else found[0]




# -- the commands ---------------------------------------------------------------------------------

Command = Callable[[Any], Awaitable[Any]]
OBJECTIVES: dict[int, dict[str, tuple[int, int]]] = {}  # as core: fixed at a raid's start, kept once read


async def _record(c: Any, community_id: int, member_id: int, entries: list[tuple[str, int, int | None]],
                  raid_id: int, now: datetime) -> None:
    """core.ledger.record_sql for one member at one time: the ledger rows, then 4 window scores, 1 slice."""
    rows = [(kind, points, claim_id) for kind, points, claim_id in entries if points]
    if not rows:
        return
    args: list[Any] = []
    for kind, points, claim_id in rows:
        args += [community_id, member_id, raid_id, claim_id, kind, points, c.ts(now), c.ts(now), None, None, None]
    await c.run(ledger.statement("points_ledger", len(rows)), *args)
    total = sum(p for _k, p, _c in rows)
    args = []
    for w in WINDOWS:
        args += [community_id, w, c.ts(window_start(w, now)), member_id, total, c.ts(now)]
    await c.run(ledger.statement("member_scores", len(WINDOWS)), *args)
    await c.run(ledger.statement("member_score_slices", 1), community_id, c.ts(ledger.slice_start(now)), member_id,
                total, c.ts(now))


def join(raid_id: int, m: MemberRef, now: datetime) -> Command:
    async def command(c: Any) -> None:
        ctx = await c.row(st.JOIN_CONTEXT_SQL, raid_id, m.platform, m.external_id)
        if ctx is None or ctx[2] != "active" or c.when(ctx[4]) <= now:
            raise Refused(f"raid {raid_id} is not open")
        community_id, session_id, member_id, existing, banned = ctx[1], ctx[7], ctx[9], ctx[11], ctx[12]
        if member_id is None:  # first sight (the burst's members are all new; no race to lose here)
            name = (m.display_name or m.username or f"{m.platform}:{m.external_id}")[:128]
            member_id = await c.value(st.NEW_MEMBER_SQL, name, False, c.ts(now))
            if await c.value(st.NEW_IDENTITY_SQL, member_id, m.platform, m.external_id, m.username) is None:
                raise Refused("identity raced")
        elif m.username and ctx[10] != m.username:
            await c.run(st.RENAME_IDENTITY_SQL, m.platform, m.external_id, m.username)
        await c.run(st.TOUCH_MEMBER_KEEP_FLAG_SQL, community_id, member_id, False, False, c.ts(now))
        if existing is not None:
            return
        if banned:
            raise Refused("banned")
        rules = scoring.ScoringRules.from_dict(c.doc(ctx[6]))
        position = await c.value(st.BUMP_SQL, raid_id, rules.early_joiners, rules.early_joiner_points)
        if position is None:
            raise Refused("raid full")
        bonus = scoring.early_joiner_bonus(rules, position)
        if await c.value(st.INSERT_PARTICIPANT_SQL, raid_id, member_id, position, c.ts(now), bonus, False,
                         c.ts(now) if bonus else None) is None:
            raise Refused("joined twice")
        if bonus:
            await _record(c, community_id, member_id, [("join_bonus", bonus, None)], raid_id, now)
        if session_id:
            await c.run(st.ACTIVITY_SQL, session_id, "raid_joined", c.ts(now),
                        c.json({"memberId": member_id, "position": position}))

    return command


def claim(raid_id: int, m: MemberRef, action: str, now: datetime) -> Command:
    async def command(c: Any) -> None:
        ctx = await c.row(st.CLAIM_CONTEXT_SQL, raid_id, m.platform, m.external_id, action,
                          c.ts(claim_rate_since(now)))
        if ctx is None or ctx[2] != "active" or c.when(ctx[4]) <= now:
            raise Refused(f"raid {raid_id} is not open")
        community_id, session_id, participant_id, member_id = ctx[1], ctx[7], ctx[9], ctx[10]
        if participant_id is None:
            raise Refused("not a participant")
        if ctx[11]:
            raise Refused("banned")
        objectives = OBJECTIVES.get(raid_id) or {a: (t, p) for a, t, p in await c.rows(st.OBJECTIVES_SQL, raid_id)}
        if action not in objectives:
            raise Refused("unknown objective")
        if ctx[12] is None and (ctx[14] or 0) >= CLAIMS_PER_MINUTE:  # the claim-rate screen
            raise Refused("claiming too fast")
        verification = "unverifiable"  # the honor tier, as the burst's raids run, no audit share
        rules = scoring.ScoringRules.from_dict(c.doc(ctx[6]))
        points = scoring.claim_points(rules, objectives[action][1], c.when(ctx[3]), now)
        claim_id = await c.value(st.INSERT_CLAIM_SQL, raid_id, participant_id, member_id, action, verification, points,
                                 None, c.ts(now))
        if claim_id is None:
            await c.row(st.PRIOR_CLAIM_SQL, participant_id, action)
            return
        OBJECTIVES[raid_id] = objectives
        if session_id:
            await c.run(st.ACTIVITY_SQL, session_id, "raid_action", c.ts(now),
                        c.json({"memberId": member_id, "action": action, "verification": verification}))
        claims = await c.value(st.SCORE_PARTICIPANT_SQL, participant_id, points, c.ts(now))
        bonus = 0
        if claims == len(objectives) and rules.completion_points:
            done = await c.value(st.COMPLETE_PARTICIPANT_SQL, participant_id, rules.completion_points, True, False)
            bonus = rules.completion_points if done else 0
        base = min(points, objectives[action][1])
        await _record(c, community_id, member_id, [("claim", base, claim_id), ("speed_bonus", points - base, claim_id),
                                                   ("completion_bonus", bonus, claim_id)], raid_id, now)
        await c.run(st.SCORE_RAID_SQL, raid_id, points + bonus)
        count = await c.value(st.COUNT_UP_SQL, raid_id, action)
        if count == objectives[action][0]:
            await c.value(st.UNMET_SQL, raid_id)

    return command


# -- how commands meet transactions -------------------------------------------------------------


class Runner:
    """`await runner(command)` answers after the command's transaction has committed."""

    statements = 0

    async def __call__(self, command: Command) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class SqlitePerCommand(Runner):
    """One writer thread, one hop and one transaction per command."""

    def __init__(self, path: str) -> None:
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baseline-sqlite-writer")
        self.conn = Lite(path)

    @property
    def statements(self) -> int:  # type: ignore[override]
        return self.conn.statements

    def transaction(self, command: Command) -> None:
        c = self.conn
        c.conn.execute("BEGIN IMMEDIATE")
        try:
            drive(command(c))
        except BaseException:
            c.conn.execute("ROLLBACK")
            raise
        c.conn.execute("COMMIT")

    async def __call__(self, command: Command) -> None:
        await asyncio.get_running_loop().run_in_executor(self.thread, self.transaction, command)

    async def close(self) -> None:
        self.thread.shutdown(wait=True)
        self.conn.close()


class PgPerCommand(Runner):
    """PG_CONNECTIONS asyncpg connections, first come first served, one transaction per command."""

    def __init__(self, conns: list[Pg]) -> None:
        self.conns = conns
        self.free = list(conns)
        self.turn = asyncio.Semaphore(len(conns))  # FIFO waiters (asyncio.Queue would let a task cut in)

    @classmethod
    async def open(cls, url: str, n: int = PG_CONNECTIONS) -> PgPerCommand:
        dsn = url.replace("postgresql+asyncpg", "postgresql")
        return cls([Pg(await asyncpg.connect(dsn)) for _ in range(n)])

    @property
    def statements(self) -> int:  # type: ignore[override]
        return sum(c.statements for c in self.conns)

    async def __call__(self, command: Command) -> None:
        async with self.turn:
            c = self.free.pop()
            try:
                async with c.conn.transaction():
                    await command(c)
            finally:
                self.free.append(c)

    async def close(self) -> None:
        for c in self.conns:
            await c.conn.close()


class Waves(Runner):
    """Hand-batched: what arrived while the previous transaction ran, in one transaction."""

    def __init__(self, alone: Runner) -> None:
        self.alone = alone  # one command per transaction, for a wave that failed
        self.pending: list[tuple[Command, asyncio.Future[None]]] = []
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.transactions = 0

    @property
    def statements(self) -> int:  # type: ignore[override]
        return self.alone.statements

    async def __call__(self, command: Command) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._writer())
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((command, fut))
        self.wakeup.set()
        await fut

    async def _writer(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                wave, self.pending = self.pending, []
                try:
                    await self._wave([cmd for cmd, _ in wave])
                except Exception:  # rolled back whole: each command again, alone
                    for cmd, fut in wave:
                        try:
                            await self.alone(cmd)
                        except Exception as exc:
                            fut.set_exception(exc)
                        else:
                            fut.set_result(None)
                    continue
                self.transactions += 1
                for _cmd, fut in wave:
                    fut.set_result(None)

    async def _wave(self, commands: Sequence[Command]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.alone.close()


class SqliteWaves(Waves):
    alone: SqlitePerCommand

    def _transaction(self, commands: Sequence[Command]) -> None:
        self.alone.transaction(lambda c: _all(c, commands))

    async def _wave(self, commands: Sequence[Command]) -> None:
        await asyncio.get_running_loop().run_in_executor(self.alone.thread, self._transaction, commands)


class PgWaves(Waves):
    alone: PgPerCommand

    async def _wave(self, commands: Sequence[Command]) -> None:
        await self.alone(lambda c: _all(c, commands))


async def _all(c: Any, commands: Sequence[Command]) -> None:
    for command in commands:
        await command(c)


# -- the ceiling ----------------------------------------------------------------------------------


async def bulk(r: Raw, raid_id: int, members: list[MemberRef], actions: tuple[str, ...], now: datetime) -> None:
    """Every row the burst leaves behind, written in one transaction with bulk inserts."""
    await r.begin()
    raid = await r.fetchrow("SELECT community_id, session_id, scoring, started_at FROM raid_sessions WHERE id = ?",
                            raid_id)
    assert raid is not None
    community_id, session_id = raid[0], raid[1]
    rules = scoring.ScoringRules.from_dict(Conn.doc(raid[2]))
    started = r.parse_ts(raid[3])
    obj_points = dict(await r.fetchall("SELECT action_type, points FROM raid_objectives WHERE raid_id = ?", raid_id))
    n_objectives = len(obj_points)
    first = [int(await r.fetchval(f"SELECT coalesce(max(id), 0) FROM {t}")) + 1
             for t in ("members", "member_identities", "raid_participants", "raid_actions")]
    ts = r.ts(now)
    mem, ident, cm, part, acts, scores, slices, entries, activity = [], [], [], [], [], [], [], [], []
    total = 0
    for i, m in enumerate(members):
        member_id, participant_id, position = first[0] + i, first[2] + i, i + 1
        mem.append((member_id, m.display_name, None, False, ts))
        ident.append((first[1] + i, member_id, m.platform, m.external_id, m.username))
        cm.append((community_id, member_id, False, False, ts))
        joined = scoring.early_joiner_bonus(rules, position)
        points = joined
        member_entries: list[tuple[str, int, int | None]] = [("join_bonus", joined, None)]
        if session_id:
            activity.append((session_id, "raid_joined", ts, r.json({"memberId": member_id, "position": position})))
        for k, action in enumerate(actions):
            claim_id = first[3] + i * len(actions) + k
            p = scoring.claim_points(rules, obj_points[action], started, now)
            points += p
            acts.append((claim_id, raid_id, participant_id, member_id, action, "unverifiable", p, None, "claim", ts))
            base = min(p, obj_points[action])
            member_entries += [("claim", base, claim_id), ("speed_bonus", p - base, claim_id)]
            if session_id:
                activity.append((session_id, "raid_action", ts,
                                 r.json({"memberId": member_id, "action": action, "verification": "unverifiable"})))
        completed = len(actions) == n_objectives and rules.completion_points > 0
        if completed:
            points += rules.completion_points
            member_entries.append(("completion_bonus", rules.completion_points, first[3] + (i + 1) * len(actions) - 1))
        total += points
        part.append((participant_id, raid_id, member_id, position, ts, points, len(actions), completed, ts))
        entries += [(community_id, member_id, raid_id, claim_id, kind, p, ts, ts)
                    for kind, p, claim_id in member_entries if p]
        if points:
            scores += [(community_id, w, r.ts(window_start(w, now)), member_id, points, ts) for w in WINDOWS]
            slices.append((community_id, r.ts(ledger.slice_start(now)), member_id, points, ts))
    await r.load("members", ("id", "display_name", "x_handle", "x_handle_verified", "created_at"), mem)
    await r.load("member_identities", ("id", "member_id", "platform", "external_id", "username"), ident)
    await r.load("community_members", ("community_id", "member_id", "is_moderator", "excluded", "last_seen_at"), cm)
    await r.load("raid_participants", ("id", "raid_id", "member_id", "join_position", "joined_at", "points",
                                       "claims_count", "completed_all", "last_scored_at"), part)
    await r.load("raid_actions", ("id", "raid_id", "participant_id", "member_id", "action_type", "verification",
                                  "points", "proof_url", "source", "claimed_at"), acts)
    await r.load("points_ledger", ("community_id", "member_id", "raid_id", "claim_id", "kind", "points",
                                   "effective_at", "recorded_at"), entries)
    await r.load("member_scores", ("community_id", "window", "window_start", "member_id", "points", "last_scored_at"),
                 scores)
    await r.load("member_score_slices", ("community_id", "slice_start", "member_id", "points", "last_scored_at"), slices)
    await r.load("session_activity_log", ("session_id", "activity_type", "at", "data"), activity)
    await r.execute(
        "UPDATE raid_sessions SET participant_count = participant_count + ?, action_count = action_count + ?, "
        "points_awarded = points_awarded + ? WHERE id = ?",
        len(members), len(acts), total, raid_id,
    )
    await r.executemany("UPDATE raid_objectives SET count = count + ? WHERE raid_id = ? AND action_type = ?",
                        [(len(members), raid_id, a) for a in actions])
    await r.commit()
