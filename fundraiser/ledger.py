"""The ledger: recording what Stripe says happened, and the sums derived from it.

Rows are only ever added. Each row from Stripe carries the Stripe object id under a unique
(kind, id) constraint, and callers hold the pledge's row lock, so a replayed or concurrent
event finds the row already there and adds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select

from .extensions import db
from .models import (
    DONORS,
    AidGroup,
    Disbursement,
    DisbursementStatus,
    EntryKind,
    FastDay,
    LedgerEntry,
    LedgerTotal,
    Pledge,
    PledgeStatus,
)
from .money import CurrencyMismatch, split_largest_remainder


def _recorded(kind: EntryKind, stripe_object_id: str) -> bool:
    return (
        db.session.scalar(
            select(LedgerEntry.id).where(
                LedgerEntry.kind == kind, LedgerEntry.stripe_object_id == stripe_object_id
            )
        )
        is not None
    )


@dataclass(frozen=True)
class Recorded:
    """What the ledger held, in one read, of a pledge and of some Stripe objects."""

    keys: frozenset[tuple[str, str]]  # (kind, Stripe object id) of the objects asked about
    gift_split_version: int | None  # the split version the pledge's gift was shared under
    has_refund: bool  # whether any refund of the pledge is recorded (one may since have failed)


def recorded(pledge: Pledge, objects: list[tuple[EntryKind, str]]) -> Recorded:
    """Read once what the ledger holds of ``pledge`` and of ``objects`` (kind, id), whoever's.

    Applying a payment asks all three questions of :class:`Recorded`; one statement instead
    of one per question is most of what a webhook costs the database.
    """
    wanted = [
        and_(LedgerEntry.kind == kind, LedgerEntry.stripe_object_id == object_id)
        for kind, object_id in objects
    ]
    rows = db.session.execute(
        select(
            LedgerEntry.pledge_id,
            LedgerEntry.kind,
            LedgerEntry.stripe_object_id,
            LedgerEntry.split_version,
        ).where(or_(LedgerEntry.pledge_id == pledge.id, *wanted))
    ).all()
    asked = {(str(kind), object_id) for kind, object_id in objects}
    ours = [row for row in rows if row.pledge_id == pledge.id]
    gift = next((row.split_version for row in ours if row.kind == EntryKind.GIFT), None)
    return Recorded(
        keys=frozenset(
            key for key in ((str(row.kind), row.stripe_object_id) for row in rows) if key in asked
        ),
        gift_split_version=gift,
        has_refund=any(row.kind == EntryKind.REFUND for row in ours),
    )


def _add(
    pledge: Pledge,
    kind: EntryKind,
    amount_minor: int,
    currency: str,
    stripe_object_id: str,
    split_version: int | None,
) -> None:
    db.session.add(
        LedgerEntry(
            fast_day_id=pledge.fast_day_id,
            pledge_id=pledge.id,
            aid_group_id=pledge.aid_group_id,
            kind=kind,
            amount_minor=amount_minor,
            currency=currency.upper(),
            stripe_object_id=stripe_object_id,
            split_version=split_version,
        )
    )


def _add_once(
    pledge: Pledge, kind: EntryKind, amount_minor: int, currency: str, stripe_object_id: str
) -> bool:
    """Add one row for a Stripe object unless it is already recorded; True if added."""
    if _recorded(kind, stripe_object_id):
        return False
    _add(pledge, kind, amount_minor, currency, stripe_object_id, _split_version_for(pledge))
    return True


def _split_version_for(pledge: Pledge, known: Recorded | None = None) -> int | None:
    """The split version that shares a pooled gift: the one in force when it came in.

    A refund or a fee follows its gift, so a split changed in between never moves money
    that was already shared under the old one. ``known``: the pledge's rows, if read already.
    """
    if pledge.aid_group_id is not None:
        return None
    if known is not None:
        recorded_version = known.gift_split_version
    else:
        recorded_version = db.session.scalar(
            select(LedgerEntry.split_version).where(
                LedgerEntry.pledge_id == pledge.id, LedgerEntry.kind == EntryKind.GIFT
            )
        )
    return recorded_version or pledge.fast_day.split_version


def _fee(balance_transaction: Any, currency: str) -> tuple[str, int, str] | None:
    """(id, fee, currency) of an expanded balance transaction, or None if not expanded or no fee."""
    if not isinstance(balance_transaction, dict):
        return None
    fee = int(balance_transaction.get("fee") or 0)
    # The fee is in the balance transaction's (settlement) currency, which differs from the
    # charge's when Stripe converts: a USD fee on a EUR gift must not be booked as euros.
    fee_currency = balance_transaction.get("currency") or currency
    return (balance_transaction["id"], fee, fee_currency) if fee else None


def charge_objects(charge: dict[str, Any]) -> list[tuple[EntryKind, str]]:
    """The Stripe objects a succeeded charge is recorded under: itself, and its fee if any."""
    fee = _fee(charge.get("balance_transaction"), charge["currency"])
    return [(EntryKind.GIFT, charge["id"]), *([(EntryKind.FEE, fee[0])] if fee else [])]


def record_charge(pledge: Pledge, charge: dict[str, Any], known: Recorded | None = None) -> bool:
    """Record a succeeded charge: the gross gift and Stripe's fee; True if newly recorded.

    ``known``: :func:`recorded` for the pledge and :func:`charge_objects`, if the caller read
    it already. The rows are added to the session, and written by the next flush.
    """
    if known is None:
        known = recorded(pledge, charge_objects(charge))
    currency = charge["currency"]
    version = _split_version_for(pledge, known)
    added = (str(EntryKind.GIFT), charge["id"]) not in known.keys
    if added:
        _add(pledge, EntryKind.GIFT, int(charge["amount"]), currency, charge["id"], version)
    fee = _fee(charge.get("balance_transaction"), currency)
    if fee and (str(EntryKind.FEE), fee[0]) not in known.keys:
        _add(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0], version)
    return added


def record_refund(pledge: Pledge, refund: dict[str, Any]) -> bool:
    """Record a refund as Stripe reports it: succeeded, or failed after it took money back.

    A refund that failed or was canceled after it succeeded gives the money back: a
    REFUND_REVERSAL row under the refund's id. Stripe marks such a refund with a
    ``failure_balance_transaction``, so a failed refund first seen after its failure books
    both rows, and every order of events ends with the same rows. Returns True if a row
    was newly added.
    """
    status = refund.get("status")
    currency = refund["currency"]
    amount = int(refund["amount"])
    added = False
    if status == "succeeded" or (
        status in ("failed", "canceled") and refund.get("failure_balance_transaction")
    ):
        added = _add_once(pledge, EntryKind.REFUND, -amount, currency, refund["id"])
        fee = _fee(refund.get("balance_transaction"), currency)
        if fee:
            _add_once(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0])
    # Pending refunds move no money yet; one that failed before it succeeded never did.
    if status in ("failed", "canceled") and _recorded(EntryKind.REFUND, refund["id"]):
        added = (
            _add_once(pledge, EntryKind.REFUND_REVERSAL, amount, currency, refund["id"]) or added
        )
        fee = _fee(refund.get("failure_balance_transaction"), currency)
        if fee:
            _add_once(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0])
    db.session.flush()
    return added


def _dispute_moved_funds(dispute: dict[str, Any], transactions: list[dict[str, Any]]) -> bool:
    # An inquiry (warning_*) moves no money; a chargeback withdraws it as soon as it opens.
    status = str(dispute.get("status") or "")
    return any(int(t.get("amount") or 0) < 0 for t in transactions) or not status.startswith(
        "warning_"
    )


def record_dispute(pledge: Pledge, dispute: dict[str, Any]) -> bool:
    """Record what a dispute, as Stripe reports it, has moved; True if a row was newly added.

    A dispute object only ever gains: once funds are withdrawn its balance transactions keep
    the withdrawal, and a win adds the reinstatement. So each state implies every earlier
    one, and recording from whichever object arrives (in any order, any number of times)
    ends with the same rows: a DISPUTE row (−amount) once funds were withdrawn, a
    DISPUTE_REVERSAL row (+amount) once they were reinstated, both under the dispute id,
    and a FEE row per balance transaction that carries a fee, under its own id. Stripe's
    dispute fee is a negative FEE row; the fee Stripe returns with a won dispute (a
    negative fee on the reinstating transaction) is a positive one, so a pledge's fees
    never sum above zero.
    """
    transactions = [t for t in dispute.get("balance_transactions") or [] if isinstance(t, dict)]
    currency = dispute["currency"]
    amount = int(dispute["amount"])
    reinstated = dispute.get("status") == "won" or any(
        int(t.get("amount") or 0) > 0 for t in transactions
    )
    added = False
    # A reinstatement implies the withdrawal before it, even if we never saw that.
    if reinstated or _dispute_moved_funds(dispute, transactions):
        added = _add_once(pledge, EntryKind.DISPUTE, -amount, currency, dispute["id"])
    if reinstated:
        added = (
            _add_once(pledge, EntryKind.DISPUTE_REVERSAL, amount, currency, dispute["id"]) or added
        )
    for transaction in transactions:
        fee = _fee(transaction, currency)
        if fee:
            added = _add_once(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0]) or added
    db.session.flush()
    return added


def record_disbursement(disbursement: Disbursement) -> bool:
    """Add the ledger row of a confirmed disbursement (once); True if newly added."""
    if disbursement.status != DisbursementStatus.CONFIRMED:
        raise ValueError("only a confirmed disbursement moves money")
    exists = db.session.scalar(
        select(LedgerEntry.id).where(LedgerEntry.disbursement_id == disbursement.id)
    )
    if exists is not None:
        return False
    db.session.add(
        LedgerEntry(
            fast_day_id=disbursement.fast_day_id,
            aid_group_id=disbursement.aid_group_id,
            kind=EntryKind.DISBURSEMENT,
            amount_minor=-disbursement.amount_minor,
            currency=disbursement.currency,
            stripe_object_id=disbursement.stripe_transfer_id,
            disbursement_id=disbursement.id,
        )
    )
    db.session.flush()
    return True


@dataclass(frozen=True)
class Flows:
    """Money in one bucket (the pool, or one group's designated gifts) in one currency.

    Everything is a positive amount except ``net_minor``, which can go below zero when more
    was taken back than given.
    """

    currency: str
    gifts_minor: int = 0  # gross gifts
    refunds_minor: int = 0  # refunded, less refunds that failed afterwards
    disputes_minor: int = 0  # lost to disputes, less disputes won back
    fees_minor: int = 0  # what Stripe kept (on gifts, refunds and disputes)

    @property
    def taken_back_minor(self) -> int:
        """Refunds and disputes together."""
        return self.refunds_minor + self.disputes_minor

    @property
    def net_minor(self) -> int:
        """What reaches the groups: gifts less refunds, disputes and fees."""
        return self.gifts_minor - self.refunds_minor - self.disputes_minor - self.fees_minor

    def __add__(self, other: Flows) -> Flows:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot add {other.currency} to {self.currency}")
        return Flows(
            self.currency,
            self.gifts_minor + other.gifts_minor,
            self.refunds_minor + other.refunds_minor,
            self.disputes_minor + other.disputes_minor,
            self.fees_minor + other.fees_minor,
        )


def _flows(currency: str, amounts_by_kind: dict[EntryKind, int]) -> Flows:
    """Signed ledger sums by kind, as the positive figures people read."""
    get = amounts_by_kind.get
    return Flows(
        currency=currency,
        gifts_minor=get(EntryKind.GIFT, 0),
        refunds_minor=-(get(EntryKind.REFUND, 0) + get(EntryKind.REFUND_REVERSAL, 0)),
        disputes_minor=-(get(EntryKind.DISPUTE, 0) + get(EntryKind.DISPUTE_REVERSAL, 0)),
        fees_minor=-get(EntryKind.FEE, 0),
    )


@dataclass(frozen=True)
class DayTotals:
    """A fast day's figures in one currency."""

    currency: str
    raised_minor: int  # given, less refunds and disputes
    fees_minor: int  # what Stripe kept, as a positive number
    donors: int
    goal_minor: int  # 0 for every currency but the day's own
    flows: Flows | None = None  # the breakdown of raised and fees
    disbursed_minor: int = 0  # paid out to groups

    @property
    def net_minor(self) -> int:
        """What reaches the groups: raised less fees."""
        return self.raised_minor - self.fees_minor

    @property
    def owed_minor(self) -> int:
        """Allocated to groups and not yet paid out (negative after late refunds)."""
        return self.net_minor - self.disbursed_minor

    @property
    def percent_of_goal(self) -> int:
        """Progress toward the goal, 0–100, for the progress bar (never over 100)."""
        if self.goal_minor <= 0 or self.raised_minor <= 0:
            return 0
        # At least 1 once anything is raised, so the first gifts show on the bar.
        return max(1, min(100, self.raised_minor * 100 // self.goal_minor))


def _check_currency(currency: str) -> str:
    currency = currency.upper()
    if len(currency) != 3 or not currency.isalpha():
        raise ValueError(f"not a currency code: {currency!r}")
    return currency


def held_currencies(fast_day: FastDay) -> set[str]:
    """The currencies the day has ledger rows in."""
    return set(
        db.session.scalars(
            select(LedgerTotal.currency)
            .where(
                LedgerTotal.fast_day_id == fast_day.id,
                LedgerTotal.kind != DONORS,
                LedgerTotal.entries > 0,
            )
            .distinct()
        )
    )


def currencies(fast_day: FastDay) -> list[str]:
    """Every currency the day takes or holds money in: its own first, then the others."""
    accepted = fast_day.accepted_currencies
    return [*accepted, *sorted(held_currencies(fast_day) - set(accepted))]


def _kind_sums(fast_day: FastDay, currency: str) -> list[tuple[int | None, int | None, str, int]]:
    """(group, split version, kind, sum) for one day in one currency, from the running totals.

    One small query whatever the number of gifts: ``ledger_totals`` keeps these sums in the
    transaction that adds each row.
    """
    rows = db.session.execute(
        select(
            LedgerTotal.aid_group_key,
            LedgerTotal.split_version_key,
            LedgerTotal.kind,
            func.sum(LedgerTotal.total),
        )
        .where(
            LedgerTotal.fast_day_id == fast_day.id,
            LedgerTotal.currency == currency,
            LedgerTotal.kind != DONORS,
        )
        .group_by(LedgerTotal.aid_group_key, LedgerTotal.split_version_key, LedgerTotal.kind)
        .having(func.sum(LedgerTotal.entries) > 0)
    ).all()
    return [(g or None, v or None, k, int(t)) for g, v, k, t in rows]


def donor_count(fast_day: FastDay, currency: str) -> int:
    """How many different donors gave to the day in one currency (succeeded gifts)."""
    counted = db.session.scalar(
        select(func.sum(LedgerTotal.total)).where(
            LedgerTotal.fast_day_id == fast_day.id,
            LedgerTotal.currency == currency,
            LedgerTotal.kind == DONORS,
        )
    )
    return int(counted or 0)


def day_totals(fast_day: FastDay, currency: str | None = None) -> DayTotals:
    """Raised, fees, donors and disbursed for a fast day in one currency (its own by default)."""
    currency = _check_currency(currency or fast_day.currency)
    return _totals(fast_day, currency, _kind_sums(fast_day, currency))


def _totals(
    fast_day: FastDay, currency: str, sums: list[tuple[int | None, int | None, str, int]]
) -> DayTotals:
    """The day's totals in one currency from its grouped ledger sums (and the donor count)."""
    by_kind: dict[EntryKind, int] = defaultdict(int)
    for _group, _version, kind, total in sums:
        by_kind[EntryKind(kind)] += total
    flows = _flows(currency, by_kind)
    donors = donor_count(fast_day, currency)
    return DayTotals(
        currency=currency,
        raised_minor=flows.gifts_minor - flows.taken_back_minor,
        fees_minor=flows.fees_minor,
        donors=donors,
        goal_minor=fast_day.goal_minor if currency == fast_day.currency else 0,
        flows=flows,
        disbursed_minor=-by_kind.get(EntryKind.DISBURSEMENT, 0),
    )


def totals_by_currency(fast_day: FastDay) -> list[DayTotals]:
    """The day's totals in each of its currencies, its own first; never added together."""
    return [day_totals(fast_day, currency) for currency in currencies(fast_day)]


def totals_for_days(days: list[FastDay]) -> dict[int, DayTotals]:
    """Totals for several days in each day's own currency (the home page's past days)."""
    return {day.id: day_totals(day) for day in days}


@dataclass(frozen=True)
class GroupAllocation:
    """What one group is allocated from a fast day, and has been paid, in one currency."""

    aid_group_id: int
    slug: str
    name: str
    currency: str
    designated: Flows  # gifts made to this group alone, with their refunds, disputes and fees
    pool_share_minor: int  # its share of the pool, net of the pool's refunds, disputes, fees
    disbursed_minor: int = 0  # paid out to it from this day's money

    @property
    def designated_minor(self) -> int:
        """Designated gifts net of their refunds, disputes and fees."""
        return self.designated.net_minor

    @property
    def allocated_minor(self) -> int:
        """Designated gifts plus the group's share of the pool."""
        return self.designated_minor + self.pool_share_minor

    @property
    def balance_minor(self) -> int:
        """Allocated less disbursed: what is still owed (negative after a late refund)."""
        return self.allocated_minor - self.disbursed_minor


@dataclass(frozen=True)
class CurrencyLedger:
    """One fast day's money in one currency: totals, the pool, and every group's part."""

    totals: DayTotals
    pool: Flows
    allocations: list[GroupAllocation]

    @property
    def currency(self) -> str:
        """The currency every figure here is in."""
        return self.totals.currency


def _pool_shares(fast_day: FastDay, pool_by_version: dict[int, int]) -> dict[int, int]:
    """Split each split version's cumulative pool by that version's weights."""
    pool_share: dict[int, int] = defaultdict(int)
    for version, pool in sorted(pool_by_version.items()):
        links = fast_day.split_of(version) or fast_day.allocations
        if not links:
            continue  # no groups to share with yet; the pool waits for a split
        shares = split_largest_remainder(pool, [link.weight for link in links])
        for link, share in zip(links, shares, strict=True):
            pool_share[link.aid_group_id] += share
    return pool_share


def currency_ledger(fast_day: FastDay, currency: str | None = None) -> CurrencyLedger:
    """The day's figures in one currency: totals, the pool, and each group's allocation.

    The pool (gifts to "all groups", net of their refunds, disputes and fees) is split by the
    weights of the split version each gift came in under, with the largest-remainder method
    on each version's cumulative pool, so the shares always add up to the pool exactly.
    Groups appear in the current split's order, then any only in older versions, designated
    or paid.
    """
    currency = _check_currency(currency or fast_day.currency)
    designated_kinds: dict[int, dict[EntryKind, int]] = defaultdict(lambda: defaultdict(int))
    pool_kinds: dict[EntryKind, int] = defaultdict(int)
    pool_by_version: dict[int, int] = defaultdict(int)
    disbursed: dict[int, int] = defaultdict(int)
    sums = _kind_sums(fast_day, currency)
    for group_id, version, kind, total in sums:
        kind = EntryKind(kind)
        if kind == EntryKind.DISBURSEMENT:
            disbursed[group_id] -= total
        elif group_id is None:
            pool_kinds[kind] += total
            pool_by_version[version or 1] += total
        else:
            designated_kinds[group_id][kind] += total

    groups: dict[int, AidGroup] = {}
    for link in [*fast_day.allocations, *fast_day.split_rows]:
        groups.setdefault(link.aid_group_id, link.aid_group)
    for group_id in [*designated_kinds, *disbursed]:
        if group_id not in groups:
            groups[group_id] = db.session.get(AidGroup, group_id)

    pool_share = _pool_shares(fast_day, pool_by_version)
    allocations = [
        GroupAllocation(
            aid_group_id=group_id,
            slug=group.slug,
            name=group.name,
            currency=currency,
            designated=_flows(currency, designated_kinds.get(group_id, {})),
            pool_share_minor=pool_share.get(group_id, 0),
            disbursed_minor=disbursed.get(group_id, 0),
        )
        for group_id, group in groups.items()
    ]
    return CurrencyLedger(
        totals=_totals(fast_day, currency, sums),
        pool=_flows(currency, pool_kinds),
        allocations=allocations,
    )


def allocations(fast_day: FastDay, currency: str | None = None) -> list[GroupAllocation]:
    """Each group's allocation from a fast day in one currency (the day's own by default)."""
    return currency_ledger(fast_day, currency).allocations


def day_ledger(fast_day: FastDay) -> list[CurrencyLedger]:
    """The whole day, one :class:`CurrencyLedger` per currency, its own currency first."""
    return [currency_ledger(fast_day, currency) for currency in currencies(fast_day)]


def describe_split(pledge: Pledge) -> list[tuple[str, int]]:
    """Where one gift goes: (group name, minor units) pairs that sum to the gift exactly."""
    if pledge.aid_group is not None:
        return [(pledge.aid_group.name, pledge.amount_minor)]
    links = pledge.fast_day.allocations
    return split_by_weights(
        pledge.amount_minor, [(link.aid_group.name, link.weight) for link in links]
    )


def split_by_weights(amount_minor: int, weights: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """A pooled gift's shares: (group name, minor units) by (group name, weight), exactly."""
    if not weights:
        return []  # a day with no groups yet takes no gifts; never fail a page over it
    shares = split_largest_remainder(amount_minor, [weight for _name, weight in weights])
    return [(name, share) for (name, _weight), share in zip(weights, shares, strict=True)]


def pledged_totals(fast_day: FastDay) -> dict[str, tuple[int, int]]:
    """Pledged, not raised: {currency: (pledges, amount)} still to be charged on the fast day.

    Scheduled pledges, and those whose charge waits for the donor's bank or for its retry.
    The ledger holds none of it until money moves; never add this to what was raised.
    """
    waiting = (PledgeStatus.REQUIRES_ACTION, PledgeStatus.FAILED)
    still_expected = and_(
        # Implied by the rest; said first so the (day, status) index skips the day's gifts.
        Pledge.status.in_((PledgeStatus.SCHEDULED, *waiting)),
        or_(
            Pledge.status == PledgeStatus.SCHEDULED,
            and_(
                Pledge.charge_on_day.is_(True),
                Pledge.status.in_(waiting),
                Pledge.charge_attempts < 2,
            ),
        ),
    )
    rows = db.session.execute(
        select(Pledge.currency, func.count(Pledge.id), func.sum(Pledge.amount_minor))
        .where(Pledge.fast_day_id == fast_day.id, still_expected)
        .group_by(Pledge.currency)
        .order_by(Pledge.currency)
    ).all()
    return {currency: (int(count), int(total or 0)) for currency, count, total in rows}
