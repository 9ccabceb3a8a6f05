"""Disbursement forms: recording a payment made outside the app, and confirming a run."""

from __future__ import annotations

from datetime import date

from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, ValidationError

from ..disbursements import Proposal, RunChoice
from ..models import AidGroup, DisbursementMethod
from ..money import MoneyError, exponent, parse_amount

# What an organizer may record; Connect transfers are made by a run.
METHOD_LABELS = {
    DisbursementMethod.BANK_TRANSFER: _l("Bank transfer"),
    DisbursementMethod.STRIPE_CONNECT: _l("Stripe Connect transfer"),
    DisbursementMethod.OTHER: _l("Other"),
}


class RecordForm(FlaskForm):
    """A payment already made to a group: who, how much in which currency, when, how."""

    aid_group = SelectField(
        _l("Aid group"), coerce=int, validators=[InputRequired(_l("Choose the group paid."))]
    )
    currency = SelectField(_l("Currency"), validators=[InputRequired(_l("Choose a currency."))])
    amount = StringField(
        _l("Amount paid"),
        validators=[InputRequired(_l("Enter the amount paid.")), Length(max=40)],
    )
    paid_on = DateField(
        _l("Date paid"),
        default=date.today,
        validators=[InputRequired(_l("Enter the date the money was sent."))],
    )
    method = RadioField(
        _l("How it was paid"),
        choices=[
            SelectChoice(DisbursementMethod.BANK_TRANSFER.value, METHOD_LABELS["bank_transfer"]),
            SelectChoice(DisbursementMethod.OTHER.value, METHOD_LABELS["other"]),
        ],
        default=DisbursementMethod.BANK_TRANSFER.value,
        validators=[InputRequired(_l("Choose how it was paid."))],
    )
    reference = StringField(
        _l("Reference"),
        description=_l("The bank's transfer reference, so the group can match it."),
        validators=[Length(max=200, message=_l("Keep the reference under 200 characters."))],
    )
    note = TextAreaField(
        _l("Note (organizers only)"),
        validators=[Length(max=2000, message=_l("Keep the note under 2,000 characters."))],
    )
    exceeds_balance_ok = BooleanField(
        _l("I know this is more than the balance this day owes the group")
    )

    def __init__(self, groups: list[AidGroup], currencies: list[str], *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.aid_group.choices = [SelectChoice(g.id, g.name) for g in groups]
        self.currency.choices = [SelectChoice(c, c) for c in currencies]
        self.amount_minor: int | None = None
        code = currencies[0] if currencies else "USD"
        example = "1200" if exponent(code) == 0 else "1200.50"
        self.amount.description = _l(
            "In the currency chosen above, for example %(example)s.", example=example
        )

    def validate_amount(self, field: StringField) -> None:
        """An amount Stripe could pay in the chosen currency (three decimals end in 0)."""
        if self.currency.data not in {c.value for c in self.currency.choices}:
            return
        try:
            self.amount_minor = parse_amount(
                field.data or "", self.currency.data, get_locale() or "en"
            )
        except MoneyError as exc:
            raise ValidationError(str(exc)) from None


class RunRowForm(Form):
    """One proposed payment: pay it now or not, and the bank's reference for a bank row."""

    key = HiddenField()
    pay = BooleanField(_l("Pay"))
    reference = StringField(
        _l("Bank reference"),
        validators=[Length(max=200, message=_l("Keep the reference under 200 characters."))],
    )


class RunForm(FlaskForm):
    """The run's confirmation: the page's one-time nonce, what it showed, and each row's answer."""

    nonce = HiddenField(validators=[InputRequired(), Length(max=64)])
    seen = HiddenField(validators=[InputRequired(), Length(max=64)])
    rows = FieldList(FormField(RunRowForm))

    @classmethod
    def proposing(cls, proposals: list[Proposal], nonce: str, seen: str) -> RunForm:
        """A fresh form for the proposals; Connect rows are ticked, bank rows await a reference."""
        rows = [{"key": p.key, "pay": p.is_connect, "reference": ""} for p in proposals]
        return cls(formdata=None, data={"nonce": nonce, "seen": seen, "rows": rows})

    def row_for(self, key: str) -> RunRowForm | None:
        """The submitted row of one proposal."""
        for entry in self.rows:
            if entry.form.key.data == key:
                return entry.form
        return None

    def choices(self) -> dict[str, RunChoice]:
        """Each row's answer, by proposal key."""
        return {
            entry.form.key.data: RunChoice(
                pay=bool(entry.form.pay.data), reference=(entry.form.reference.data or "").strip()
            )
            for entry in self.rows
            if entry.form.key.data
        }
