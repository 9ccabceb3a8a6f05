"""Reconciliation: the ledger against Stripe's balance transactions for a time range.

Every balance transaction that moves a gift, a refund, a failed refund, a dispute, a won
dispute or a Connect transfer must have its ledger row, with the same amount and currency,
and every ledger row from Stripe recorded in the range must have its transaction. Stripe's
fee on a transaction must be its FEE row. Whatever differs is listed.

Keys: GIFT by charge id, REFUND and REFUND_REVERSAL by refund id, DISPUTE and
DISPUTE_REVERSAL by dispute id, DISBURSEMENT by transfer id, FEE by the balance
transaction's own id (these are the ids the ledger books, see ``ledger.py``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from .extensions import db
from .models import EntryKind, LedgerEntry
from .payments import stripe_gateway as gateway

# A row is recorded after its transaction, by a webhook Stripe retries for up to three
# days: transactions are read from this much before the range, so such a row still finds its
# own. A row recorded later than that is reported missing at Stripe (widen --from to check).
LOOKBACK = timedelta(days=4)

# reporting_category (or, failing it, type) → the kind of row the transaction's source books.
KIND_BY_CATEGORY: dict[str, EntryKind] = {
    "charge": EntryKind.GIFT,
    "payment": EntryKind.GIFT,
    "refund": EntryKind.REFUND,
    "payment_refund": EntryKind.REFUND,
    "refund_failure": EntryKind.REFUND_REVERSAL,
    "dispute": EntryKind.DISPUTE,
    "dispute_reversal": EntryKind.DISPUTE_REVERSAL,
    "transfer": EntryKind.DISBURSEMENT,
}
# Money that left or came back in ways the ledger has no row kind for: always a difference.
UNBOOKABLE_CATEGORIES = frozenset({"transfer_reversal", "partial_capture_reversal"})

Key = tuple[EntryKind, str]


@dataclass(frozen=True)
class Difference:
    """One thing Stripe and the ledger disagree on."""

    code: str  # missing_in_ledger, missing_at_stripe, amount, currency, not_bookable
    kind: str
    stripe_object_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.kind} {self.stripe_object_id}: {self.message}"


@dataclass
class Report:
    """What reconciling a range found."""

    start: datetime
    end: datetime
    transactions: int = 0  # Stripe's, in the range, that the ledger books
    ignored: int = 0  # Stripe's, in the range, that the ledger does not book (payouts …)
    entries: int = 0  # ledger rows from Stripe recorded in the range
    differences: list[Difference] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when Stripe and the ledger agree on everything in the range."""
        return not self.differences


@dataclass
class _Side:
    """One side's money per key: amount and currency, and whether it falls in the range."""

    amounts: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    currencies: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    in_range: set[Key] = field(default_factory=set)

    def add(self, key: Key, amount: int, currency: str, in_range: bool) -> None:
        self.amounts[key] += amount
        self.currencies[key].add(currency.upper())
        if in_range:
            self.in_range.add(key)


