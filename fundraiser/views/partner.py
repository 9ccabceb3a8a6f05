"""The partner portal under /partner: a group's own figures, and nothing of anyone else's.

Every route reads the group from the signed-in account, never from the URL or the form, so
a partner cannot even name another group's records.
"""

from __future__ import annotations

from datetime import date

from flask import (
    Blueprint,
    Response,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import format_date
from flask_babel import gettext as _
from flask_login import current_user

from .. import partners, statements
from ..access import partner_only
from ..extensions import db
from ..forms.partner import PartnerProfileForm, PayoutChangeForm, StatementForm
from ..models import AidGroup

bp = Blueprint("partner", __name__, url_prefix="/partner")


@bp.context_processor
def _date_format() -> dict[str, object]:
    """Dates in tables: short enough for a phone, in the reader's language."""
    return {"short_date": lambda value: format_date(value, "medium")}


def _group(*, for_update: bool = False) -> AidGroup:
    """The signed-in partner's own group (locked when it is about to change)."""
    return db.session.get(AidGroup, current_user.aid_group_id, with_for_update=for_update)


def _default_range(figures: statements.GroupFigures) -> dict[str, date]:
    """The whole history by default: from the group's first fast day to its last, or today.

    A fast day's date reaches the easternmost time zones a day before UTC's calendar does,
    so a day that is live already may carry tomorrow's date; the range must include it.
    """
    today = date.today()
    dates = [row.fast_day.local_date for row in figures.days]
    return {"start": min([*dates, today]), "end": max([*dates, today])}


def _index_page(statement_form: StatementForm | None = None, status: int = 200):
    group = _group()
    figures = statements.group_figures(group)
    form = statement_form or StatementForm(formdata=None, data=_default_range(figures))
    return (
        render_template(
            "partner/index.html",
            group=group,
            figures=figures,
            statement_form=form,
            pending_change=partners.pending_payout_change(group),
        ),
        status,
    )


@bp.get("/")
@partner_only
def index():
    """The group's figures per fast day and currency, totals, payments, and the statement form."""
    return _index_page()


@bp.get("/statement.csv")
@partner_only
def statement():
    """The group's statement for a date range as CSV, streamed; bad dates re-show the form."""
    form = StatementForm(request.args)
    if not form.validate():
        return _index_page(form, 400)
    group = _group()
    start, end = form.start.data, form.end.data
    response = Response(
        stream_with_context(statements.statement_lines(group.id, start, end)),
        mimetype="text/csv",
    )
    name = statements.statement_filename(group, start, end)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _profile_page(form: PartnerProfileForm | None = None, status: int = 200):
    group = _group()
    return (
        render_template(
            "partner/profile.html",
            group=group,
            form=form or PartnerProfileForm(obj=group, formdata=None),
        ),
        status,
    )


@bp.get("/profile")
@partner_only
def profile():
    """The group's public profile, as the partner may edit it."""
    return _profile_page()


@bp.post("/profile")
@partner_only
def update_profile():
    """Save the public description and website (audited)."""
    form = PartnerProfileForm()
    if not form.validate_on_submit():
        return _profile_page(form, 400)
    group = _group(for_update=True)
    changed = partners.update_profile(
        group, {"description": form.description.data, "website": form.website.data}
    )
    db.session.commit()
    flash(_("Your group's profile is saved.") if changed else _("Nothing was changed."), "info")
    return redirect(url_for("partner.profile"), 303)


def _payout_page(form: PayoutChangeForm | None = None, status: int = 200):
    group = _group()
    pending = partners.pending_payout_change(group)
    if form is None:
        # Start from what is waiting, or from what is in use, so a small fix is a small edit.
        source = pending or group
        form = PayoutChangeForm(
            formdata=None,
            data={
                "funds_method": source.funds_method or None,
                "funds_details": source.funds_details,
                "stripe_account_id": source.stripe_account_id or "",
            },
        )
    return (
        render_template(
            "partner/payout.html",
            group=group,
            form=form,
            pending=pending,
            last_decision=partners.latest_payout_decision(group),
        ),
        status,
    )


@bp.get("/payout")
@partner_only
def payout():
    """The payout details in use, any change waiting for an organizer, and the request form."""
    return _payout_page()


@bp.post("/payout")
@partner_only
def request_payout_change():
    """Ask for new payout details; an organizer confirms them before any payment uses them."""
    form = PayoutChangeForm()
    if not form.validate_on_submit():
        return _payout_page(form, 400)
    group = _group(for_update=True)
    partners.request_payout_change(
        group,
        form.funds_method.data,
        form.funds_details.data,
        form.stripe_account_id.data,
        actor=current_user._get_current_object(),
    )
    db.session.commit()
    flash(
        _(
            "Your new payout details are waiting for an organizer to confirm them."
            " Until then, payments use the details shown as in use."
        ),
        "info",
    )
    return redirect(url_for("partner.payout"), 303)
