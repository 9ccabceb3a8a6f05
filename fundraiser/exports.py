"""CSV exports of a fast day: its gifts and each group's allocation.

Exports are generators of CSV text, read from the database in keyset-paginated batches, so
a day with a million gifts streams out without ever sitting in memory.

What goes out is a decision: the gifts export carries no e-mail addresses (a file of donor
e-mails for a cause like this one is a target, and organizers never need one to reconcile
money), and a donor's name only when they chose to give one.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import func, select

from . import ledger
from .extensions import db
from .models import AidGroup, EntryKind, FastDay, LedgerEntry, Pledge, PledgeStatus
from .money import format_plain

BATCH_SIZE = 1000

# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection);
# tab and carriage return are on OWASP's list too, because some programs strip them first.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# The gifts that went through; a fully refunded one is kept, with its refund beside it.
EXPORTED_STATUSES = (PledgeStatus.SUCCEEDED, PledgeStatus.REFUNDED)

GIFT_HEADER = (
    "gift_id",
    "time_utc",
    "status",
    "amount",
    "amount_minor",
    "refunded",
    "refunded_minor",
    "currency",
    "group",
    "donor_name",
    "dedication",
)

ALLOCATION_HEADER = (
    "group_id",
    "group_slug",
    "group_name",
    "designated",
    "designated_minor",
    "pool_share",
    "pool_share_minor",
    "allocated",
    "allocated_minor",
    "currency",
)

# A byte-order mark, so spreadsheet programs read names in Arabic and other scripts as UTF-8.
BOM = "\ufeff"


def safe_cell(value: str | None) -> str:
    """Text as a CSV cell that no spreadsheet will run as a formula."""
    text = value or ""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _csv_text(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def filename(day: FastDay, what: str) -> str:
    """A safe download name such as ``ramadan-2026-gifts.csv``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", day.slug).strip("-") or f"fast-day-{day.id}"
    return f"{slug}-{what}.csv"


def _refunded_subquery():
    """Each pledge's confirmed refunds, a positive number, from the ledger."""
    return (
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0))
        .where(
            LedgerEntry.pledge_id == Pledge.id,
            LedgerEntry.kind == EntryKind.REFUND,
            LedgerEntry.currency == Pledge.currency,
        )
        .scalar_subquery()
    )


def gift_batches(day_id: int, batch_size: int = BATCH_SIZE) -> Iterator[list[tuple]]:
    """A day's exported gifts in batches, ordered by id, each batch one keyset query."""
    refunded = _refunded_subquery()
    last_id = 0
    while True:
        batch = db.session.execute(
            select(
                Pledge.id,
                Pledge.succeeded_at,
                Pledge.status,
                Pledge.amount_minor,
                refunded,
                Pledge.currency,
                AidGroup.name,
                Pledge.donor_name,
                Pledge.dedication,
            )
            .outerjoin(AidGroup, AidGroup.id == Pledge.aid_group_id)
            .where(
                Pledge.fast_day_id == day_id,
                Pledge.status.in_(EXPORTED_STATUSES),
                Pledge.id > last_id,
            )
            .order_by(Pledge.id)
            .limit(batch_size)
        ).all()
        if not batch:
            return
        yield [tuple(row) for row in batch]
        last_id = batch[-1][0]
        if len(batch) < batch_size:
            return


def gift_lines(day_id: int, batch_size: int = BATCH_SIZE) -> Iterator[str]:
    """The gifts export as CSV text: a header, then one chunk per batch.

    It takes an id, not a FastDay: a streamed body runs after the view's session has
    closed, so it reads everything it needs in its own.
    """
    yield BOM + _csv_text([GIFT_HEADER])
    for batch in gift_batches(day_id, batch_size):
        rows = []
        for gift_id, at, status, amount, refunded, currency, group, name, dedication in batch:
            refunded = -int(refunded or 0)
            rows.append(
                (
                    gift_id,
                    at.replace(microsecond=0).isoformat() if at else "",
                    str(status),
                    format_plain(amount, currency),
                    amount,
                    format_plain(refunded, currency),
                    refunded,
                    currency,
                    safe_cell(group) if group else "all",
                    safe_cell(name),
                    safe_cell(dedication),
                )
            )
        yield _csv_text(rows)


def allocation_lines(day_id: int) -> Iterator[str]:
    """Each group's allocation for the day as CSV text: one row per group per currency.

    The day's own currency comes first; a currency's rows stand alone and are never added to
    another's (a spreadsheet summing the column must filter on ``currency`` first).
    """
    day = db.session.get(FastDay, day_id)
    if day is None:
        return
    yield BOM + _csv_text([ALLOCATION_HEADER])
    rows = [
        (
            a.aid_group_id,
            safe_cell(a.slug),
            safe_cell(a.name),
            format_plain(a.designated_minor, a.currency),
            a.designated_minor,
            format_plain(a.pool_share_minor, a.currency),
            a.pool_share_minor,
            format_plain(a.allocated_minor, a.currency),
            a.allocated_minor,
            a.currency,
        )
        for part in ledger.day_ledger(day)
        for a in part.allocations
    ]
    yield _csv_text(rows)
