"""The ledger on a real database: rows recorded once, totals, and each group's allocation."""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from fundraiser import ledger
from fundraiser.extensions import db
from fundraiser.models import EntryKind, FastDay, LedgerEntry, Pledge, PledgeStatus
from tests.factories import make_fast_day, make_group, make_pledge


def charge(
    charge_id: str,
    amount: int,
    currency: str = "usd",
    *,
    fee: int | None = None,
    fee_currency: str | None = None,
    expanded: bool = True,
) -> dict[str, Any]:
    """A succeeded Stripe Charge as the gateway returns it (balance transaction expanded)."""
    txn_id = f"txn_{charge_id}"
    balance_transaction: Any = txn_id
    if expanded:
        balance_transaction = {
            "id": txn_id,
            "object": "balance_transaction",
            "amount": amount,
            "currency": fee_currency or currency,
            "fee": fee or 0,
            "type": "charge",
        }
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "currency": currency,
        "status": "succeeded",
        "balance_transaction": balance_transaction,
    }


def refund(
    refund_id: str,
    amount: int,
    currency: str = "usd",
    *,
    status: str = "succeeded",
    fee: int | None = None,
) -> dict[str, Any]:
    """A Stripe Refund with its balance transaction expanded."""
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "currency": currency,
        "status": status,
        "balance_transaction": {
            "id": f"txn_{refund_id}",
            "object": "balance_transaction",
            "amount": -amount,
            "currency": currency,
            "fee": fee or 0,
            "type": "refund",
        },
    }


def rows(**where: Any) -> list[tuple[str, int, str, str | None]]:
    """(kind, amount, currency, Stripe id) of the ledger rows matching ``where``, in id order."""
    query = select(LedgerEntry).filter_by(**where).order_by(LedgerEntry.id)
    return [
        (str(r.kind), r.amount_minor, r.currency, r.stripe_object_id)
        for r in db.session.scalars(query)
    ]


def charged(pledge: Pledge, amount: int | None = None, **kwargs: Any) -> Pledge:
    """Record a succeeded charge for ``pledge`` and mark it succeeded, as sync_payment does."""
    amount = pledge.amount_minor if amount is None else amount
    ledger.record_charge(
        pledge, charge(f"ch_{pledge.id}", amount, pledge.currency.lower(), **kwargs)
    )
    pledge.transition_to(PledgeStatus.SUCCEEDED)
    db.session.flush()
    return pledge


def split_of(day: FastDay) -> list[tuple[int, int]]:
    """(designated, pool share) for each of the day's groups, in their order."""
    return [(a.designated_minor, a.pool_share_minor) for a in ledger.allocations(day)]


def net(day: FastDay, currency: str, **where: Any) -> int:
    """The sum of a day's rows in ``currency`` other than disbursements, straight from SQL."""
    query = select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
        LedgerEntry.fast_day_id == day.id,
        LedgerEntry.currency == currency,
        LedgerEntry.kind != EntryKind.DISBURSEMENT,
    )
    for column, value in where.items():
        attribute = getattr(LedgerEntry, column)
        query = query.where(attribute.is_(None) if value is None else attribute == value)
    return int(db.session.scalar(query))


# --- recording what Stripe says ---------------------------------------------------------


def test_recording_the_same_charge_twice_adds_one_gift_and_one_fee(ctx):
    pledge = make_pledge(make_fast_day(), amount_minor=2500)
    paid = charge("ch_once", 2500, fee=103)

    assert ledger.record_charge(pledge, paid) is True
    assert ledger.record_charge(pledge, paid) is False
    assert ledger.record_charge(pledge, dict(paid)) is False

    assert rows(pledge_id=pledge.id) == [
        ("gift", 2500, "USD", "ch_once"),
        ("fee", -103, "USD", "txn_ch_once"),
    ]


def test_the_database_refuses_a_second_row_for_the_same_stripe_object(ctx):
    pledge = make_pledge(make_fast_day())
    ledger.record_charge(pledge, charge("ch_unique", 2500))
    duplicate = LedgerEntry(
        fast_day_id=pledge.fast_day_id,
        pledge_id=pledge.id,
        kind=EntryKind.GIFT,
        amount_minor=2500,
        currency="USD",
        stripe_object_id="ch_unique",
    )
    with pytest.raises(IntegrityError), db.session.begin_nested():
        db.session.add(duplicate)
    assert rows(pledge_id=pledge.id) == [("gift", 2500, "USD", "ch_unique")]


