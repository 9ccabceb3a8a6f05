"""The give form: amount, currency, where the gift goes, and who is giving."""

from __future__ import annotations

from flask_babel import get_locale, lazy_ngettext
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import Email, InputRequired, Length, Optional, ValidationError

from ..i18n import money
from ..models import FastDay
from ..money import MoneyError, format_plain, parse_amount

OTHER = "other"
ALL_GROUPS = "all"
# When the card is charged: now, on the fast day, or on every day of the day's series.
GIVE_NOW = "now"
ON_THE_DAY = "day"
WHOLE_SERIES = "series"


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
    when = RadioField(
        _l("When should we charge your card?"), default=GIVE_NOW, validate_choice=False
    )
    # Filled by the page's script from the browser; used for "your local morning on the day".
    timezone = HiddenField()

    def __init__(
        self,
        fast_day: FastDay,
        *args,
        max_major_units: int,
        can_pledge: bool = False,
        series_days: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fast_day = fast_day
        self.max_major_units = max_major_units
        # money() as on the rest of the page, so the chips read right in right-to-left text too.
        self.amount.choices = [
            SelectChoice(str(minor), money(minor, fast_day.currency))
            for minor in fast_day.suggested_amounts
        ] + [SelectChoice(OTHER, _l("Other amount"))]
        self.currency.choices = [SelectChoice(code, code) for code in fast_day.accepted_currencies]
        self.allocation.choices = [SelectChoice(ALL_GROUPS, _l("Split across all groups"))] + [
            SelectChoice(group.slug, group.name) for group in fast_day.groups
        ]
        self.amount_minor: int | None = None
        # A scheduled day that has not begun takes pledges charged on it (and, with later days
        # in its series, on every one of them); a live day takes gifts now only.
        self.can_pledge = can_pledge
        self.series_days = series_days if can_pledge else 0
        when = [SelectChoice(GIVE_NOW, _l("Give now"))]
        if can_pledge:
            when.append(SelectChoice(ON_THE_DAY, _l("Charge me on the fast day")))
        if self.series_days:
            when.append(
                SelectChoice(
                    WHOLE_SERIES,
                    lazy_ngettext(
                        "Charge me on this and the next fast day of the series (%(num)s more)",
                        "Charge me on this and every later fast day of the series (%(num)s more)",
                        self.series_days,
                    ),
                )
            )
        self.when.choices = when

    @property
    def chosen_currency(self) -> str | None:
        """The currency the donor chose, if this day takes it; None otherwise."""
        code = (self.currency.data or "").strip().upper()
        return code if code in self.fast_day.accepted_currencies else None

    def validate_amount(self, field: RadioField) -> None:
        """A suggested amount, or 'other' (checked in other_amount)."""
        if field.data == OTHER:
            return
        if field.data not in {str(m) for m in self.fast_day.suggested_amounts}:
            raise ValidationError(_l("Choose one of the amounts shown, or enter another."))
        chosen = self.chosen_currency
        if chosen is not None and chosen != self.fast_day.currency:
            # The suggested amounts are in the day's currency; converting them would be a
            # guess at an exchange rate, so the donor types the amount in theirs.
            raise ValidationError(
                _l(
                    "The amounts shown are in %(day_currency)s. To give in %(currency)s,"
                    " choose “Other amount” and type it.",
                    day_currency=self.fast_day.currency,
                    currency=chosen,
                )
            )
        self.amount_minor = int(field.data)

    def validate_other_amount(self, field: StringField) -> None:
        """Parse the typed amount in the chosen currency, with the reason when it cannot be used."""
        if self.amount.data != OTHER:
            return
        if not (field.data or "").strip():
            raise ValidationError(_l("Enter the amount you would like to give."))
        currency = self.chosen_currency
        if currency is None:
            return  # validate_currency says why; an amount cannot be read without one
        try:
            self.amount_minor = parse_amount(
                field.data,
                currency,
                get_locale() or "en",
                max_major_units=self.max_major_units,
            )
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_currency(self, field: SelectField) -> None:
        """One of the currencies the fast day takes."""
        if self.chosen_currency is None:
            raise ValidationError(
                _l(
                    "This fast day takes gifts in %(currency)s.",
                    currency=", ".join(self.fast_day.accepted_currencies),
                )
            )

    def validate_allocation(self, field: RadioField) -> None:
        """Only 'all' or a group this day funds."""
        if field.data != ALL_GROUPS and field.data not in {g.slug for g in self.fast_day.groups}:
            raise ValidationError(_l("Choose a group from the list."))

    def validate_when(self, field: RadioField) -> None:
        """Only a choice the day offers; nothing chosen means now."""
        if not field.data:
            field.data = GIVE_NOW
        if field.data not in {choice.value for choice in field.choices}:
            raise ValidationError(_l("Choose when we should charge your card."))

    @property
    def charge_on_day(self) -> bool:
        """True when the donor asked to be charged on the fast day (or every day of its series)."""
        return self.when.data in (ON_THE_DAY, WHOLE_SERIES)

    @property
    def whole_series(self) -> bool:
        """True when the donor pledged for every later day of the series too."""
        return self.when.data == WHOLE_SERIES

    @property
    def donor_timezone(self) -> str | None:
        """The browser's IANA time zone, if it is one we know; otherwise None (the day's opening)."""
        from ..fast_days import is_valid_timezone

        zone = (self.timezone.data or "").strip()
        # A zone this server's tz database lacks is dropped, not refused: the donor never saw
        # the hidden field, and without a zone the pledge is charged when the day opens.
        return zone if zone and len(zone) <= 64 and is_valid_timezone(zone) else None

    @property
    def chosen_group_slug(self) -> str | None:
        """The group slug the donor chose, or None for the split across all groups."""
        return None if self.allocation.data == ALL_GROUPS else self.allocation.data

    @property
    def takes_other_currencies(self) -> bool:
        """True when the donor can choose among several currencies."""
        return len(self.fast_day.accepted_currencies) > 1

    @property
    def default_other_amount(self) -> str:
        """A placeholder for the custom amount, in the currency's own decimals."""
        first = self.fast_day.suggested_amounts[0] if self.fast_day.suggested_amounts else 0
        return format_plain(first, self.fast_day.currency)
