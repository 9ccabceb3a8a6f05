"""W3: every ordering of one gift's five events, and every repetition, ends in the same state.

The gift is real (made through the app's routes against localstripe) and partly refunded
through the app's gateway; its dispute is built as Stripe sends it (localstripe has none).
Between orderings the events, ledger rows and the pledge's webhook-written columns are put
back as they were before any event arrived, so each ordering starts from the same place.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from sqlalchemy import select

from fundraiser import ledger
from fundraiser.extensions import db
from fundraiser.models import FastDay
from tests.factories import make_fast_day
from tests.stripe_events import DISPUTE_FEE_MINOR, dispute_events, make_event, post_event
from tests.webhook_helpers import (
    Gift,
    charge_event,
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
    refund,
    restore_pledges,
)

AMOUNT = 5000
REFUNDED = 1200
DISPUTED = 2000  # part of what the refund left


def _five_events(app, client, localstripe, outcome: str) -> tuple[str, Gift, list[dict]]:
    """A pooled gift of 50.00, 12.00 refunded, 20.00 disputed: its five events in Stripe's order."""
    with app.app_context():
        slug = make_fast_day(weights=[1, 2, 3], suggested=[1000, 2500, 5000]).slug
        db.session.commit()
    gift = make_gift(app, client, localstripe, slug, amount=str(AMOUNT))
    intent_id = gift.intent_ids[-1]
    # The payment's events carry the objects as they stood when it succeeded.
    paid = [
        intent_event(localstripe, "payment_intent.succeeded", intent_id),
        charge_event(localstripe, "charge.succeeded", gift.charge_id),
    ]
    refund(app, gift.charge_id, REFUNDED, key=f"test-refund:{gift.pledge_id}")
    refunded = charge_event(localstripe, "charge.refunded", gift.charge_id)
    disputes = dispute_events(gift.charge_id, intent_id, DISPUTED, outcome=outcome)
    events = [
        *paid,
        refunded,
        disputes["charge.dispute.created"],
        disputes["charge.dispute.closed"],
    ]
    return slug, gift, events


def _deliver(client, events: list[dict[str, Any]]) -> None:
    for event in events:
        response = post_event(client, event)
        assert response.status_code == 200, (event["type"], response.get_json())


def _state(app, slug: str, gift: Gift) -> dict[str, Any]:
    """What must not depend on the order: ledger rows, the pledge, each group's allocation."""
    status, failure, intent_id, charge_id, _succeeded_at, receipt_at = pledge_rows(app)[
        gift.pledge_id
    ]
    with app.app_context():
        day = db.session.scalar(select(FastDay).where(FastDay.slug == slug))
        allocations = [
            (a.slug, a.designated_minor, a.pool_share_minor, a.disbursed_minor)
            for a in ledger.allocations(day)
        ]
        totals = ledger.day_totals(day)
    return {
        "ledger": sorted(row[:4] for row in ledger_rows(app)),
        "pledge": (status, failure, intent_id, charge_id, receipt_at is not None),
        "allocations": allocations,
        "totals": (totals.raised_minor, totals.fees_minor, totals.flows),
    }


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_every_ordering_of_a_gifts_five_events_ends_in_the_same_state(
    app, client, localstripe, mailbox, outcome
):
    slug, gift, events = _five_events(app, client, localstripe, outcome)
    before = pledge_rows(app)

    _deliver(client, events)
    expected = _state(app, slug, gift)
    assert len(mailbox.wait_for(1)) == 1

    # The in-order state is itself right, so "the same as in order" means something.
    kept = AMOUNT - REFUNDED - (0 if outcome == "won" else DISPUTED)
    fees = 0 if outcome == "won" else DISPUTE_FEE_MINOR
    assert expected["pledge"] == ("succeeded", None, gift.intent_ids[-1], gift.charge_id, True)
    assert expected["totals"][:2] == (kept, fees)
    assert sum(a[2] for a in expected["allocations"]) == kept - fees
    assert sorted(row[0] for row in expected["ledger"]) == sorted(
        ["gift", "refund", "dispute", "fee"]
        + (["dispute_reversal", "fee"] if outcome == "won" else [])
    )

    orderings = list(itertools.permutations(events))
    assert len(orderings) == 120
    for ordering in orderings:
        restore_pledges(app, before)
        mailbox.clear()
        _deliver(client, list(ordering))
        assert _state(app, slug, gift) == expected, [e["type"] for e in ordering]
        assert len(mailbox.messages) == 1, [e["type"] for e in ordering]  # one receipt


def test_each_event_three_times_changes_nothing(app, client, localstripe, mailbox):
    slug, gift, events = _five_events(app, client, localstripe, "won")
    before = pledge_rows(app)
    _deliver(client, events)
    expected = _state(app, slug, gift)

    rng = random.Random(4)
    for deliveries in (
        events * 3,  # the whole story again, twice
        [e for e in events for _ in range(3)],  # each event three times in a row
        rng.sample(events * 3, 15),  # shuffled
    ):
        restore_pledges(app, before)
        mailbox.clear()
        _deliver(client, deliveries)
        assert _state(app, slug, gift) == expected
        assert len(mailbox.messages) == 1

    # The same objects in new events (Stripe sends charge.dispute.updated, funds_withdrawn …
    # with the same dispute) are applied again and still add nothing.
    _deliver(client, [make_event(e["type"], e["data"]["object"]) for e in events for _ in range(3)])
    assert _state(app, slug, gift) == expected
    assert len(mailbox.messages) == 1
