"""A group's own money across fast days: the partner portal's figures and the CSV statement.

Every figure comes from :func:`ledger.currency_ledger`, so the portal, the public ledger and
the organizers' dashboard can never disagree about a split. Each currency stands alone: a
day's figures are per currency, and totals add days up only within one currency.

What a partner may see is a decision: its own designated gifts, refunds, disputes and fees
row by row (with their date and amount, never a donor's name, e-mail, pledge or Stripe id),
its share of the pool per day, and what it was paid.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select, tuple_, union

from . import ledger
from .exports import BOM, safe_cell
from .extensions import db
from .fast_days import PUBLIC_STATUSES
from .ledger import GroupAllocation
from .models import (
    AidGroup,
    Disbursement,
    DisbursementStatus,
    EntryKind,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    LedgerTotal,
)
from .money import format_plain

BATCH_SIZE = 1000

# Disbursements a partner sees: those that left us, and Connect transfers on their way.
# A failed one never moved money, so it is left out rather than shown as a worry.
VISIBLE_DISBURSEMENTS = (DisbursementStatus.CONFIRMED, DisbursementStatus.PENDING)


@dataclass(frozen=True)
class DayFigures:
    """One fast day's figures for one group in one currency."""

    fast_day: FastDay
    allocation: GroupAllocation

    @property
    def currency(self) -> str:
        """The currency every figure of this row is in."""
        return self.allocation.currency

    @property
    def gifts_minor(self) -> int:
        """Gross gifts designated to the group."""
        return self.allocation.designated.gifts_minor

    @property
    def taken_back_minor(self) -> int:
        """Refunds and disputes on the group's designated gifts."""
        return self.allocation.designated.taken_back_minor

    @property
    def fees_minor(self) -> int:
        """Stripe's fees on the group's designated gifts."""
        return self.allocation.designated.fees_minor

    @property
    def pool_share_minor(self) -> int:
        """The group's share of the pool, already net of the pool's refunds, disputes, fees."""
        return self.allocation.pool_share_minor

    @property
    def allocated_minor(self) -> int:
        """Designated gifts (net) plus the pool share."""
        return self.allocation.allocated_minor

    @property
    def disbursed_minor(self) -> int:
        """Paid to the group from this day's money."""
        return self.allocation.disbursed_minor

    @property
    def balance_minor(self) -> int:
        """Still owed; negative when more went out than is allocated now."""
        return self.allocation.balance_minor


@dataclass(frozen=True)
class GroupFigures:
    """Everything the partner portal shows: per day, per currency totals, disbursements."""

    days: list[DayFigures]
    totals: list[GroupAllocation]  # one per currency, every day of that currency added up
    disbursements: list[Disbursement]

    @property
    def has_negative_balance(self) -> bool:
        """True when some day or currency owes the group less than nothing."""
        return any(t.balance_minor < 0 for t in self.totals) or any(
            d.balance_minor < 0 for d in self.days
        )


def add_allocations(a: GroupAllocation, b: GroupAllocation) -> GroupAllocation:
    """Two allocations of the same group in the same currency, added; other currencies raise."""
    if a.currency != b.currency:
        raise ValueError(f"cannot add {a.currency} to {b.currency}")
    if a.aid_group_id != b.aid_group_id:
        raise ValueError("cannot add two groups' allocations")
    return replace(
        a,
        designated=a.designated + b.designated,
        pool_share_minor=a.pool_share_minor + b.pool_share_minor,
        disbursed_minor=a.disbursed_minor + b.disbursed_minor,
    )


def _is_empty(allocation: GroupAllocation) -> bool:
    flows = allocation.designated
    return not (
        flows.gifts_minor
        or flows.taken_back_minor
        or flows.fees_minor
        or allocation.pool_share_minor
        or allocation.disbursed_minor
    )


def _days_for_group(group_id: int) -> list[FastDay]:
    """Public fast days that fund the group (any split version) or hold money for it."""
    in_split = select(FastDayGroup.fast_day_id).where(FastDayGroup.aid_group_id == group_id)
    with_money = select(LedgerTotal.fast_day_id).where(
        LedgerTotal.aid_group_key == group_id, LedgerTotal.entries > 0
    )
    day_ids = union(in_split, with_money).subquery()
    return list(
        db.session.scalars(
            select(FastDay)
            .where(FastDay.id.in_(select(day_ids.c[0])), FastDay.status.in_(PUBLIC_STATUSES))
            .order_by(FastDay.local_date.desc(), FastDay.id.desc())
        )
    )


