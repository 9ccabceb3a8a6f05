"""Pages for donors: the fast days, the give form, the card step and the thank-you page."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from markupsafe import escape

from .. import (
    fast_days,
    ledger,
    page_cache,
    pledge_charges,
    pledges,
    public_ledger,
    subscriptions,
)
from ..access import public
from ..database import writes
from ..extensions import db
from ..forms.donate import GiveForm
from ..i18n import LANGUAGE_NAMES, switch_language_url
from ..models import FastDay, PledgeStatus
from ..payments import stripe_gateway as gateway
from ..security import allow_stripe_js

bp = Blueprint("public", __name__)

UNAVAILABLE = _l(
    "We could not reach our payment provider. Please try again in a moment;"
    " you will not be charged twice."
)


def _day_or_404(slug: str):
    day = fast_days.get_public(slug)
    if day is None:
        abort(404)
    return day


def _pledge_or_404(token: str):
    pledge = pledges.get_by_token(token)
    if pledge is None:
        abort(404)
    return pledge


@bp.get("/")
@public
def index():
    """The live or next fast day first, then the ones to come and the ones past."""
    day = fast_days.featured()
    past = fast_days.past()
    return render_template(
        "public/index.html",
        day=day,
        totals=ledger.day_totals(day) if day else None,
        # Every currency stands alone: the others are listed beside, never added in.
        by_currency=ledger.totals_by_currency(day) if day else [],
        starts_in=fast_days.time_until_start(day) if day else None,
        ends_in=fast_days.time_until_end(day) if day else None,
        upcoming=fast_days.upcoming(exclude=day),
        past=past,
        past_totals={d.id: ledger.totals_by_currency(d) for d in past},
    )


@bp.get("/fast/<slug>")
@public
def fast_day(slug: str):
    """One fast day in full."""
    day = _day_or_404(slug)
    ledgers = ledger.day_ledger(day)  # the day's own currency first
    return render_template(
        "public/fast_day.html",
        day=day,
        totals=ledgers[0].totals,
        ledgers=ledgers,
        pledged=ledger.pledged_totals(day),
        starts_in=fast_days.time_until_start(day),
        ends_in=fast_days.time_until_end(day),
    )


@bp.get("/fast/<slug>/ledger", endpoint="ledger")
@public
def ledger_page(slug: str):
    """The day's public ledger: money in and out per currency, shares, payments to groups."""
    day = _day_or_404(slug)
    return render_template("public/ledger.html", day=day, book=public_ledger.for_day(day))


def _pledge_options(day: FastDay) -> tuple[bool, int]:
    """Whether ``day`` takes pledges charged on it, and how many later days of its series."""
    can_pledge = pledge_charges.can_pledge_for_day(day)
    return can_pledge, len(pledge_charges.later_series_days(day)) if can_pledge else 0


def _give_form(day: FastDay, options: tuple[bool, int]) -> GiveForm:
    """The give form for ``day``, offering a pledge for the day (or its series) while it can."""
    can_pledge, series_days = options
    return GiveForm(
        day,
        max_major_units=current_app.config["MAX_GIFT_MAJOR_UNITS"],
        can_pledge=can_pledge,
        series_days=series_days,
    )


@bp.route("/fast/<slug>/give", methods=["GET", "POST"])
@public
def give(slug: str):
    """The give form; a valid one creates a pledge and goes to the card step."""
    if request.method == "GET" and not current_user.is_authenticated:
        return _blank_give_page(slug)
    day = _day_or_404(slug)
    if not day.is_open_for_gifts:
        return render_template("public/closed.html", day=day), 410
    form = _give_form(day, _pledge_options(day))
    if form.validate_on_submit():
        group = next((g for g in day.groups if g.slug == form.chosen_group_slug), None)
        pledge = pledges.create_pledge(
            fast_day=day,
            amount_minor=form.amount_minor,
            currency=form.chosen_currency or "",
            aid_group=group,
            donor_name=None if form.anonymous.data else form.donor_name.data,
            email=form.email.data,
            dedication=form.dedication.data,
            wants_messages=form.wants_messages.data,
            locale=str(get_locale() or "en"),
            charge_on_day=form.charge_on_day,
            timezone=form.donor_timezone,
            whole_series=form.whole_series,
        )
        # "Send me the day's messages": a pending subscriber and its confirmation (double opt-in).
        subscriptions.subscribe_donor(pledge)
        db.session.commit()
        return redirect(url_for("public.pay", token=pledge.token), code=303)
    status = 400 if form.is_submitted() else 200
    return render_template("public/give.html", day=day, form=form), status


