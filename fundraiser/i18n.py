"""Locale choice and the formatting helpers templates use (money, dates, times)."""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import urlencode

from babel import Locale
from babel.dates import format_date as babel_format_date
from babel.numbers import get_currency_symbol
from flask import Flask, current_app, g, has_request_context, request
from flask.wrappers import Response
from flask_babel import format_datetime, format_timedelta, get_locale
from sqlalchemy import select

from .extensions import db
from .models import FastDay
from .money import format_amount

# Each language named in itself, for the switcher: a reader who cannot read the page's
# current language must still find their own.
LANGUAGE_NAMES = {
    "en": "English",
    "ar": "العربية",
    "fr": "Français",
    "es": "Español",
    "pt": "Português",
}
LANGUAGE_COOKIE = "lang"
# Responses shared through caches and other sites' pages (the JSON API, the framed counter):
# their language comes from the URL and Accept-Language only, and they set no cookie.
SHARED_BLUEPRINTS = {"api", "embed"}


def select_locale() -> str:
    """The person's choice (?lang=, then remembered), then Accept-Language, then the day's."""
    languages = current_app.config["LANGUAGES"]
    default = current_app.config["BABEL_DEFAULT_LOCALE"]
    if not has_request_context():
        # Commands and the scheduler: e-mails pass their reader's locale with force_locale.
        return default
    shared = request.blueprint in SHARED_BLUEPRINTS
    chosen = request.args.get("lang")
    if chosen in languages:
        if not shared and request.cookies.get(LANGUAGE_COOKIE) != chosen:
            g.remember_language = chosen  # written as a cookie on the way out
        return chosen
    remembered = None if shared else request.cookies.get(LANGUAGE_COOKIE)
    if remembered in languages:
        return remembered
    return request.accept_languages.best_match(languages) or _fast_day_language() or default


def _fast_day_language() -> str | None:
    """The default language of the fast day this page is about, if it is about one."""
    slug = (request.view_args or {}).get("slug")
    if not slug:
        return None
    # A view that has read the day already (the give page) says its language: one query less.
    language = g.get("fast_day_language") or db.session.scalar(
        select(FastDay.locale).where(FastDay.slug == slug)
    )
    return language if language in current_app.config["LANGUAGES"] else None


def remember_language(response: Response) -> Response:
    """Keep a language chosen with ?lang= for a year (a cookie holding only its code)."""
    if request.args.get("lang"):
        # A redirect renders nothing, so the locale may not have been chosen yet.
        select_locale()
    chosen = g.pop("remember_language", None)
    if chosen:
        response.set_cookie(
            LANGUAGE_COOKIE,
            chosen,
            max_age=current_app.config["LANGUAGE_COOKIE_DAYS"] * 86400,
            samesite="Lax",
            secure=current_app.config.get("SESSION_COOKIE_SECURE", False),
            httponly=True,
        )
    return response


def language_name(code: str) -> str:
    """A language's name in the reader's language ("French", "francés")."""
    reader = get_locale() or Locale.parse("en")
    name = Locale.parse(code).get_display_name(reader) or code
    return name[:1].upper() + name[1:]


def switch_language_url(code: str) -> str:
    """This page again, in another language: the same path and query with ?lang= set."""
    args = request.args.to_dict(flat=False)
    args["lang"] = [code]
    return f"{request.path}?{urlencode(args, doseq=True)}"


def select_timezone() -> str | None:
    """Times default to UTC; pages about a fast day pass the day's own zone explicitly."""
    return None


RTL_LANGUAGES = frozenset({"ar", "he", "fa", "ur"})


def direction_of(locale: object) -> str:
    """'rtl' for a right-to-left language (a code or a Locale), else 'ltr'."""
    return "rtl" if str(locale).split("_")[0] in RTL_LANGUAGES else "ltr"


def text_direction() -> str:
    """'rtl' when the current reader's language is written right to left, else 'ltr'."""
    return direction_of(get_locale())


def money(amount_minor: int, currency: str) -> str:
    """Format minor units for the current reader's locale."""
    locale = get_locale() or Locale("en")
    text = format_amount(amount_minor, currency, locale)
    if text_direction() == "rtl":
        # In right-to-left text the bidi algorithm sends a symbol's trailing "$" or "¥" to
        # the far side of its letters ("US$" shows as "$US"); a left-to-right mark after
        # the symbol keeps it in one piece. A right-to-left mark at the end (CLDR puts one
        # at the start) stops the symbol's Latin letters from pulling what follows the
        # amount ("· 5%") into their left-to-right run.
        symbol = get_currency_symbol(currency.upper(), locale)
        if any(c.isascii() and c.isalpha() for c in symbol):
            text = text.replace(symbol, symbol + "\u200e")
        text += "\u200f"
    return text


def long_date(value: date) -> str:
    """A calendar date in full, for the reader's locale ("Saturday, 12 December 2026")."""
    return babel_format_date(value, format="full", locale=get_locale() or "en")


def country_name(code: str) -> str:
    """A country's name in the reader's language, from its ISO code."""
    locale = get_locale()
    return (locale.territories.get(code.upper()) if locale else None) or code


def register_filters(app: Flask) -> None:
    """Expose the helpers to Jinja."""
    app.jinja_env.filters["long_date"] = long_date
    app.jinja_env.filters["country_name"] = country_name
    app.jinja_env.globals.update(
        money=money,
        text_direction=text_direction,
        direction_of=direction_of,
        get_locale=get_locale,
        language_names=LANGUAGE_NAMES,
        language_name=language_name,
        switch_language_url=switch_language_url,
        format_datetime=format_datetime,
        format_timedelta=format_timedelta,
    )


__all__ = ["datetime", "long_date", "money", "register_filters", "select_locale", "select_timezone"]
