"""A fast day's campaign messages: the list with counts, the editor, previews, test, schedule.

Endpoints are named ``admin.fast_day_message*`` so the console's navigation marks
"Fast days" as the current section on these pages.
"""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user

from ... import campaigns
from ...access import organizer_only
from ...campaigns import CampaignError
from ...extensions import db
from ...forms.campaign import (
    SEND_KIND_LABELS,
    SUN_EVENT_LABELS,
    ActionForm,
    MessageForm,
    TestSendForm,
    message_form_class,
)
from ...i18n import language_name
from ...models import CampaignMessage, CampaignStatus, FastDay, SendKind
from . import bp
from .fast_days import utc_text

# Only the e-mail's own inline styles: the body was sanitized, and nothing may run or load.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'"
)


def _day_or_404(day_id: int) -> FastDay:
    day = db.session.get(FastDay, day_id)
    if day is None:
        abort(404)
    return day


def _message_or_404(day: FastDay, message_id: int) -> CampaignMessage:
    message = db.session.get(CampaignMessage, message_id)
    if message is None or message.fast_day_id != day.id:
        abort(404)
    return message


def _actor():
    return current_user._get_current_object()  # type: ignore[attr-defined]


def _form_class() -> type[MessageForm]:
    return message_form_class(tuple(current_app.config["LANGUAGES"]))


def send_time_text(message: CampaignMessage) -> str:
    """When a message goes, in words ("07:00 local time", "Sunrise − 30 min")."""
    clock = message.local_time.strftime("%H:%M") if message.local_time else "—"
    if message.send_kind == SendKind.UTC_INSTANT:
        return _("%(when)s UTC", when=utc_text(message.send_at)) if message.send_at else "—"
    if message.send_kind == SendKind.LOCAL_TIME:
        return _("%(time)s in each subscriber's time zone", time=clock)
    event = SUN_EVENT_LABELS.get(message.sun_event, "—")  # type: ignore[call-overload]
    offset = message.offset_minutes
    if offset > 0:
        when = _("%(event)s + %(n)s min", event=event, n=offset)
    elif offset < 0:
        when = _("%(event)s − %(n)s min", event=event, n=-offset)
    else:
        when = str(event)
    return _(
        "%(when)s in each subscriber's city (%(time)s local time for those without a city)",
        when=when,
        time=clock,
    )


def _render(template: str, day: FastDay, **context):
    return render_template(
        template,
        day=day,
        send_time_text=send_time_text,
        language_name=language_name,
        audience_labels=campaigns.AUDIENCE_LABELS,
        status_labels=campaigns.STATUS_LABELS,
        kind_labels=SEND_KIND_LABELS,
        **context,
    )


def _attach(form, exc: CampaignError) -> None:
    """Put each refusal from the domain beside the field it names, or above the form."""
    for name, message in exc.problems:
        field = form._fields.get(name) if name else None
        if field is not None:
            field.errors = [*field.errors, message]
        else:
            form.form_errors.append(message)


def _see_message(day: FastDay, message: CampaignMessage):
    return redirect(
        url_for("admin.fast_day_message", day_id=day.id, message_id=message.id), code=303
    )


@bp.get("/fast-days/<int:day_id>/messages", endpoint="fast_day_messages")
@organizer_only
def message_list(day_id: int):
    """A day's messages, each with where its copies stand."""
    day = _day_or_404(day_id)
    messages = campaigns.messages_of(day)
    return _render(
        "admin/campaigns/list.html", day, messages=messages, counts=campaigns.counts(messages)
    )


def _render_editor(day: FastDay, form: MessageForm, message: CampaignMessage | None):
    status = 400 if form.is_submitted() and (form.errors or form.form_errors) else 200
    return _render("admin/campaigns/form.html", day, form=form, message=message), status


@bp.route(
    "/fast-days/<int:day_id>/messages/new", methods=["GET", "POST"], endpoint="fast_day_message_new"
)
@organizer_only
def message_new(day_id: int):
    """Write a new draft message."""
    day = _day_or_404(day_id)
    form = _form_class()()
    if form.validate_on_submit():
        try:
            message = campaigns.create_message(day, form.fields(), actor=_actor())
        except CampaignError as exc:
            db.session.rollback()
            _attach(form, exc)
        else:
            db.session.commit()
            flash(_("Draft saved. Preview it, send yourself a test, then schedule it."), "info")
            return _see_message(day, message)
    return _render_editor(day, form, None)


@bp.route(
    "/fast-days/<int:day_id>/messages/<int:message_id>/edit",
    methods=["GET", "POST"],
    endpoint="fast_day_message_edit",
)
@organizer_only
def message_edit(day_id: int, message_id: int):
    """Change a draft."""
    day = _day_or_404(day_id)
    message = _message_or_404(day, message_id)
    if request.method == "GET" and message.status != CampaignStatus.DRAFT:
        flash(_("Only a draft can be edited. Put it back to draft first."), "error")
        return _see_message(day, message)
    form_class = _form_class()
    form = form_class() if request.method == "POST" else form_class.for_message(message)
    if form.validate_on_submit():
        try:
            changed = campaigns.update_message(message, form.fields(), actor=_actor())
        except CampaignError as exc:
            db.session.rollback()
            _attach(form, exc)
        else:
            db.session.commit()
            flash(_("Saved.") if changed else _("Nothing changed."), "info")
            return _see_message(day, message)
    return _render_editor(day, form, message)