def test_fee_comes_from_the_expanded_balance_transaction(ctx):
    day = make_fast_day()
    unexpanded = make_pledge(day)
    no_fee = make_pledge(day)

    ledger.record_charge(unexpanded, charge("ch_a", 2500, fee=103, expanded=False))
    assert rows(pledge_id=unexpanded.id) == [("gift", 2500, "USD", "ch_a")]
    # The same charge read again with its balance transaction expanded: the fee, once.
    assert ledger.record_charge(unexpanded, charge("ch_a", 2500, fee=103)) is False
    ledger.record_charge(unexpanded, charge("ch_a", 2500, fee=103))
    assert rows(pledge_id=unexpanded.id) == [
        ("gift", 2500, "USD", "ch_a"),
        ("fee", -103, "USD", "txn_ch_a"),
    ]

    ledger.record_charge(no_fee, charge("ch_b", 2500, fee=0))  # localstripe takes no fee
    assert rows(pledge_id=no_fee.id) == [("gift", 2500, "USD", "ch_b")]


def test_a_fee_is_booked_in_the_currency_stripe_took_it_in(ctx):
    # A EUR gift on a platform that settles in USD: the balance transaction (amount and fee)
    # is in USD. Booking that fee as EUR would subtract dollars from euros.
    day = make_fast_day(currency="EUR")
    pledge = make_pledge(day, amount_minor=4000)
    charged(pledge, fee=171, fee_currency="usd")

    assert rows(pledge_id=pledge.id) == [
        ("gift", 4000, "EUR", f"ch_{pledge.id}"),
        ("fee", -171, "USD", f"txn_ch_{pledge.id}"),
    ]
    totals = ledger.day_totals(day)
    assert (totals.currency, totals.raised_minor, totals.fees_minor) == ("EUR", 4000, 0)
    assert sum(a.allocated_minor for a in ledger.allocations(day)) == 4000


@pytest.mark.parametrize("status", ["pending", "failed", "canceled", "requires_action", None])
def test_a_refund_that_has_not_succeeded_moves_no_money(ctx, status):
    pledge = charged(make_pledge(make_fast_day()))
    unsettled = refund("re_not_yet", 1000, status=status)
    assert ledger.record_refund(pledge, unsettled) is False
    assert [r for r in rows(pledge_id=pledge.id) if r[0] != "gift"] == []

    # Once Stripe says it succeeded, the same refund is recorded, once.
    assert ledger.record_refund(pledge, refund("re_not_yet", 1000)) is True
    assert ledger.record_refund(pledge, refund("re_not_yet", 1000)) is False
    assert rows(pledge_id=pledge.id, kind=EntryKind.REFUND) == [
        ("refund", -1000, "USD", "re_not_yet")
    ]


def test_a_refund_with_a_fee_records_both_once(ctx):
    pledge = charged(make_pledge(make_fast_day(), amount_minor=2500), fee=103)
    for _ in range(3):
        ledger.record_refund(pledge, refund("re_1", 2500, fee=15))
    assert rows(pledge_id=pledge.id) == [
        ("gift", 2500, "USD", f"ch_{pledge.id}"),
        ("fee", -103, "USD", f"txn_ch_{pledge.id}"),
        ("refund", -2500, "USD", "re_1"),
        ("fee", -15, "USD", "txn_re_1"),
    ]


# --- a day's totals ------------------------------------------------------------------------


def test_day_totals_raised_is_gifts_less_refunds_with_fees_apart(ctx):
    day = make_fast_day(goal_minor=10_000)
    first = charged(make_pledge(day, amount_minor=2500, email="amal@example.org"), fee=103)
    charged(make_pledge(day, amount_minor=5000, email="sami@example.org"), fee=175)
    ledger.record_refund(first, refund("re_part", 1000))

    totals = ledger.day_totals(day)
    assert totals.currency == "USD"
    assert totals.raised_minor == 2500 + 5000 - 1000
    assert totals.fees_minor == 103 + 175
    assert totals.net_minor == 6500 - 278
    assert totals.goal_minor == 10_000
    assert totals.percent_of_goal == 65
    assert totals.donors == 2


