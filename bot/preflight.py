"""What `nubi run` refuses, checked before anything starts, and failures turned into one honest line.

`config check` runs the same checks as `run`, so a configuration it calls OK is one `run` accepts.
Each message names what failed (the port, the path, the URL without its password, the platform):
an operator reading one line on stderr knows what to fix without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from core.config import ConfigError, Settings
from core.storage.db import normalize_url

SOURCE_ROOT = str(Path(__file__).resolve().parents[1])  # where bot/ is: a child process runs this same nubi


class StartupError(Exception):
    """A configuration or environment the app refuses to run with; the CLI prints it in one line."""


def check_bind(settings: Settings) -> None:
    from adapters.http.security import is_loopback

    http = settings.http
    if http.enabled and not http.api_keys and not is_loopback(http.host):
        raise StartupError(
            f"refusing to serve the API on {http.host} without an API key: set [[http.api_keys]] "
            "or bind to 127.0.0.1"
        )


def safe_url(url: str) -> str:
    """The database URL as it may be printed: the password masked."""
    try:
        return make_url(normalize_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database.url>"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_database(url: str) -> None:
    """A SQLite file can only be created in a folder that exists; say so before the driver fails
    with "unable to open database file" and no path."""
    path = sqlite_file(url)
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise StartupError(f"the SQLite database {path} cannot be created: the folder {folder} does not exist "
                           "(database.url / NUBI_DATABASE_URL)")


def check_settings(settings: Settings) -> None:
    """Everything `run` refuses before it starts anything; `config check` calls the same."""
    check_bind(settings)
    check_database(settings.database.url)
    tg = settings.telegram
    if tg.token is not None and tg.mode == "webhook" and not (tg.webhook_secret and tg.webhook_secret.get_secret_value()):
        # the adapter refuses this too; said here so that config check says it before run does
        raise ConfigError(["telegram.webhook_secret: required in webhook mode (NUBI_TELEGRAM_WEBHOOK_SECRET)"])


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def migrate(url: str, revision: str = "head", *, down: bool = False) -> None:
    """Run the migrations; a database that cannot be reached is named (without its password)."""
    from migrations import downgrade, upgrade

    check_database(url)
    try:
        (downgrade if down else upgrade)(url, revision)
    except Exception as exc:
        raise database_failure(url, exc) from exc


def database_failure(url: str, exc: Exception) -> StartupError:
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, OSError):  # refused, unknown host, timed out
        return StartupError(f"cannot reach the database at {safe_url(url)}: {first_line(exc)}")
    return StartupError(f"database {safe_url(url)}: {first_line(exc)}")


async def migrate_async(url: str) -> None:
    """Bring the database to the newest migration for `nubi run`, keeping Alembic (about 8 MiB) out of
    the long-running process: a database already there, the usual start, costs one query; one that is
    behind (or new, or unreadable) is migrated by a child process, `python -m bot.migrator`, whose
    failure is the same one line `migrate` would raise here."""
    from migrations import head_revision

    head = head_revision()
    if head is not None and await database_revisions(url) == {head}:
        return
    await migrate_in_child(url)


async def database_revisions(url: str) -> set[str] | None:
    """The revision ids in the database's alembic_version table; None when it cannot be read (no such
    table yet, a role without the right: the migration then says what is wrong). A database that
    cannot be reached is said at once, not tried again (and timed out again) by the migration."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(normalize_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {row[0] for row in await conn.execute(text("SELECT version_num FROM alembic_version"))}
    except OSError as exc:  # refused, unknown host, timed out
        raise database_failure(url, exc) from exc
    except Exception:
        return None
    finally:
        await engine.dispose()


async def migrate_in_child(url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (SOURCE_ROOT, os.environ.get("PYTHONPATH"))))}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.migrator", env=env, stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await child.communicate(url.encode())  # on stdin, not in argv: the URL may hold a password
    if child.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise StartupError(lines[-1] if lines else f"database {safe_url(url)}: migration exited with {child.returncode}")
    if err.strip():
        sys.stderr.write(err.decode(errors="replace"))


@contextlib.contextmanager
def platform_failure(platform: str, where: str, *, secrets: tuple[str, ...] = ()) -> Iterator[None]:
    """Any failure while connecting to a chat platform becomes one line naming it and its URL."""
    try:
        yield
    except StartupError:
        raise
    except Exception as exc:
        message = first_line(exc)
        for secret in secrets:
            if secret:
                message = message.replace(secret, "<token>")
        raise StartupError(f"{platform}: cannot start against {where}: {message}") from exc


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the HTTP port ourselves, so a port in use is one clear line instead of uvicorn's exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"http.host {host!r} does not resolve: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use (http.port / NUBI_HTTP_PORT): "
                               "stop the other process or choose another port") from exc
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
