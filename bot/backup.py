"""Online backup of the SQLite database (SQLite's backup API: consistent while the bot writes)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from core.storage.db import normalize_url


class BackupError(Exception):
    pass


def _sqlite_path(url: str) -> Path:
    parsed = make_url(normalize_url(url))
    if parsed.get_backend_name() != "sqlite":
        raise BackupError("nubi backup copies SQLite databases; for PostgreSQL use pg_dump / pg_restore")
    if not parsed.database:
        raise BackupError("the database URL has no file")
    return Path(parsed.database)


def backup(url: str, target: str) -> None:
    source = _sqlite_path(url)
    if not source.is_file():
        raise BackupError(f"there is no database at {source}")
    dest = Path(target)
    if dest.exists():
        raise BackupError(f"{dest} exists already; choose a new file")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out, pages=1024)
        finally:
            out.close()
    finally:
        src.close()


def restore(url: str, backup_file: str, *, yes: bool) -> None:
    """Replace the database with a backup. The bot must be stopped: this swaps the file."""
    target = _sqlite_path(url)
    source = Path(backup_file)
    if not source.is_file():
        raise BackupError(f"there is no backup at {source}")
    check = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        if check.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise BackupError(f"{source} is not a healthy SQLite database")
    finally:
        check.close()
    if target.exists() and not yes:
        raise BackupError(f"{target} exists: stop the bot, then run restore again with --yes to replace it")
    holders = processes_using(target)
    if holders:
        who = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders)
        raise BackupError(f"{target} is open in {who}: stop it before restoring (a running bot would corrupt "
                          "the restored file)")
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, target)


def processes_using(database: Path) -> list[tuple[int, str]]:
    """Other processes that hold the database (or its -wal/-shm) open, from Linux's /proc/<pid>/fd.

    Swapping the file under a running bot leaves its open connections on the old inode and its WAL
    writing into the new file: "database disk image is malformed". Processes of other users cannot be
    inspected without privileges and are not listed; where /proc does not exist nothing is found.
    """
    names = {os.path.realpath(str(database) + suffix) for suffix in ("", "-wal", "-shm")}
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if any(os.path.realpath(fd) in names for fd in fds):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(entry.name), cmd[:80] or "?"))
        except OSError:  # gone meanwhile, or another user's process
            continue
    return sorted(found)
