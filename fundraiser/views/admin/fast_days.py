"""Organizers schedule and run fast days: the list, a day's page and form, its split, series."""

from __future__ import annotations

from datetime import UTC, datetime

from babel import Locale
from babel.dates import format_skeleton
from flask import abort, current_app, flash, redirect, render_template, url_for
from flask_babel import format_percent, get_locale, ngettext
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.routing import BuildError

from ... import fast_days
from ...access import organizer_only
from ...extensions import db
from ...fast_days import FastDayError
from ...forms.fast_day import (
    ConfirmForm,
    FastDayForm,
    SeriesForm,
    SplitForm,
    StatusForm,
    split_form,
)
from ...models import AidGroup, AidGroupStatus, FastDay, FastDayStatus
from . import bp

# Domain field names that a form shows under another name.
FIELD_ALIASES = {"goal_minor": "goal"}


def _day_or_404(day_id: int) -> FastDay:
    day = db.session.get(FastDay, day_id)
    if day is None:
        abort(404)
    return day


def _attach(form: FlaskForm, exc: FastDayError, aliases: dict[str, str] | None = None) -> None:
    """Put a refusal from the domain beside the field it is about, or above the form."""
    name = (aliases or {}).get(exc.field or "", FIELD_ALIASES.get(exc.field or "", exc.field))
    field = form._fields.get(name) if name else None
    if field is not None:
        field.errors = [*field.errors, exc.message]
    else:
        form.form_errors.append(exc.message)


def _status_code(form: FlaskForm) -> int:
    return 400 if form.is_submitted() and (form.errors or form.form_errors) else 200


def _see_other(endpoint: str, **values) -> object:
    return redirect(url_for(endpoint, **values), code=303)


def dashboard_url(day: FastDay) -> str | None:
    """The day's live dashboard, once the console has one (built separately)."""
    if "admin.dashboard" not in current_app.view_functions:
        return None
    for rule in current_app.url_map.iter_rules("admin.dashboard"):
        values = {name: day.slug if "slug" in name else day.id for name in rule.arguments}
        try:
            return url_for("admin.dashboard", **values)
        except BuildError:
            continue
    return None


def utc_text(instant: datetime) -> str:
    """An instant in UTC, in the reader's language ("Sat, Jan 9, 2027, 05:00")."""
    locale = get_locale() or Locale.parse("en")
    # CLDR has no date-and-time skeleton with a weekday, so join the two parts the
    # locale's own way ("{1}, {0}" in English).
    day = format_skeleton("yMMMEd", instant, tzinfo=UTC, locale=locale)
    clock = format_skeleton("Hm", instant, tzinfo=UTC, locale=locale)
    return str(locale.datetime_formats["medium"]).replace("{1}", day).replace("{0}", clock)


def _render(template: str, **context):
    return render_template(
        template,
        dashboard_url=dashboard_url,
        utc_text=utc_text,
        format_percent=format_percent,
        status_labels=fast_days.STATUS_LABELS,
        **context,
    )


# The endpoint keeps the name the console's navigation links to.
@bp.get("/fast-days", endpoint="fast_days")
@organizer_only
def fast_day_list():
    """Every fast day, the latest date first."""
    days = db.session.scalars(
        select(FastDay).order_by(FastDay.local_date.desc(), FastDay.id.desc())
    ).all()
    return _render("admin/fast_days/list.html", days=days)


def _render_form(form: FastDayForm, day: FastDay | None):
    return _render(
        "admin/fast_days/form.html",
        form=form,
        day=day,
        zones=fast_days.timezone_names(),
        money_frozen=day is not None and fast_days.has_money(day),
    ), _status_code(form)


@bp.route("/fast-days/new", methods=["GET", "POST"])
@organizer_only
def fast_day_new():
    """A new draft fast day."""
    form = FastDayForm()
    if form.validate_on_submit():
        try:
            day = fast_days.create_fast_day(form.fields())
        except FastDayError as exc:
            _attach(form, exc)
        else:
            db.session.commit()
            flash(_("Draft saved. Choose the groups it funds, then schedule it."), "info")
            return _see_other("admin.fast_day", day_id=day.id)
    return _render_form(form, None)


@bp.route("/fast-days/<int:day_id>/edit", methods=["GET", "POST"])
@organizer_only
def fast_day_edit(day_id: int):
    """Change a day's facts (its status and split have their own controls)."""
    day = _day_or_404(day_id)
    form = FastDayForm.for_day(day)
    if form.validate_on_submit():
        try:
            changed = fast_days.update_fast_day(day, form.fields())
        except FastDayError as exc:
            _attach(form, exc)
        else:
            db.session.commit()
            flash(_("Saved.") if changed else _("Nothing changed."), "info")
            return _see_other("admin.fast_day", day_id=day.id)
    return _render_form(form, day)


def _editor_groups(day: FastDay) -> list[AidGroup]:
    """Approved groups for the split editor: the ones funded now first, in their order."""
    approved = db.session.scalars(
        select(AidGroup)
        .where(AidGroup.status == AidGroupStatus.APPROVED)
        .order_by(AidGroup.name, AidGroup.id)
    ).all()
    position = {row.aid_group_id: row.position for row in day.allocations}
    return sorted(approved, key=lambda g: (g.id not in position, position.get(g.id, 0)))


