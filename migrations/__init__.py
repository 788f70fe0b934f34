"""Alembic migrations, run programmatically so `nubi migrate` needs no alembic.ini beside it."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent


def alembic_config(url: str, stdout: io.StringIO | None = None) -> Config:
    from core.storage.db import normalize_url

    cfg = Config(stdout=stdout) if stdout is not None else Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def _in_thread(fn, *args) -> None:  # type: ignore[no-untyped-def]
    """Alembic's async env calls asyncio.run; inside a running loop it must run on another thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn(*args)
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def upgrade(url: str, revision: str = "head") -> None:
    _in_thread(command.upgrade, alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    _in_thread(command.downgrade, alembic_config(url), revision)


def current(url: str) -> None:
    _in_thread(command.current, alembic_config(url))


def revisions() -> list[str]:
    """Every revision id, oldest first (the chain is linear)."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current_revision(url: str) -> str | None:
    """The revision the database is at (None: no nubi tables yet), as `alembic current` reports it."""
    out = io.StringIO()
    _in_thread(command.current, alembic_config(url, stdout=out))
    words = out.getvalue().split()
    return words[0] if words else None


def migrate_to(url: str, target: str) -> tuple[str | None, str | None]:
    """Bring the database to `target` (a revision id, "head" or "base"), upwards or downwards.

    Returns (before, after). Alembic's `upgrade` to an older revision does nothing, and `downgrade` to a
    newer one fails, so the direction is decided here from where the database is.
    """
    chain = revisions()
    if target not in (*chain, "head", "base"):
        raise ValueError(f"unknown revision {target!r}: use one of {', '.join(chain)}, head or base")
    before = current_revision(url)
    wanted = {"head": chain[-1], "base": None}.get(target, target)
    position = {None: -1, **{rev: i for i, rev in enumerate(chain)}}
    if before not in position:
        raise ValueError(f"the database is at revision {before!r}, which this version of nubi does not know")
    if position[wanted] > position[before]:
        upgrade(url, wanted or "base")
    elif position[wanted] < position[before]:
        downgrade(url, wanted or "base")
    return before, current_revision(url)
