"""The nubi CLI as an operator uses it: exit codes, one-line errors, config check, stats, demo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NUBI_", "SESSION_"))}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=cwd, env=full_env | {"PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout)


def test_config_check_defaults_and_errors(tmp_path: Path) -> None:
    ok = run("config", "check", cwd=tmp_path)
    assert ok.returncode == 0 and "built-in defaults" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = "eighty"\n[sessions]\nmin_timeout_minutes = 0\n[raids]\nobjectives = { dance = { target = 1, points = 1 } }\n')
    res = run("--config", str(bad), "config", "check", cwd=tmp_path)
    assert res.returncode == 2
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "http.port" in err and "sessions.min_timeout_minutes" in err and "dance" in err
    env = run("config", "check", cwd=tmp_path, env={"NUBI_HTTP_PORT": "not-a-port"})
    assert env.returncode == 2 and "http.port" in env.stderr
    missing = run("--config", str(tmp_path / "nope.toml"), "config", "check", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_example_config_is_valid() -> None:
    res = run("--config", str(ROOT / "config.example.toml"), "config", "check", cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_migrate_stats_cleanup_reset(tmp_path: Path) -> None:
    env = {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}"}
    assert run("migrate", cwd=tmp_path, env=env).returncode == 0
    stats = run("stats", cwd=tmp_path, env=env)
    assert stats.returncode == 0 and "Raids: 0" in stats.stdout
    cleanup = run("sessions", "cleanup", cwd=tmp_path, env=env)
    assert cleanup.returncode == 0 and "expired 0" in cleanup.stdout
    refused = run("reset", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert run("reset", "--yes", cwd=tmp_path, env=env).returncode == 0
    assert run("migrate", "--to", "base", cwd=tmp_path, env=env).returncode == 0


def test_refuses_to_bind_publicly_without_keys(tmp_path: Path) -> None:
    env = {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", "NUBI_HTTP_HOST": "0.0.0.0"}
    res = run("run", cwd=tmp_path, env=env)
    assert res.returncode == 1 and "without an API key" in res.stderr and "Traceback" not in res.stderr


def test_demo_runs_a_real_raid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--members", "40", "--duration", "2"]) == 0
    out = capsys.readouterr().out
    assert "Raid #1 report" in out and "Raiders: 40" in out and "leaderboard" in out


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    res = run("demo", "--members", "0", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip() == "nubi: --members must be between 1 and 100000"
