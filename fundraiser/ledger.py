"""The ledger: recording what Stripe says happened, and the sums derived from it.

Rows are only ever added. Each row from Stripe carries the Stripe object id under a unique
(kind, id) constraint, and callers hold the pledge's row lock, so a replayed or concurrent
event finds the row already there and adds nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from .extensions import db
from .models import AidGroup, EntryKind, FastDay, LedgerEntry, Pledge, PledgeStatus
from .money import split_largest_remainder

# Kinds that change what donors gave (fees are what Stripe kept, shown apart).
GIVEN_KINDS = (EntryKind.GIFT, EntryKind.REFUND, EntryKind.DISPUTE, EntryKind.DISPUTE_REVERSAL)


def _add_once(
    pledge: Pledge, kind: EntryKind, amount_minor: int, currency: str, stripe_object_id: str
) -> bool:
    """Add one row for a Stripe object unless it is already recorded; True if added."""
    exists = db.session.scalar(
        select(LedgerEntry.id).where(
            LedgerEntry.kind == kind, LedgerEntry.stripe_object_id == stripe_object_id
        )
    )
    if exists is not None:
        return False
    db.session.add(
        LedgerEntry(
            fast_day_id=pledge.fast_day_id,
            pledge_id=pledge.id,
            aid_group_id=pledge.aid_group_id,
            kind=kind,
            amount_minor=amount_minor,
            currency=currency.upper(),
            stripe_object_id=stripe_object_id,
            split_version=_split_version_for(pledge),
        )
    )
    return True


def _split_version_for(pledge: Pledge) -> int | None:
    """The split version that shares a pooled gift: the one in force when it came in.

    A refund or a fee follows its gift, so a split changed in between never moves money
    that was already shared under the old one.
    """
    if pledge.aid_group_id is not None:
        return None
    recorded = db.session.scalar(
        select(LedgerEntry.split_version).where(
            LedgerEntry.pledge_id == pledge.id, LedgerEntry.kind == EntryKind.GIFT
        )
    )
    return recorded or pledge.fast_day.split_version


def _fee(balance_transaction: Any, currency: str) -> tuple[str, int, str] | None:
    """(id, fee, currency) of an expanded balance transaction, or None if not expanded or no fee."""
    if not isinstance(balance_transaction, dict):
        return None
    fee = int(balance_transaction.get("fee") or 0)
    # The fee is in the balance transaction's (settlement) currency, which differs from the
    # charge's when Stripe converts: a USD fee on a EUR gift must not be booked as euros.
    fee_currency = balance_transaction.get("currency") or currency
    return (balance_transaction["id"], fee, fee_currency) if fee else None


def record_charge(pledge: Pledge, charge: dict[str, Any]) -> bool:
    """Record a succeeded charge: the gross gift and Stripe's fee; True if newly recorded."""
    currency = charge["currency"]
    added = _add_once(pledge, EntryKind.GIFT, int(charge["amount"]), currency, charge["id"])
    fee = _fee(charge.get("balance_transaction"), currency)
    if fee:
        _add_once(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0])
    db.session.flush()
    return added


def record_refund(pledge: Pledge, refund: dict[str, Any]) -> bool:
    """Record one succeeded refund (and any fee on it); True if newly recorded."""
    if refund.get("status") != "succeeded":
        return False  # pending refunds move no money yet; failed ones never did
    currency = refund["currency"]
    added = _add_once(pledge, EntryKind.REFUND, -int(refund["amount"]), currency, refund["id"])
    fee = _fee(refund.get("balance_transaction"), currency)
    if fee:
        _add_once(pledge, EntryKind.FEE, -fee[1], fee[2], fee[0])
    db.session.flush()
    return added


@dataclass(frozen=True)
class DayTotals:
    """A fast day's figures in one currency."""

    currency: str
    raised_minor: int  # given, less refunds and disputes
    fees_minor: int  # what Stripe kept, as a positive number
    donors: int
    goal_minor: int

    @property
    def net_minor(self) -> int:
        """What reaches the groups: raised less fees."""
        return self.raised_minor - self.fees_minor

    @property
    def percent_of_goal(self) -> int:
        """Progress toward the goal, 0–100, for the progress bar (never over 100)."""
        if self.goal_minor <= 0 or self.raised_minor <= 0:
            return 0
        # At least 1 once anything is raised, so the first gifts show on the bar.
        return max(1, min(100, self.raised_minor * 100 // self.goal_minor))


def _sum(fast_day: FastDay, currency: str, kinds: tuple[EntryKind, ...]) -> int:
    return int(
        db.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
                LedgerEntry.fast_day_id == fast_day.id,
                LedgerEntry.currency == currency,
                LedgerEntry.kind.in_(kinds),
            )
        )
    )


