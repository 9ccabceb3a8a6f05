"""The ledger's invariants (M5), checked over the whole database.

Each check is one query (the balances are one query plus the ledger's own figures per day
and currency) and reports what it finds as :class:`Violation`s: a stable code and a message
an organizer can act on. Messages name rows, pledges and disbursements by id, never donors.
``flask --app wsgi ledger check`` runs them; the test suite runs them after every test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, case, exists, func, literal, or_, select
from sqlalchemy.orm import aliased

from . import ledger
from .extensions import db
from .models import (
    DONORS,
    Disbursement,
    DisbursementStatus,
    EntryKind,
    FastDay,
    FastDayGroup,
    LedgerEntry,
    LedgerTotal,
    Pledge,
    PledgeStatus,
)
from .money import STRIPE_CURRENCIES


@dataclass(frozen=True)
class Violation:
    """One broken invariant: a stable ``code`` and a message that says which rows."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


POSITIVE_KINDS = (EntryKind.GIFT, EntryKind.REFUND_REVERSAL, EntryKind.DISPUTE_REVERSAL)
NEGATIVE_KINDS = (EntryKind.REFUND, EntryKind.DISPUTE, EntryKind.DISBURSEMENT)
TAKEN_BACK_KINDS = (
    EntryKind.REFUND,
    EntryKind.REFUND_REVERSAL,
    EntryKind.DISPUTE,
    EntryKind.DISPUTE_REVERSAL,
)
# A gift is only booked once Stripe says the money arrived; a full refund keeps it booked.
GIFTED_STATUSES = (PledgeStatus.SUCCEEDED, PledgeStatus.REFUNDED)

KNOWN_KINDS = frozenset(str(k) for k in EntryKind)

E = LedgerEntry


def _values(kinds: tuple[EntryKind, ...]) -> list[str]:
    return [str(k) for k in kinds]


def _signs() -> list[Violation]:
    """Gifts and reversals are positive; refunds, disputes, disbursements negative.

    A FEE is what Stripe kept, so it is negative, except the dispute fee Stripe returns when
    a dispute is won: a positive FEE is allowed only on a pledge that has a dispute reversal.
    No row is ever zero, and every kind is one the ledger knows.
    """
    reversal = aliased(LedgerEntry)
    fee_returned = exists().where(
        reversal.pledge_id == E.pledge_id, reversal.kind == EntryKind.DISPUTE_REVERSAL
    )
    rows = db.session.execute(
        select(E.id, E.kind, E.amount_minor, E.currency).where(
            or_(
                E.amount_minor == 0,
                E.kind.not_in(sorted(KNOWN_KINDS)),
                and_(E.kind.in_(_values(POSITIVE_KINDS)), E.amount_minor < 0),
                and_(E.kind.in_(_values(NEGATIVE_KINDS)), E.amount_minor > 0),
                and_(E.kind == EntryKind.FEE, E.amount_minor > 0, ~fee_returned),
            )
        )
    ).all()
    return [
        Violation("sign", f"row {id_} ({kind}) has amount {amount} {currency}")
        for id_, kind, amount, currency in rows
    ]


def _fees_per_pledge() -> list[Violation]:
    """A returned dispute fee never exceeds what was charged: a pledge's fees sum to ≤ 0."""
    rows = db.session.execute(
        select(E.pledge_id, E.currency, func.sum(E.amount_minor))
        .where(E.kind == EntryKind.FEE, E.pledge_id.is_not(None))
        .group_by(E.pledge_id, E.currency)
        .having(func.sum(E.amount_minor) > 0)
    ).all()
    return [
        Violation("fees", f"pledge {pledge}: fees sum to +{total} {currency}")
        for pledge, currency, total in rows
    ]


def _duplicate_stripe_ids() -> list[Violation]:
    """A Stripe object is booked once per kind (the database enforces it; a copy may not)."""
    rows = db.session.execute(
        select(E.kind, E.stripe_object_id, func.count())
        .where(E.stripe_object_id.is_not(None))
        .group_by(E.kind, E.stripe_object_id)
        .having(func.count() > 1)
    ).all()
    return [
        Violation("duplicate", f"{kind} {object_id} is booked {count} times")
        for kind, object_id, count in rows
    ]


def _duplicate_disbursements() -> list[Violation]:
    """A disbursement has one ledger row at most."""
    rows = db.session.execute(
        select(E.disbursement_id, func.count())
        .where(E.disbursement_id.is_not(None))
        .group_by(E.disbursement_id)
        .having(func.count() > 1)
    ).all()
    return [
        Violation("duplicate", f"disbursement {d} has {count} ledger rows") for d, count in rows
    ]