def test_donors_are_counted_once_per_email_among_succeeded_pledges(ctx):
    day = make_fast_day()
    charged(make_pledge(day, email="amal@example.org"))
    charged(make_pledge(day, email="amal@example.org"))  # gave twice: one donor
    charged(make_pledge(day, email="sami@example.org"))
    make_pledge(day, email="pending@example.org")
    make_pledge(day, email="failed@example.org", status=PledgeStatus.FAILED)
    make_pledge(day, email="processing@example.org", status=PledgeStatus.PROCESSING)
    refunded = charged(make_pledge(day, email="refunded@example.org"))
    refunded.transition_to(PledgeStatus.REFUNDED)
    other_day = make_fast_day()
    charged(make_pledge(other_day, email="elsewhere@example.org"))
    db.session.flush()

    assert ledger.day_totals(day).donors == 2
    assert ledger.day_totals(other_day).donors == 1


def test_an_empty_day_has_zero_totals(ctx):
    day = make_fast_day(goal_minor=0)
    totals = ledger.day_totals(day)
    assert (totals.raised_minor, totals.fees_minor, totals.donors) == (0, 0, 0)
    assert totals.percent_of_goal == 0
    assert [a.allocated_minor for a in ledger.allocations(day)] == [0, 0, 0]


def test_disputes_take_back_from_raised_and_a_won_dispute_restores_it(ctx):
    day = make_fast_day()
    pledge = charged(make_pledge(day, amount_minor=2500))
    for kind, amount, object_id in [
        (EntryKind.DISPUTE, -2500, "dp_1"),
        (EntryKind.DISPUTE_REVERSAL, 2500, "dp_1"),
    ]:
        db.session.add(
            LedgerEntry(
                fast_day_id=day.id,
                pledge_id=pledge.id,
                kind=kind,
                amount_minor=amount,
                currency="USD",
                stripe_object_id=object_id,
            )
        )
        db.session.flush()
        expected = 0 if kind == EntryKind.DISPUTE else 2500
        assert ledger.day_totals(day).raised_minor == expected
        assert sum(a.allocated_minor for a in ledger.allocations(day)) == expected


# --- allocations -----------------------------------------------------------------------------


def test_designated_gifts_go_to_their_group_and_the_pool_is_split_by_weight(ctx):
    a, b, c = make_group("Olive Kitchen"), make_group("Water for Gaza"), make_group("Clinic")
    day = make_fast_day(groups=[a, b, c], weights=[1, 2, 3])
    pooled = charged(make_pledge(day, amount_minor=1000), fee=59)
    pooled_small = charged(make_pledge(day, amount_minor=555))
    to_a = charged(make_pledge(day, amount_minor=2500, group=a), fee=103)
    charged(make_pledge(day, amount_minor=700, group=c))

    # Pool 1000 − 59 + 555 = 1496, split 1:2:3 = 249.33, 498.67, 748: one unit left, to b.
    found = ledger.allocations(day)
    assert [(x.aid_group_id, x.slug, x.name) for x in found] == [
        (g.id, g.slug, g.name) for g in (a, b, c)
    ]
    assert split_of(day) == [(2397, 249), (0, 499), (700, 748)]
    assert [x.allocated_minor for x in found] == [2646, 499, 1448]
    pool, designated = net(day, "USD", aid_group_id=None), net(day, "USD") - 1496
    assert pool == 1496
    assert sum(x.allocated_minor for x in found) == pool + designated == 4593

    # A refund of a designated gift comes back from its group; the pool is untouched.
    ledger.record_refund(to_a, refund("re_a", 500))
    assert split_of(day) == [(1897, 249), (0, 499), (700, 748)]

    # A refund of a pooled gift comes back from the pool, and the pool is split again:
    # 941 split 1:2:3 = 156.83, 313.67, 470.5: two units left, to a and b.
    ledger.record_refund(pooled_small, refund("re_pool", 555))
    assert split_of(day) == [(1897, 157), (0, 314), (700, 470)]
    assert sum(x.allocated_minor for x in ledger.allocations(day)) == net(day, "USD") == 3538
    assert pooled.amount_minor == 1000