def _source(transaction: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """The source's id, and the source itself when Stripe expanded it."""
    source = transaction.get("source")
    if isinstance(source, dict):
        return source.get("id"), source
    return source, None


def _category(transaction: dict[str, Any]) -> str:
    return str(transaction.get("reporting_category") or transaction.get("type") or "")


def _booked(kind: EntryKind, transaction: dict[str, Any]) -> tuple[int, str]:
    """The amount and currency the ledger books for a transaction: its source's own.

    The transaction is in our settlement currency; the gift, refund or dispute is in the
    donor's, and that is what the ledger holds. Unexpanded, the transaction's figures stand.
    """
    _id, source = _source(transaction)
    if source is None or "amount" not in source or "currency" not in source:
        return int(transaction["amount"]), str(transaction["currency"])
    amount = int(source["amount"])
    negative = kind in (EntryKind.REFUND, EntryKind.DISPUTE, EntryKind.DISBURSEMENT)
    return (-amount if negative else amount), str(source["currency"])


def _stripe_side(
    transactions: list[dict[str, Any]], start: int, report: Report
) -> tuple[_Side, list[Difference]]:
    side, unbookable = _Side(), []
    for transaction in transactions:
        in_range = int(transaction["created"]) >= start
        category = _category(transaction)
        kind = KIND_BY_CATEGORY.get(category)
        source_id, _source_obj = _source(transaction)
        if kind is None or not source_id:
            if in_range and category in UNBOOKABLE_CATEGORIES:
                unbookable.append(
                    Difference(
                        "not_bookable",
                        category,
                        str(source_id or transaction["id"]),
                        f"Stripe moved {transaction['amount']} {transaction['currency'].upper()}"
                        f" ({transaction['id']}); the ledger has no row for a {category}",
                    )
                )
            elif in_range:
                report.ignored += 1
            continue
        if in_range:
            report.transactions += 1
        amount, currency = _booked(kind, transaction)
        side.add((kind, source_id), amount, currency, in_range)
        fee = int(transaction.get("fee") or 0)
        if fee:
            # What Stripe kept is a negative FEE row; a fee it returned, a positive one.
            side.add((EntryKind.FEE, transaction["id"]), -fee, transaction["currency"], in_range)
    return side, unbookable


def _ledger_side(since: datetime, start: datetime, end: datetime, report: Report) -> _Side:
    side = _Side()
    rows = db.session.execute(
        select(
            LedgerEntry.kind,
            LedgerEntry.stripe_object_id,
            LedgerEntry.amount_minor,
            LedgerEntry.currency,
            LedgerEntry.created_at,
        ).where(LedgerEntry.stripe_object_id.is_not(None), LedgerEntry.created_at >= since)
    ).all()
    for kind, object_id, amount, currency, created_at in rows:
        in_range = start <= created_at < end
        report.entries += in_range
        side.add((kind, object_id), amount, currency, in_range)  # a str equals its EntryKind
    return side


def _compare(stripe: _Side, ours: _Side) -> list[Difference]:
    differences = []
    for key in sorted(stripe.in_range | ours.in_range):
        kind, object_id = key
        if key not in ours.amounts:
            differences.append(
                Difference(
                    "missing_in_ledger",
                    kind,
                    object_id,
                    f"Stripe has {stripe.amounts[key]} {_one(stripe.currencies[key])}; "
                    "the ledger has no row",
                )
            )
        elif key not in stripe.amounts:
            differences.append(
                Difference(
                    "missing_at_stripe",
                    kind,
                    object_id,
                    f"the ledger has {ours.amounts[key]} {_one(ours.currencies[key])}; Stripe "
                    "has no balance transaction for it in the range",
                )
            )
        elif stripe.currencies[key] != ours.currencies[key]:
            differences.append(
                Difference(
                    "currency",
                    kind,
                    object_id,
                    f"Stripe has {stripe.amounts[key]} {_one(stripe.currencies[key])}; the "
                    f"ledger has {ours.amounts[key]} {_one(ours.currencies[key])}",
                )
            )
        elif stripe.amounts[key] != ours.amounts[key]:
            differences.append(
                Difference(
                    "amount",
                    kind,
                    object_id,
                    f"Stripe has {stripe.amounts[key]}, the ledger {ours.amounts[key]} "
                    f"{_one(ours.currencies[key])}",
                )
            )
    return differences


def _one(currencies: set[str]) -> str:
    return "+".join(sorted(currencies))


def reconcile(start: datetime, end: datetime) -> Report:
    """Compare Stripe's balance transactions in [start, end) (UTC) with the ledger."""
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError("the range must end after it starts")
    since = start - LOOKBACK
    transactions = gateway.list_balance_transactions(int(since.timestamp()), int(end.timestamp()))
    return compare(transactions, start, end)


def compare(transactions: list[dict[str, Any]], start: datetime, end: datetime) -> Report:
    """Compare balance transactions (read from ``LOOKBACK`` before ``start``) with the ledger."""
    start, end = _utc(start), _utc(end)
    since = start - LOOKBACK
    report = Report(start=start, end=end)
    stripe, unbookable = _stripe_side(transactions, int(start.timestamp()), report)
    ours = _ledger_side(since, start, end, report)
    report.differences = [*unbookable, *_compare(stripe, ours)]
    return report


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