def _shapes() -> list[Violation]:
    """Disbursement rows name a group and a disbursement and no pledge; others a pledge.

    Rows point at an existing fast day. Pooled rows (no group) carry a split version.
    """
    is_disbursement = E.kind == EntryKind.DISBURSEMENT
    rows = db.session.execute(
        select(E.id, E.kind, E.fast_day_id, FastDay.id, E.aid_group_id, E.split_version)
        .outerjoin(FastDay, FastDay.id == E.fast_day_id)
        .where(
            or_(
                FastDay.id.is_(None),
                and_(
                    is_disbursement,
                    or_(
                        E.aid_group_id.is_(None),
                        E.disbursement_id.is_(None),
                        E.pledge_id.is_not(None),
                    ),
                ),
                and_(~is_disbursement, or_(E.pledge_id.is_(None), E.disbursement_id.is_not(None))),
                and_(~is_disbursement, E.aid_group_id.is_(None), E.split_version.is_(None)),
            )
        )
    ).all()
    found = []
    for id_, kind, day_id, day, group, version in rows:
        if day is None:
            problem = f"its fast day {day_id} does not exist"
        elif kind == EntryKind.DISBURSEMENT:
            problem = "a disbursement row needs a group and a disbursement, and no pledge"
        elif group is None and version is None:
            problem = "a pooled row carries no split version"
        else:
            problem = "a row that is not a disbursement needs a pledge, and no disbursement"
        found.append(Violation("orphan", f"row {id_} ({kind}): {problem}"))
    return found


def _pledge_links() -> list[Violation]:
    """Rows follow their pledge: same day, same group, same currency (fees may be settled)."""
    rows = db.session.execute(
        select(E.id, E.kind, E.pledge_id, Pledge.id, E.fast_day_id, Pledge.fast_day_id)
        .add_columns(E.aid_group_id, Pledge.aid_group_id, E.currency, Pledge.currency)
        .outerjoin(Pledge, Pledge.id == E.pledge_id)
        .where(
            E.pledge_id.is_not(None),
            or_(
                Pledge.id.is_(None),
                E.fast_day_id != Pledge.fast_day_id,
                E.aid_group_id.is_distinct_from(Pledge.aid_group_id),
                and_(E.kind != EntryKind.FEE, E.currency != Pledge.currency),
            ),
        )
    ).all()
    found = []
    for id_, kind, pledge_id, pledge, day, pledge_day, group, pledge_group, cur, pledge_cur in rows:
        if pledge is None:
            problem = f"its pledge {pledge_id} does not exist"
        elif day != pledge_day:
            problem = f"fast day {day}, but pledge {pledge_id} is for fast day {pledge_day}"
        elif group != pledge_group:
            problem = f"group {group}, but pledge {pledge_id} went to {pledge_group or 'the pool'}"
        else:
            problem = f"currency {cur}, but pledge {pledge_id} is in {pledge_cur}"
        found.append(Violation("orphan", f"row {id_} ({kind}): {problem}"))
    return found


def _gifts() -> list[Violation]:
    """One GIFT row per pledge, and only for a pledge whose payment went through."""
    rows = db.session.execute(
        select(Pledge.id, Pledge.status, func.count())
        .join(E, and_(E.pledge_id == Pledge.id, E.kind == EntryKind.GIFT))
        .group_by(Pledge.id, Pledge.status)
        .having(or_(func.count() > 1, Pledge.status.not_in(_values(GIFTED_STATUSES))))
    ).all()
    found = []
    for pledge, status, count in rows:
        if count > 1:
            found.append(Violation("gift", f"pledge {pledge} has {count} gift rows"))
        if status not in GIFTED_STATUSES:
            found.append(Violation("gift", f"pledge {pledge} is {status} but has a gift row"))
    return found


def _taken_back() -> list[Violation]:
    """Refunds and disputes, net of their reversals, never take back more than was given."""

    def total(kinds: tuple[EntryKind, ...]):
        return func.coalesce(
            func.sum(case((E.kind.in_(_values(kinds)), E.amount_minor), else_=literal(0))), 0
        )

    given, taken = total((EntryKind.GIFT,)), total(TAKEN_BACK_KINDS)
    rows = db.session.execute(
        select(E.pledge_id, E.currency, given, taken)
        .where(E.pledge_id.is_not(None), E.kind != EntryKind.FEE)
        .group_by(E.pledge_id, E.currency)
        .having(given + taken < 0)
    ).all()
    return [
        Violation(
            "taken_back",
            f"pledge {pledge}: {-taken} {currency} taken back from a gift of {given} {currency}",
        )
        for pledge, currency, given, taken in rows
    ]


