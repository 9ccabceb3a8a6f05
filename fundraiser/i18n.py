"""Locale choice and the formatting helpers templates use (money, dates, times)."""

from __future__ import annotations

from datetime import date, datetime

from babel.dates import format_date as babel_format_date
from flask import Flask, current_app, has_request_context, request, session
from flask_babel import format_datetime, format_timedelta, get_locale

from .money import format_amount


def select_locale() -> str:
    """The person's choice (remembered), then the browser's Accept-Language, then English."""
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        # Commands and the scheduler: e-mails pass their reader's locale with force_locale.
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    chosen = request.args.get("lang")
    if chosen in languages:
        session["lang"] = chosen
        return chosen
    remembered = session.get("lang")
    if remembered in languages:
        return remembered
    return (
        request.accept_languages.best_match(languages) or current_app.config["BABEL_DEFAULT_LOCALE"]
    )


def select_timezone() -> str | None:
    """Times default to UTC; pages about a fast day pass the day's own zone explicitly."""
    return None


def text_direction() -> str:
    """'rtl' for right-to-left languages, else 'ltr'."""
    return "rtl" if str(get_locale()).split("_")[0] in {"ar", "he", "fa", "ur"} else "ltr"


def money(amount_minor: int, currency: str) -> str:
    """Format minor units for the current reader's locale."""
    return format_amount(amount_minor, currency, get_locale() or "en")


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
        get_locale=get_locale,
        format_datetime=format_datetime,
        format_timedelta=format_timedelta,
    )


__all__ = ["datetime", "long_date", "money", "register_filters", "select_locale", "select_timezone"]