def day_figures(group: AidGroup, days: Iterable[FastDay] | None = None) -> list[DayFigures]:
    """The group's figures per public fast day and currency, newest day first.

    A live or closed day's own currency is listed for a day that funds the group even at
    zero, so a partner sees the day; another currency, or a day still to come, only once it
    holds money for the group.
    """
    rows = []
    for day in _days_for_group(group.id) if days is None else days:
        for currency in ledger.currencies(day):
            mine = next(
                (
                    a
                    for a in ledger.currency_ledger(day, currency).allocations
                    if a.aid_group_id == group.id
                ),
                None,
            )
            if mine is None or (
                _is_empty(mine)
                and (currency != day.currency or day.status == FastDayStatus.SCHEDULED)
            ):
                continue
            rows.append(DayFigures(day, mine))
    return rows


def totals_by_currency(days: Iterable[DayFigures]) -> list[GroupAllocation]:
    """Each currency's days added up, in the order the currencies first appear."""
    totals: dict[str, GroupAllocation] = {}
    for row in days:
        seen = totals.get(row.currency)
        totals[row.currency] = (
            row.allocation if seen is None else add_allocations(seen, row.allocation)
        )
    return list(totals.values())


def disbursements_for_group(group: AidGroup) -> list[Disbursement]:
    """Payments to the group from public fast days (confirmed, or on their way), newest first."""
    return list(
        db.session.scalars(
            select(Disbursement)
            .join(FastDay, FastDay.id == Disbursement.fast_day_id)
            .where(
                Disbursement.aid_group_id == group.id,
                Disbursement.status.in_(VISIBLE_DISBURSEMENTS),
                FastDay.status.in_(PUBLIC_STATUSES),
            )
            .order_by(Disbursement.paid_on.desc(), Disbursement.id.desc())
        )
    )


def group_figures(group: AidGroup) -> GroupFigures:
    """The partner portal's figures for one group: per day, totals per currency, payments."""
    days = day_figures(group)
    return GroupFigures(
        days=days, totals=totals_by_currency(days), disbursements=disbursements_for_group(group)
    )


# --- The CSV statement ----------------------------------------------------------------------

STATEMENT_HEADER = (
    "date",
    "kind",
    "fast_day",
    "fast_day_date",
    "amount",
    "amount_minor",
    "currency",
    "method",
    "reference",
)

# Rows that share a date: the day's share of the pool, then gifts and what came off them
# (in the order the ledger recorded them), then payments out.
_SOURCE_ORDER = {"pool_share": 0, EntryKind.DISBURSEMENT: 2}


@dataclass(frozen=True)
class StatementRow:
    """One movement on a group's statement; amounts are signed as they move its balance."""

    on: date
    kind: str
    fast_day_id: int
    amount_minor: int
    currency: str
    method: str = ""
    reference: str = ""

    @property
    def sort_key(self) -> tuple[date, int]:
        """Chronological; within a day, pool share, then designated rows, then payments."""
        return (self.on, _SOURCE_ORDER.get(self.kind, 1))


def _bounds(start: date | None, end: date | None) -> tuple[datetime | None, datetime | None]:
    """UTC instants from the start of ``start`` to the end of ``end`` (None: open)."""
    since = datetime.combine(start, time.min, UTC) if start else None
    until = datetime.combine(end + timedelta(days=1), time.min, UTC) if end else None
    return since, until


def _in_range(on: date, start: date | None, end: date | None) -> bool:
    return (start is None or on >= start) and (end is None or on <= end)


def _designated_rows(
    group_id: int,
    day_ids: Sequence[int],
    start: date | None,
    end: date | None,
    batch_size: int,
) -> Iterator[StatementRow]:
    """The group's designated ledger rows in the range, oldest first, in keyset batches.

    Dated by when the ledger recorded them (UTC). Only kind, amount and currency are read:
    the pledge and Stripe ids stay in the database.
    """
    since, until = _bounds(start, end)
    conditions = [
        LedgerEntry.aid_group_id == group_id,
        LedgerEntry.kind != EntryKind.DISBURSEMENT,
        LedgerEntry.fast_day_id.in_(day_ids),
    ]
    if since is not None:
        conditions.append(LedgerEntry.created_at >= since)
    if until is not None:
        conditions.append(LedgerEntry.created_at < until)
    last: tuple[datetime, int] | None = None
    while True:
        query = select(
            LedgerEntry.created_at,
            LedgerEntry.id,
            LedgerEntry.kind,
            LedgerEntry.fast_day_id,
            LedgerEntry.amount_minor,
            LedgerEntry.currency,
        ).where(*conditions)
        if last is not None:
            query = query.where(tuple_(LedgerEntry.created_at, LedgerEntry.id) > last)
        batch = db.session.execute(
            query.order_by(LedgerEntry.created_at, LedgerEntry.id).limit(batch_size)
        ).all()
        for at, _id, kind, day_id, amount, currency in batch:
            yield StatementRow(at.date(), str(kind), day_id, int(amount), currency)
        if len(batch) < batch_size:
            return
        last = (batch[-1][0], batch[-1][1])


