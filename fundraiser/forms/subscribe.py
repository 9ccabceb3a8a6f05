"""Forms for subscribers: subscribe, ask for a link to manage, preferences, and yes/no buttons."""

from __future__ import annotations

from typing import Any

from babel import Locale
from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Email, Length, ValidationError

from .. import subscriptions
from ..subscriptions import City


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def language_choices() -> list[SelectChoice]:
    """The site's languages, each named in itself ("Français", "العربية")."""
    choices = []
    for code in current_app.config["LANGUAGES"]:
        name = Locale.parse(code).get_display_name(code) or code
        choices.append(SelectChoice(code, name[:1].upper() + name[1:]))
    return choices


def _email_field(label: Any) -> EmailField:
    return EmailField(
        label,
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter your e-mail address.")),
            Email(
                _l("Enter a valid e-mail address, like name@example.org."),
                check_deliverability=False,
            ),
            Length(max=254, message=_l("Keep the e-mail address under 254 characters.")),
        ],
    )


class _Settings(FlaskForm):
    """Language, time zone and city: shared by the subscribe and preferences forms."""

    locale = SelectField(_l("Language of the messages"), validate_choice=False)
    timezone = StringField(
        _l("Time zone"),
        filters=[_strip],
        validators=[DataRequired(_l("Choose your time zone, like Europe/London."))],
    )
    city = StringField(
        _l("City, for sunrise and sunset times (optional)"),
        filters=[_strip],
        validators=[Length(max=120, message=_l("Keep the city under 120 characters."))],
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.locale.choices = language_choices()
        self.found_city: City | None = None

    def validate_locale(self, field: SelectField) -> None:
        """One of the site's languages."""
        if field.data not in current_app.config["LANGUAGES"]:
            raise ValidationError(_l("Choose a language from the list."))

    def validate_timezone(self, field: StringField) -> None:
        """A time zone this server knows by its IANA name."""
        if not subscriptions.is_timezone(field.data):
            raise ValidationError(
                _l("We do not know this time zone. Choose one from the list, like Asia/Amman.")
            )

    def validate_city(self, field: StringField) -> None:
        """Empty, or a city we know the sunrise and sunset of."""
        if not field.data:
            return
        self.found_city = subscriptions.find_city(field.data)
        if self.found_city is None:
            raise ValidationError(
                _l(
                    "We do not know this city. Choose the nearest one from the list,"
                    " or leave the city empty."
                )
            )


class SubscribeForm(_Settings):
    """Ask for the fast day's messages. Nothing else posted is read (status, confirmed …)."""

    email = _email_field(_l("Your e-mail address"))


class PreferencesForm(_Settings):
    """What a subscriber may change from their signed link."""

    wants_day_messages = BooleanField(_l("The fast day's messages"))
    wants_reminders = BooleanField(_l("Reminders about a gift I pledged for the fast day"))


class ManageForm(FlaskForm):
    """An address to send a link to manage its messages to."""

    email = _email_field(_l("Your e-mail address"))


class ActionForm(FlaskForm):
    """A button with nothing but its CSRF token: confirm, unsubscribe, erase."""