def test_allocations_sum_exactly_to_what_was_given_for_many_days(ctx):
    rng = random.Random(20250301)
    for n in range(25):
        groups = [make_group() for _ in range(rng.randint(1, 7))]
        weights = [rng.randint(1, 9) for _ in groups]
        day = make_fast_day(groups=groups, weights=weights)
        for _ in range(rng.randint(0, 12)):
            group = rng.choice([None, None, *groups])
            pledge = make_pledge(day, amount_minor=rng.randint(1, 100_000), group=group)
            charged(pledge, fee=rng.choice([0, rng.randint(1, 500)]))
            if rng.random() < 0.3:
                ledger.record_refund(
                    pledge, refund(f"re_{n}_{pledge.id}", rng.randint(1, pledge.amount_minor))
                )
        found = ledger.allocations(day)
        pool = net(day, "USD", aid_group_id=None)
        assert sum(x.allocated_minor for x in found) == net(day, "USD")
        assert sum(x.pool_share_minor for x in found) == pool
        for allocation, weight in zip(found, weights, strict=True):
            assert allocation.designated_minor == net(
                day, "USD", aid_group_id=allocation.aid_group_id
            )
            exact = Fraction(pool * weight, sum(weights))
            assert abs(allocation.pool_share_minor - exact) < 1


def test_allocations_do_not_depend_on_the_order_rows_arrived(ctx):
    events = [("gift", None, 1001), ("gift", 0, 2500), ("gift", None, 333), ("gift", 1, 77)]
    events += [("refund", None, 250), ("fee", None, 31), ("fee", 0, 103), ("refund", 1, 77)]
    results = []
    for attempt in range(4):
        groups = [make_group(), make_group()]
        day = make_fast_day(groups=groups, weights=[3, 4])
        order = list(events)
        random.Random(attempt).shuffle(order)
        for i, (kind, group_index, amount) in enumerate(order):
            group = None if group_index is None else groups[group_index]
            db.session.add(
                LedgerEntry(
                    fast_day_id=day.id,
                    aid_group_id=group.id if group else None,
                    kind=EntryKind(kind),
                    amount_minor=amount if kind == "gift" else -amount,
                    currency="USD",
                    stripe_object_id=f"obj_{attempt}_{i}",
                )
            )
        db.session.flush()
        results.append(split_of(day))
    # Pool 1001 + 333 − 250 − 31 = 1053, split 3:4 = 451.29, 601.71: the unit goes to the second.
    assert results == [[(2397, 451), (0, 602)]] * 4


def test_disbursements_do_not_change_what_a_group_was_allocated(ctx):
    a, b = make_group(), make_group()
    day = make_fast_day(groups=[a, b])
    charged(make_pledge(day, amount_minor=1000))
    before = split_of(day)
    db.session.add(
        LedgerEntry(
            fast_day_id=day.id,
            aid_group_id=a.id,
            kind=EntryKind.DISBURSEMENT,
            amount_minor=-500,
            currency="USD",
        )
    )
    db.session.flush()
    assert split_of(day) == before == [(0, 500), (0, 500)]


def test_a_pool_made_negative_by_a_late_refund_is_shown_not_hidden(ctx):
    day = make_fast_day(weights=[1, 1, 1])
    pledge = charged(make_pledge(day, amount_minor=100), fee=10)
    ledger.record_refund(pledge, refund("re_all", 100))
    assert split_of(day) == [(0, -4), (0, -3), (0, -3)]
    assert ledger.day_totals(day).raised_minor == 0


# --- M4: currencies never mix ------------------------------------------------------------------


