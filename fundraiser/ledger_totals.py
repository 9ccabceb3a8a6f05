"""Running totals of the ledger, kept in the transaction that adds the rows they sum.

The totals API, the home page, a partner's dashboard and the split all read a day's sums by
group, split version and kind, and its count of distinct donors. Summing the ledger for each
request costs more with every gift; these tables make it cost the same at a million.

They are kept by a flush hook, not by the functions that write the ledger: every row added
through the ORM (a webhook, a disbursement, the demo, a test) moves its total, in the same
flush and so the same transaction, and a rolled-back gift rolls its total back with it.
Core bulk inserts (``bench-data``) bypass the hook and call :func:`rebuild` afterwards.
``flask ledger check`` compares the totals with the rows (see ``ledger_checks``).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Any

from sqlalchemy import delete, event, func, insert, literal_column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, attributes

from .extensions import db
from .models import (
    DONORS,
    TOTAL_SLOTS,
    DayDonor,
    LedgerEntry,
    LedgerTotal,
    Pledge,
    PledgeStatus,
)

# (fast day, currency, group or 0, split version or 0, kind, slot)
TotalKey = tuple[int, str, int, int, str, int]
# (fast day, currency, donor digest)
DonorKey = tuple[int, str, str]

TOTAL_KEY_COLUMNS = (
    "fast_day_id",
    "currency",
    "aid_group_key",
    "split_version_key",
    "kind",
    "slot",
)
DONOR_KEY_COLUMNS = ("fast_day_id", "currency", "donor_digest")


def donor_digest(email: str) -> str:
    """The key a donor is counted under: a digest of the address, never the address."""
    return hashlib.sha256(email.encode()).hexdigest()


def _transaction_slot(session: Session) -> int:
    """The slot this transaction adds to: one for all its rows, drawn when it first writes.

    Two transactions that add to different slots never wait for each other's total rows,
    and one that keeps to a single slot cannot take two of another's rows in the opposite
    order, however many gifts it applies: so concurrent writers rarely wait and never
    deadlock over these rows unless they drew the same slot.
    """
    root = session.get_transaction()
    drawn = session.info.get("ledger_total_slot")
    if drawn is None or drawn[0] is not root:
        drawn = (root, _free_slot(session))
        session.info["ledger_total_slot"] = drawn
    return drawn[1]


def _free_slot(session: Session) -> int:
    """A slot no other transaction is adding to right now, if there is one (PostgreSQL).

    Each slot has a transaction-scoped advisory lock, tried without waiting in a random
    order; the first one free is this transaction's until it ends. Elsewhere (SQLite has
    one writer at a time anyway), or with every slot taken, a random slot: then the
    transaction may wait for another's rows, which is slower, never wrong.
    """
    slots = random.sample(range(TOTAL_SLOTS), TOTAL_SLOTS)
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        for slot in slots:
            if connection.execute(_TRY_SLOT, {"slot": slot}).scalar():
                return slot
    return slots[0]


# The advisory lock of a running-total slot: (a fixed key for this table, the slot).
_TRY_SLOT = text("SELECT pg_try_advisory_xact_lock(7411, :slot)")


def _entry_key(entry: LedgerEntry, slot: int) -> TotalKey:
    return (
        entry.fast_day_id,
        entry.currency,
        entry.aid_group_id or 0,
        entry.split_version or 0,
        str(entry.kind),
        slot,
    )


# What a pledge is counted under: changing any of these moves its donor from one count to another.
DONOR_FIELDS = ("fast_day_id", "currency", "email", "status")


def _before(pledge: Pledge, field: str) -> Any:
    """A pledge's field as the database held it before this flush."""
    history = attributes.get_history(pledge, field)
    if history.deleted:
        return history.deleted[0]
    return history.unchanged[0] if history.unchanged else getattr(pledge, field)


def _donor_key(day_id: int, currency: str, email: str) -> DonorKey:
    return (day_id, currency, donor_digest(email))


def _donor_changes(session: Session) -> dict[DonorKey, int]:
    """+1 per pledge that became a succeeded gift in this flush, −1 per one that stopped being.

    A succeeded pledge whose day, currency or address changes leaves one count for another.
    """
    changes: dict[DonorKey, int] = defaultdict(int)
    succeeded = PledgeStatus.SUCCEEDED
    for pledge in session.new:
        if isinstance(pledge, Pledge) and pledge.status == succeeded:
            changes[_donor_key(pledge.fast_day_id, pledge.currency, pledge.email)] += 1
    for pledge in session.dirty:
        if not isinstance(pledge, Pledge) or not any(
            attributes.get_history(pledge, field).added for field in DONOR_FIELDS
        ):
            continue
        if _before(pledge, "status") == succeeded:
            was = [_before(pledge, field) for field in DONOR_FIELDS[:3]]
            changes[_donor_key(*was)] -= 1
        if pledge.status == succeeded:
            changes[_donor_key(pledge.fast_day_id, pledge.currency, pledge.email)] += 1
    for pledge in session.deleted:
        if isinstance(pledge, Pledge) and _before(pledge, "status") == succeeded:
            was = [_before(pledge, field) for field in DONOR_FIELDS[:3]]
            changes[_donor_key(*was)] -= 1
    return {key: delta for key, delta in changes.items() if delta}


