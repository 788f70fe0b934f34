"""The `nubi` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from core.config import ConfigError, Settings, load_settings, unknown_env


class CliError(Exception):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from .app import NubiApp, loop_factory, settle_heap
    from .hints import running_banner

    settings = _settings(args)
    _warn_unknown_env()

    async def main() -> None:
        app = NubiApp(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await app.start()
        except BaseException:
            await app.stop()  # close what did start (database, scheduler, an adapter) before saying why
            raise
        settle_heap()
        print(running_banner(settings, app.port), flush=True)
        try:
            await stop.wait()
        finally:
            print("stopping nubi...", flush=True)
            await app.stop()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import migrate_to

    from .preflight import check_database, database_failure

    url = _settings(args).database.url
    check_database(url)
    try:
        before, after = migrate_to(url, args.to)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    except Exception as exc:
        raise database_failure(url, exc) from exc
    where = after or "base (no tables)"
    if before == after:
        print(f"database is at {where}: nothing to do")
    else:
        print(f"database migrated from {before or 'base'} to {where}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from .preflight import check_settings, safe_url

    settings = _settings(args)
    _warn_unknown_env()
    check_settings(settings)  # what `nubi run` would refuse, refused here too
    source = args.config or ("config.toml" if Path("config.toml").is_file() else "built-in defaults")
    http = settings.http
    admins = sum(k.community == "*" for k in http.api_keys)
    print(f"config OK ({source}): database {safe_url(settings.database.url)}, "
          f"http {http.host}:{http.port}, {len(settings.agents)} agent(s), "
          f"telegram {'on' if settings.telegram.token else 'off'}, discord {'on' if settings.discord.token else 'off'}, "
          f"api keys {admins} admin + {len(http.api_keys) - admins} community, "
          f"hosts {', '.join(['loopback', *http.allowed_hosts])}, trusted proxies {len(http.trusted_proxies)}")
    for warning in security_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def security_warnings(settings: Settings) -> list[str]:
    """What is valid but probably not what the operator wants (the run still starts)."""
    http, out = settings.http, []
    short = [i for i, k in enumerate(http.api_keys) if k.key is not None and len(k.key.get_secret_value()) < 24]
    if short:
        out.append(f"http.api_keys {short}: shorter than 24 characters; `nubi keys new` makes 43-character keys")
    if "*" in http.allowed_hosts:
        out.append('http.allowed_hosts contains "*": any Host is answered (DNS rebinding is not blocked)')
    if http.api_keys and http.host not in ("127.0.0.1", "localhost", "::1") and not http.allowed_hosts:
        out.append(f"http.host is {http.host} but http.allowed_hosts is empty: only loopback Host names are answered")
    return out


def cmd_keys_new(args: argparse.Namespace) -> int:
    """A random key, its SHA-256, and the config lines that admit it (the digest form keeps it out of the file)."""
    import hashlib
    import secrets

    from pydantic import ValidationError

    from core.config import ApiKey

    community = "*" if args.admin else args.community
    key = secrets.token_urlsafe(32)
    try:
        ApiKey(key=key, community=community)  # the same validation the config gets
    except ValidationError as exc:
        raise CliError(f"--community {community!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"key: {key}")
    print("Give the key to its client (header X-API-KEY); it is not stored anywhere. Add to config.toml:")
    print()
    print("[[http.api_keys]]")
    print(f'key_sha256 = "{digest}"')
    print(f'community = "{community}"')
    return 0


def _warn_unknown_env() -> None:
    """A misspelt NUBI_* variable would otherwise be ignored without a word."""
    for name, guess in unknown_env(os.environ):
        hint = f" (did you mean {guess}?)" if guess else ""
        print(f"nubi: warning: {name} is not a nubi setting and is ignored{hint}", file=sys.stderr)


def cmd_stats(args: argparse.Namespace) -> int:
    from core import stats
    from core.storage.db import Database

    from .preflight import migrate

    settings = _settings(args)
    migrate(settings.database.url)

    async def main() -> str:
        db = Database(settings.database.url)
        try:
            return stats.render(await stats.collect(db))
        finally:
            await db.dispose()

    print(asyncio.run(main()))
    return 0


def cmd_sessions_cleanup(args: argparse.Namespace) -> int:
    from core.services import build_services

    from .preflight import migrate

    settings = _settings(args)
    migrate(settings.database.url)

    async def main() -> dict[str, int]:
        svc = build_services(settings)
        try:
            return await svc.sessions.sweep()
        finally:
            await svc.db.dispose()

    result = asyncio.run(main())
    print(f"expired {result['expired']} session(s); warned {result['warned']}")
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from .preflight import migrate

    if not args.yes:
        raise CliError("reset drops every table: run it again with --yes if you mean it")
    url = _settings(args).database.url
    migrate(url, "base", down=True)
    migrate(url)
    print("database dropped and rebuilt")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.members < 1 or args.members > 100_000:
        raise CliError("--members must be between 1 and 100000")
    if args.duration < 1 or args.duration > 3600:
        raise CliError("--duration must be between 1 and 3600 seconds")
    asyncio.run(run_demo(args.members, args.duration, out=sys.stdout, fail=args.fail))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from core.services import build_services

    from .preflight import migrate

    settings = _settings(args)
    migrate(settings.database.url)
    from adapters.mcp import run_stdio

    async def main() -> None:
        svc = build_services(settings)
        try:
            await run_stdio(svc)
        finally:
            await svc.db.dispose()

    asyncio.run(main())
    return 0


def cmd_discord_sync(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.discord.token is None:
        raise CliError("discord.token is not set (NUBI_DISCORD_TOKEN)")
    from adapters.discord.adapter import sync_commands

    from .preflight import platform_failure

    token = settings.discord.token.get_secret_value()
    with platform_failure("Discord", "the Discord API (command sync)", secrets=(token,)):
        n = asyncio.run(sync_commands(settings.discord, args.guild))
    print(f"synced {n} command(s)" + (f" to guild {args.guild}" if args.guild else " globally"))
    return 0


def cmd_discord_invite(args: argparse.Namespace) -> int:
    """The URL that adds the bot to a server with exactly the permissions docs/discord.md explains."""
    from adapters.discord.adapter import application_id
    from adapters.discord.permissions import invite_url

    app_id = args.application_id
    if app_id is None:
        settings = _settings(args)
        if settings.discord.token is None:
            raise CliError("pass --application-id, or set discord.token (NUBI_DISCORD_TOKEN) to look it up")
        app_id = asyncio.run(application_id(settings.discord))
    if app_id <= 0:
        raise CliError("--application-id must be the application's positive id")
    print(invite_url(app_id))
    return 0


def cmd_telegram_check(args: argparse.Namespace) -> int:
    from .telegram_check import FAIL, check, parse_chat

    settings = _settings(args)
    chat = parse_chat(args.chat) if args.chat is not None else None
    findings = asyncio.run(check(settings.telegram, chat))
    for finding in findings:
        print(finding.line())
    problems = [f for f in findings if f.level == FAIL]
    if problems:
        print(f"nubi: telegram check found {len(problems)} problem(s): {problems[0].text}", file=sys.stderr)
        return 1
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from .backup import backup

    backup(_settings(args).database.url, args.file)
    print(f"backup written to {args.file}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from .backup import restore

    restore(_settings(args).database.url, args.file, yes=args.yes)
    print(f"database restored from {args.file}")
    return 0


def _version() -> str:
    try:
        return metadata.version("nubi")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    # --config and -v are accepted before or after the subcommand: `nubi --config x run` and
    # `nubi run --config x` mean the same. On the subcommands (their own action objects, shared by
    # them only) they default to SUPPRESS, so a value given before the subcommand is not overwritten.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="TOML config file (default: ./config.toml if present, else built-in defaults)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log more (debug level)")
    p = argparse.ArgumentParser(prog="nubi", description="nubi: community raid bot for Discord and Telegram",
                                epilog="Every command exits 0 on success, else prints one line on stderr.")
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML config file (default: ./config.toml if present, else built-in defaults)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more (debug level)")
    p.add_argument("--version", action="version", version=f"nubi {_version()}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(parent: Any, name: str, help: str, fn: Any = None) -> argparse.ArgumentParser:
        cmd = parent.add_parser(name, parents=[common], help=help, description=help)
        if fn is not None:
            cmd.set_defaults(fn=fn)
        return cmd

    command(sub, "run", "run the bot: database, scheduler, HTTP API, dashboard and configured adapters", cmd_run)
    m = command(sub, "migrate", "bring the database to the latest migration, or up or down to --to REV", cmd_migrate)
    m.add_argument("--to", default="head", metavar="REV",
                   help="target revision: an id such as 0002, 'head' (the latest, default) or 'base' (no tables)")
    c = command(sub, "config", "configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    command(csub, "check", "validate the configuration: refuses what `nubi run` would refuse, warns about "
            "unknown NUBI_* variables", cmd_config_check)
    k = command(sub, "keys", "API key tools")
    ksub = k.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    kn = command(ksub, "new", "make a random API key and print the config lines that admit it", cmd_keys_new)
    scope = kn.add_mutually_exclusive_group(required=True)
    scope.add_argument("--community", metavar="NAME", help='the one community the key may act in, e.g. "telegram:-100123"')
    scope.add_argument("--admin", action="store_true", help="a key for every community (MCP, member context)")
    command(sub, "stats", "sessions, raids, participants, claims and points", cmd_stats)
    s = command(sub, "sessions", "session tools")
    ssub = s.add_subparsers(dest="sessions_command", required=True, metavar="COMMAND")
    command(ssub, "cleanup", "run the session expiry sweep now", cmd_sessions_cleanup)
    r = command(sub, "reset", "drop and rebuild the database (development)", cmd_reset)
    r.add_argument("--yes", action="store_true", help="really drop every table")
    d = command(sub, "demo", "watch a whole raid: synthetic members join and claim through the real services on a "
                "throwaway SQLite database, with live progress and the report", cmd_demo)
    d.add_argument("--members", type=int, default=50, metavar="N", help="how many synthetic members take part, 1-100000 (default 50)")
    d.add_argument("--duration", type=float, default=20.0, metavar="SECONDS",
                   help="how long the raid lasts, in wall-clock seconds, 1-3600 (default 20). nubi's raids last at "
                   "least a minute, so below 60 the demo's clock runs faster (a 1-minute raid in that time); a raid "
                   "whose objectives are all met ends sooner")
    d.add_argument("--fail", action="store_true",
                   help="nobody quotes, so the quote objective is never met and the raid runs out of time "
                   "(by default the members meet every objective and the raid completes)")
    command(sub, "mcp", "serve the MCP server over stdio", cmd_mcp)
    dc = command(sub, "discord", "Discord tools")
    dsub = dc.add_subparsers(dest="discord_command", required=True, metavar="COMMAND")
    ds = command(dsub, "sync", "publish the slash commands to Discord", cmd_discord_sync)
    ds.add_argument("--guild", type=int, default=None, metavar="ID",
                    help="sync to this server only (instant; without it, globally, which can take a while)")
    di = command(dsub, "invite", "print the URL that adds the bot to a server with its permissions", cmd_discord_invite)
    di.add_argument("--application-id", type=int, default=None, metavar="ID",
                    help="the application's id (looked up with the bot token when left out)")
    tg = command(sub, "telegram", "Telegram tools")
    tsub = tg.add_subparsers(dest="telegram_command", required=True, metavar="COMMAND")
    tc = command(tsub, "check", "check the token (getMe), privacy mode and, with --chat, whether the bot sees "
                 "commands and has the rights nubi uses in that group", cmd_telegram_check)
    tc.add_argument("--chat", default=None, metavar="ID",
                    help="a group's id (e.g. -1001234567890) or @username to check the bot's membership and rights in")
    b = command(sub, "backup", "write a consistent copy of the SQLite database while the bot runs", cmd_backup)
    b.add_argument("file", metavar="FILE", help="the new backup file (must not exist)")
    rs = command(sub, "restore", "replace the SQLite database with a backup (refused while a process has it open)",
                 cmd_restore)
    rs.add_argument("file", metavar="FILE", help="the backup file to restore from")
    rs.add_argument("--yes", action="store_true", help="replace the existing database")
    return p


QUIET_LOGGERS = {
    # discord.py warns about optional voice libraries on every Client(); nubi has no voice features.
    "discord.client": ("voice will NOT be supported",),
}


class _DropKnownNoise(logging.Filter):
    def __init__(self, phrases: tuple[str, ...]) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(phrase in message for phrase in self.phrases)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for ours in ("nubi", "core", "adapters", "bot"):
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, phrases in QUIET_LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(phrases))


def main(argv: Sequence[str] | None = None) -> int:
    from .backup import BackupError
    from .preflight import StartupError

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print("nubi: invalid configuration: " + "; ".join(exc.problems), file=sys.stderr)
        return 2
    except (CliError, StartupError, BackupError) as exc:
        print(f"nubi: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, no traceback, for every other failure; -v logs the details
        logging.getLogger("nubi").debug("command failed", exc_info=True)
        print(f"nubi: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
