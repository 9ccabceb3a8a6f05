"""Webhook deliveries that arrive at the same moment, over real HTTP, on the suite's database.

Stripe retries in parallel with its first attempt and sends several events for one payment
(payment_intent.succeeded and charge.succeeded) within milliseconds, so one payment's
events meet in different server threads, which store them; then several workers apply
them at once. Whatever the interleaving, the payment is recorded once and the donor gets
one receipt.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from fundraiser.extensions import db
from tests.factories import make_fast_day
from tests.stripe_events import signed
from tests.webhook_helpers import (
    apply_with_workers,
    charge_event,
    event_rows,
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
)

THREADS = 20


def _post_all_at_once(url: str, events: list[dict]) -> list[int]:
    """POST each event from its own thread, all released together; return the status codes."""
    start = threading.Barrier(len(events))
    bodies = [signed(event) for event in events]

    def deliver(body_and_headers: tuple[str, dict[str, str]]) -> int:
        body, headers = body_and_headers
        start.wait(timeout=10)
        return requests.post(
            f"{url}/stripe/webhook", data=body, headers=headers, timeout=60
        ).status_code

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        return list(pool.map(deliver, bodies))


def _paid_gift(app, client, localstripe):
    with app.app_context():
        slug = make_fast_day().slug
        db.session.commit()
    return make_gift(app, client, localstripe, slug, amount="5000")


def test_same_event_posted_20_times_at_once_is_stored_and_applied_once(
    app, client, localstripe, live_server, mailbox
):
    gift = _paid_gift(app, client, localstripe)
    event = intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])

    statuses = _post_all_at_once(live_server.url, [event] * THREADS)

    assert statuses == [200] * THREADS
    assert apply_with_workers(app) == 1  # one row stored, so one event to apply
    assert event_rows(app) == [(event["id"], "payment_intent.succeeded", "applied")]
    assert ledger_rows(app) == [("gift", 5000, "USD", gift.charge_id, gift.pledge_id)]
    assert pledge_rows(app)[gift.pledge_id][0] == "succeeded"
    assert len(mailbox.messages) == 1


def test_different_events_for_one_payment_at_once_send_one_receipt(
    app, client, localstripe, live_server, mailbox
):
    """Each event is new, so each is applied; the pledge must not be read before its lock."""
    gift = _paid_gift(app, client, localstripe)
    events = [
        intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])
        if i % 2
        else charge_event(localstripe, "charge.succeeded", gift.charge_id)
        for i in range(THREADS)
    ]

    statuses = _post_all_at_once(live_server.url, events)

    assert statuses == [200] * THREADS
    assert apply_with_workers(app) == THREADS
    assert sorted(e[0] for e in event_rows(app)) == sorted(e["id"] for e in events)
    assert {e[2] for e in event_rows(app)} == {"applied"}
    assert ledger_rows(app) == [("gift", 5000, "USD", gift.charge_id, gift.pledge_id)]
    assert pledge_rows(app)[gift.pledge_id][0] == "succeeded"
    assert len(mailbox.messages) == 1
