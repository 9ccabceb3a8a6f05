"""Organizer forms for fast days: the facts of a day, a series of days, the split, status moves.

Money is typed in major units ("50000", "10, 25, 50") and parsed by ``money.parse_amount``
in the currency chosen on the same form; the forms hand the domain minor units only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from babel.dates import get_day_names
from flask import current_app
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import AnyOf, InputRequired, Length, Optional, ValidationError

from ..fast_days import (
    DESCRIPTION_MAX,
    MAX_SERIES_DAYS,
    MAX_SUGGESTED_AMOUNTS,
    SLUG_MAX,
    TITLE_MAX,
    FastDayFields,
    is_valid_timezone,
    series_dates,
)
from ..i18n import LANGUAGE_NAMES, language_name
from ..models import AidGroup, FastDay, FastDayStatus
from ..money import STRIPE_CURRENCIES, MoneyError, format_plain, normalize_currency, parse_amount

# A fundraising goal can be far larger than one gift (a million yen is not much).
GOAL_MAX_MAJOR_UNITS = 10**12
MAX_WEIGHT = 1000
MAX_EVERY_WEEKS = 12
# Amounts are separated by semicolons, new lines, or a comma followed by a space, so that
# "1,000, 2,500" (grouped thousands) and "10,50; 25" (a decimal comma) both read right.
AMOUNT_SEPARATORS = re.compile(r"[;\n]|,\s+")
CODE_SEPARATORS = re.compile(r"[\s,;]+")


def major_text(amount_minor: int, currency: str) -> str:
    """Minor units as a plain number to put back in an input: "25", "10.5", never "10.500".

    Trailing zeros are dropped so that a three-decimal amount ("10.500") can never be read
    back as a grouped thousand in a locale that groups with a dot.
    """
    text = format_plain(amount_minor, currency)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _locale() -> str:
    return str(get_locale() or "en")


class FastDayForm(FlaskForm):
    """The facts of one fast day, as an organizer types them."""

    title = StringField(
        _l("Title"),
        validators=[
            InputRequired(_l("Enter a title.")),
            Length(
                max=TITLE_MAX, message=_l("Keep the title under %(n)s characters.", n=TITLE_MAX)
            ),
        ],
    )
    slug = StringField(
        _l("Web address"),
        validators=[
            Optional(),
            Length(max=SLUG_MAX, message=_l("At most %(n)s characters.", n=SLUG_MAX)),
        ],
    )
    local_date = DateField(
        _l("Date"),
        validators=[InputRequired(_l("Enter the date of the fast day."))],
        invalid_value_message=_l("Enter a date like 2027-01-09."),
    )
    timezone = StringField(
        _l("Time zone"),
        validators=[InputRequired(_l("Choose a time zone."))],
        default="UTC",
    )
    currency = SelectField(_l("Currency"), default="USD", validate_choice=False)
    goal = StringField(_l("Goal"))
    suggested_amounts = StringField(_l("Suggested amounts"))
    extra_currencies = StringField(_l("Other currencies donors may give in"))
    locale = SelectField(
        _l("Language of its pages"),
        choices=[SelectChoice(code, name) for code, name in LANGUAGE_NAMES.items()],
        default="en",
    )
    description = TextAreaField(
        _l("Description"),
        validators=[
            Optional(),
            Length(
                max=DESCRIPTION_MAX,
                message=_l("Keep the description under %(n)s characters.", n=DESCRIPTION_MAX),
            ),
        ],
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for code in LANGUAGE_NAMES:
            language = language_name(code)
            self[f"title_{code}"].label.text = _("Title in %(language)s", language=language)
            self[f"description_{code}"].label.text = _(
                "Description in %(language)s", language=language
            )
        self.currency.choices = [SelectChoice(code) for code in sorted(STRIPE_CURRENCIES)]
        self.goal_minor = 0
        self.suggested_minor: list[int] = []
        self.extra_codes: list[str] = []

    @classmethod
    def for_day(cls, day: FastDay, **kwargs) -> FastDayForm:
        """The form filled in with a day's facts, amounts shown back in major units."""
        return cls(
            data={
                "title": day.title,
                "slug": day.slug,
                "local_date": day.local_date,
                "timezone": day.timezone,
                "currency": day.currency,
                "goal": major_text(day.goal_minor, day.currency) if day.goal_minor else "",
                "suggested_amounts": ", ".join(
                    major_text(a, day.currency) for a in day.suggested_amounts
                ),
                "extra_currencies": ", ".join(day.extra_currencies or []),
                "description": day.description,
                "locale": day.locale,
                **{
                    f"{part}_{code}": text
                    for code, parts in (day.translations or {}).items()
                    for part, text in parts.items()
                },
            },
            **kwargs,
        )

    def _currency_or_none(self) -> str | None:
        try:
            return normalize_currency(self.currency.data or "")
        except MoneyError:
            return None  # validate_currency reports it

    def validate_currency(self, field: SelectField) -> None:
        """A currency Stripe takes."""
        try:
            normalize_currency(field.data or "")
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_timezone(self, field: StringField) -> None:
        """An IANA time zone name."""
        if not is_valid_timezone((field.data or "").strip()):
            raise ValidationError(
                _l("Choose a time zone from the list, like Europe/London or Asia/Gaza.")
            )

    def validate_goal(self, field: StringField) -> None:
        """Empty for no goal, else an amount in the chosen currency."""
        currency = self._currency_or_none()
        if currency is None or not (field.data or "").strip():
            self.goal_minor = 0
            return
        try:
            self.goal_minor = parse_amount(
                field.data, currency, _locale(), max_major_units=GOAL_MAX_MAJOR_UNITS
            )
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None

    def validate_suggested_amounts(self, field: StringField) -> None:
        """Amounts a donor can pick with one tap, in the chosen currency."""
        currency = self._currency_or_none()
        parts = [p.strip() for p in AMOUNT_SEPARATORS.split(field.data or "") if p.strip()]
        if currency is None:
            return
        if len(parts) > MAX_SUGGESTED_AMOUNTS:
            raise ValidationError(_l("Suggest at most %(n)s amounts.", n=MAX_SUGGESTED_AMOUNTS))
        amounts = []
        for part in parts:
            try:
                amounts.append(
                    parse_amount(
                        part,
                        currency,
                        _locale(),
                        max_major_units=current_app.config["MAX_GIFT_MAJOR_UNITS"],
                    )
                )
            except MoneyError as exc:
                raise ValidationError(
                    _l("“%(amount)s”: %(problem)s", amount=part, problem=str(exc))
                ) from None
        self.suggested_minor = sorted(set(amounts))

    def validate_extra_currencies(self, field: StringField) -> None:
        """ISO codes Stripe takes ("EUR, GBP" or "EUR GBP"); the domain refuses the day's own."""
        codes = [code for code in CODE_SEPARATORS.split(field.data or "") if code]
        for code in codes:
            try:
                normalize_currency(code)
            except MoneyError as exc:
                raise ValidationError(str(exc)) from None
        self.extra_codes = [code.upper() for code in codes]

    def fields(self, *, local_date: date | None = None) -> FastDayFields:
        """What the organizer typed, as the domain takes it (minor units)."""
        return FastDayFields(
            title=self.title.data or "",
            slug=(self.slug.data or "").strip().lower(),
            local_date=local_date or self.local_date.data,
            timezone=(self.timezone.data or "").strip(),
            currency=self.currency.data or "",
            goal_minor=self.goal_minor,
            suggested_amounts=self.suggested_minor,
            description=self.description.data or "",
            extra_currencies=self.extra_codes,
            locale=self.locale.data or "",
            translations={
                code: {
                    "title": self[f"title_{code}"].data or "",
                    "description": self[f"description_{code}"].data or "",
                }
                for code in LANGUAGE_NAMES
            },
        )

    def translation_fields(self) -> list[tuple[str, StringField, TextAreaField]]:
        """Per language: its name in the reader's language, its title and description fields."""
        return [
            (language_name(code), self[f"title_{code}"], self[f"description_{code}"])
            for code in LANGUAGE_NAMES
            if code != (self.locale.data or "en")  # the title above is in that one
        ]


