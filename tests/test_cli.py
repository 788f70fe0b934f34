"""The nubi CLI as an operator uses it: exit codes, one-line errors, config check, stats, demo."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from bot.cli import configure_logging, main
from migrations import current_revision
from tests.fakes.telegram_api import FakeTelegramAPI

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


def test_demo_runs_a_whole_raid_to_completion(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--members", "40", "--duration", "5"]) == 0
    out = capsys.readouterr().out
    assert "Raid #1 report" in out and "leaderboard" in out
    assert "completed, every objective was met (4/4)" in out and "Status: completed" in out
    assert "Objectives met: 4/4" in out
    assert "on a clock running 12.0x" in out  # 5 s for nubi's shortest raid, a minute: said on screen
    ended_after = float(re.search(r"Raid ended after ([\d.]+) s: completed", out).group(1))  # type: ignore[union-attr]
    assert ended_after < 5  # ended by its objectives, before its time was up


def test_demo_fail_runs_out_of_time(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["demo", "--members", "20", "--duration", "2", "--fail"]) == 0
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    assert "time ran out with 3/4 objectives met (short: quote 0/4)" in out
    assert "Ended: time ran out" in out and "Quotes: 0/4" in out
    assert elapsed >= 2  # the raid lasted its wall-clock duration


def test_demo_help_explains_every_option(tmp_path: Path) -> None:
    res = run("demo", "--help", cwd=tmp_path)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    assert "wall-clock seconds" in text and "synthetic members" in text and "runs out of time" in text


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    res = run("demo", "--members", "0", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.strip() == "nubi: --members must be between 1 and 100000"


def one_line_failure(res: subprocess.CompletedProcess, code: int = 1) -> str:
    """The contract for every failure: a non-zero exit, one line on stderr, no traceback."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("nubi: ")
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlite_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'n.db'}", **extra}


# -- the command line itself ----------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    res = run("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == f"nubi {metadata.version('nubi')}"


def help_text(capsys: pytest.CaptureFixture[str], *path: str) -> str:
    with pytest.raises(SystemExit):
        main([*path, "--help"])
    return capsys.readouterr().out


