"""What every benchmark shares: the databases under test, the raw drivers, figures and versions.

A `Target` hands out fresh migrated databases of one kind (a copied SQLite file, or a PostgreSQL
database cloned from a migrated template in a throwaway cluster). `Raw` is the bare driver
(aiosqlite or asyncpg, no SQLAlchemy) with one SQL dialect for both: `?` placeholders, one
round trip per statement, the way a hand-written baseline would talk to the database.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from itertools import count
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from core.config import DatabaseConfig, RaidsConfig, Settings
from migrations import upgrade

_names = count()
REPO = Path(__file__).resolve().parent.parent  # child processes run `python -m bench...` from here


# -- figures ------------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 100 values is the 99th smallest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def open_loop(count: int, per_second: float, start: Callable[[int], Awaitable[None]]) -> None:
    """Arrivals on a schedule: arrival i starts at i / per_second seconds whether or not earlier ones
    were answered (an open loop, as members arrive), then wait for all of them."""
    t0 = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = t0 + i / per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(start(i)))
    await asyncio.gather(*tasks)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size from /proc (VmRSS), after a full collection when it is our own process."""
    if pid == "self":
        gc.collect()
    return _status_kb(pid, "VmRSS") / 1024


def hwm_mb(pid: int | str = "self") -> float:
    """Peak resident set size (VmHWM) of a process."""
    return _status_kb(pid, "VmHWM") / 1024


