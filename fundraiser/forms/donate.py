"""The give form: amount, currency, where the gift goes, and who is giving."""

from __future__ import annotations

from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import Email, InputRequired, Length, Optional, ValidationError

from ..models import FastDay
from ..money import MoneyError, format_amount, format_plain, parse_amount

OTHER = "other"
ALL_GROUPS = "all"


class GiveForm(FlaskForm):
    """What a donor fills in before the card step; built per fast day."""

    amount = RadioField(_l("Amount"), validators=[InputRequired(_l("Choose an amount."))])
    # No Optional(): it would stop the chain before validate_other_amount sees an empty box.
    other_amount = StringField(_l("Other amount"))
    # validate_choice=False so our own validators below give a message a donor can act on.
    currency = SelectField(
        _l("Currency"), validators=[InputRequired(_l("Choose a currency."))], validate_choice=False
    )
    allocation = RadioField(
        _l("Where should your gift go?"),
        validators=[InputRequired(_l("Choose where your gift goes."))],
        default=ALL_GROUPS,
        validate_choice=False,
    )
    donor_name = StringField(_l("Your name"), validators=[Optional(), Length(max=120)])
    anonymous = BooleanField(_l("Give anonymously"))
    email = EmailField(
        _l("E-mail for your receipt"),
        validators=[
            InputRequired(_l("Enter your e-mail address so we can send your receipt.")),
            Email(
                _l("Enter a valid e-mail address, like name@example.org."),
                check_deliverability=False,
            ),
            Length(max=254),
        ],
    )
    dedication = TextAreaField(
        _l("Public dedication (optional)"),
        validators=[
            Optional(),
            Length(max=280, message=_l("Keep the dedication under 280 characters.")),
        ],
    )
    wants_messages = BooleanField(_l("Send me the fast day's messages"))

    def __init__(self, fast_day: FastDay, *args, max_major_units: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fast_day = fast_day
        self.max_major_units = max_major_units
        locale = get_locale() or "en"
        self.amount.choices = [
            SelectChoice(str(minor), format_amount(minor, fast_day.currency, locale))
            for minor in fast_day.suggested_amounts
        ] + [SelectChoice(OTHER, _l("Other amount"))]
        self.currency.choices = [SelectChoice(fast_day.currency, fast_day.currency)]
        self.allocation.choices = [SelectChoice(ALL_GROUPS, _l("Split across all groups"))] + [
            SelectChoice(group.slug, group.name) for group in fast_day.groups
        ]
        self.amount_minor: int | None = None

    def validate_amount(self, field: RadioField) -> None:
        """A suggested amount, or 'other' (checked in other_amount)."""
        if field.data == OTHER:
            return
        if field.data not in {str(m) for m in self.fast_day.suggested_amounts}:
            raise ValidationError(_l("Choose one of the amounts shown, or enter another."))
        self.amount_minor = int(field.data)

    def validate_other_amount(self, field: StringField) -> None:
        """Parse the typed amount in the day's currency, with the reason when it cannot be used."""
        if self.amount.data != OTHER:
            return
        if not (field.data or "").strip():
            raise ValidationError(_l("Enter the amount you would like to give."))
        try:
            self.amount_minor = parse_amount(
                field.data,
                self.fast_day.currency,
                get_locale() or "en",
                max_major_units=self.max_major_units,
            )
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_currency(self, field: SelectField) -> None:
        """Only the fast day's own currency, for now."""
        if field.data != self.fast_day.currency:
            raise ValidationError(
                _l("This fast day takes gifts in %(currency)s.", currency=self.fast_day.currency)
            )

    def validate_allocation(self, field: RadioField) -> None:
        """Only 'all' or a group this day funds."""
        if field.data != ALL_GROUPS and field.data not in {g.slug for g in self.fast_day.groups}:
            raise ValidationError(_l("Choose a group from the list."))

    @property
    def chosen_group_slug(self) -> str | None:
        """The group slug the donor chose, or None for the split across all groups."""
        return None if self.allocation.data == ALL_GROUPS else self.allocation.data

    @property
    def default_other_amount(self) -> str:
        """A placeholder for the custom amount, in the currency's own decimals."""
        first = self.fast_day.suggested_amounts[0] if self.fast_day.suggested_amounts else 0
        return format_plain(first, self.fast_day.currency)
