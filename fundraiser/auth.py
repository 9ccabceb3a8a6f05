"""Accounts: passwords, sessions that really end, and invitations to set a password."""

from __future__ import annotations

import hmac

from flask import current_app
from flask_babel import lazy_gettext as _l
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db
from .models import Role, User, utcnow

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128

# scrypt is memory-hard: a stolen table is expensive to attack with GPUs.
PASSWORD_METHOD = "scrypt"  # noqa: S105 - a hash method name, not a password

# Checked against when the e-mail is unknown, so a wrong address takes as long as a wrong
# password and the timing does not reveal who has an account.
_DUMMY_HASH = generate_password_hash("not-a-real-password-at-all", method=PASSWORD_METHOD)


class AccountError(ValueError):
    """A problem with an account action, with a message for the person."""


def password_problem(password: str) -> str | None:
    """Why a new password cannot be used, or None if it can."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Use at most {MAX_PASSWORD_LENGTH} characters."
    return None


def hash_password(password: str) -> str:
    """Hash a password for storage."""
    problem = password_problem(password)
    if problem:
        raise AccountError(problem)
    return generate_password_hash(password, method=PASSWORD_METHOD)


def find_by_email(email: str) -> User | None:
    """The account with this e-mail (case-insensitive), or None."""
    return db.session.scalar(select(User).where(func.lower(User.email) == email.strip().lower()))


def authenticate(email: str, password: str) -> User | None:
    """The active account these credentials open, or None."""
    user = find_by_email(email or "")
    if user is None or not user.password_hash:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    if not check_password_hash(user.password_hash, password or ""):
        return None
    if not user.is_active:
        return None
    user.last_login_at = utcnow()
    return user


def load_session_user(session_id: str) -> User | None:
    """Flask-Login's loader: "id:version" must match an active account's current version."""
    user_id, _, version = (session_id or "").partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active:
        return None
    if not hmac.compare_digest(str(user.session_version), version):
        return None
    return user


def end_all_sessions(user: User) -> None:
    """Make every session cookie issued to this account so far unusable."""
    user.session_version += 1


def change_password(user: User, new_password: str) -> None:
    """Set a new password and end every other session."""
    user.password_hash = hash_password(new_password)
    end_all_sessions(user)


def set_active(user: User, active: bool) -> None:
    """Enable or disable an account; disabling ends its sessions at once."""
    user.is_active = active
    end_all_sessions(user)


def create_user(
    email: str, role: Role, *, password: str | None = None, aid_group_id: int | None = None
) -> User:
    """Create an account; without a password it can only be entered through an invitation."""
    email = email.strip().lower()
    if "@" not in email:
        raise AccountError(_l("Enter a valid e-mail address."))
    if find_by_email(email) is not None:
        raise AccountError(_l("An account with this e-mail already exists."))
    if role == Role.PARTNER and aid_group_id is None:
        raise AccountError(_l("A partner account belongs to an aid group."))
    user = User(
        email=email,
        role=role,
        aid_group_id=aid_group_id if role == Role.PARTNER else None,
        password_hash=hash_password(password) if password else "",
    )
    db.session.add(user)
    db.session.flush()
    return user


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="invitation")


def invitation_token(user: User) -> str:
    """A signed link token to set this account's password; it dies once used."""
    # The session version is inside: setting the password bumps it, so the link works once.
    return _serializer().dumps([user.id, user.session_version])


def user_from_invitation(token: str) -> User | None:
    """The account an unexpired, unused invitation is for, or None."""
    try:
        user_id, version = _serializer().loads(
            token, max_age=current_app.config["INVITATION_MAX_AGE_SECONDS"]
        )
    except (BadSignature, SignatureExpired, ValueError, TypeError):
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active or user.session_version != version:
        return None
    return user
