"""Alembic migrations, run programmatically so `nubi migrate` needs no alembic.ini beside it.

Alembic is imported by the functions that use it, not with this package: `nubi run` asks only
`head_revision()` when its database is already current, and Alembic (about 8 MiB) stays out of it.
"""

from __future__ import annotations

import ast
import asyncio
import io
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(url: str, stdout: io.StringIO | None = None) -> Config:
    from alembic.config import Config

    from core.storage.db import normalize_url

    # sys.stdout now, not Config()'s default: sys.stdout when alembic was imported (lazily, see above)
    cfg = Config(stdout=stdout if stdout is not None else sys.stdout)
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
    from alembic import command

    _in_thread(command.upgrade, alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    _in_thread(command.downgrade, alembic_config(url), revision)


def current(url: str) -> None:
    from alembic import command

    _in_thread(command.current, alembic_config(url))


def revisions() -> list[str]:
    """Every revision id, oldest first (the chain is linear)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def head_revision() -> str | None:
    """The newest revision id, read from the `revision` and `down_revision` assignments of the files
    in versions/ without Alembic. None (ask Alembic) when a file's ids are not plain strings or when
    not exactly one revision is nobody's predecessor. tests/test_migrations.py checks that it agrees
    with `revisions()`."""
    ids: set[str] = set()
    parents: set[str] = set()
    for path in (HERE / "versions").glob("*.py"):
        if path.name == "__init__.py":  # Alembic skips it too
            continue
        found: dict[str, object] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
                node.target if isinstance(node, ast.AnnAssign) else None)
            if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):  # type: ignore[union-attr]
                found[target.id] = node.value.value  # type: ignore[union-attr]
        revision, down = found.get("revision"), found.get("down_revision", ...)
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
            return None
        ids.add(revision)
        if down is not None:
            parents.add(down)
    heads = ids - parents
    return heads.pop() if len(heads) == 1 else None


def current_revision(url: str) -> str | None:
    """The revision the database is at (None: no nubi tables yet), as `alembic current` reports it."""
    from alembic import command

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
