"""Forms about aid groups: the public application, and the organizers' review actions."""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from babel import Locale
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    EmailField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Email, Length, Optional, ValidationError

from ..partners import FundsMethod

# CLDR names these two-letter codes too, but they are not ISO 3166-1 countries: regions,
# unions, pseudo-locales and places ISO keeps only as "exceptionally reserved" codes.
NOT_ISO_3166 = frozenset(
    {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "XK", "ZZ"}
)


SCHEME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _assume_https(value: Any) -> Any:
    """People type "example.org"; read it as https://example.org, and leave any scheme to be checked."""
    if isinstance(value, str) and value and not SCHEME_RE.match(value):
        return f"https://{value}"
    return value


def country_choices() -> list[SelectChoice]:
    """ISO 3166-1 countries, named and sorted in the reader's language."""
    territories = (get_locale() or Locale("en")).territories
    countries = [
        SelectChoice(code, name)
        for code, name in territories.items()
        if len(code) == 2 and code.isalpha() and code not in NOT_ISO_3166
    ]
    # Accents should not send "Åland" or "Réunion" to the end of the list.
    return sorted(countries, key=lambda c: unicodedata.normalize("NFKD", c.label).casefold())


def validate_web_address(form: FlaskForm, field: StringField) -> None:
    """Only http(s) addresses with a host: no javascript:, data: or mailto: links on our pages."""
    if not field.data:
        return
    parts = urlsplit(field.data)
    host = parts.hostname or ""
    if (
        parts.scheme.lower() not in ("http", "https")
        or not host
        or "." not in host
        or any(ch.isspace() for ch in field.data)
    ):
        raise ValidationError(_l("Enter a web address starting with https:// or http://."))


class _CountryField(SelectField):
    """A country select whose choices are built per request, in the reader's language."""

    def __init__(self, label: Any = None, **kwargs: Any) -> None:
        super().__init__(
            label,
            validators=[DataRequired(_l("Choose the country where your group is registered."))],
            validate_choice=False,
            **kwargs,
        )

    def pre_validate(self, form: FlaskForm) -> None:
        if self.data and self.data not in {choice.value for choice in self.choices}:
            raise ValidationError(_l("Choose a country from the list."))


def _name_field(label: Any) -> StringField:
    return StringField(
        label,
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter the group's name.")),
            Length(max=200, message=_l("Keep the name under 200 characters.")),
        ],
    )


def _description_field(label: Any) -> TextAreaField:
    return TextAreaField(
        label,
        filters=[_strip],
        validators=[
            DataRequired(_l("Tell us what your group does.")),
            Length(max=2000, message=_l("Keep this under 2,000 characters.")),
        ],
    )


def _website_field(label: Any) -> StringField:
    return StringField(
        label,
        filters=[_strip, _assume_https],
        validators=[
            Optional(),
            Length(max=300, message=_l("Keep the web address under 300 characters.")),
            validate_web_address,
        ],
    )


class _WithCountries(FlaskForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.country.choices = [SelectChoice("", _l("Choose a country")), *country_choices()]


class ApplicationForm(_WithCountries):
    """What a group fills in to be listed. Nothing else posted is read (status, slug …)."""

    name = _name_field(_l("Name of your group"))
    country = _CountryField(_l("Country where the group is registered"))
    description = _description_field(_l("What your group does"))
    website = _website_field(_l("Website (optional)"))
    contact_name = StringField(
        _l("Contact person"),
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter the name of the person we should write to.")),
            Length(max=200, message=_l("Keep the name under 200 characters.")),
        ],
    )
    contact_email = EmailField(
        _l("Contact e-mail"),
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter an e-mail address we can write to.")),
            Email(
                _l("Enter a valid e-mail address, like name@example.org."),
                check_deliverability=False,
            ),
            Length(max=254, message=_l("Keep the e-mail address under 254 characters.")),
        ],
    )
    funds_method = RadioField(
        _l("How can your group receive funds?"),
        choices=[
            SelectChoice(FundsMethod.BANK_TRANSFER.value, _l("Bank transfer")),
            SelectChoice(FundsMethod.STRIPE_CONNECT.value, _l("Stripe Connect")),
            SelectChoice(FundsMethod.OTHER.value, _l("Another way")),
        ],
        validators=[DataRequired(_l("Choose how your group can receive funds."))],
        validate_choice=False,
    )
    funds_details = TextAreaField(
        _l("Details"),
        filters=[_strip],
        validators=[Length(max=2000, message=_l("Keep this under 2,000 characters."))],
    )

    def validate_funds_method(self, field: RadioField) -> None:
        """One of the listed ways."""
        if field.data not in {m.value for m in FundsMethod}:
            raise ValidationError(_l("Choose how your group can receive funds."))

    def validate_funds_details(self, field: TextAreaField) -> None:
        """ "Another way" needs words: the organizers cannot guess it."""
        if self.funds_method.data == FundsMethod.OTHER.value and not field.data:
            raise ValidationError(_l("Tell us how your group can receive funds."))


class ProfileForm(_WithCountries):
    """The public profile of a group, as organizers edit it."""

    name = _name_field(_l("Name"))
    country = _CountryField(_l("Country"))
    description = _description_field(_l("What the group does"))
    website = _website_field(_l("Website"))


class ReasonForm(FlaskForm):
    """A reason, for rejecting an application or suspending a group."""

    reason = TextAreaField(
        _l("Reason"),
        filters=[_strip],
        validators=[
            DataRequired(_l("Give a reason.")),
            Length(max=2000, message=_l("Keep the reason under 2,000 characters.")),
        ],
    )


class InvitePartnerForm(FlaskForm):
    """The e-mail of someone from the group to invite as a partner."""

    email = EmailField(
        _l("E-mail"),
        filters=[_strip],
        validators=[
            DataRequired(_l("Enter an e-mail address.")),
            Email(_l("Enter a valid e-mail address."), check_deliverability=False),
            Length(max=254),
        ],
    )
