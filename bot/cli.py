"""The `nubi` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from core.config import ConfigError, Settings, load_settings


class CliError(Exception):
    pass


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from .app import NubiApp, loop_factory, settle_heap

    settings = _settings(args)

    async def main() -> None:
        app = NubiApp(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await app.start()
        settle_heap()
        print(f"nubi is running at http://{settings.http.host}:{app.port} (Ctrl-C stops it)", flush=True)
        try:
            await stop.wait()
        finally:
            print("stopping nubi...", flush=True)
            await app.stop()

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from migrations import downgrade, upgrade

    url = _settings(args).database.url
    if args.to in (None, "head"):
        upgrade(url)
        print("database is at the latest migration")
        return 0
    if args.to == "base":
        downgrade(url, "base")
    else:
        try:
            upgrade(url, args.to)
        except Exception:  # an older revision: alembic only goes there downwards
            downgrade(url, args.to)
    print(f"database is at {args.to}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    source = args.config or ("config.toml" if Path("config.toml").is_file() else "built-in defaults")
    http = settings.http
    admins = sum(k.community == "*" for k in http.api_keys)
    print(f"config OK ({source}): database {settings.database.url.split('@')[-1]}, "
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


def cmd_stats(args: argparse.Namespace) -> int:
    from core import stats
    from core.storage.db import Database
    from migrations import upgrade

    settings = _settings(args)
    upgrade(settings.database.url)

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
    from migrations import upgrade

    settings = _settings(args)
    upgrade(settings.database.url)

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
    from migrations import downgrade, upgrade

    if not args.yes:
        raise CliError("reset drops every table: run it again with --yes if you mean it")
    url = _settings(args).database.url
    downgrade(url, "base")
    upgrade(url)
    print("database dropped and rebuilt")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    if args.members < 1 or args.members > 100_000:
        raise CliError("--members must be between 1 and 100000")
    if args.duration <= 0 or args.duration > 3600:
        raise CliError("--duration must be between 1 and 3600 seconds")
    asyncio.run(run_demo(args.members, args.duration, out=sys.stdout))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    from core.services import build_services
    from migrations import upgrade

    settings = _settings(args)
    upgrade(settings.database.url)
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
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nubi")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nubi", description="nubi: community raid bot for Discord and Telegram")
    p.add_argument("--config", help="TOML config file (default: ./config.toml if present, else built-in defaults)")
    p.add_argument("--version", action="version", version=f"nubi {_version()}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the bot: database, scheduler, HTTP API, dashboard and configured adapters") \
        .set_defaults(fn=cmd_run)
    m = sub.add_parser("migrate", help="bring the database to the latest migration (or --to REV / base)")
    m.add_argument("--to", default=None)
    m.set_defaults(fn=cmd_migrate)
    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    csub.add_parser("check", help="validate the configuration").set_defaults(fn=cmd_config_check)
    k = sub.add_parser("keys", help="API key tools")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kn = ksub.add_parser("new", help="make a random API key and print the config lines that admit it")
    scope = kn.add_mutually_exclusive_group(required=True)
    scope.add_argument("--community", help='the one community the key may act in, e.g. "telegram:-100123"')
    scope.add_argument("--admin", action="store_true", help="a key for every community (MCP, member context)")
    kn.set_defaults(fn=cmd_keys_new)
    sub.add_parser("stats", help="sessions, raids, participants, claims and points").set_defaults(fn=cmd_stats)
    s = sub.add_parser("sessions", help="session tools")
    ssub = s.add_subparsers(dest="sessions_command", required=True)
    ssub.add_parser("cleanup", help="run the session expiry sweep now").set_defaults(fn=cmd_sessions_cleanup)
    r = sub.add_parser("reset", help="drop and rebuild the database (development)")
    r.add_argument("--yes", action="store_true")
    r.set_defaults(fn=cmd_reset)
    d = sub.add_parser("demo", help="run a real raid with synthetic members on a throwaway SQLite database")
    d.add_argument("--members", type=int, default=50)
    d.add_argument("--duration", type=float, default=10.0)
    d.set_defaults(fn=cmd_demo)
    sub.add_parser("mcp", help="serve the MCP server over stdio").set_defaults(fn=cmd_mcp)
    dc = sub.add_parser("discord", help="Discord tools")
    dsub = dc.add_subparsers(dest="discord_command", required=True)
    ds = dsub.add_parser("sync", help="sync the slash command tree")
    ds.add_argument("--guild", type=int, default=None)
    ds.set_defaults(fn=cmd_discord_sync)
    di = dsub.add_parser("invite", help="print the URL that adds the bot to a server with its permissions")
    di.add_argument("--application-id", type=int, default=None,
                    help="the application's id (looked up with the bot token when left out)")
    di.set_defaults(fn=cmd_discord_invite)
    b = sub.add_parser("backup", help="write a consistent copy of the SQLite database while the bot runs")
    b.add_argument("file")
    b.set_defaults(fn=cmd_backup)
    rs = sub.add_parser("restore", help="replace the SQLite database with a backup (stop the bot first)")
    rs.add_argument("file")
    rs.add_argument("--yes", action="store_true")
    rs.set_defaults(fn=cmd_restore)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for ours in ("nubi", "core", "adapters", "bot"):
        logging.getLogger(ours).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.fn(args)
    except ConfigError as exc:
        print("nubi: invalid configuration: " + "; ".join(exc.problems), file=sys.stderr)
        return 2
    except (CliError, Exception) as exc:  # one line, no traceback, for every failure
        from .app import StartupError

        if isinstance(exc, CliError | StartupError):
            print(f"nubi: {exc}", file=sys.stderr)
        else:
            logging.getLogger("nubi").debug("command failed", exc_info=True)
            print(f"nubi: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
