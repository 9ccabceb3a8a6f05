"""Signing in and out, changing a password, and accepting an invitation."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from werkzeug.security import check_password_hash

from .. import audit, auth
from ..access import public, safe_next, signed_in
from ..extensions import db, limiter
from ..forms.auth import ChangePasswordForm, LoginForm, SetPasswordForm
from ..models import Role

bp = Blueprint("auth", __name__)


def _home_for(user) -> str:
    if user.role == Role.ORGANIZER:
        return url_for("admin.index")
    return url_for("partner.index")


def _account_key() -> str:
    """Rate-limit key for one account, whatever address the attempts come from."""
    return "login-account:" + (request.form.get("email") or "").strip().lower()


def _start_session(user) -> None:
    # A fresh session on login: nothing an attacker planted before (fixation) survives.
    session.clear()
    login_user(user)
    session.permanent = True


@bp.route("/login", methods=["GET", "POST"])
@public
@limiter.limit("20 per minute", methods=["POST"])  # per address
@limiter.limit("10 per minute", methods=["POST"], key_func=_account_key)  # per account
def login():
    """The one login page for organizers and partners."""
    if current_user.is_authenticated:
        return redirect(safe_next(request.args.get("next"), _home_for(current_user)))
    form = LoginForm()
    if form.validate_on_submit():
        user = auth.authenticate(form.email.data, form.password.data)
        if user is not None:
            _start_session(user)
            audit.record("login", target=user, actor=user)
            db.session.commit()
            return redirect(safe_next(request.args.get("next"), _home_for(user)))
        flash(_("That e-mail and password do not match an active account."), "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 400 if form.is_submitted() else 200


@bp.post("/logout")
@signed_in
def logout():
    """Sign out everywhere: every copy of the session cookie stops working."""
    auth.end_all_sessions(current_user)
    db.session.commit()
    logout_user()
    session.clear()
    flash(_("You are signed out."), "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@signed_in
def change_password():
    """Change your password; every other session ends."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        if not check_password_hash(current_user.password_hash, form.current.data):
            form.current.errors.append(_("That is not your current password."))
        else:
            user = current_user._get_current_object()
            auth.change_password(user, form.password.data)
            audit.record("password.change", target=user)
            db.session.commit()
            _start_session(user)  # this browser stays signed in with the new version
            flash(_("Your password is changed. Other sessions were signed out."), "info")
            return redirect(_home_for(user))
    status = 400 if form.is_submitted() else 200
    return render_template("auth/change_password.html", form=form), status


@bp.route("/invitation/<token>", methods=["GET", "POST"])
@public
def accept_invitation(token: str):
    """Set a password from an invitation link, then sign in."""
    user = auth.user_from_invitation(token)
    if user is None:
        return render_template("auth/invitation_invalid.html"), 410
    form = SetPasswordForm()
    if form.validate_on_submit():
        auth.change_password(user, form.password.data)
        audit.record("invitation.accept", target=user, actor=user)
        db.session.commit()
        _start_session(user)
        return redirect(_home_for(user))
    status = 400 if form.is_submitted() else 200
    return render_template("auth/accept_invitation.html", form=form, user=user), status