def _pool_share_rows(
    group: AidGroup, days: list[FastDay], start: date | None, end: date | None
) -> list[StatementRow]:
    """The group's pool share per day and currency, dated on the fast day, as it stands now."""
    in_range = [day for day in days if _in_range(day.local_date, start, end)]
    return sorted(
        (
            StatementRow(
                row.fast_day.local_date,
                "pool_share",
                row.fast_day.id,
                row.pool_share_minor,
                row.currency,
            )
            for row in day_figures(group, in_range)
            if row.pool_share_minor
        ),
        key=lambda r: r.sort_key,
    )


def _disbursement_rows(
    group_id: int, day_ids: Sequence[int], start: date | None, end: date | None
) -> list[StatementRow]:
    """Confirmed payments to the group, dated on the day they were paid."""
    conditions = [
        Disbursement.aid_group_id == group_id,
        Disbursement.status == DisbursementStatus.CONFIRMED,
        Disbursement.fast_day_id.in_(day_ids),
    ]
    if start is not None:
        conditions.append(Disbursement.paid_on >= start)
    if end is not None:
        conditions.append(Disbursement.paid_on <= end)
    payments = db.session.scalars(
        select(Disbursement).where(*conditions).order_by(Disbursement.paid_on, Disbursement.id)
    )
    return [
        StatementRow(
            p.paid_on,
            EntryKind.DISBURSEMENT.value,
            p.fast_day_id,
            -p.amount_minor,
            p.currency,
            method=str(p.method),
            reference=p.reference,
        )
        for p in payments
    ]


@dataclass
class _Running:
    """What the statement's rows add up to in one currency."""

    allocated_minor: int = 0
    disbursed_minor: int = 0

    def add(self, row: StatementRow) -> None:
        if row.kind == EntryKind.DISBURSEMENT:
            self.disbursed_minor -= row.amount_minor
        else:
            self.allocated_minor += row.amount_minor


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def statement_filename(group: AidGroup, start: date | None, end: date | None) -> str:
    """A download name such as ``sunbird-family-relief-statement-2026-01-01-2026-06-30.csv``."""
    span = "-".join(d.isoformat() for d in (start, end) if d) or "all"
    return f"{group.slug}-statement-{span}.csv"


def statement_lines(
    group_id: int,
    start: date | None = None,
    end: date | None = None,
    batch_size: int = BATCH_SIZE,
) -> Iterator[str]:
    """A group's statement for a date range as CSV text, streamed.

    One row per designated gift, refund, dispute and fee (dated when the ledger recorded
    it, UTC), one ``pool_share`` row per fast day and currency (dated on the fast day, at
    its amount today), one row per confirmed disbursement (dated when paid); then, per
    currency, what those rows add up to: ``total_allocated``, ``total_disbursed`` and
    ``balance``. Either bound may be None for an open range. It takes an id, not a group,
    because a streamed body runs after the view has returned.
    """
    group = db.session.get(AidGroup, group_id)
    if group is None:
        return
    days = _days_for_group(group_id)
    by_id = {day.id: day for day in days}
    day_ids = list(by_id)
    yield BOM + _csv_text([STATEMENT_HEADER])

    running: dict[str, _Running] = {}
    movements = heapq.merge(
        _designated_rows(group_id, day_ids, start, end, batch_size),
        _pool_share_rows(group, days, start, end),
        _disbursement_rows(group_id, day_ids, start, end),
        key=lambda r: r.sort_key,
    )
    chunk: list[Sequence[object]] = []
    for row in movements:
        running.setdefault(row.currency, _Running()).add(row)
        day = by_id[row.fast_day_id]
        chunk.append(
            (
                row.on.isoformat(),
                row.kind,
                safe_cell(day.shown_title),
                day.local_date.isoformat(),
                format_plain(row.amount_minor, row.currency),
                row.amount_minor,
                row.currency,
                row.method,
                safe_cell(row.reference),
            )
        )
        if len(chunk) >= batch_size:
            yield _csv_text(chunk)
            chunk = []

    for currency, sums in running.items():
        balance = sums.allocated_minor - sums.disbursed_minor
        for kind, amount in (
            ("total_allocated", sums.allocated_minor),
            ("total_disbursed", sums.disbursed_minor),
            ("balance", balance),
        ):
            chunk.append(
                ("", kind, "", "", format_plain(amount, currency), amount, currency, "", "")
            )
    if chunk:
        yield _csv_text(chunk)
