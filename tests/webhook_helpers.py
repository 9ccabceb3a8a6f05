"""Real gifts in localstripe, events built from its objects, and the state a webhook leaves.

The webhook tests share these: they make gifts through the app's own routes, read back the
PaymentIntents, Charges and Refunds exactly as localstripe holds them, wrap them in signed
events (tests/stripe_events.py) and compare what the database and the totals API say.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import delete, select

from fundraiser import ledger_totals
from fundraiser.extensions import db
from fundraiser.models import LedgerEntry, OutboxMessage, Pledge, StripeEvent
from fundraiser.payments import stripe_gateway as gateway
from tests.payments_helpers import CARD_OK, pay, start_gift
from tests.stripe_events import make_event, signed


@dataclass
class Gift:
    """A pledge made through the routes, and the Stripe objects its card steps left."""

    token: str
    pledge_id: int
    customer_id: str
    # Every charge attempt in the order it was made (failed ones included).
    charge_ids: list[str] = field(default_factory=list)
    intent_ids: list[str] = field(default_factory=list)

    @property
    def charge_id(self) -> str:
        """The last attempt's charge: the one that took the money if any did."""
        return self.charge_ids[-1]


def make_gift(
    app,
    client,
    localstripe,
    slug: str,
    *,
    cards: tuple[str, ...] = (CARD_OK,),
    amount: str = "2500",
    other: str = "",
    allocation: str = "all",
    email: str = "donor@example.org",
) -> Gift:
    """Fill in the give form, then try each card in turn on the pay page."""
    token = start_gift(client, slug, amount=amount, other=other, allocation=allocation, email=email)
    for card in cards:
        attempt = pay(client, localstripe, token, card=card)
        assert attempt.setup_error is None, attempt.setup_error
    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        gift = Gift(token=token, pledge_id=pledge.id, customer_id=pledge.stripe_customer_id)
    charges = stripe_list(localstripe, "charges", customer=gift.customer_id)
    assert len(charges) == len(cards), charges
    gift.charge_ids = [c["id"] for c in charges]
    gift.intent_ids = [c["payment_intent"] for c in charges]
    return gift


def stripe_get(localstripe, resource: str, object_id: str) -> dict[str, Any]:
    """One object exactly as localstripe returns it (what its own events would carry)."""
    response = localstripe.http.get(f"{localstripe.url}/v1/{resource}/{object_id}", timeout=10)
    response.raise_for_status()
    return response.json()


def stripe_list(localstripe, resource: str, **params: str) -> list[dict[str, Any]]:
    """A filtered list from localstripe, in creation order."""
    response = localstripe.http.get(
        f"{localstripe.url}/v1/{resource}", params={"limit": 1000, **params}, timeout=10
    )
    response.raise_for_status()
    return response.json()["data"]


def refund(app, charge_id: str, amount_minor: int | None, key: str) -> dict[str, Any]:
    """Refund through the app's gateway, as an organizer's refund would."""
    with app.app_context():
        return gateway.create_refund(
            charge_id=charge_id, amount_minor=amount_minor, idempotency_key=key
        )


def intent_event(localstripe, event_type: str, intent_id: str, **kwargs) -> dict[str, Any]:
    """A payment_intent.* event around the PaymentIntent as localstripe holds it now."""
    return make_event(event_type, stripe_get(localstripe, "payment_intents", intent_id), **kwargs)


def charge_event(localstripe, event_type: str, charge_id: str, **kwargs) -> dict[str, Any]:
    """A charge.* event around the Charge as localstripe holds it now."""
    return make_event(event_type, stripe_get(localstripe, "charges", charge_id), **kwargs)


# --- the state webhooks write, and putting it back --------------------------------------

PLEDGE_COLUMNS = (
    "status",
    "failure_message",
    "stripe_payment_intent_id",
    "stripe_charge_id",
    "succeeded_at",
    "receipt_queued_at",
)