def day_totals(fast_day: FastDay) -> DayTotals:
    """Raised, fees and donors for a fast day in its own currency."""
    currency = fast_day.currency
    donors = db.session.scalar(
        select(func.count(func.distinct(Pledge.email))).where(
            Pledge.fast_day_id == fast_day.id,
            Pledge.currency == currency,
            Pledge.status == PledgeStatus.SUCCEEDED,
        )
    )
    return DayTotals(
        currency=currency,
        raised_minor=_sum(fast_day, currency, GIVEN_KINDS),
        fees_minor=-_sum(fast_day, currency, (EntryKind.FEE,)),
        donors=int(donors or 0),
        goal_minor=fast_day.goal_minor,
    )


def totals_for_days(days: list[FastDay]) -> dict[int, DayTotals]:
    """Totals for several days (the home page's list of past days)."""
    return {day.id: day_totals(day) for day in days}


@dataclass(frozen=True)
class GroupAllocation:
    """What one group is allocated from a fast day, in one currency."""

    aid_group_id: int
    slug: str
    name: str
    designated_minor: int
    pool_share_minor: int

    @property
    def allocated_minor(self) -> int:
        """Designated gifts plus the group's share of the common pool."""
        return self.designated_minor + self.pool_share_minor


def allocations(fast_day: FastDay) -> list[GroupAllocation]:
    """Each funded group's allocation: its designated gifts plus a share of the pool.

    The pool (gifts to "all groups", net of refunds and fees) is split by the weights of
    the split version each gift came in under, with the largest-remainder method on each
    version's cumulative pool, so the shares always add up to the pool exactly. Groups
    appear in the current split's order, then any only in older versions or designated.
    """
    currency = fast_day.currency
    rows = db.session.execute(
        select(
            LedgerEntry.aid_group_id, LedgerEntry.split_version, func.sum(LedgerEntry.amount_minor)
        )
        .where(
            LedgerEntry.fast_day_id == fast_day.id,
            LedgerEntry.currency == currency,
            LedgerEntry.kind != EntryKind.DISBURSEMENT,
        )
        .group_by(LedgerEntry.aid_group_id, LedgerEntry.split_version)
    ).all()
    designated: dict[int, int] = defaultdict(int)
    pool_by_version: dict[int, int] = defaultdict(int)
    for group_id, version, total in rows:
        if group_id is None:
            pool_by_version[version or 1] += int(total)
        else:
            designated[group_id] += int(total)

    groups: dict[int, AidGroup] = {}
    for link in [*fast_day.allocations, *fast_day.split_rows]:
        groups.setdefault(link.aid_group_id, link.aid_group)
    for group_id in designated:
        if group_id not in groups:
            groups[group_id] = db.session.get(AidGroup, group_id)

    pool_share: dict[int, int] = defaultdict(int)
    for version, pool in pool_by_version.items():
        links = fast_day.split_of(version) or fast_day.allocations
        if not links:
            continue  # no groups to share with yet; the pool waits for a split
        shares = split_largest_remainder(pool, [link.weight for link in links])
        for link, share in zip(links, shares, strict=True):
            pool_share[link.aid_group_id] += share

    return [
        GroupAllocation(
            aid_group_id=group_id,
            slug=group.slug,
            name=group.name,
            designated_minor=designated.get(group_id, 0),
            pool_share_minor=pool_share.get(group_id, 0),
        )
        for group_id, group in groups.items()
    ]


def describe_split(pledge: Pledge) -> list[tuple[str, int]]:
    """Where one gift goes: (group name, minor units) pairs that sum to the gift exactly."""
    if pledge.aid_group is not None:
        return [(pledge.aid_group.name, pledge.amount_minor)]
    links = pledge.fast_day.allocations
    if not links:
        return []  # a day with no groups yet takes no gifts; never fail a page over it
    shares = split_largest_remainder(pledge.amount_minor, [link.weight for link in links])
    return [(link.aid_group.name, share) for link, share in zip(links, shares, strict=True)]