def _split_form(day: FastDay) -> SplitForm:
    weights = {row.aid_group_id: row.weight for row in day.allocations}
    return split_form(_editor_groups(day), weights, frozen=day.split_is_frozen)


def _render_day(
    day: FastDay, *, form: SplitForm | None = None, error: str | None = None, status: int = 200
):
    form = form or _split_form(day)
    return _render(
        "admin/fast_days/detail.html",
        day=day,
        split_form=form,
        history=fast_days.split_history(day),
        dropped=[
            row.aid_group
            for row in day.allocations
            if row.aid_group.status != AidGroupStatus.APPROVED
        ],
        starts_at=fast_days.starts_at(day),
        ends_at=fast_days.ends_at(day),
        error=error,
    ), status


@bp.get("/fast-days/<int:day_id>")
@organizer_only
def fast_day(day_id: int):
    """One day: its facts, status buttons, split editor and split versions."""
    return _render_day(_day_or_404(day_id))


STATUS_MESSAGES = {
    FastDayStatus.SCHEDULED: lambda: _(
        "Scheduled: the public page is up and donors can give ahead."
    ),
    FastDayStatus.DRAFT: lambda: _("Back to draft: the day is hidden from the public."),
    FastDayStatus.LIVE: lambda: _("Open: the fast day is live."),
    FastDayStatus.CLOSED: lambda: _("Closed: the fast day takes no more gifts."),
}


@bp.post("/fast-days/<int:day_id>/status")
@organizer_only
def fast_day_status(day_id: int):
    """Schedule, unschedule, open or close a day."""
    day = _day_or_404(day_id)
    form = StatusForm()
    if not form.validate_on_submit():
        abort(400)
    target = FastDayStatus(form.to.data)
    try:
        changed = fast_days.transition(day, target)
    except FastDayError as exc:
        return _render_day(day, error=exc.message, status=400)
    db.session.commit()
    flash(STATUS_MESSAGES[target]() if changed else _("Nothing changed."), "info")
    return _see_other("admin.fast_day", day_id=day.id)


@bp.post("/fast-days/<int:day_id>/split")
@organizer_only
def fast_day_split(day_id: int):
    """Save the groups a day funds and their weights (a new version once it has opened)."""
    day = _day_or_404(day_id)
    form = _split_form(day)
    if form.validate_on_submit():
        try:
            # actor=None: the domain records the signed-in organizer.
            changed = fast_days.set_split(day, form.split, None, form.reason.data or "")
        except FastDayError as exc:
            if exc.field == "reason":
                form.reason.errors = [*form.reason.errors, exc.message]
            else:
                form.split_errors.append(exc.message)
        else:
            db.session.commit()
            if not changed:
                flash(_("Nothing changed."), "info")
            elif day.split_is_frozen:
                flash(_("Saved as version %(n)s of the split.", n=day.split_version), "info")
            else:
                flash(_("Split saved."), "info")
            return redirect(url_for("admin.fast_day", day_id=day.id, _anchor="split"), code=303)
    return _render_day(day, form=form, status=400)


@bp.route("/fast-days/<int:day_id>/delete", methods=["GET", "POST"])
@organizer_only
def fast_day_delete(day_id: int):
    """Ask, then delete a draft nobody has given to."""
    day = _day_or_404(day_id)
    form = ConfirmForm()
    error = None
    if form.validate_on_submit():
        try:
            title = day.title
            fast_days.delete_draft(day)
        except FastDayError as exc:
            error = exc.message
        else:
            db.session.commit()
            flash(_("Deleted the draft “%(title)s”.", title=title), "info")
            return _see_other("admin.fast_days")
    return _render(
        "admin/fast_days/delete.html",
        day=day,
        form=form,
        error=error,
        has_money=fast_days.has_money(day),
    ), (400 if error else 200)


def _split_sources() -> list[FastDay]:
    """Recent days that fund groups, whose split a new series can copy."""
    recent = db.session.scalars(
        select(FastDay).order_by(FastDay.local_date.desc(), FastDay.id.desc()).limit(40)
    ).all()
    return [day for day in recent if day.allocations]


@bp.route("/fast-days/series", methods=["GET", "POST"])
@organizer_only
def fast_day_series():
    """Several fast days at once, from one template."""
    form = SeriesForm(_split_sources())
    if form.validate_on_submit():
        source = form.split_source
        split = [(row.aid_group, row.weight) for row in source.allocations] if source else None
        try:
            days = fast_days.create_series(
                form.fields(), form.chosen_dates, split=split, schedule=form.schedule.data
            )
        except FastDayError as exc:
            # A date refused while scheduling is about the series as a whole.
            _attach(form, exc, {"split": "copy_split_from", "local_date": ""})
        else:
            db.session.commit()
            flash(
                ngettext("Created %(num)s fast day.", "Created %(num)s fast days.", num=len(days)),
                "info",
            )
            return _see_other("admin.fast_days")
    return _render(
        "admin/fast_days/series.html", form=form, zones=fast_days.timezone_names()
    ), _status_code(form)