@lru_cache(maxsize=4)
def _upserts(dialect_name: str) -> tuple[Any, Any]:
    """The two statements the hook runs, built once per database kind.

    Moving a total: insert its row, or add to it. Counting a donor: the same on their row,
    returning their gifts after the change.
    """
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    totals, donors = LedgerTotal.__table__, DayDonor.__table__
    add_total = dialect.insert(totals)
    add_total = add_total.on_conflict_do_update(
        index_elements=TOTAL_KEY_COLUMNS,
        set_={
            "total": totals.c.total + add_total.excluded.total,
            "entries": totals.c.entries + add_total.excluded.entries,
        },
    )
    count_donor = dialect.insert(donors)
    count_donor = count_donor.on_conflict_do_update(
        index_elements=DONOR_KEY_COLUMNS,
        set_={"gifts": donors.c.gifts + count_donor.excluded.gifts},
    ).returning(donors.c.gifts)
    return add_total, count_donor


def _count_donor(connection: Connection, key: DonorKey, delta: int) -> int:
    """Move a donor's gift count; return how the day's donor count changes (−1, 0 or +1)."""
    _add_total, count_donor = _upserts(connection.dialect.name)
    after = connection.execute(
        count_donor, dict(zip(DONOR_KEY_COLUMNS, key, strict=True), gifts=delta)
    ).scalar_one()
    before = after - delta
    if before <= 0 < after:
        return 1
    return -1 if after <= 0 < before else 0


@event.listens_for(Session, "after_flush")
def _keep_totals(session: Session, _context: Any) -> None:
    """Move the running totals by what this flush added to the ledger and the pledges."""
    added = [e for e in session.new if isinstance(e, LedgerEntry)]
    # The ledger is append-only; only a test or a repair deletes.
    removed = [e for e in session.deleted if isinstance(e, LedgerEntry)]
    donors = _donor_changes(session)
    if not (added or removed or donors):
        return
    slot = _transaction_slot(session)
    sums: dict[TotalKey, list[int]] = defaultdict(lambda: [0, 0])
    for sign, entries in ((1, added), (-1, removed)):
        for entry in entries:
            moved = sums[_entry_key(entry, slot)]
            moved[0] += sign * entry.amount_minor
            moved[1] += sign
    connection = session.connection()
    # Donors first (each their own row), then every total in one statement, in key order.
    for key in sorted(donors):
        change = _count_donor(connection, key, donors[key])
        if change:
            day_id, currency, _digest = key
            moved = sums[(day_id, currency, 0, 0, DONORS, slot)]
            moved[0] += change
            moved[1] += change
    add_total, _count_donor_statement = _upserts(connection.dialect.name)
    moves = [
        dict(zip(TOTAL_KEY_COLUMNS, key, strict=True), total=total, entries=entries)
        for key, (total, entries) in sorted(sums.items())
        if total or entries
    ]
    if moves:
        connection.execute(add_total, moves)


def rebuild(fast_day_ids: list[int] | None = None) -> None:
    """Recompute the running totals of some days (all by default) from the rows themselves.

    For data loaded around the ORM (``bench-data``'s bulk inserts) and for repairs. It runs
    in the caller's transaction; nothing else should be writing those days meanwhile.
    """
    only = (lambda column: column.in_(fast_day_ids)) if fast_day_ids is not None else None
    for model in (LedgerTotal, DayDonor):
        query = delete(model)
        if only is not None:
            query = query.where(only(model.fast_day_id))
        db.session.execute(query)

    zero = literal_column("0")  # not a bound parameter: PostgreSQL must see one expression
    key = (
        LedgerEntry.fast_day_id,
        LedgerEntry.currency,
        func.coalesce(LedgerEntry.aid_group_id, zero),
        func.coalesce(LedgerEntry.split_version, zero),
        LedgerEntry.kind,
    )
    sums = select(*key, zero, func.sum(LedgerEntry.amount_minor), func.count()).group_by(*key)
    if only is not None:
        sums = sums.where(only(LedgerEntry.fast_day_id))
    db.session.execute(
        insert(LedgerTotal).from_select([*TOTAL_KEY_COLUMNS, "total", "entries"], sums)
    )

    gifts: Counter[DonorKey] = Counter()
    succeeded = select(Pledge.fast_day_id, Pledge.currency, Pledge.email).where(
        Pledge.status == PledgeStatus.SUCCEEDED
    )
    if only is not None:
        succeeded = succeeded.where(only(Pledge.fast_day_id))
    for day_id, currency, email in db.session.execute(
        succeeded.execution_options(yield_per=20_000)
    ):
        gifts[(day_id, currency, donor_digest(email))] += 1
    if gifts:
        db.session.execute(
            insert(DayDonor),
            [
                dict(zip(DONOR_KEY_COLUMNS, key, strict=True), gifts=count)
                for key, count in gifts.items()
            ],
        )
    donors: Counter[tuple[int, str]] = Counter(key[:2] for key in gifts)
    if donors:
        db.session.execute(
            insert(LedgerTotal),
            [
                dict(
                    zip(TOTAL_KEY_COLUMNS, (day_id, currency, 0, 0, DONORS, 0), strict=True),
                    total=count,
                    entries=count,
                )
                for (day_id, currency), count in donors.items()
            ],
        )
    db.session.flush()
