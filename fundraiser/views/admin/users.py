"""People: inviting organizers and partners, and disabling accounts."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select

from ... import audit, auth, mail
from ...access import organizer_only
from ...extensions import db
from ...forms.users import InviteForm
from ...models import AidGroup, AidGroupStatus, Role, User
from . import bp


def _approved_groups() -> list[AidGroup]:
    return list(
        db.session.scalars(
            select(AidGroup)
            .where(AidGroup.status == AidGroupStatus.APPROVED)
            .order_by(AidGroup.name)
        )
    )


@bp.route("/people", methods=["GET", "POST"])
@organizer_only
def users():
    """Everyone with an account, and a form to invite someone."""
    form = InviteForm(_approved_groups())
    if form.validate_on_submit():
        role = Role(form.role.data)
        group_id = int(form.aid_group_id.data) if role == Role.PARTNER else None
        try:
            user = auth.create_user(form.email.data, role, aid_group_id=group_id)
        except auth.AccountError as exc:
            form.email.errors.append(str(exc))
        else:
            audit.record(
                "user.invite",
                target=user,
                after={"email": user.email, "role": role, "aid_group_id": group_id},
            )
            mail.queue_invitation(user, auth.invitation_token(user))
            db.session.commit()
            flash(_("Invitation sent to %(email)s.", email=user.email), "info")
            return redirect(url_for("admin.users"))
    people = db.session.scalars(select(User).order_by(User.role, User.email)).all()
    status = 400 if form.is_submitted() and form.errors else 200
    return render_template("admin/users/list.html", form=form, people=people), status


@bp.post("/people/<int:user_id>/active/<int:active>")
@organizer_only
def set_user_active(user_id: int, active: int):
    """Disable (ending every session at once) or re-enable an account."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    if user.id == current_user.id:
        flash(_("You cannot disable your own account."), "error")
        return redirect(url_for("admin.users"))
    before = {"is_active": user.is_active}
    auth.set_active(user, bool(active))
    audit.record(
        "user.enable" if active else "user.disable",
        target=user,
        before=before,
        after={"is_active": user.is_active},
    )
    db.session.commit()
    return redirect(url_for("admin.users"))


@bp.post("/people/<int:user_id>/reinvite")
@organizer_only
def reinvite_user(user_id: int):
    """Send a fresh invitation link (the old one stops working)."""
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    auth.end_all_sessions(user)
    audit.record("user.reinvite", target=user)
    mail.queue_invitation(user, auth.invitation_token(user))
    db.session.commit()
    flash(_("A new invitation was sent to %(email)s.", email=user.email), "info")
    return redirect(url_for("admin.users"))
