"""`prebuilt`: the mark on the hot Core statements built once at import (join, claim, session, message).

It promises nothing about how a statement runs: every statement goes through SQLAlchemy's public
API (core/storage/executor.py), whose compiled cache and asyncpg's prepared-statement cache already
make a statement built once cheap to run again. The mark once sent these statements straight to
asyncpg through private internals; it stays, as an identity function, only because core/raids,
core/sessions, core/scores and core/directory import it from here. Remove those calls and this module
together when those packages are free to change.
"""

from __future__ import annotations

from typing import TypeVar

S = TypeVar("S")


def prebuilt(statement: S) -> S:
    """Return the statement unchanged (see the module docstring)."""
    return statement
