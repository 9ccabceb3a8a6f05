"""Disputes and failed refunds reach the ledger once, whatever the order or repetition of events.

The gifts are real (made through the app's routes against localstripe, which holds their
PaymentIntents, charges and refunds); localstripe has no disputes, so each dispute's events are
built as Stripe sends them (tests/stripe_events.py) and signed with the SDK's own helper.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from fundraiser import ledger
from fundraiser.extensions import db
from fundraiser.models import FastDay, LedgerEntry, StripeEvent
from tests.factories import make_fast_day
from tests.stripe_events import (
    DISPUTE_FEE_MINOR,
    balance_transaction,
    dispute,
    dispute_events,
    inquiry_events,
    make_event,
    outcome_of,
    post_event,
)
from tests.webhook_helpers import (
    Gift,
    charge_event,
    event_rows,
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
    refund,
    stripe_get,
)

FEE = DISPUTE_FEE_MINOR


def _day(app, weights: tuple[int, ...] = (1, 1, 1)) -> tuple[str, list[str]]:
    with app.app_context():
        day = make_fast_day(weights=list(weights), suggested=[1000, 2500, 5000])
        slug, groups = day.slug, [g.slug for g in day.groups]
        db.session.commit()
    return slug, groups


def _gift(app, client, localstripe, *, amount: str = "2500", to: str = "all") -> tuple[str, Gift]:
    """A paid gift on a new day, its payment_intent.succeeded not delivered yet."""
    slug, groups = _day(app)
    gift = make_gift(
        app, client, localstripe, slug, amount=amount, allocation=to if to == "all" else groups[0]
    )
    return slug, gift


def _deliver(client, *events: dict[str, Any]) -> list[str]:
    """Post each event; each must be answered 2xx. Return the outcomes."""
    outcomes = []
    for event in events:
        response = post_event(client, event)
        assert response.status_code == 200, (event["type"], response.get_json())
        outcomes.append(outcome_of(client.application, response, event["id"]))
    return outcomes


def _paid(client, localstripe, gift: Gift) -> None:
    _deliver(client, intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1]))


def _totals(app, slug: str) -> ledger.DayTotals:
    with app.app_context():
        day = db.session.scalar(select(FastDay).where(FastDay.slug == slug))
        return ledger.day_totals(day)


def _status(app, gift: Gift) -> str:
    return pledge_rows(app)[gift.pledge_id][0]


def _dispute_rows(gift: Gift, events: dict[str, dict], amount: int, outcome: str) -> list[tuple]:
    """The rows a dispute must leave: taken back, the fee, and on a win both given back."""
    closed = events["charge.dispute.closed"]["data"]["object"]
    withdrawal, *reinstatement = closed["balance_transactions"]
    rows = [
        ("dispute", -amount, "USD", closed["id"], gift.pledge_id),
        ("fee", -FEE, "USD", withdrawal["id"], gift.pledge_id),
    ]
    if outcome == "won":
        rows += [
            ("dispute_reversal", amount, "USD", closed["id"], gift.pledge_id),
            ("fee", FEE, "USD", reinstatement[0]["id"], gift.pledge_id),
        ]
    return rows


def test_a_won_dispute_takes_the_gift_back_then_returns_it_and_its_fee(app, client, localstripe):
    slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 2500, outcome="won")
    gift_row = ("gift", 2500, "USD", gift.charge_id, gift.pledge_id)
    opened = _dispute_rows(gift, events, 2500, "lost")  # what is withdrawn when it opens

    # Opened: the money and Stripe's fee leave at once; repeats and updates change nothing.
    for event_type in (
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.updated",
    ):
        assert _deliver(client, events[event_type], events[event_type]) == ["applied", "duplicate"]
        assert ledger_rows(app) == sorted([gift_row, *opened])
    totals = _totals(app, slug)
    assert (totals.raised_minor, totals.fees_minor, totals.net_minor) == (0, FEE, -FEE)
    assert totals.flows.disputes_minor == 2500

    # Won: the amount comes back, and so does the fee.
    _deliver(client, events["charge.dispute.funds_reinstated"], events["charge.dispute.closed"])
    won = sorted([gift_row, *_dispute_rows(gift, events, 2500, "won")])
    assert ledger_rows(app) == won
    totals = _totals(app, slug)
    assert (totals.raised_minor, totals.fees_minor, totals.flows.disputes_minor) == (2500, 0, 0)
    assert _status(app, gift) == "succeeded"  # a dispute is not a state of the gift

    # Every event again, under new event ids (Stripe resends objects in new events too).
    _deliver(client, *(make_event(e["type"], e["data"]["object"]) for e in events.values()))
    assert ledger_rows(app) == won


def test_a_lost_dispute_keeps_the_amount_and_the_fee_taken(app, client, localstripe):
    slug, gift = _gift(app, client, localstripe, amount="5000")
    _paid(client, localstripe, gift)
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 5000, outcome="lost")

    _deliver(client, *events.values(), *events.values())

    assert ledger_rows(app) == sorted(
        [
            ("gift", 5000, "USD", gift.charge_id, gift.pledge_id),
            *_dispute_rows(gift, events, 5000, "lost"),
        ]
    )
    totals = _totals(app, slug)
    assert (totals.raised_minor, totals.fees_minor, totals.flows.disputes_minor) == (0, FEE, 5000)
    assert _status(app, gift) == "succeeded"


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_partial_dispute_takes_back_only_the_disputed_amount(app, client, localstripe, outcome):
    slug, gift = _gift(app, client, localstripe, amount="5000")
    _paid(client, localstripe, gift)
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 1234, outcome=outcome)

    _deliver(client, *events.values())

    disputed = [r for r in ledger_rows(app) if r[0].startswith("dispute")]
    assert sum(r[1] for r in disputed) == (0 if outcome == "won" else -1234)
    assert _totals(app, slug).raised_minor == (5000 if outcome == "won" else 5000 - 1234)


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_closed_arriving_before_created_ends_as_in_order(app, client, localstripe, outcome):
    _slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 2500, outcome=outcome)
    expected = sorted(
        [
            ("gift", 2500, "USD", gift.charge_id, gift.pledge_id),
            *_dispute_rows(gift, events, 2500, outcome),
        ]
    )

    _deliver(client, events["charge.dispute.closed"])
    assert ledger_rows(app) == expected  # the closed object alone says everything
    _deliver(client, events["charge.dispute.created"], events["charge.dispute.updated"])
    _deliver(client, *events.values())
    assert ledger_rows(app) == expected


def test_a_dispute_before_any_payment_event_records_the_gift_first(
    app, client, localstripe, mailbox
):
    _slug, gift = _gift(app, client, localstripe)
    assert _status(app, gift) == "processing"
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 2500, outcome="lost")

    assert _deliver(client, events["charge.dispute.created"]) == ["applied"]

    rows = ledger_rows(app)
    assert ("gift", 2500, "USD", gift.charge_id, gift.pledge_id) in rows
    assert ("dispute", -2500, "USD", events["charge.dispute.created"]["data"]["object"]["id"],
            gift.pledge_id) in rows  # fmt: skip
    assert _status(app, gift) == "succeeded"
    assert len(mailbox.wait_for(1)) == 1  # the receipt of the gift, which was made

    _paid(client, localstripe, gift)
    assert ledger_rows(app) == rows
    assert len(mailbox.messages) == 1


def test_a_dispute_naming_only_the_charge_finds_the_pledge_through_stripe(app, client, localstripe):
    _slug, gift = _gift(app, client, localstripe)
    events = dispute_events(gift.charge_id, None, 2500, outcome="lost")

    assert _deliver(client, events["charge.dispute.closed"]) == ["applied"]

    assert {r[0] for r in ledger_rows(app)} == {"gift", "dispute", "fee"}


def test_an_inquiry_moves_no_money(app, client, localstripe):
    slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    before = ledger_rows(app)

    outcomes = _deliver(client, *inquiry_events(gift.charge_id, gift.intent_ids[-1], 2500))

    assert outcomes == ["applied"] * 3
    assert ledger_rows(app) == before == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]
    assert _totals(app, slug).raised_minor == 2500


@pytest.mark.parametrize("intent_id", ["pi_nobodys0000000000000000", None])
def test_a_dispute_on_a_charge_that_is_not_ours_is_kept_unmatched_and_answered_2xx(
    app, client, localstripe, intent_id
):
    _slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    stranger = dispute(
        "ch_nobodys0000000000000000",
        intent_id,
        900,
        status="lost",
        balance_transactions=[balance_transaction(-900, FEE)],
    )
    event = make_event("charge.dispute.closed", stranger)

    assert _deliver(client, event, event) == ["unmatched", "duplicate"]

    assert (event["id"], "charge.dispute.closed", "unmatched") in event_rows(app)
    with app.app_context():
        kept = db.session.get(StripeEvent, event["id"])
        assert kept.payload["data"]["object"]["id"] == stranger["id"]  # for an organizer
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]


def test_a_dispute_after_a_partial_refund_takes_back_what_was_left(app, client, localstripe):
    slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    made = refund(app, gift.charge_id, 1000, key=f"test-refund:{gift.pledge_id}")
    refunded = charge_event(localstripe, "charge.refunded", gift.charge_id)
    events = dispute_events(gift.charge_id, gift.intent_ids[-1], 1500, outcome="lost")

    _deliver(client, refunded, events["charge.dispute.created"], events["charge.dispute.closed"])
    _deliver(client, refunded, events["charge.dispute.closed"])

    assert ledger_rows(app) == sorted(
        [
            ("gift", 2500, "USD", gift.charge_id, gift.pledge_id),
            ("refund", -1000, "USD", made["id"], gift.pledge_id),
            *_dispute_rows(gift, events, 1500, "lost"),
        ]
    )
    totals = _totals(app, slug)
    assert totals.raised_minor == 0
    assert (totals.flows.refunds_minor, totals.flows.disputes_minor) == (1000, 1500)


def _failed(refund_object: dict[str, Any]) -> dict[str, Any]:
    """The refund as Stripe reports it after the bank returned it: failed, money given back."""
    returned = balance_transaction(
        refund_object["amount"], 0, refund_object["currency"], reporting_category="refund_failure"
    )
    return refund_object | {
        "status": "failed",
        "failure_reason": "expired_or_canceled_card",
        "failure_balance_transaction": returned["id"],
    }


@pytest.mark.parametrize("failure_first", [False, True], ids=["in-order", "failure-first"])
def test_a_refund_that_failed_after_it_succeeded_is_given_back_once(
    app, client, localstripe, failure_first
):
    slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    made = refund(app, gift.charge_id, 1000, key=f"test-refund:{gift.pledge_id}")
    refunded = charge_event(localstripe, "charge.refunded", gift.charge_id)
    failed = _failed(stripe_get(localstripe, "refunds", made["id"]))
    updated = make_event("charge.refund.updated", failed)
    expected = sorted(
        [
            ("gift", 2500, "USD", gift.charge_id, gift.pledge_id),
            ("refund", -1000, "USD", made["id"], gift.pledge_id),
            ("refund_reversal", 1000, "USD", made["id"], gift.pledge_id),
        ]
    )

    order = [updated, refunded] if failure_first else [refunded, updated]
    _deliver(client, *order)
    _deliver(client, updated, updated, make_event("charge.refund.updated", failed), refunded)
    _deliver(client, charge_event(localstripe, "charge.refunded", gift.charge_id))

    assert ledger_rows(app) == expected
    totals = _totals(app, slug)
    assert (totals.raised_minor, totals.flows.refunds_minor) == (2500, 0)


def test_a_refund_that_failed_before_it_succeeded_moves_nothing(app, client, localstripe):
    _slug, gift = _gift(app, client, localstripe)
    _paid(client, localstripe, gift)
    made = refund(app, gift.charge_id, 1000, key=f"test-refund:{gift.pledge_id}")
    never = stripe_get(localstripe, "refunds", made["id"]) | {
        "id": "re_neverwent0000000000000",
        "status": "failed",
        "failure_balance_transaction": None,
    }

    assert _deliver(client, make_event("charge.refund.updated", never)) == ["applied"]

    assert "refund_reversal" not in {r[0] for r in ledger_rows(app)}
    assert "re_neverwent0000000000000" not in {r[3] for r in ledger_rows(app)}


def _allocations(app, slug: str) -> list[tuple[int, int, int]]:
    """(designated, pool share, disputed from designated) per group, in split order."""
    with app.app_context():
        day = db.session.scalar(select(FastDay).where(FastDay.slug == slug))
        return [
            (a.designated_minor, a.pool_share_minor, a.designated.disputes_minor)
            for a in ledger.allocations(day)
        ]


def test_a_disputed_pooled_gift_comes_back_from_the_pool_and_a_designated_one_from_its_group(
    app, client, localstripe
):
    slug, groups = _day(app, weights=(1, 1, 1))
    pooled = make_gift(app, client, localstripe, slug, amount="2500", email="a@example.org")
    pooled_kept = make_gift(app, client, localstripe, slug, amount="5000", email="b@example.org")
    designated = make_gift(
        app, client, localstripe, slug, amount="1000", allocation=groups[1], email="c@example.org"
    )
    for gift in (pooled, pooled_kept, designated):
        _paid(client, localstripe, gift)
    assert _allocations(app, slug) == [(0, 2500, 0), (1000, 2500, 0), (0, 2500, 0)]

    lost = dispute_events(pooled.charge_id, pooled.intent_ids[-1], 2500, outcome="lost")
    _deliver(client, lost["charge.dispute.closed"])
    # The pool loses the gift and the fee: 5000 − 1500 = 3500, split evenly 1167/1167/1166.
    assert _allocations(app, slug) == [(0, 1167, 0), (1000, 1167, 0), (0, 1166, 0)]

    lost = dispute_events(designated.charge_id, designated.intent_ids[-1], 600, outcome="lost")
    _deliver(client, *lost.values())
    assert _allocations(app, slug) == [(0, 1167, 0), (1000 - 600 - FEE, 1167, 600), (0, 1166, 0)]

    with app.app_context():
        fees = db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "fee")).all()
        assert {f.aid_group_id for f in fees} == {None, _group_of(app, designated)}


def _group_of(app, gift: Gift) -> int | None:
    """The group a gift was designated to (None for the pool)."""
    with app.app_context():
        return db.session.scalar(
            select(LedgerEntry.aid_group_id).where(
                LedgerEntry.pledge_id == gift.pledge_id, LedgerEntry.kind == "gift"
            )
        )
