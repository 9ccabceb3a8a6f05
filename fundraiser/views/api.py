"""The public JSON API: read-only, CORS open for GET, cacheable for a few seconds."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify
from flask.wrappers import Response
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from sqlalchemy import select

from .. import fast_days as days
from .. import ledger
from ..access import public
from ..extensions import db
from ..i18n import money, text_direction
from ..models import FastDay, FastDayStatus

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_STATUSES = (FastDayStatus.SCHEDULED, FastDayStatus.LIVE, FastDayStatus.CLOSED)


@bp.after_request
def _open_and_cacheable(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Allow-Methods"] = "GET"
    # The same URL answers in the language asked for (?lang= or Accept-Language).
    response.headers["Vary"] = "Accept-Language"
    if response.status_code == 200:
        response.headers["Cache-Control"] = "public, max-age=5"
    return response


def _public_day(slug: str) -> FastDay:
    day = db.session.scalar(
        select(FastDay).where(FastDay.slug == slug, FastDay.status.in_(PUBLIC_STATUSES))
    )
    if day is None:
        abort(404)
    return day


@bp.get("/fast-days")
@public
def fast_days():
    """Every public fast day: slug, title, date, status."""
    days = db.session.scalars(
        select(FastDay).where(FastDay.status.in_(PUBLIC_STATUSES)).order_by(FastDay.local_date)
    )
    return jsonify(
        fast_days=[
            {
                "slug": d.slug,
                "title": d.title,
                "date": d.local_date.isoformat(),
                "status": str(d.status),
            }
            for d in days
        ]
    )


@bp.get("/fast-days/<slug>/totals")
@public
def totals(slug: str):
    """Live totals for one fast day, for coalition members' counters."""
    day = _public_day(slug)
    # One entry per currency, the day's own first; the top-level fields repeat that first one
    # for counters built before a day could take several currencies. Never added together.
    parts = ledger.day_ledger(day)
    figures = parts[0].totals
    # Pledged for the fast day and not yet charged: shown beside what was raised, never in it.
    pledged = ledger.pledged_totals(day)
    return jsonify(
        slug=day.slug,
        status=str(day.status),
        currency=figures.currency,
        goal_minor=figures.goal_minor,
        raised_minor=figures.raised_minor,
        donors=figures.donors,
        groups=_groups(parts[0]),
        by_currency=[
            {
                "currency": part.currency,
                "goal_minor": part.totals.goal_minor,
                "raised_minor": part.totals.raised_minor,
                "fees_minor": part.totals.fees_minor,
                "net_minor": part.totals.net_minor,
                "donors": part.totals.donors,
                "groups": _groups(part),
                "pledged_minor": pledged.get(part.currency, (0, 0))[1],
            }
            for part in parts
        ],
        pledged=[
            {"currency": currency, "pledges": count, "amount_minor": amount}
            for currency, (count, amount) in pledged.items()
        ],
        display=_display(day, parts),
    )


def _display(day: FastDay, parts: list[ledger.CurrencyLedger]) -> dict:
    """The figures as a counter shows them, in the reader's language (?lang=, Accept-Language)."""
    return {
        "locale": str(get_locale()),
        "dir": text_direction(),
        "status": str(days.STATUS_LABELS[day.status]),
        "by_currency": [
            {
                "currency": part.currency,
                "raised": money(part.totals.raised_minor, part.currency),
                "goal": money(part.totals.goal_minor, part.currency)
                if part.totals.goal_minor
                else None,
                "raised_of_goal": _(
                    "raised of %(goal)s goal", goal=money(part.totals.goal_minor, part.currency)
                )
                if part.totals.goal_minor
                else _("raised"),
                "donors": ngettext("%(num)s donor", "%(num)s donors", part.totals.donors),
            }
            for part in parts
        ],
    }


def _groups(part: ledger.CurrencyLedger) -> list[dict]:
    return [
        {"slug": a.slug, "name": a.name, "allocated_minor": a.allocated_minor}
        for a in part.allocations
    ]


@bp.errorhandler(404)
def _not_found(_error):
    return jsonify(error="not found"), 404
