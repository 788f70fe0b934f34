"""What members and moderators read, in their community's language (gettext).

Every user-facing text is written `_("text with {placeholders}").format(...)` (never an f-string
inside `_()`), so extraction finds it and a translation can move the placeholders. Texts kept in
tables are marked with `N_()` where they are defined and translated with `_()` where they are shown.

The language is per community and per task: `with use_language(lang):` around the work that
produces text (a command, an event's post). It lives in a ContextVar, never in a process global, so
two communities served at the same moment each read their own language.

Catalogs: core/locale/<lang>/LC_MESSAGES/nubi.po, compiled to nubi.mo (committed, shipped in the
wheel; the stdlib's gettext reads them). docs/languages.md has the pybabel one-liners.
"""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

DOMAIN = "nubi"
LOCALE_DIR = Path(__file__).parent / "locale"
DEFAULT_LANGUAGE = "en"
# The languages a community may choose: English (the source texts), and every shipped catalog.
LANGUAGES = ("en", "es", "ru")
LANGUAGE_NAMES = {"en": "English", "es": "Español", "ru": "Русский"}

current_language: ContextVar[str] = ContextVar("nubi_language", default=DEFAULT_LANGUAGE)


@cache
def translations(language: str) -> gettext.NullTranslations:
    """The compiled catalog of `language` (read once per process); English is the source text."""
    if language == DEFAULT_LANGUAGE or language not in LANGUAGES:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, [language])


def _(message: str) -> str:
    """The message in the current language."""
    return translations(current_language.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form for `n` in the current language (Russian has three)."""
    return translations(current_language.get()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a text for extraction where it is defined (a table); `_()` translates it where shown."""
    return message


def normalize(language: str | None) -> str:
    """A stored or configured language, or the default when it is missing or not shipped."""
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


@contextmanager
def use_language(language: str | None) -> Iterator[str]:
    """Texts produced inside the block (and in tasks started from it) are in `language`."""
    token = current_language.set(normalize(language))
    try:
        yield current_language.get()
    finally:
        current_language.reset(token)
