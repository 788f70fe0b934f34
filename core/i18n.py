"""What members and moderators read, in their community's language (gettext).

Every user-facing text is written `_("text with {placeholders}").format(...)` (never an f-string
inside `_()`), so extraction finds it and a translation can move the placeholders. English only
until the catalogs land: `_` returns the text as written.
"""

from __future__ import annotations

from contextvars import ContextVar

current_language: ContextVar[str] = ContextVar("nubi_language", default="en")


def _(message: str) -> str:
    """The message in the current language."""
    return message


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for `n`, in the current language."""
    return singular if n == 1 else plural
