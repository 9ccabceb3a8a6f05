"""Forms for signing in, changing a password and accepting an invitation."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import EqualTo, InputRequired, Length

from ..auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH


class LoginForm(FlaskForm):
    """E-mail and password."""

    email = EmailField(_l("E-mail"), validators=[InputRequired(_l("Enter your e-mail address."))])
    password = PasswordField(_l("Password"), validators=[InputRequired(_l("Enter your password."))])


def _new_password_field(label):
    return PasswordField(
        label,
        validators=[
            InputRequired(_l("Choose a password.")),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=MAX_PASSWORD_LENGTH,
                message=_l(
                    "Use between %(min)d and %(max)d characters.",
                    min=MIN_PASSWORD_LENGTH,
                    max=MAX_PASSWORD_LENGTH,
                ),
            ),
        ],
    )


class SetPasswordForm(FlaskForm):
    """A new password, typed twice (for invitations)."""

    password = _new_password_field(_l("New password"))
    confirm = PasswordField(
        _l("New password again"),
        validators=[EqualTo("password", message=_l("The two passwords differ."))],
    )


class ChangePasswordForm(SetPasswordForm):
    """The current password, then a new one typed twice."""

    current = PasswordField(
        _l("Current password"), validators=[InputRequired(_l("Enter your current password."))]
    )
