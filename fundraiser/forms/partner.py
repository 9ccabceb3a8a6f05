"""Forms of the partner portal: the statement's date range, the public profile, payout details."""

from __future__ import annotations

from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateField, RadioField, SelectChoice, StringField, TextAreaField
from wtforms.validators import Length, Optional, ValidationError

from ..partners import FundsMethod, is_stripe_account_id
from .aid_group import _description_field, _strip, _website_field


class _OptionalDateField(DateField):
    """A YYYY-MM-DD date that may be left empty (an open end of the range)."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        if valuelist and not "".join(valuelist).strip():
            self.data = None
            return
        super().process_formdata(valuelist)


class StatementForm(FlaskForm):
    """The date range of a CSV statement, read from the query string of a GET."""

    class Meta:
        csrf = False  # a download changes nothing

    start = _OptionalDateField(
        _l("From"),
        validators=[Optional()],
        invalid_value_message=_l("Enter the start date like 2026-01-31."),
    )
    end = _OptionalDateField(
        _l("To"),
        validators=[Optional()],
        invalid_value_message=_l("Enter the end date like 2026-12-31."),
    )

    def validate_end(self, field: DateField) -> None:
        """The range cannot run backwards."""
        if field.data and self.start.data and field.data < self.start.data:
            raise ValidationError(_l("The end date must be on or after the start date."))


class PartnerProfileForm(FlaskForm):
    """What a partner may change on its group's public page.

    The name and country stay with the organizers: they are what was reviewed and approved,
    and donors choose a group by its name.
    """

    description = _description_field(_l("What your group does"))
    website = _website_field(_l("Website (optional)"))


class PayoutChangeForm(FlaskForm):
    """New payout details, which an organizer confirms before they are used."""

    funds_method = RadioField(
        _l("How should your group be paid?"),
        choices=[
            SelectChoice(FundsMethod.BANK_TRANSFER.value, _l("Bank transfer")),
            SelectChoice(FundsMethod.STRIPE_CONNECT.value, _l("Stripe Connect")),
            SelectChoice(FundsMethod.OTHER.value, _l("Another way")),
        ],
        validate_choice=False,
    )
    funds_details = TextAreaField(
        _l("Details"),
        filters=[_strip],
        validators=[Length(max=2000, message=_l("Keep this under 2,000 characters."))],
    )
    stripe_account_id = StringField(
        _l("Stripe Connect account id"),
        filters=[_strip],
        validators=[Length(max=64, message=_l("Keep the account id under 64 characters."))],
    )

    def validate_funds_method(self, field: RadioField) -> None:
        """One of the listed ways."""
        if field.data not in {m.value for m in FundsMethod}:
            raise ValidationError(_l("Choose how your group should be paid."))

    def validate_funds_details(self, field: TextAreaField) -> None:
        """A bank transfer or another way needs words: the organizers cannot guess them."""
        if self.funds_method.data != FundsMethod.STRIPE_CONNECT.value and not field.data:
            raise ValidationError(_l("Give the details the organizers need to pay your group."))

    def validate_stripe_account_id(self, field: StringField) -> None:
        """An account id as Stripe writes it; Connect payouts need one."""
        if field.data and not is_stripe_account_id(field.data):
            raise ValidationError(
                _l("Enter the account id as Stripe shows it, like acct_1A2b3C4d.")
            )
        if self.funds_method.data == FundsMethod.STRIPE_CONNECT.value and not field.data:
            raise ValidationError(_l("Stripe Connect payouts need your account id (acct_...)."))