def pledge_rows(app) -> dict[int, tuple]:
    """Every pledge's webhook-written columns, by pledge id."""
    with app.app_context():
        return {
            p.id: tuple(getattr(p, c) for c in PLEDGE_COLUMNS)
            for p in db.session.scalars(select(Pledge))
        }


def restore_pledges(app, saved: dict[int, tuple]) -> None:
    """Forget every event, ledger row and queued e-mail; put each pledge back as ``saved`` had it."""
    with app.app_context():
        db.session.execute(delete(LedgerEntry))
        db.session.execute(delete(StripeEvent))
        db.session.execute(delete(OutboxMessage))
        for pledge in db.session.scalars(select(Pledge)):
            for column, value in zip(PLEDGE_COLUMNS, saved[pledge.id], strict=True):
                setattr(pledge, column, value)
        # The rows went around the ORM, so its running totals are summed again from what is left.
        ledger_totals.rebuild()
        db.session.commit()


def ledger_rows(app) -> list[tuple]:
    """Ledger rows as sorted (kind, amount, currency, Stripe id, pledge id) tuples."""
    with app.app_context():
        return sorted(
            (str(e.kind), e.amount_minor, e.currency, e.stripe_object_id, e.pledge_id)
            for e in db.session.scalars(select(LedgerEntry))
        )


def event_rows(app) -> list[tuple]:
    """Stored events as sorted (id, type, outcome) tuples."""
    with app.app_context():
        return sorted(
            (e.id, e.type, str(e.outcome)) for e in db.session.scalars(select(StripeEvent))
        )


def written_state(app) -> dict[str, Any]:
    """Everything a webhook may write: events, ledger rows and the pledges' columns."""
    return {
        "events": event_rows(app),
        "ledger": ledger_rows(app),
        "pledges": pledge_rows(app),
    }


def snapshot(app, client, slug: str) -> dict[str, Any]:
    """What a replay must not change: ledger, statuses, events and the public totals."""
    with app.app_context():
        statuses = {p.id: str(p.status) for p in db.session.scalars(select(Pledge))}
    totals = client.get(f"/api/v1/fast-days/{slug}/totals")
    assert totals.status_code == 200
    return {
        "ledger": ledger_rows(app),
        "statuses": statuses,
        "events": event_rows(app),
        "event_count": len(event_rows(app)),
        "totals": totals.get_json(),
    }


def post_all_at_once(url: str, events: list[dict[str, Any]], timeout: float = 120.0) -> list[int]:
    """POST each signed event from its own thread, all released together; return the statuses.

    Fails (TimeoutError) if the deliveries have not all been answered within ``timeout``
    seconds, which is how a deadlock between server workers shows.
    """
    start = threading.Barrier(len(events))
    deliveries = [signed(event) for event in events]

    def deliver(body_and_headers: tuple[str, dict[str, str]]) -> int:
        body, headers = body_and_headers
        start.wait(timeout=30)
        return requests.post(
            f"{url}/stripe/webhook", data=body, headers=headers, timeout=timeout
        ).status_code

    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        return list(pool.map(deliver, deliveries, timeout=timeout))


def apply_with_workers(app, workers: int = 4) -> int:
    """Apply the stored events from ``workers`` threads at once, one event per batch so their
    batches interleave, then send the mail they queued; return how many events they handled.

    Each thread is what a scheduler process's apply_webhook_events job is: on PostgreSQL they
    claim with SKIP LOCKED and meet on the pledges' row locks; on SQLite they take turns.
    """
    from fundraiser import outbox
    from fundraiser.payments import webhooks

    start = threading.Barrier(workers)

    def work(_: int) -> int:
        handled = 0
        with app.app_context():
            start.wait(timeout=30)
            while report := webhooks.apply_pending(limit=1).handled:
                handled += report
            db.session.remove()
        return handled

    with ThreadPoolExecutor(max_workers=workers) as pool:
        handled = sum(pool.map(work, range(workers)))
    with app.app_context():
        outbox.drain()
        db.session.remove()
    return handled