def test_eur_and_jpy_rows_on_a_usd_day_never_enter_its_totals_or_allocations(ctx):
    a, b = make_group(), make_group()
    day = make_fast_day(groups=[a, b], currency="USD")
    charged(make_pledge(day, amount_minor=2500, email="usd@example.org"), fee=103)
    charged(make_pledge(day, amount_minor=1000, group=a, email="usd2@example.org"))
    usd_totals = ledger.day_totals(day)
    usd_split = split_of(day)

    for currency, amount, fee in [("EUR", 4000, 150), ("JPY", 5000, 180)]:
        for group in (None, a):
            foreign = make_pledge(day, amount_minor=amount, group=group, email="x@example.org")
            foreign.currency = currency
            charged(foreign, fee=fee)
            ledger.record_refund(foreign, refund(f"re_{foreign.id}", amount // 2, currency.lower()))

    assert ledger.day_totals(day) == usd_totals
    assert (usd_totals.raised_minor, usd_totals.fees_minor, usd_totals.donors) == (3500, 103, 2)
    assert split_of(day) == usd_split == [(1000, 1199), (0, 1198)]
    # The foreign rows are there, in their own currencies, not lost.
    assert net(day, "EUR") == 2 * (4000 - 150 - 2000)
    assert net(day, "JPY") == 2 * (5000 - 180 - 2500)


def test_each_day_shows_its_own_currency(ctx):
    usd_day = make_fast_day(currency="USD")
    jpy_day = make_fast_day(currency="JPY", weights=[1, 1, 1])
    charged(make_pledge(usd_day, amount_minor=2500))
    charged(make_pledge(jpy_day, amount_minor=1000), fee=36)

    jpy = ledger.day_totals(jpy_day)
    assert (jpy.currency, jpy.raised_minor, jpy.fees_minor) == ("JPY", 1000, 36)
    assert split_of(jpy_day) == [(0, 322), (0, 321), (0, 321)]
    usd = ledger.day_totals(usd_day)
    assert (usd.currency, usd.raised_minor, usd.fees_minor) == ("USD", 2500, 0)


# --- one gift's split ------------------------------------------------------------------------


def test_describe_split_of_a_designated_gift_is_the_whole_gift_to_that_group(ctx):
    a, b = make_group("Olive Kitchen"), make_group("Clinic")
    day = make_fast_day(groups=[a, b], weights=[1, 3])
    pledge = make_pledge(day, amount_minor=2501, group=b)
    assert ledger.describe_split(pledge) == [("Clinic", 2501)]


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_describe_split_of_a_pooled_gift_sums_exactly_to_the_gift(ctx, currency):
    groups = [make_group(f"Group {i}") for i in range(7)]
    weights = [1, 2, 3, 5, 7, 11, 13]
    day = make_fast_day(groups=groups, weights=weights, currency=currency)
    for amount in [1, 2, 6, 10, 99, 2500, 4_241, 100_000_000, 1_000_000_000]:
        pledge = make_pledge(day, amount_minor=amount)
        parts = ledger.describe_split(pledge)
        assert [name for name, _ in parts] == [g.name for g in groups]
        assert sum(share for _, share in parts) == amount
        for (_, share), weight in zip(parts, weights, strict=True):
            assert abs(share - Fraction(amount * weight, sum(weights))) < 1


def test_describe_split_example(ctx):
    groups = [make_group("A"), make_group("B"), make_group("C")]
    day = make_fast_day(groups=groups, weights=[1, 1, 1])
    pledge = make_pledge(day, amount_minor=100)
    assert ledger.describe_split(pledge) == [("A", 34), ("B", 33), ("C", 33)]


def test_progress_shows_the_first_gifts_and_never_passes_the_goal():
    from fundraiser.ledger import DayTotals

    def percent(raised: int, goal: int) -> int:
        return DayTotals("USD", raised, 0, 1, goal).percent_of_goal

    assert percent(0, 500_000) == 0
    assert percent(2500, 500_000) == 1  # 0.5 % still shows as a sliver
    assert percent(250_000, 500_000) == 50
    assert percent(900_000, 500_000) == 100
    assert percent(-100, 500_000) == 0
    assert percent(2500, 0) == 0


def test_flows_of_two_currencies_cannot_be_added():
    """M4: a figure in euros never lands in a dollar total, even by accident."""
    dollars = ledger.Flows("USD", gifts_minor=1_000)
    euros = ledger.Flows("EUR", gifts_minor=1_000)
    assert (dollars + ledger.Flows("USD", fees_minor=30)).net_minor == 970
    with pytest.raises(ledger.CurrencyMismatch):
        dollars + euros
