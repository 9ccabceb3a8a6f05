"""Refunding a gift from its page in the console: all that is left, or part of it."""

from __future__ import annotations

from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField, RadioField, SelectChoice, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, NumberRange, ValidationError
from wtforms.widgets import HiddenInput

from ..money import MoneyError, exponent, parse_amount

FULL = "full"
PART = "part"


class RefundForm(FlaskForm):
    """How much to refund; the amount is typed in major units (12.50), like donors type it."""

    scope = RadioField(
        _l("How much to refund"),
        choices=[SelectChoice(FULL, _l("Everything left")), SelectChoice(PART, _l("Part of it"))],
        default=FULL,
        validators=[InputRequired(_l("Choose how much to refund."))],
    )
    amount = StringField(_l("Amount to refund"), validators=[Length(max=40)])
    note = TextAreaField(
        _l("Reason (kept in the audit log)"),
        validators=[Length(max=500, message=_l("Keep the reason under 500 characters."))],
    )
    # How many refunds had been requested when this page was drawn (see fundraiser/refunds.py).
    seen_requests = IntegerField(widget=HiddenInput(), validators=[NumberRange(min=0)])

    def __init__(self, currency: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.amount_minor: int | None = None
        example = "12" if exponent(currency) == 0 else "12.50"
        self.amount.description = _l(
            "In %(currency)s, for example %(example)s.", currency=currency, example=example
        )

    def validate_amount(self, field: StringField) -> None:
        """A partial refund needs an amount Stripe could charge in the gift's currency."""
        if self.scope.data != PART:
            return
        try:
            self.amount_minor = parse_amount(field.data or "", self.currency, get_locale() or "en")
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    @property
    def requested_minor(self) -> int | None:
        """The amount to refund in minor units, or None for everything left."""
        return self.amount_minor if self.scope.data == PART else None
