"""Run nubi's benchmarks: `python -m bench [--quick] [--db sqlite|postgresql|both] [--only NAMES]`.

Starts a throwaway PostgreSQL cluster when PostgreSQL is asked for (tests/pg.py) and destroys it
at the end; every database is migrated with migrations.upgrade. Prints each figure with its
same-run baseline, then the versions, the machine and a markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py` as well as `python -m bench`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import burst, chat_budget, http_api, leaderboard, memory, server_rss  # noqa: E402
from bench.env import Report, Target, load_average, make_workdir, markdown, versions  # noqa: E402

ALL = ("burst", "leaderboard", "memory", "http", "rss", "chat")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="scaled-down sizes: the whole run in under 3 minutes")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {', '.join(ALL)}")
    p.add_argument("--members", type=int, help="burst size (default 5000; 500 with --quick)")
    p.add_argument("--participants", type=int,
                   help="leaderboard raid size (default 100000 with 1,000,000 claims; 10000 with --quick)")
    p.add_argument("--group-commit", choices=("on", "off"),
                   help="core's database.group_commit in the burst (default: the configured default per database)")
    p.add_argument("--profile", metavar="DIR", type=Path, help="profile the core burst with cProfile into DIR")
    p.add_argument("--json", metavar="FILE", type=Path, help="also write every figure to FILE")
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(ALL)}")
    return args


async def run_on(target: Target, args: argparse.Namespace, report: Report, only: set[str]) -> None:
    await target.prepare()
    if "burst" in only:
        group_commit = None if args.group_commit is None else args.group_commit == "on"
        await burst.bench(target, report, args.members or (500 if args.quick else 5000), args.profile, group_commit)
    if "leaderboard" in only:
        await leaderboard.bench(target, report, args.participants or (10_000 if args.quick else 100_000))
    if "memory" in only:
        await memory.bench(target, report, quick=args.quick)
    if "http" in only:
        await http_api.bench(target, report, quick=args.quick)
    if "rss" in only:
        await server_rss.bench(target, report, quick=args.quick)
    if "chat" in only:
        await chat_budget.bench(target, report, quick=args.quick)


async def amain(args: argparse.Namespace) -> Report:
    only = set(args.only.split(","))
    kinds = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    report = Report()
    load_before = load_average()
    workdir = make_workdir()
    cluster = None
    pg_version = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        for kind in kinds:
            if kind == "postgresql":
                from tests import pg

                reason = pg.missing_reason()
                if reason:
                    report.notes.append(f"PostgreSQL skipped: {reason}")
                    print(f"PostgreSQL skipped: {reason}", flush=True)
                    continue
                cluster = pg.start_cluster()
            target = Target(kind, workdir, cluster)
            if kind == "postgresql":
                pg_version = await target.server_version()
            await run_on(target, args, report, only)
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    report.notes.insert(0, "versions: " + json.dumps(versions(pg_version)))
    report.notes.insert(1, f"load average before: {load_before}; after: {load_average()} (on {os.cpu_count()} cores)")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    report = asyncio.run(amain(args))
    print(f"\n== done in {time.monotonic() - t0:.0f} s{' (quick)' if args.quick else ''}\n")
    for note in report.notes:
        print(note)
    print()
    print(markdown(report.figures))
    if args.json:
        payload: dict[str, Any] = {"figures": [asdict(f) | {"ratio": f.ratio} for f in report.figures],
                                   "notes": report.notes, "quick": args.quick}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