def _disbursements() -> list[Violation]:
    """A confirmed disbursement has its row of −amount, same day, group, currency and transfer.

    A pending or failed one (or one that does not exist) has no row: no money left us.
    """
    confirmed = Disbursement.status == DisbursementStatus.CONFIRMED
    rows = db.session.execute(
        select(Disbursement.id, Disbursement.status, E.id)
        .outerjoin(E, E.disbursement_id == Disbursement.id)
        .where(
            or_(
                and_(confirmed, E.id.is_(None)),
                and_(~confirmed, E.id.is_not(None)),
                and_(
                    confirmed,
                    or_(
                        E.kind != EntryKind.DISBURSEMENT,
                        E.amount_minor != -Disbursement.amount_minor,
                        E.fast_day_id != Disbursement.fast_day_id,
                        E.aid_group_id.is_distinct_from(Disbursement.aid_group_id),
                        E.currency != Disbursement.currency,
                        E.stripe_object_id.is_distinct_from(Disbursement.stripe_transfer_id),
                    ),
                ),
            )
        )
    ).all()
    found = []
    for disbursement, status, entry in rows:
        if entry is None:
            problem = "is confirmed but has no ledger row"
        elif status != DisbursementStatus.CONFIRMED:
            problem = f"is {status} but ledger row {entry} books it"
        else:
            problem = f"does not match its ledger row {entry} (amount, day, group or currency)"
        found.append(Violation("disbursement", f"disbursement {disbursement} {problem}"))
    missing = db.session.execute(
        select(E.id, E.disbursement_id)
        .outerjoin(Disbursement, Disbursement.id == E.disbursement_id)
        .where(E.disbursement_id.is_not(None), Disbursement.id.is_(None))
    ).all()
    found += [
        Violation("disbursement", f"row {entry}: its disbursement {d} does not exist")
        for entry, d in missing
    ]
    return found


def _currencies() -> list[Violation]:
    """Every row's currency is a three-letter code Stripe takes, in capitals."""
    held = db.session.execute(select(E.currency, func.count()).group_by(E.currency)).all()
    return [
        Violation("currency", f"{count} row(s) in unknown currency {code!r}")
        for code, count in held
        if code not in STRIPE_CURRENCIES
    ]


def _split_versions() -> list[Violation]:
    """A pooled row's split version has split rows on its day, unless the day has no split."""
    version_rows = exists().where(
        FastDayGroup.fast_day_id == E.fast_day_id, FastDayGroup.version == E.split_version
    )
    any_split = exists().where(FastDayGroup.fast_day_id == E.fast_day_id)
    rows = db.session.execute(
        select(E.fast_day_id, E.split_version, func.count())
        .where(
            E.aid_group_id.is_(None),
            E.kind != EntryKind.DISBURSEMENT,
            E.split_version.is_not(None),
            ~version_rows,
            any_split,
        )
        .group_by(E.fast_day_id, E.split_version)
    ).all()
    return [
        Violation(
            "split_version",
            f"fast day {day}: {count} pooled row(s) under split version {version}, "
            "which has no groups",
        )
        for day, version, count in rows
    ]


@dataclass
class _Sums:
    """One day's rows in one currency, summed straight from the table."""

    net: int = 0  # everything but disbursements
    disbursed: int = 0  # as a positive amount
    unknown_kinds: bool = False
    pool_by_version: dict[int, int] = field(default_factory=dict)


def _row_sums() -> dict[tuple[int, str], _Sums]:
    rows = db.session.execute(
        select(
            E.fast_day_id,
            E.currency,
            E.aid_group_id.is_(None),
            E.split_version,
            E.kind,
            func.sum(E.amount_minor),
        ).group_by(E.fast_day_id, E.currency, E.aid_group_id, E.split_version, E.kind)
    ).all()
    sums: dict[tuple[int, str], _Sums] = {}
    for day_id, currency, pooled, version, kind, total in rows:
        day = sums.setdefault((day_id, currency), _Sums())
        if kind not in KNOWN_KINDS:
            day.unknown_kinds = True
        elif kind == EntryKind.DISBURSEMENT:
            day.disbursed -= int(total)
        else:
            day.net += int(total)
            if pooled:
                key = version or 1
                day.pool_by_version[key] = day.pool_by_version.get(key, 0) + int(total)
    return sums


