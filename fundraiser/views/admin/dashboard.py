"""The live dashboard of a fast day, a gift's page with its refunds, and CSV exports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime as babel_format_datetime
from flask import (
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import format_decimal, get_locale
from flask_babel import gettext as _
from werkzeug.routing import BuildError

from ... import audit, charts, dashboard, exports, ledger, refunds
from ...access import organizer_only
from ...database import writes
from ...extensions import db
from ...forms.refund import RefundForm
from ...models import FastDay, Pledge
from . import bp

REFRESH_SECONDS = 30


def _day_or_404(day_id: int) -> FastDay:
    day = db.session.get(FastDay, day_id)
    if day is None:
        abort(404)
    return day


def _pledge_or_404(pledge_id: int) -> Pledge:
    pledge = db.session.get(Pledge, pledge_id)
    if pledge is None:
        abort(404)
    return pledge


def _day_page(day: FastDay) -> str | None:
    """The day's own page in the console, if the console has one."""
    try:
        return url_for("admin.fast_day", day_id=day.id)
    except BuildError:
        return None


def _in_zone(zone_name: str):
    """A template helper: a UTC instant shown in ``zone_name`` ("short" or a CLDR pattern)."""
    zone = ZoneInfo(zone_name)

    def fmt(moment: datetime | None, pattern: str = "short") -> str:
        if moment is None:
            return ""
        return babel_format_datetime(moment, pattern, tzinfo=zone, locale=get_locale() or "en")

    return fmt


# The endpoint is ``admin.dashboard``; the function's own name avoids hiding the module.
@bp.get("/fast-days/<int:day_id>/dashboard", endpoint="dashboard")
@organizer_only
def dashboard_view(day_id: int):
    """The day at a glance: raised, donors, gifts per hour, groups, latest gifts and problems."""
    day = _day_or_404(day_id)
    fig = dashboard.figures(day)
    state = dashboard.as_json(fig)["state"]
    chart = charts.gifts_per_hour(
        fig.hours, currency=fig.currency, current=fig.generated_at if fig.is_live else None
    )
    return render_template(
        "admin/dashboard/dashboard.html",
        fig=fig,
        day=day,
        chart=chart,
        state=state,
        refresh_seconds=REFRESH_SECONDS,
        local=_in_zone(day.timezone),
        format_number=format_decimal,
        day_url=_day_page(day),
        pledged=ledger.pledged_totals(day),
    )


@bp.get("/fast-days/<int:day_id>/dashboard.json")
@organizer_only
def dashboard_json(day_id: int):
    """The dashboard's figures as JSON (the page polls it while the day is live)."""
    day = _day_or_404(day_id)
    response = jsonify(dashboard.as_json(dashboard.figures(day), anonymous_label=_("Anonymous")))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/gifts")
@organizer_only
def find_gift():
    """Go to a gift by the reference printed on the donor's receipt."""
    ref = (request.args.get("ref") or "").strip().lstrip("#")
    back = request.args.get("day", type=int)
    pledge = db.session.get(Pledge, int(ref)) if ref.isdigit() and len(ref) < 12 else None
    if pledge is not None:
        return redirect(url_for("admin.gift", pledge_id=pledge.id))
    flash(_("No gift has the reference %(ref)s.", ref=ref or "—"), "error")
    if back:
        return redirect(url_for("admin.dashboard", day_id=back))
    return redirect(url_for("admin.fast_days"))


@bp.route("/gifts/<int:pledge_id>", methods=["GET", "POST"])
@organizer_only
def gift(pledge_id: int):
    """One gift: its facts, its ledger rows, its refunds, and a form to refund it."""
    pledge = _pledge_or_404(pledge_id)
    form = RefundForm(pledge.currency)
    status = 200
    if form.validate_on_submit():
        try:
            refunds.request_refund(
                pledge,
                amount_minor=form.requested_minor,
                seen_requests=form.seen_requests.data,
                note=form.note.data or "",
            )
        except refunds.RefundError as exc:
            # A refusal by Stripe is itself recorded in the audit log; keep that row.
            db.session.commit()
            target = getattr(form, exc.field) if exc.field else None
            if target is not None:
                target.errors = [*target.errors, exc.message]
            else:
                flash(exc.message, "error")
            status = 400
        else:
            db.session.commit()
            flash(_("Refund requested; the ledger updates when Stripe confirms."), "info")
            return redirect(url_for("admin.gift", pledge_id=pledge.id), 303)
    elif form.is_submitted():
        status = 400
    summary = refunds.summary(pledge)
    if status == 200:
        form.seen_requests.data = summary.request_count
    return render_template(
        "admin/dashboard/gift.html",
        pledge=pledge,
        summary=summary,
        rows=refunds.ledger_rows(pledge),
        form=form,
        local=_in_zone(pledge.fast_day.timezone),
    ), status


def _csv_response(lines: Iterator[str], name: str) -> Response:
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/fast-days/<int:day_id>/gifts.csv")
@organizer_only
@writes
def export_gifts(day_id: int):
    """Every gift of the day that went through, as CSV, streamed (no e-mail addresses)."""
    day = _day_or_404(day_id)
    name = exports.filename(day, "gifts")
    audit.record("fast_day.export_gifts", target=day, after={"file": name})
    # Committed before the first byte goes out, so no export goes unlogged. The body is
    # read after this view's session has closed: the generators take ids, not objects.
    db.session.commit()
    return _csv_response(exports.gift_lines(day_id), name)


@bp.get("/fast-days/<int:day_id>/allocations.csv")
@organizer_only
@writes
def export_allocations(day_id: int):
    """Each group's allocation for the day, as CSV."""
    day = _day_or_404(day_id)
    name = exports.filename(day, "allocations")
    audit.record("fast_day.export_allocations", target=day, after={"file": name})
    db.session.commit()
    return _csv_response(exports.allocation_lines(day_id), name)