def _blank_give_page(slug: str) -> ResponseReturnValue:
    """The empty give form as an anonymous visitor first sees it, from the page cache.

    Everyone in one language sees the same page but for the CSRF token and the language
    links (which repeat this URL's query): those are slots, filled per request. Signed-in
    visitors (whose header differs) and a POST's errors are always rendered afresh.
    """
    cache = page_cache.for_app(current_app)
    reading = cache.day(slug)
    if reading is None:
        abort(404)
    if not reading.day.is_open_for_gifts:
        return render_template("public/closed.html", day=_day_or_404(slug)), 410
    # The day's language decides the page's when the browser asks for none of ours.
    g.fast_day_language = reading.day.locale
    # The language, and what the day offers at this moment (pledges stop when it begins).
    can_pledge = pledge_charges.can_pledge_for_day(reading.day)
    shown_as = (str(get_locale()), can_pledge, reading.later_series_days if can_pledge else 0)
    page = cache.get(("give", reading.fingerprint, *shown_as))
    if page is None:
        since = page_cache.generation()
        day = _day_or_404(slug)
        if not day.is_open_for_gifts:
            return render_template("public/closed.html", day=day), 410
        page = _render_blank_give_page(day, cache, since)
    values = {f"lang-{code}": str(escape(switch_language_url(code))) for code in LANGUAGE_NAMES}
    if "csrf" in page.slots:
        values["csrf"] = str(escape(generate_csrf()))
    return page.fill(values)


def _render_blank_give_page(
    day: FastDay, cache: page_cache.PageCache, since: int
) -> page_cache.CachedPage:
    """Render the give page from ``day`` (read at generation ``since``) with slots; keep it."""
    options = _pledge_options(day)
    form = _give_form(day, options)
    if form.meta.csrf:
        form.csrf_token.current_token = cache.slot("csrf")
    html = render_template(
        "public/give.html",
        day=day,
        form=form,
        switch_language_url=lambda code: cache.slot(f"lang-{code}"),
    )
    # Filed under the fingerprint of the objects it was rendered from, not the one read
    # before: an edit committed in between must not file new text under old data.
    fingerprint = page_cache.fast_day_fingerprint(day, loaded=True)
    reading = cache.remember(day, fingerprint, since=since)
    return cache.put(("give", reading.fingerprint, str(get_locale()), *options), html)


@bp.get("/pledge/<token>/pay")
@public
@writes  # a GET that writes (the SetupIntent's id): take SQLite's write lock up front
def pay(token: str):
    """The card step: Stripe.js collects the card against the pledge's SetupIntent."""
    pledge = _pledge_or_404(token)
    if pledge.status in (
        PledgeStatus.SUCCEEDED,
        PledgeStatus.REFUNDED,
        PledgeStatus.PROCESSING,
        PledgeStatus.SCHEDULED,
        PledgeStatus.CANCELLED,
    ):
        return redirect(url_for("public.pledge", token=token))
    try:
        client_secret = pledges.prepare_card_setup(pledge)
        db.session.commit()
    except gateway.PaymentError:
        db.session.rollback()
        return render_template("public/pay_unavailable.html", pledge=pledge), 503
    allow_stripe_js()
    response = current_app.make_response(
        render_template(
            "public/pay.html",
            pledge=pledge,
            client_secret=client_secret,
            split=ledger.describe_split(pledge),
            # A pledge for the fast day only saves the card here; the scheduler charges it.
            schedule=pledge.charge_on_day and pledge.status == PledgeStatus.PENDING,
            charge_time=pledge_charges.charge_time_text(pledge),
            series_days=len(pledge_charges.later_series_days(pledge.fast_day))
            if pledge.series_token
            else 0,
        )
    )
    # The page holds a client secret: never cache it anywhere.
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/pledge/<token>/setup")
@public
def new_setup(token: str):
    """A fresh SetupIntent after a card was refused, so the donor can try another."""
    pledge = _pledge_or_404(token)
    try:
        client_secret = pledges.prepare_card_setup(pledge)
        db.session.commit()
    except gateway.PaymentError:
        db.session.rollback()
        return jsonify(status="unavailable", message=str(UNAVAILABLE)), 503
    return jsonify(status="ready", client_secret=client_secret)