def _balances() -> list[Violation]:
    """The ledger's figures add up: allocations to the pool, balances to net less disbursed.

    The sums here are taken straight from the rows; the figures come from
    :func:`ledger.currency_ledger`, which every page and statement shows. Pool money waits
    unshared only while neither its split version nor the current split has groups.
    """
    found = []
    for (day_id, currency), sums in _row_sums().items():
        day = db.session.get(FastDay, day_id)
        if day is None or currency not in STRIPE_CURRENCIES or sums.unknown_kinds:
            continue  # reported as an orphan, an unknown currency or a wrong kind
        unshared = sum(
            pool
            for version, pool in sums.pool_by_version.items()
            if not (day.split_of(version) or day.allocations)
        )
        figures = ledger.currency_ledger(day, currency)
        where = f"fast day {day_id} in {currency}"
        totals = figures.totals
        if (totals.net_minor, totals.disbursed_minor) != (sums.net, sums.disbursed):
            found.append(
                Violation(
                    "balance",
                    f"{where}: totals say net {totals.net_minor}, disbursed "
                    f"{totals.disbursed_minor}; the rows sum to {sums.net} and {sums.disbursed}",
                )
            )
        allocated = sum(a.allocated_minor for a in figures.allocations)
        if allocated != sums.net - unshared:
            found.append(
                Violation(
                    "balance",
                    f"{where}: allocations add up to {allocated}, the rows' net is {sums.net}"
                    + (f" of which {unshared} waits for a split" if unshared else ""),
                )
            )
        balances = sum(a.balance_minor for a in figures.allocations)
        owed = sums.net - unshared - sums.disbursed
        if balances != owed:
            found.append(
                Violation(
                    "balance",
                    f"{where}: balances add up to {balances}, but allocated less disbursed "
                    f"is {owed}",
                )
            )
    return found


def _running_totals() -> list[Violation]:
    """The running totals the pages read equal the rows and succeeded pledges they stand for."""
    t = LedgerTotal
    row_key = (
        E.fast_day_id,
        E.currency,
        func.coalesce(E.aid_group_id, 0),
        func.coalesce(E.split_version, 0),
        E.kind,
    )
    total_key = (t.fast_day_id, t.currency, t.aid_group_key, t.split_version_key, t.kind)
    summed = {
        tuple(key): (int(total), int(n))
        for *key, total, n in db.session.execute(
            select(*row_key, func.sum(E.amount_minor), func.count()).group_by(*row_key)
        )
    }
    kept = {
        tuple(key): (int(total), int(n))
        for *key, total, n in db.session.execute(
            select(*total_key, func.sum(t.total), func.sum(t.entries))
            .where(t.kind != DONORS)
            .group_by(*total_key)
        )
        if total or n
    }
    found = [
        Violation(
            "running_total",
            f"day {day} {currency} {f'group {group}' if group else 'pool'} version {version}"
            f" {kind}: the rows sum to {summed.get(key, (0, 0))[0]} in"
            f" {summed.get(key, (0, 0))[1]} rows, the running total says"
            f" {kept.get(key, (0, 0))[0]} in {kept.get(key, (0, 0))[1]}",
        )
        for key in sorted(set(summed) | set(kept), key=str)
        if summed.get(key, (0, 0)) != kept.get(key, (0, 0))
        for day, currency, group, version, kind in [key]
    ]
    donors = {
        (day, currency): int(n)
        for day, currency, n in db.session.execute(
            select(Pledge.fast_day_id, Pledge.currency, func.count(func.distinct(Pledge.email)))
            .where(Pledge.status == PledgeStatus.SUCCEEDED)
            .group_by(Pledge.fast_day_id, Pledge.currency)
        )
    }
    counted = {
        (day, currency): int(n)
        for day, currency, n in db.session.execute(
            select(t.fast_day_id, t.currency, func.sum(t.total))
            .where(t.kind == DONORS)
            .group_by(t.fast_day_id, t.currency)
        )
        if n
    }
    found += [
        Violation(
            "running_total",
            f"day {day} {currency}: {donors.get((day, currency), 0)} donors gave, the running"
            f" count says {counted.get((day, currency), 0)}",
        )
        for day, currency in sorted(set(donors) | set(counted))
        if donors.get((day, currency), 0) != counted.get((day, currency), 0)
    ]
    return found


CHECKS: tuple[Callable[[], list[Violation]], ...] = (
    _signs,
    _fees_per_pledge,
    _duplicate_stripe_ids,
    _duplicate_disbursements,
    _shapes,
    _pledge_links,
    _gifts,
    _taken_back,
    _disbursements,
    _currencies,
    _split_versions,
    _balances,
    _running_totals,
)


def has_money_rows() -> bool:
    """Whether there is anything to check: a ledger row or a disbursement."""
    return bool(
        db.session.scalar(
            select(or_(exists().select_from(LedgerEntry), exists().select_from(Disbursement)))
        )
    )


def counts() -> tuple[int, int, int]:
    """(ledger rows, fast days with rows, disbursements), for the command's summary line."""
    rows, days = db.session.execute(
        select(func.count(E.id), func.count(func.distinct(E.fast_day_id)))
    ).one()
    disbursements = db.session.scalar(select(func.count(Disbursement.id)))
    return int(rows), int(days), int(disbursements or 0)


def check_invariants() -> list[Violation]:
    """Every violated ledger invariant in the database; an empty list when all hold."""
    if not has_money_rows():
        return []
    return [violation for check in CHECKS for violation in check()]
