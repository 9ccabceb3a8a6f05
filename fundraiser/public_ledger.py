"""A fast day's public ledger: what came in and went out, per currency, and nothing about donors.

The page is meant to be read by anyone, aid groups and donors alike, so what it holds is a
decision: sums only (no list of gifts, no names, no e-mail addresses), the split versions
without who changed them, and payments out without bank details or references. A donor
count below :data:`DONOR_COUNT_FLOOR` is not shown, so a currency or a day that only a few
people gave in does not point at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select

from . import fast_days, ledger
from .extensions import db
from .ledger import CurrencyLedger
from .models import AidGroup, Disbursement, DisbursementStatus, FastDay

DONOR_COUNT_FLOOR = 10


@dataclass(frozen=True)
class PublicCurrency:
    """One currency's part of the public ledger."""

    ledger: CurrencyLedger
    donors: int | None  # None: fewer than DONOR_COUNT_FLOOR (but more than none)

    @property
    def currency(self) -> str:
        """The currency every figure here is in."""
        return self.ledger.currency

    @property
    def has_donors(self) -> bool:
        """Whether anyone has given in this currency (without saying how many)."""
        return self.ledger.totals.donors > 0


@dataclass(frozen=True)
class PublicSplitRow:
    """One group's weight in one version of the split."""

    name: str
    weight: int


@dataclass(frozen=True)
class PublicSplit:
    """One version of the day's split, without who set it."""

    number: int
    rows: list[PublicSplitRow]
    reason: str
    since: datetime | None
    is_current: bool

    @property
    def total_weight(self) -> int:
        """The sum of the weights, to read each group's share of the pool."""
        return sum(row.weight for row in self.rows)


@dataclass(frozen=True)
class PaidOut:
    """One confirmed payment to a group (no reference, account or note)."""

    group_name: str
    paid_on: date
    method: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class PublicLedger:
    """Everything the public ledger page shows for one fast day."""

    day: FastDay
    currencies: list[PublicCurrency]
    splits: list[PublicSplit]
    paid_out: list[PaidOut]


def shown_donors(count: int) -> int | None:
    """The donor count as the public may see it: None below the floor, except zero."""
    return count if count == 0 or count >= DONOR_COUNT_FLOOR else None


def paid_out(day: FastDay) -> list[PaidOut]:
    """The day's confirmed disbursements, oldest first."""
    rows = db.session.execute(
        select(
            AidGroup.name,
            Disbursement.paid_on,
            Disbursement.method,
            Disbursement.amount_minor,
            Disbursement.currency,
        )
        .join(AidGroup, AidGroup.id == Disbursement.aid_group_id)
        .where(
            Disbursement.fast_day_id == day.id,
            Disbursement.status == DisbursementStatus.CONFIRMED,
        )
        .order_by(Disbursement.paid_on, Disbursement.id)
    ).all()
    return [
        PaidOut(
            group_name=name,
            paid_on=paid_on,
            method=str(method),
            amount_minor=amount,
            currency=currency,
        )
        for name, paid_on, method, amount, currency in rows
    ]


def public_splits(day: FastDay) -> list[PublicSplit]:
    """Every version of the day's split, newest first, with its reason but not its author."""
    return [
        PublicSplit(
            number=entry.number,
            rows=[PublicSplitRow(row.aid_group.name, row.weight) for row in entry.rows],
            reason=entry.reason,
            since=entry.changed_at if entry.number > 1 else None,
            is_current=entry.is_current,
        )
        for entry in fast_days.split_history(day)
    ]


def for_day(day: FastDay) -> PublicLedger:
    """The public ledger of a fast day, one section per currency, its own currency first."""
    return PublicLedger(
        day=day,
        currencies=[
            PublicCurrency(ledger=part, donors=shown_donors(part.totals.donors))
            for part in ledger.day_ledger(day)
        ],
        splits=public_splits(day),
        paid_out=paid_out(day),
    )