def test_every_option_has_help(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Read each command's --help as a user does: every option, argument and subcommand says what it is."""
    monkeypatch.setenv("COLUMNS", "200")  # one entry per line
    missing, seen = [], 0

    def walk(path: tuple[str, ...]) -> None:
        nonlocal seen
        for line in help_text(capsys, *path).splitlines():
            entry = re.match(r"^( {2}| {4})(\S.*?)(?: {2,}(\S.*))?$", line)
            if not entry or line.strip().endswith(":") or line.strip() == "COMMAND":
                continue
            seen += 1
            invocation, helptext = entry.group(2), entry.group(3)
            if not helptext:
                missing.append(f"{' '.join(path)}: {invocation}")
            if len(entry.group(1)) == 4 and re.fullmatch(r"[a-z]+", invocation):  # a subcommand
                walk((*path, invocation))

    walk(())
    assert not missing, missing
    assert seen > 40  # the walk reached the subcommands' options


def test_config_works_before_and_after_the_subcommand(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[http]\nport = 9123\n")
    for argv in (("--config", str(good), "config", "check"), ("config", "check", "--config", str(good)),
                 ("config", "--config", str(good), "check")):
        res = run(*argv, cwd=tmp_path)
        assert res.returncode == 0 and "http 127.0.0.1:9123" in res.stdout, (argv, res.stderr)
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nport = "eighty"\n')
    assert "http.port" in one_line_failure(run("stats", "--config", str(bad), cwd=tmp_path), 2)


def test_config_check_refuses_what_run_refuses(tmp_path: Path) -> None:
    public = sqlite_env(tmp_path, NUBI_HTTP_HOST="0.0.0.0")
    assert "without an API key" in one_line_failure(run("config", "check", cwd=tmp_path, env=public))
    assert "without an API key" in one_line_failure(run("run", cwd=tmp_path, env=public))
    webhook = sqlite_env(tmp_path, NUBI_TELEGRAM_TOKEN="1:x", NUBI_TELEGRAM_MODE="webhook",
                         NUBI_TELEGRAM_WEBHOOK_URL="https://bot.example.org/telegram/webhook")
    for command in ("config", "check"), ("run",):
        assert "telegram.webhook_secret: required" in one_line_failure(run(*command, cwd=tmp_path, env=webhook), 2)
    nowhere = {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'n.db'}"}
    line = one_line_failure(run("config", "check", cwd=tmp_path, env=nowhere))
    assert f"folder {tmp_path / 'gone'} does not exist" in line


def test_config_check_warns_about_unknown_nubi_variables(tmp_path: Path) -> None:
    res = run("config", "check", cwd=tmp_path, env={"NUBI_TELEGRAM_TOKN": "1:x", "NUBI_HTTP_PORT": "8081"})
    assert res.returncode == 0 and "http 127.0.0.1:8081" in res.stdout
    assert res.stderr.strip() == ("nubi: warning: NUBI_TELEGRAM_TOKN is not a nubi setting and is ignored "
                                  "(did you mean NUBI_TELEGRAM_TOKEN?)")


def test_discord_voice_warnings_are_silenced(caplog: pytest.LogCaptureFixture) -> None:
    import discord

    configure_logging(False)
    with caplog.at_level(logging.WARNING, logger="discord"):
        discord.Client(intents=discord.Intents.none())
    assert not [r for r in caplog.records if "voice" in r.getMessage()]
    with caplog.at_level(logging.WARNING, logger="discord"):
        logging.getLogger("discord.client").warning("something else")
    assert "something else" in caplog.text  # only the voice notices are dropped


# -- failures name what failed ----------------------------------------------------------------------


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_failure(run("run", cwd=tmp_path, env=sqlite_env(tmp_path, NUBI_HTTP_PORT=str(port))))
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_unreachable_postgresql_is_named_without_its_password(tmp_path: Path) -> None:
    port = closed_port()
    url = f"postgresql+asyncpg://nubi:s3cret@127.0.0.1:{port}/nubi"
    for command in (("run",), ("migrate",), ("stats",)):
        line = one_line_failure(run(*command, cwd=tmp_path, env={"NUBI_DATABASE_URL": url}))
        assert f"cannot reach the database at postgresql+asyncpg://nubi:***@127.0.0.1:{port}/nubi" in line
        assert "s3cret" not in line


def test_missing_sqlite_folder_is_named(tmp_path: Path) -> None:
    env = {"NUBI_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'n.db'}"}
    for command in (("run",), ("migrate",)):
        line = one_line_failure(run(*command, cwd=tmp_path, env=env))
        assert f"the folder {tmp_path / 'no' / 'such'} does not exist" in line


def test_unreachable_telegram_is_named(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{closed_port()}/bot"
    env = sqlite_env(tmp_path, NUBI_HTTP_PORT="0", NUBI_TELEGRAM_TOKEN="123:SECRET",
                     NUBI_TELEGRAM_API_BASE_URL=base)
    line = one_line_failure(run("run", cwd=tmp_path, env=env))
    assert line.startswith(f"nubi: Telegram: cannot start against the Bot API at {base}") and "SECRET" not in line


# -- migrate goes where it is told ------------------------------------------------------------------


async def test_migrate_to_goes_down_and_up(db_url: str, tmp_path: Path) -> None:
    env = {"NUBI_DATABASE_URL": db_url}

    async def nubi(*args: str) -> subprocess.CompletedProcess:
        return await asyncio.to_thread(run, *args, cwd=tmp_path, env=env)

    head = (await nubi("migrate")).stdout.strip()
    assert re.fullmatch(r"database is at \d{4}: nothing to do", head)
    top = head.split()[3].rstrip(":")
    res = await nubi("migrate", "--to", "0001")
    assert res.returncode == 0 and res.stdout.strip() == f"database migrated from {top} to 0001"
    assert await asyncio.to_thread(current_revision, db_url) == "0001"
    res = await nubi("migrate", "--to", "0002")
    assert res.stdout.strip() == "database migrated from 0001 to 0002"
    assert "unknown revision 'nope'" in one_line_failure(await nubi("migrate", "--to", "nope"))
    assert await asyncio.to_thread(current_revision, db_url) == "0002"  # a refused target changes nothing
    res = await nubi("migrate")
    assert res.stdout.strip() == f"database migrated from 0002 to {top}"


# -- nubi telegram check, against the fake Bot API ------------------------------------------------

GROUP = -1001234567890
TOKEN = "123456:CHECK"


async def telegram_check(fake: FakeTelegramAPI, tmp_path: Path, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {"NUBI_TELEGRAM_TOKEN": token, "NUBI_TELEGRAM_API_BASE_URL": fake.base_url}
    return await asyncio.to_thread(run, "telegram", "check", *args, cwd=tmp_path, env=env)


async def test_telegram_check_token_and_privacy(tmp_path: Path) -> None:
    async with FakeTelegramAPI(TOKEN, bot_username="raid_bot") as fake:
        res = await telegram_check(fake, tmp_path)
        assert res.returncode == 0, res.stderr
        assert "[ok] token valid: bot @raid_bot (id 123456)" in res.stdout
        assert "privacy mode is on" in res.stdout
        wrong = await telegram_check(fake, tmp_path, token="123456:WRONG")
        line = one_line_failure(wrong)
        assert f"Telegram refused the token at {fake.base_url}" in line and "WRONG" not in line
        assert "not a chat" in one_line_failure(await telegram_check(fake, tmp_path, "--chat", "not a chat"))
    async with FakeTelegramAPI(TOKEN, privacy_mode=False) as fake:
        assert "privacy mode is off" in (await telegram_check(fake, tmp_path)).stdout


async def test_telegram_check_a_group_where_the_bot_is_a_plain_member(tmp_path: Path) -> None:
    async with FakeTelegramAPI(TOKEN, bot_username="raid_bot") as fake:
        fake.add_chat(GROUP, title="Raiders")
        res = await telegram_check(fake, tmp_path, "--chat", str(GROUP))
        assert res.returncode == 0, res.stderr  # it works, with warnings
        out = res.stdout
        assert "[ok] the bot is a member of 'Raiders'" in out
        assert "[warning] commands: privacy mode is on" in out and "/raid@raid_bot always reaches it" in out
        assert "[ok] the bot may send messages here" in out
        assert "[warning] lock: raids started with `lock` cannot mute this chat" in out
        assert "can_restrict_members" in out
        assert [c.params.get("user_id") for c in fake.calls_for("getChatMember")] == [123456]


async def test_telegram_check_an_admin_with_the_rights_lock_needs(tmp_path: Path) -> None:
    async with FakeTelegramAPI(TOKEN) as fake:
        fake.add_chat(GROUP, title="Raiders")
        fake.set_member(GROUP, fake.bot_id, "administrator", is_bot=True, can_restrict_members=True)
        res = await telegram_check(fake, tmp_path, "--chat", str(GROUP))
        assert res.returncode == 0 and "[warning]" not in res.stdout and "[problem]" not in res.stdout, res.stdout
        assert "receives every command" in res.stdout and "lock: the bot may mute the chat" in res.stdout
        fake.set_member(GROUP, fake.bot_id, "administrator", is_bot=True, can_restrict_members=False)
        res = await telegram_check(fake, tmp_path, "--chat", str(GROUP))
        assert "[warning] lock:" in res.stdout


async def test_telegram_check_problems_exit_non_zero(tmp_path: Path) -> None:
    async with FakeTelegramAPI(TOKEN) as fake:
        fake.add_chat(GROUP, title="Raiders")
        fake.set_member(GROUP, fake.bot_id, "left", is_bot=True)
        res = await telegram_check(fake, tmp_path, "--chat", str(GROUP))
        assert "the bot is not a member of 'Raiders' (left)" in one_line_failure(res)
        fake.set_member(GROUP, fake.bot_id, "restricted", is_bot=True, can_send_messages=False)
        res = await telegram_check(fake, tmp_path, "--chat", str(GROUP))
        assert "may not send messages here" in one_line_failure(res)
        res = await telegram_check(fake, tmp_path, "--chat", "-100999")
        assert "chat -100999: Chat not found" in one_line_failure(res)


def test_telegram_check_needs_a_token(tmp_path: Path) -> None:
    assert "NUBI_TELEGRAM_TOKEN" in one_line_failure(run("telegram", "check", cwd=tmp_path))


# -- a running nubi: what it says, the README's HTTP example, restore refused -----------------------


class RunningNubi:
    def __init__(self, process: subprocess.Popen, banner: str, folder: Path) -> None:
        self.process, self.banner, self.folder = process, banner, folder
        self.url = re.search(r"running at (http://\S+)", banner).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def running_nubi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNubi]:
    folder = tmp_path_factory.mktemp("running")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUBI_", "SESSION_"))}
    env |= sqlite_env(folder, NUBI_HTTP_PORT="0") | {"PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], cwd=folder, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    lines: list[str] = []
    while not any("then restart nubi run" in line for line in lines):
        line = process.stdout.readline()
        assert line, f"nubi run stopped before it was up: {lines}"
        lines.append(line)
    try:
        yield RunningNubi(process, "".join(lines), folder)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


@pytest.mark.timeout(300)
def test_run_says_what_to_do_next(running_nubi: RunningNubi) -> None:
    banner, url = running_nubi.banner, running_nubi.url
    assert f"dashboard:  {url}/" in banner and f"API docs:   {url}/docs" in banner
    assert "No chat platform is configured yet" in banner and "nubi demo" in banner
    assert "NUBI_TELEGRAM_TOKEN" in banner and "docs/telegram.md" in banner and "config.toml" in banner
    curl = next(line for line in banner.splitlines() if "curl " in line).split("start one over HTTP:")[1].strip()
    res = subprocess.run(["bash", "-c", curl.replace("curl ", "curl -sS --fail-with-body ", 1)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"status":"active"' in res.stdout  # the printed line really starts a raid


@pytest.mark.timeout(300)
def test_readme_http_example_works(running_nubi: RunningNubi) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Try it over HTTP", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    assert "NUBI=http://127.0.0.1:8080\n" in block and "RAID=1 " in block
    newest = '$(curl -s "$NUBI/api/raids?limit=1" | grep -o \'"id":[0-9]*\' | head -1 | cut -d: -f2)'
    script = (block.replace("NUBI=http://127.0.0.1:8080", f"NUBI={running_nubi.url}")
              .replace("RAID=1 ", f"RAID={newest} ").replace("curl -s ", "curl -sS --fail-with-body "))
    res = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    answers = res.stdout.replace("}{", "}\n{").splitlines()
    assert len(answers) == 5 and '"status":"active"' in answers[0]
    assert '"already":false' in answers[1] and '"action":"like"' in answers[2]
    assert '"participants":1' in answers[3] and '"name":"Alice"' in answers[4] and '"claims":1' in answers[4]


@pytest.mark.timeout(300)
def test_restore_refuses_while_the_database_is_open(running_nubi: RunningNubi, tmp_path: Path) -> None:
    env = sqlite_env(running_nubi.folder)
    backup = tmp_path / "copy.db"
    assert run("backup", str(backup), cwd=tmp_path, env=env).returncode == 0  # online backup: fine
    line = one_line_failure(run("restore", str(backup), "--yes", cwd=tmp_path, env=env))
    assert f"pid {running_nubi.process.pid} (" in line and "bot.cli run" in line
    assert running_nubi.process.poll() is None  # refused: the running bot was left alone
    other = sqlite_env(tmp_path, NUBI_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'idle.db'}")
    assert run("migrate", cwd=tmp_path, env=other).returncode == 0
    res = run("restore", str(backup), "--yes", cwd=tmp_path, env=other)  # nobody has this one open
    assert res.returncode == 0 and "database restored" in res.stdout
