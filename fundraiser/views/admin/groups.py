"""Organizers review aid groups: approve, reject, suspend, reinstate, edit, invite partners."""

from __future__ import annotations

from collections.abc import Callable

from babel import Locale, UnknownLocaleError
from flask import abort, flash, redirect, render_template, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user

from ... import auth, partners
from ...access import organizer_only
from ...extensions import db
from ...forms.aid_group import InvitePartnerForm, ProfileForm, ReasonForm
from ...models import AidGroup, PayoutChange
from . import bp


@bp.get("/groups")
@organizer_only
def groups():
    """Every aid group by status, those waiting for review first."""
    return render_template(
        "admin/groups/list.html",
        sections=partners.groups_by_status(),
        status_label=partners.status_label,
    )


def _group_or_404(group_id: int, *, for_update: bool = False) -> AidGroup:
    # Review actions lock the row so two organizers deciding at once are serialized and the
    # second sees the first's decision when the transition is re-checked.
    group = db.session.get(AidGroup, group_id, with_for_update=for_update)
    if group is None:
        abort(404)
    return group


def _language_name(code: str) -> str:
    """The applicant's language, named in the organizer's."""
    try:
        return Locale.parse(code).get_display_name(get_locale()) or code
    except (ValueError, UnknownLocaleError):
        return code


def _review_page(group: AidGroup, status: int = 200, **forms):
    """The review page, with fresh forms except those passed in (which carry errors)."""
    # The forms share field names only where at most one of them is shown (reject for an
    # application, suspend for an approved group), so they need no prefixes.
    profile = forms.pop("profile", None) or ProfileForm(obj=group, formdata=None)
    return (
        render_template(
            "admin/groups/review.html",
            group=group,
            status_label=partners.status_label,
            language_name=_language_name(group.locale),
            history=partners.history(group),
            partner_accounts=partners.partner_accounts(group),
            reject_form=forms.pop("reject_form", None) or ReasonForm(formdata=None),
            suspend_form=forms.pop("suspend_form", None) or ReasonForm(formdata=None),
            profile_form=profile,
            invite_form=forms.pop("invite_form", None) or InvitePartnerForm(formdata=None),
            pending_payout=partners.pending_payout_change(group),
            payout_reject_form=forms.pop("payout_reject_form", None)
            or ReasonForm(formdata=None, prefix="payout"),
        ),
        status,
    )


@bp.get("/groups/<int:group_id>")
@organizer_only
def group(group_id: int):
    """One group: its application, status, history, partner accounts and the review actions."""
    return _review_page(_group_or_404(group_id))


def _decide(group: AidGroup, action: Callable[[], None], done: str):
    """Run one review action, commit, and go back to the page; a refused one is shown as such."""
    group_id = group.id
    try:
        action()
    except partners.ReviewError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _review_page(_group_or_404(group_id), 409)
    db.session.commit()
    flash(done, "info")
    return redirect(url_for("admin.group", group_id=group_id), 303)


@bp.post("/groups/<int:group_id>/approve")
@organizer_only
def approve_group(group_id: int):
    """Approve an application, or a rejected one on reconsideration."""
    group = _group_or_404(group_id, for_update=True)
    return _decide(
        group,
        lambda: partners.approve(group),
        _("%(group)s is approved; its contact has been told.", group=group.name),
    )


@bp.post("/groups/<int:group_id>/reject")
@organizer_only
def reject_group(group_id: int):
    """Reject an application; the reason goes to its contact."""
    group = _group_or_404(group_id, for_update=True)
    form = ReasonForm()
    if not form.validate_on_submit():
        return _review_page(group, 400, reject_form=form)
    return _decide(
        group,
        lambda: partners.reject(group, form.reason.data),
        _("The application is rejected; its contact has been sent the reason."),
    )


@bp.post("/groups/<int:group_id>/suspend")
@organizer_only
def suspend_group(group_id: int):
    """Suspend an approved group: it keeps its past allocations, and joins no new split."""
    group = _group_or_404(group_id, for_update=True)
    form = ReasonForm()
    if not form.validate_on_submit():
        return _review_page(group, 400, suspend_form=form)
    return _decide(
        group,
        lambda: partners.suspend(group, form.reason.data),
        _("%(group)s is suspended.", group=group.name),
    )


@bp.post("/groups/<int:group_id>/reinstate")
@organizer_only
def reinstate_group(group_id: int):
    """Make a suspended group approved again."""
    group = _group_or_404(group_id, for_update=True)
    return _decide(
        group,
        lambda: partners.reinstate(group),
        _("%(group)s is approved again.", group=group.name),
    )


@bp.post("/groups/<int:group_id>/profile")
@organizer_only
def update_group_profile(group_id: int):
    """Edit the public profile: name, country, description, website."""
    group = _group_or_404(group_id, for_update=True)
    form = ProfileForm()
    if not form.validate_on_submit():
        return _review_page(group, 400, profile=form)
    changed = partners.update_profile(
        group,
        {name: form[name].data for name in partners.PROFILE_FIELDS},
    )
    db.session.commit()
    flash(_("The profile is saved.") if changed else _("Nothing was changed."), "info")
    return redirect(url_for("admin.group", group_id=group.id), 303)


@bp.post("/groups/<int:group_id>/partners")
@organizer_only
def invite_group_partner(group_id: int):
    """Invite someone from an approved group to a partner account."""
    group = _group_or_404(group_id, for_update=True)
    form = InvitePartnerForm()
    if not form.validate_on_submit():
        return _review_page(group, 400, invite_form=form)
    try:
        user = partners.invite_partner(group, form.email.data)
    except partners.ReviewError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _review_page(_group_or_404(group_id), 409)
    except auth.AccountError as exc:
        db.session.rollback()
        form.email.errors.append(str(exc))
        return _review_page(_group_or_404(group_id), 400, invite_form=form)
    db.session.commit()
    flash(_("Invitation sent to %(email)s.", email=user.email), "info")
    return redirect(url_for("admin.group", group_id=group.id), 303)


def _payout_change_or_404(group: AidGroup, change_id: int) -> PayoutChange:
    change = db.session.get(PayoutChange, change_id, with_for_update=True)
    if change is None or change.aid_group_id != group.id:
        abort(404)
    return change


@bp.post("/groups/<int:group_id>/payout/<int:change_id>/confirm")
@organizer_only
def confirm_payout_change(group_id: int, change_id: int):
    """Put a partner's requested payout details in use (audited)."""
    group = _group_or_404(group_id, for_update=True)
    change = _payout_change_or_404(group, change_id)
    return _decide(
        group,
        lambda: partners.confirm_payout_change(
            group, change, actor=current_user._get_current_object()
        ),
        _("The new payout details of %(group)s are in use.", group=group.name),
    )


@bp.post("/groups/<int:group_id>/payout/<int:change_id>/reject")
@organizer_only
def reject_payout_change(group_id: int, change_id: int):
    """Refuse a partner's requested payout details, with a reason the partner sees."""
    group = _group_or_404(group_id, for_update=True)
    change = _payout_change_or_404(group, change_id)
    form = ReasonForm(prefix="payout")
    if not form.validate_on_submit():
        return _review_page(group, 400, payout_reject_form=form)
    return _decide(
        group,
        lambda: partners.reject_payout_change(
            group, change, form.reason.data, actor=current_user._get_current_object()
        ),
        _("The payout change is refused; the details in use stay as they were."),
    )
