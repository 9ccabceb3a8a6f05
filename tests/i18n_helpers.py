"""Catalog checks and English-leak detection for the translation tests.

The English phrases the app can show are taken from the strings extracted afresh from the
code and templates, so a string added yesterday is checked like the others; a phrase counts
as English only where the language's catalog does not carry the same words itself (a
translation may rightly keep "Stripe" or an acronym).
"""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
TRANSLATED = ("ar", "fr", "es", "pt")

# Python's named placeholders, as gettext substitutes them: %(name)s, %(num)d …
PLACEHOLDER = re.compile(r"%\((\w+)\)[#0 +-]*\d*(?:\.\d+)?[sdifr]")
_MARKUP = re.compile(r"<[^>]*>")
_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")
_SPACE = re.compile(r"\s+")
_EDGE = " \t\n:;,.()\u00b7\u2014-"


def extract_messages(dest: Path) -> Catalog:
    """The strings of the code and templates, extracted now as `make translations-extract` does."""
    pot = dest / "messages.pot"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "babel.messages.frontend",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "_l",
            "-k",
            "lazy_gettext",
            "-o",
            str(pot),
            ".",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with pot.open("rb") as handle:
        return read_po(handle)


def read_catalog(language: str) -> Catalog:
    """A language's catalog as the translators keep it (translations/<lang>/…/messages.po)."""
    path = ROOT / "translations" / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def _forms(message: Message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _translations(message: Message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def _names(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def catalog_problems(template: Catalog, catalog: Catalog) -> list[str]:
    """Each extracted msgid the catalog lacks, leaves empty, marks fuzzy or mistranslates."""
    problems: list[str] = []
    for wanted in template:
        if not wanted.id:
            continue
        label = " | ".join(_forms(wanted))
        entry = catalog.get(wanted.id, wanted.context)
        if entry is None:
            problems.append(f"missing: {label!r}")
            continue
        if entry.fuzzy:
            problems.append(f"fuzzy: {label!r}")
        translations = _translations(entry)
        if wanted.pluralizable and (
            not entry.pluralizable or len(translations) != catalog.num_plurals
        ):
            problems.append(
                f"plural forms: {label!r} has {len(translations)}, "
                f"the language needs {catalog.num_plurals}"
            )
        if not all(t.strip() for t in translations):
            problems.append(f"empty: {label!r}")
            continue
        names = set().union(*(_names(form) for form in _forms(wanted)))
        for form, text in enumerate(translations):
            if _names(text) != names:
                problems.append(
                    f"placeholders: {label!r} form {form} has {sorted(_names(text))}, "
                    f"the msgid has {sorted(names)}"
                )
    return problems


def normalize(text: str) -> str:
    """Runs of whitespace as one space, so phrases match across line breaks."""
    return _SPACE.sub(" ", text).strip()


def english_phrases(template: Catalog, catalog: Catalog) -> set[str]:
    """English phrases of 3+ words the app shows, that the language's catalog does not keep.

    A msgid is cut at its placeholders and markup (what surrounds a name or a link is what a
    page shows verbatim). Words the translators kept anywhere (a brand name, "Stripe
    Connect") are not a leak; a string nobody translated yet is a phrase like the others.
    """
    kept = normalize(" | ".join(t for m in catalog if m.id for t in _translations(m) if t))
    phrases: set[str] = set()
    for wanted in template:
        if not wanted.id:
            continue
        for form in _forms(wanted):
            for fragment in PLACEHOLDER.split(_MARKUP.sub("\n", form))[::2]:
                for piece in fragment.split("\n"):
                    phrase = normalize(piece).strip(_EDGE)
                    if len(_WORD.findall(phrase)) >= 3 and not contains(kept, phrase):
                        phrases.add(phrase)
    return phrases


def contains(text: str, phrase: str) -> bool:
    """Whether ``phrase`` stands in ``text`` as whole words."""
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def leaked(phrases: set[str], english: str, translated: str) -> list[str]:
    """The phrases the English version shows that the translated version shows too."""
    return sorted(p for p in phrases if contains(english, p) and contains(translated, p))


class _Text(HTMLParser):
    # What a reader sees or hears: text outside scripts and styles, and the attributes
    # a screen reader announces or a browser shows (alt, title, placeholder, aria-label).
    _SPOKEN = ("alt", "title", "placeholder", "aria-label")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(" ")
        if tag in ("script", "style", "template"):
            self._hidden += 1
        for name, value in attrs:
            if name in self._SPOKEN and value:
                self.parts.append(f" {value} ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "template") and self._hidden:
            self._hidden -= 1
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The text of an HTML page a reader meets, without tags, scripts or styles."""
    parser = _Text()
    parser.feed(html)
    parser.close()
    return normalize("".join(parser.parts))


def html_attributes(html: str) -> tuple[str, str]:
    """The ``lang`` and ``dir`` of a page's <html> element."""
    match = re.search(r"<html\b([^>]*)>", html)
    assert match, "no <html> element"
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
    return attrs.get("lang", ""), attrs.get("dir", "")