@bp.post("/pledge/<token>/charge")
@public
def charge(token: str):
    """Charge the card the browser just saved; answers what the browser should do next."""
    pledge = _pledge_or_404(token)
    try:
        outcome = pledges.charge_now(pledge)
        db.session.commit()
    except pledges.PledgeError as exc:
        db.session.rollback()
        return jsonify(status="failed", message=str(exc)), 409
    except gateway.PaymentError:
        db.session.rollback()
        return jsonify(status="unavailable", message=str(UNAVAILABLE)), 503
    return jsonify(
        status=outcome.status,
        client_secret=outcome.client_secret,
        message=outcome.message,
        next=url_for("public.pledge", token=token),
    )


@bp.post("/pledge/<token>/schedule")
@public
def schedule(token: str):
    """The card is saved (confirmCardSetup succeeded): record the pledge for the fast day."""
    pledge = _pledge_or_404(token)
    try:
        if pledge.stripe_setup_intent_id:
            pledges.record_setup(pledge, pledge.stripe_setup_intent_id)
        db.session.commit()
    except gateway.PaymentError:
        db.session.rollback()
        return jsonify(status="unavailable", message=str(UNAVAILABLE)), 503
    if pledge.status != PledgeStatus.SCHEDULED:
        return jsonify(
            status="failed", message=str(_l("Your card was not saved. Please enter it again."))
        ), 409
    return jsonify(status="scheduled", next=url_for("public.pledge", token=token))


@bp.post("/pledge/<token>/cancel")
@public
def cancel(token: str):
    """Stop a pledge for the fast day before it is charged."""
    pledge = _pledge_or_404(token)
    pledge_charges.cancel(pledge)
    db.session.commit()
    return redirect(url_for("public.pledge", token=token), code=303)


@bp.post("/pledge/<token>/stop-series")
@public
def stop_series(token: str):
    """Stop every not-yet-charged pledge of the series this pledge belongs to."""
    pledge = _pledge_or_404(token)
    pledge_charges.stop_series(pledge)
    db.session.commit()
    return redirect(url_for("public.pledge", token=token), code=303)


@bp.get("/pledge/<token>")
@public
def pledge(token: str):
    """Thank-you and status page: shows only what Stripe's webhook has recorded."""
    pledge = _pledge_or_404(token)
    auth_secret = None
    if pledge.charge_on_day and pledge.status == PledgeStatus.REQUIRES_ACTION:
        try:
            auth_secret = pledge_charges.authentication_secret(pledge)
        except gateway.PaymentError:
            auth_secret = None  # the page says to come back; nothing is lost
        if auth_secret:
            allow_stripe_js()
    response = current_app.make_response(
        render_template(
            "public/pledge.html",
            pledge=pledge,
            split=ledger.describe_split(pledge),
            charge_time=pledge_charges.charge_time_text(pledge),
            series=pledge_charges.series_pledges(pledge) if pledge.series_token else [],
            auth_secret=auth_secret,
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/pledge/<token>/status.json")
@public
def pledge_status(token: str):
    """The pledge's state, polled by the thank-you page until it settles."""
    pledge = _pledge_or_404(token)
    response = jsonify(pledges.public_status(pledge))
    response.headers["Cache-Control"] = "no-store"
    return response