def _status_kb(pid: int | str, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {key}")


@dataclass
class Figure:
    """One line of the results table: a measurement, its same-run baseline, and the target."""

    bench: str
    db: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    baseline_value: float | None = None
    higher_is_better: bool = True
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline_value in (None, 0):
            return None
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        print("  " + line_of(fig), flush=True)
        return fig


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def line_of(f: Figure) -> str:
    base = f"{f.baseline} {fmt(f.baseline_value, f.unit)}" if f.baseline else ""
    ratio = fmt_ratio(f.ratio)
    verdict = "" if f.met is None else ("MET" if f.met else "NOT MET")
    parts = [f"[{f.db}] {f.bench}: {f.metric} = {fmt(f.value, f.unit)}"]
    if base:
        parts.append(f"vs {base} -> {ratio}")
    if f.target:
        parts.append(f"target {f.target}: {verdict}")
    if f.note:
        parts.append(f"({f.note})")
    return "; ".join(parts)


def markdown(figures: Iterable[Figure]) -> str:
    rows = [
        "| benchmark | db | metric | nubi | baseline (same run) | ratio (>1: nubi ahead) | target | met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        base = f"{f.baseline}: {fmt(f.baseline_value, f.unit)}" if f.baseline else "-"
        ratio = fmt_ratio(f.ratio)
        met = "-" if f.met is None else ("yes" if f.met else "**no**")
        metric = f.metric + (f" ({f.note})" if f.note else "")
        rows.append(f"| {f.bench} | {f.db} | {metric} | {fmt(f.value, f.unit)} | {base} | {ratio} | {f.target or '-'} | {met} |")
    return "\n".join(rows)


def versions(pg_server: str | None) -> dict[str, str]:
    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    import sqlite3

    return {
        "python": sys.version.split()[0],
        "sqlalchemy": v("sqlalchemy"),
        "aiosqlite": v("aiosqlite"),
        "sqlite library": sqlite3.sqlite_version,
        "asyncpg": v("asyncpg"),
        "postgresql server": pg_server or "not used",
        "fastapi": v("fastapi"),
        "uvicorn": v("uvicorn"),
        "aiohttp (load generator)": v("aiohttp"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_mem_total_gb():.0f} GB RAM, {platform.system()} {platform.release()}",
    }


def load_average() -> str:
    """The 1/5/15-minute load: other work on the machine is the main source of noise."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _mem_total_gb() -> float:
    return _meminfo_kb("MemTotal") / 1024 / 1024


def _meminfo_kb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def bench_settings(url: str) -> Settings:
    """The defaults, with room for big raids and several active raids per community."""
    return Settings(
        database=DatabaseConfig(url=url),
        raids=RaidsConfig(allow_multiple_active=True, max_participants=100_000),
    )


# -- databases under test -----------------------------------------------------------------------


class Target:
    """Fresh migrated databases of one kind; PostgreSQL ones live in a throwaway cluster."""

    def __init__(self, kind: str, workdir: Path, cluster: Any = None) -> None:
        self.kind = kind
        self.workdir = workdir
        self.cluster = cluster
        self._template: Path | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    async def prepare(self) -> None:
        """Migrate the template every fresh database is copied from (migrations.upgrade, as in production)."""
        if self.is_sqlite:
            self._template = self.workdir / "template.db"
            upgrade(f"sqlite+aiosqlite:///{self._template}")
        else:
            await self._admin("CREATE DATABASE bench_template")
            upgrade(self.cluster.url_for("bench_template"))

    async def fresh(self) -> str:
        """The URL of a new, empty, migrated database."""
        name = f"b{next(_names)}"
        if self.is_sqlite:
            assert self._template is not None
            path = self.workdir / f"{name}.db"
            shutil.copy(self._template, path)
            return f"sqlite+aiosqlite:///{path}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE bench_template')
        return self.cluster.url_for(name)

    async def drop(self, url: str) -> None:
        if self.is_sqlite:
            path = Path(url.split("///", 1)[1])
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
        else:
            await self._admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')

    async def server_version(self) -> str | None:
        if self.is_sqlite:
            return None
        conn = await asyncpg.connect(self.cluster.url.replace("+asyncpg", ""))
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.cluster.url.replace("+asyncpg", ""))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="nubi-bench-"))


# -- the bare drivers ---------------------------------------------------------------------------


class Raw:
    """aiosqlite or asyncpg with one SQL text for both (`?` placeholders); one round trip per call."""

    def __init__(self, kind: str, conn: Any) -> None:
        self.kind = kind
        self.conn = conn
        self.statements = 0  # round trips made, so a baseline can report statements per command
        self._pg_sql: dict[str, str] = {}

    @classmethod
    async def connect(cls, url: str) -> Raw:
        if url.startswith("sqlite"):
            conn = await aiosqlite.connect(url.split("///", 1)[1], isolation_level=None)
            # The same connection set-up as core/storage/db.py.
            for pragma in ("journal_mode=WAL", "busy_timeout=30000", "foreign_keys=ON", "synchronous=NORMAL"):
                await conn.execute_fetchall(f"PRAGMA {pragma}")
            return cls("sqlite", conn)
        return cls("postgresql", await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql")))

    @property
    def is_sqlite(self) -> bool:
        return self.kind == "sqlite"

    def _sql(self, sql: str) -> str:
        if self.is_sqlite:
            return sql
        out = self._pg_sql.get(sql)
        if out is None:
            parts = sql.split("?")
            out = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1))
            self._pg_sql[sql] = out
        return out

    def ts(self, dt: datetime | None) -> Any:
        """A UTC datetime as the driver stores it (SQLAlchemy's SQLite text form, or timestamptz)."""
        if dt is None or not self.is_sqlite:
            return dt
        return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")

    def parse_ts(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            return value
        return datetime.fromisoformat(value).replace(tzinfo=UTC)

    @staticmethod
    def json(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))

    async def begin(self) -> None:
        await self.execute("BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN")

    async def commit(self) -> None:
        await self.execute("COMMIT")

    async def rollback(self) -> None:
        await self.execute("ROLLBACK")

    async def execute(self, sql: str, *args: Any) -> None:
        self.statements += 1
        if self.is_sqlite:
            await self.conn.execute_fetchall(sql, args)
        else:
            await self.conn.execute(self._sql(sql), *args)

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        self.statements += 1
        if self.is_sqlite:
            rows = await self.conn.execute_fetchall(sql, args)
            return rows[0] if rows else None
        return await self.conn.fetchrow(self._sql(sql), *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    async def fetchall(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        self.statements += 1
        if self.is_sqlite:
            return list(await self.conn.execute_fetchall(sql, args))
        return list(await self.conn.fetch(self._sql(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.is_sqlite:
            await self.conn.executemany(sql, rows)
        else:
            await self.conn.executemany(self._sql(sql), rows)

    async def load(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk insert: COPY on PostgreSQL, one executemany on SQLite."""
        if not rows:
            return
        if self.is_sqlite:
            cols = ", ".join(f'"{c}"' for c in columns)
            marks = ", ".join("?" for _ in columns)
            await self.conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({marks})", rows)
        else:
            await self.conn.copy_records_to_table(table, columns=list(columns), records=rows)

    async def close(self) -> None:
        await self.conn.close()
