"""The catalogs against the code: every text the code marks is translated, placeholders intact.

Extraction runs over the source itself (babel.cfg, the same map `pybabel extract` uses), so a new
`_("...")` without its Spanish and Russian fails here until the catalogs are updated
(docs/languages.md has the one-liners).
"""

from __future__ import annotations

import gettext
import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from core.i18n import DOMAIN, LANGUAGES, LOCALE_DIR, _, ngettext, use_language

ROOT = Path(__file__).resolve().parent.parent
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def extracted() -> dict[str | tuple[str, ...], list[str]]:
    """msgid (a tuple for plural messages) -> where the code uses it."""
    with open(ROOT / "babel.cfg") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: dict[str | tuple[str, ...], list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS, comment_tags=(), strip_comment_tags=True
    ):
        found.setdefault(message, []).append(f"{filename}:{lineno}")
    return found


def catalog(lang: str) -> Catalog:
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as po:
        return read_po(po, locale=lang)


def placeholders(text: str) -> set[tuple[str, str]]:
    """The {fields} of a str.format text, with their format specs ({m:02d} stays {m:02d})."""
    return {(name, spec or "") for _lit, name, spec, _conv in string.Formatter().parse(text) if name is not None}


def markup(text: str) -> list[str]:
    """What Discord markdown or a command example needs intact: `code` spans, bullets, line breaks."""
    return re.findall(r"`[^`]*`|\n", text)


@pytest.fixture(scope="module")
def used() -> dict[str | tuple[str, ...], list[str]]:
    found = extracted()
    assert len(found) > 200  # the extraction map still covers core/ and adapters/
    return found


def test_extraction_finds_the_texts_members_read(used: dict[str | tuple[str, ...], list[str]]) -> None:
    assert "Join" in used and "Open post" in used and "Sorry, only moderators can do that here." in used
    assert ("{rank}. {name} — {points} pt", "{rank}. {name} — {points} pts") in used
    assert "The raid is full." in used  # SHORT_ERRORS, marked with N_ and translated when shown
    assert not [m for m in used if isinstance(m, str) and re.search(r"\{\}|\{\d+\}", m)]  # named fields only


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_the_code_uses_is_translated(lang: str, used: dict[str | tuple[str, ...], list[str]]) -> None:
    cat = catalog(lang)
    missing, empty = [], []
    for msgid, where in used.items():
        message = cat.get(msgid if isinstance(msgid, str) else msgid[0])
        if message is None or (not isinstance(msgid, str) and tuple(message.id) != msgid):
            missing.append(f"{msgid!r} ({where[0]})")
        elif message.fuzzy or not all(message.string if isinstance(message.string, tuple) else [message.string]):
            empty.append(f"{msgid!r} ({where[0]})")
    assert not (missing or empty), (
        f"{lang}: not in the catalog (run the update one-liner in docs/languages.md):\n" + "\n".join(missing)
        + "\nuntranslated or fuzzy:\n" + "\n".join(empty))


@pytest.mark.parametrize("lang", TRANSLATED)
def test_translations_keep_every_placeholder_and_markup(lang: str) -> None:
    cat = catalog(lang)
    wrong = []
    for message in cat:
        if not message.id:
            continue
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        forms = [message.string] if isinstance(message.string, str) else list(message.string)
        wanted = set().union(*(placeholders(i) for i in ids))
        for form in forms:
            try:
                got = placeholders(form)
            except ValueError as exc:  # an unbalanced brace: .format() would raise in chat
                wrong.append(f"{ids[0]!r}: {exc}")
                continue
            if got != wanted or markup(form) != markup(ids[0]):
                wrong.append(f"{ids[0]!r} -> {form!r}: {sorted(got ^ wanted)}")
    assert not wrong, f"{lang}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_compiled_catalog_is_the_po_file(lang: str) -> None:
    """Runtime reads the committed .mo: it must say what the .po says (recompile after editing)."""
    compiled = gettext.translation(DOMAIN, LOCALE_DIR, [lang])
    stale = []
    for message in catalog(lang):
        if not message.id:
            continue
        if isinstance(message.id, str):
            if compiled.gettext(message.id) != message.string:
                stale.append(message.id)
        else:
            for n in (1, 2, 5, 21, 1_000_000):
                form = compiled.ngettext(message.id[0], message.id[1], n)
                if form not in message.string:
                    stale.append(message.id[0])
                    break
    assert not stale, f"{lang}: nubi.mo is older than nubi.po: pybabel compile -D nubi -d core/locale\n" + "\n".join(stale)


def test_the_language_is_per_context_and_plurals_follow_each_language() -> None:
    def board_line(n: int) -> str:
        return ngettext("{rank}. {name} — {points} pt", "{rank}. {name} — {points} pts", n).format(
            rank=1, name="Ana", points=n)

    assert _("Join") == "Join"
    with use_language("es"):
        assert _("Join") == "Unirme" and board_line(1) == "1. Ana — 1 punto" and board_line(3) == "1. Ana — 3 puntos"
        with use_language("ru"):
            assert [board_line(n) for n in (1, 3, 5, 21)] == [
                "1. Ana — 1 балл", "1. Ana — 3 балла", "1. Ana — 5 баллов", "1. Ana — 21 балл"]
        assert _("Join") == "Unirme"
        with use_language("xx"):  # not shipped: the default, never an error
            assert _("Join") == "Join"
    assert _("Join") == "Join"
