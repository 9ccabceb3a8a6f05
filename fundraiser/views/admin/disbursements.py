"""A fast day's disbursements: balances owed, recorded payments, runs and Connect retries."""

from __future__ import annotations

import secrets

from flask import abort, flash, redirect, render_template, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user

from ... import disbursements, ledger
from ...access import organizer_only
from ...extensions import db
from ...forms.disbursement import METHOD_LABELS, RecordForm, RunForm
from ...models import AidGroup, Disbursement, DisbursementRun, FastDay
from ...money import format_amount
from . import bp


def _day_or_404(day_id: int) -> FastDay:
    day = db.session.get(FastDay, day_id)
    if day is None:
        abort(404)
    return day


def _actor():
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _overview_url(day: FastDay) -> str:
    return url_for("admin.disbursements", day_id=day.id)


def _flash_outcome(done: list[Disbursement]) -> None:
    for d in done:
        name = d.aid_group.name
        if d.status == "confirmed":
            flash(_("Stripe transferred the money to %(group)s.", group=name), "info")
        elif d.status == "failed":
            flash(
                _(
                    "Stripe refused the transfer to %(group)s: %(reason)s",
                    group=name,
                    reason=d.failure_message or "",
                ),
                "error",
            )
        else:
            flash(
                _(
                    "Stripe did not answer about the transfer to %(group)s; it stays pending "
                    "and will be retried.",
                    group=name,
                ),
                "error",
            )


# The endpoint is ``admin.disbursements``; the function's own name avoids hiding the module.
@bp.get("/fast-days/<int:day_id>/disbursements", endpoint="disbursements")
@organizer_only
def disbursements_view(day_id: int):
    """Per currency and group: allocated, disbursed and balance owed; and every disbursement."""
    day = _day_or_404(day_id)
    return render_template(
        "admin/disbursements/index.html",
        day=day,
        ledgers=[cl for cl in ledger.day_ledger(day) if cl.allocations],
        pending=disbursements.pending_by_group(day),
        items=disbursements.disbursements_of(day),
        method_labels=METHOD_LABELS,
    )


@bp.route("/fast-days/<int:day_id>/disbursements/new", methods=["GET", "POST"])
@organizer_only
def disbursement_record(day_id: int):
    """Record a payment made outside the app (bank transfer or other)."""
    day = _day_or_404(day_id)
    currencies = disbursements.held_currencies(day)
    form = RecordForm(_groups_of(day), currencies)
    status = 200
    if form.validate_on_submit():
        try:
            disbursement = disbursements.record(
                day,
                group=db.session.get(AidGroup, form.aid_group.data),
                currency=form.currency.data,
                amount_minor=form.amount_minor,
                paid_on=form.paid_on.data,
                method=form.method.data,
                reference=form.reference.data or "",
                note=form.note.data or "",
                exceeds_balance_ok=form.exceeds_balance_ok.data,
                actor=_actor(),
            )
        except disbursements.DisbursementError as exc:
            db.session.rollback()
            target = getattr(form, exc.field, None) if exc.field else None
            if target is not None:
                target.errors = [*target.errors, exc.message]
            else:
                flash(exc.message, "error")
            status = 400
        else:
            db.session.commit()
            flash(
                _(
                    "Recorded %(amount)s to %(group)s.",
                    amount=format_amount(
                        disbursement.amount_minor, disbursement.currency, get_locale() or "en"
                    ),
                    group=disbursement.aid_group.name,
                ),
                "info",
            )
            return redirect(_overview_url(day), 303)
    elif form.is_submitted():
        status = 400
    return render_template(
        "admin/disbursements/record.html", day=day, form=form, currencies=currencies
    ), status


def _groups_of(day: FastDay) -> list[AidGroup]:
    """Every group the day funds in any version of its split, in published order."""
    seen: dict[int, AidGroup] = {}
    for link in [*day.allocations, *day.split_rows]:
        seen.setdefault(link.aid_group_id, link.aid_group)
    return list(seen.values())


@bp.route("/fast-days/<int:day_id>/disbursements/run", methods=["GET", "POST"])
@organizer_only
def disbursement_run(day_id: int):
    """Propose each group's balance owed; on confirmation, pay or record each chosen row."""
    day = _day_or_404(day_id)
    form = RunForm()
    error = None
    row_errors: dict[str, str] = {}
    status = 200
    if form.validate_on_submit():
        try:
            run, made = disbursements.make_run(
                day,
                nonce=form.nonce.data,
                seen_fingerprint=form.seen.data,
                choices=form.choices(),
                actor=_actor(),
            )
        except disbursements.DisbursementError as exc:
            db.session.rollback()
            if isinstance(exc, disbursements.BalancesChanged):
                error = exc.message  # a fresh proposal and nonce below
                form = None
            elif exc.field and exc.field.startswith("reference-"):
                row_errors[exc.field.removeprefix("reference-")] = exc.message
            else:
                error = exc.message
            status = 409 if form is None else 400
        else:
            # The run and its pending transfers are on record before Stripe hears of them.
            db.session.commit()
            if made:
                done = disbursements.execute_transfers(
                    disbursements.run_transfer_ids(run), commit=db.session.commit, actor=_actor()
                )
                _flash_outcome(done)
            else:
                flash(_("This run was already made; nothing was paid twice."), "info")
            return redirect(
                url_for("admin.disbursement_run_result", day_id=day.id, run_id=run.id), 303
            )
    elif form.is_submitted():
        status = 400
        error = _("This form is out of date. Reload the page and try again.")
        form = None

    proposals = disbursements.balances_owed(day)
    if form is None or status == 200:
        form = RunForm.proposing(
            proposals, secrets.token_urlsafe(24), disbursements.fingerprint(proposals)
        )
    return render_template(
        "admin/disbursements/run.html",
        day=day,
        form=form,
        proposals=proposals,
        error=error,
        row_errors=row_errors,
    ), status


@bp.get("/fast-days/<int:day_id>/disbursements/runs/<int:run_id>")
@organizer_only
def disbursement_run_result(day_id: int, run_id: int):
    """What a run did, per group: confirmed, failed with the reason, or pending."""
    day = _day_or_404(day_id)
    run = db.session.get(DisbursementRun, run_id)
    if run is None or run.fast_day_id != day.id:
        abort(404)
    return render_template(
        "admin/disbursements/run_result.html", day=day, run=run, method_labels=METHOD_LABELS
    )


@bp.post("/fast-days/<int:day_id>/disbursements/<int:disbursement_id>/retry")
@organizer_only
def disbursement_retry(day_id: int, disbursement_id: int):
    """Send a pending Connect transfer again (looked up first if its key may have expired)."""
    day = _day_or_404(day_id)
    disbursement = db.session.get(Disbursement, disbursement_id)
    if disbursement is None or disbursement.fast_day_id != day.id:
        abort(404)
    done = disbursements.execute_transfers(
        [disbursement.id], commit=db.session.commit, actor=_actor()
    )
    if done:
        _flash_outcome(done)
    else:
        flash(_("This disbursement is not pending any more."), "info")
    return redirect(_overview_url(day), 303)