def _render_message(day: FastDay, message: CampaignMessage, *, test_form=None, status=200):
    # The default language first: it is what readers of the missing languages get.
    written = sorted((t.locale for t in message.texts), key=lambda c: c != message.default_locale)
    previews = [campaigns.render(message, code) for code in written]
    missing = [
        language_name(code) for code in current_app.config["LANGUAGES"] if code not in written
    ]
    return _render(
        "admin/campaigns/detail.html",
        day,
        message=message,
        previews=previews,
        bodies={t.locale: campaigns.markdown_to_html(t.body_markdown) for t in message.texts},
        missing=missing,
        counts=campaigns.counts([message])[message.id],
        audience_now=campaigns.audience_count(message),
        has_copies=campaigns.has_copies(message),
        test_form=test_form or TestSendForm(written, data={"locale": message.default_locale}),
        action_form=ActionForm(),
    ), status


@bp.get("/fast-days/<int:day_id>/messages/<int:message_id>", endpoint="fast_day_message")
@organizer_only
def message_detail(day_id: int, message_id: int):
    """One message: its send time, audience, copies, previews in each language and actions."""
    day = _day_or_404(day_id)
    return _render_message(day, _message_or_404(day, message_id))


@bp.get(
    "/fast-days/<int:day_id>/messages/<int:message_id>/preview/<locale>",
    endpoint="fast_day_message_preview",
)
@organizer_only
def message_preview(day_id: int, message_id: int, locale: str):
    """The e-mail as a subscriber in ``locale`` sees it (their own links in the footer aside)."""
    day = _day_or_404(day_id)
    message = _message_or_404(day, message_id)
    if locale not in current_app.config["LANGUAGES"]:
        abort(404)
    response = current_app.make_response(campaigns.render(message, locale).html)
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    return response


@bp.post("/fast-days/<int:day_id>/messages/<int:message_id>/test", endpoint="fast_day_message_test")
@organizer_only
def message_test(day_id: int, message_id: int):
    """Send one copy to the signed-in organizer, now."""
    day = _day_or_404(day_id)
    message = _message_or_404(day, message_id)
    form = TestSendForm([t.locale for t in message.texts])
    if not form.validate_on_submit():
        return _render_message(day, message, test_form=form, status=400)
    email = _actor().email
    campaigns.send_test(message, form.locale.data, email)
    db.session.commit()
    flash(_("A test is on its way to %(email)s.", email=email), "info")
    return _see_message(day, message)


def _status_action(day_id: int, message_id: int, act, done: str):
    day = _day_or_404(day_id)
    message = _message_or_404(day, message_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        changed = act(message)
    except CampaignError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return _render_message(day, message, status=400)
    db.session.commit()
    flash(done if changed else _("Nothing changed."), "info")
    return _see_message(day, message)


@bp.post(
    "/fast-days/<int:day_id>/messages/<int:message_id>/schedule",
    endpoint="fast_day_message_schedule",
)
@organizer_only
def message_schedule(day_id: int, message_id: int):
    """Draft -> scheduled (audited)."""
    return _status_action(
        day_id,
        message_id,
        lambda m: campaigns.schedule(m, actor=_actor()),
        _("Scheduled: each subscriber's copy is queued when its time comes."),
    )


@bp.post(
    "/fast-days/<int:day_id>/messages/<int:message_id>/unschedule",
    endpoint="fast_day_message_unschedule",
)
@organizer_only
def message_unschedule(day_id: int, message_id: int):
    """Scheduled -> draft, while no copy is queued yet (audited)."""
    return _status_action(
        day_id,
        message_id,
        lambda m: campaigns.unschedule(m, actor=_actor()),
        _("Back to draft: nothing will be sent until it is scheduled again."),
    )


@bp.post(
    "/fast-days/<int:day_id>/messages/<int:message_id>/cancel",
    endpoint="fast_day_message_cancel",
)
@organizer_only
def message_cancel(day_id: int, message_id: int):
    """Cancel: nothing more is queued and queued copies are dropped (audited)."""
    day = _day_or_404(day_id)
    message = _message_or_404(day, message_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    if message.status == CampaignStatus.CANCELLED:
        flash(_("Nothing changed."), "info")
        return _see_message(day, message)
    stopped = campaigns.cancel(message, actor=_actor())
    db.session.commit()
    flash(
        ngettext(
            "Cancelled. %(num)s queued copy will not be sent.",
            "Cancelled. %(num)s queued copies will not be sent.",
            stopped,
        )
        if stopped
        else _("Cancelled. Nothing more will be sent."),
        "info",
    )
    return _see_message(day, message)