# The title and description in each language, besides the day's own (checked by the domain).
for _code in LANGUAGE_NAMES:
    setattr(FastDayForm, f"title_{_code}", StringField(_l("Title")))
    setattr(FastDayForm, f"description_{_code}", TextAreaField(_l("Description")))


WEEKLY = "weekly"
LIST = "dates"


class SeriesForm(FastDayForm):
    """Several fast days at once: every N weeks on a weekday, or a list of dates."""

    local_date = None  # each day's date comes from the pattern
    pattern = RadioField(
        _l("Which days?"),
        choices=[
            SelectChoice(WEEKLY, _l("Every few weeks on one weekday")),
            SelectChoice(LIST, _l("A list of dates")),
        ],
        default=WEEKLY,
        validators=[InputRequired(_l("Choose how to pick the dates."))],
    )
    start = DateField(
        _l("Starting from"),
        validators=[Optional()],
        invalid_value_message=_l("Enter a date like 2027-01-09."),
    )
    every_weeks = StringField(_l("Every how many weeks"), default="2")
    weekday = SelectField(_l("On"), coerce=int, default=5, validate_choice=False)
    count = StringField(_l("How many days"), default="6")
    dates = TextAreaField(_l("Dates, one per line"))
    copy_split_from = SelectField(
        _l("Fund the same groups, with the same weights, as"), validate_choice=False
    )
    schedule = BooleanField(_l("Schedule them at once"))

    def __init__(self, split_sources: Sequence[FastDay], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        names = get_day_names("wide", locale=get_locale() or "en")
        self.weekday.choices = [SelectChoice(i, names[i]) for i in range(7)]
        self._sources = {str(day.id): day for day in split_sources}
        self.copy_split_from.choices = [
            SelectChoice("", _l("No groups yet (set them on each day)")),
            *(
                SelectChoice(str(day.id), f"{day.title} · {day.local_date.isoformat()}")
                for day in split_sources
            ),
        ]
        self.chosen_dates: list[date] = []

    @property
    def split_source(self) -> FastDay | None:
        """The day whose split the new days copy, if one was chosen."""
        return self._sources.get(self.copy_split_from.data or "")

    def validate_copy_split_from(self, field: SelectField) -> None:
        """Empty, or one of the days offered."""
        if field.data and field.data not in self._sources:
            raise ValidationError(_l("Choose a fast day from the list."))

    def validate_schedule(self, field: BooleanField) -> None:
        """Scheduling needs groups to give to."""
        if field.data and not self.copy_split_from.data:
            raise ValidationError(
                _l("To schedule the days at once, choose the groups they fund above.")
            )

    @staticmethod
    def _whole(field: StringField, low: int, high: int) -> int:
        text = (field.data or "").strip()
        if not text.isdigit() or not low <= int(text) <= high:
            field.errors.append(
                _l("Enter a whole number from %(low)s to %(high)s.", low=low, high=high)
            )
            return 0
        return int(text)

    def _weekly_dates(self) -> list[date]:
        if self.start.data is None and not self.start.errors:
            self.start.errors.append(_l("Enter the first date to consider."))
        every = self._whole(self.every_weeks, 1, MAX_EVERY_WEEKS)
        count = self._whole(self.count, 1, MAX_SERIES_DAYS)
        weekday = self.weekday.data if self.weekday.data in range(7) else None
        if weekday is None:
            self.weekday.errors.append(_l("Choose a day of the week."))
        if self.start.data is None or not every or not count or weekday is None:
            return []
        return series_dates(self.start.data, every_weeks=every, weekday=weekday, count=count)

    def _listed_dates(self) -> list[date]:
        lines = [line.strip() for line in (self.dates.data or "").splitlines() if line.strip()]
        if not lines:
            self.dates.errors.append(_l("Enter at least one date."))
            return []
        if len(lines) > MAX_SERIES_DAYS:
            self.dates.errors.append(_l("At most %(n)s days at a time.", n=MAX_SERIES_DAYS))
            return []
        found: list[date] = []
        for line in lines:
            try:
                found.append(date.fromisoformat(line))
            except ValueError:
                self.dates.errors.append(_l("“%(line)s” is not a date like 2027-01-09.", line=line))
                return []
        if len(set(found)) != len(found):
            self.dates.errors.append(_l("A date is listed twice."))
            return []
        return sorted(found)

    def validate(self, extra_validators=None) -> bool:
        """The template fields, then the dates of whichever pattern was chosen."""
        valid = super().validate(extra_validators)
        if self.pattern.data == WEEKLY:
            self.chosen_dates = self._weekly_dates()
            valid = valid and bool(self.chosen_dates)
        elif self.pattern.data == LIST:
            self.chosen_dates = self._listed_dates()
            valid = valid and bool(self.chosen_dates)
        return valid

    def fields(self, *, local_date: date | None = None) -> FastDayFields:
        """The template every day of the series starts from."""
        first = self.chosen_dates[0] if self.chosen_dates else date.min
        return super().fields(local_date=local_date or first)


class StatusForm(FlaskForm):
    """One status button: the status to move to."""

    to = HiddenField(
        validators=[InputRequired(), AnyOf([status.value for status in FastDayStatus])]
    )


class ConfirmForm(FlaskForm):
    """A confirmation step (delete): only the CSRF token."""


class SplitForm(FlaskForm):
    """The split editor: one weight box per approved group, and a reason once frozen.

    Built per day by :func:`split_form`, which adds a ``weight_<group id>`` field per group.
    """

    reason = TextAreaField(
        _l("Reason for the change"),
        validators=[
            Optional(),
            Length(max=1000, message=_l("Keep the reason under 1000 characters.")),
        ],
    )

    groups: Sequence[AidGroup] = ()
    frozen = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.split: list[tuple[AidGroup, int]] = []
        self.split_errors: list[str] = []

    def weight_field(self, group: AidGroup) -> StringField:
        """The weight box of one group."""
        return self[f"weight_{group.id}"]

    def validate(self, extra_validators=None) -> bool:
        """Each weight empty, 0 or a whole number up to MAX_WEIGHT; a reason once frozen."""
        valid = super().validate(extra_validators)
        self.split, self.split_errors = [], []
        for group in self.groups:
            field = self.weight_field(group)
            text = (field.data or "").strip()
            if not text:
                continue
            if not text.isdigit() or int(text) > MAX_WEIGHT:
                field.errors.append(_l("Enter a whole number from 0 to %(high)s.", high=MAX_WEIGHT))
                valid = False
            elif int(text) > 0:
                self.split.append((group, int(text)))
        if valid and not self.split:
            self.split_errors.append(_l("Give at least one aid group a weight."))
            valid = False
        if self.frozen and not (self.reason.data or "").strip():
            self.reason.errors.append(_l("Say why the split changes: everyone can see it."))
            valid = False
        return valid


def split_form(
    groups: Sequence[AidGroup], weights: dict[int, int], *, frozen: bool, **kwargs
) -> SplitForm:
    """A split editor for ``groups``, filled in with the current ``weights``."""

    class DaySplitForm(SplitForm):
        pass

    for group in groups:
        current = weights.get(group.id)
        setattr(
            DaySplitForm,
            f"weight_{group.id}",
            StringField(group.name, default=str(current) if current else ""),
        )
    DaySplitForm.groups = tuple(groups)
    DaySplitForm.frozen = frozen
    return DaySplitForm(**kwargs)
