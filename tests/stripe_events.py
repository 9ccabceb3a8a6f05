"""Build Stripe events and sign them with the stripe SDK's own helper."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import stripe

from tests.conftest import WEBHOOK_SECRET


def make_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    livemode: bool = False,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A Stripe event envelope around ``obj``."""
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": created or int(time.time()),
        "livemode": livemode,
        "type": event_type,
        "data": {"object": obj},
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }


def sign(body: str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for ``body``, made by the SDK's helper."""
    return stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)


def signed(
    event: dict[str, Any], secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[str, dict[str, str]]:
    """The raw body and headers Stripe would send for ``event``."""
    body = json.dumps(event)
    return body, {
        "Stripe-Signature": sign(body, secret, timestamp),
        "Content-Type": "application/json",
    }


def post_event(client, event: dict[str, Any], *, apply: bool = True, **kwargs):
    """Deliver a signed event to the webhook, then (unless ``apply=False``) apply the queue.

    The webhook only stores the event; applying it is the scheduler's work, done here by the
    same functions its jobs call (:func:`apply_queued`), so a test sees the event's effect.
    """
    body, headers = signed(event, **kwargs)
    response = client.post("/stripe/webhook", data=body, headers=headers)
    if apply:
        apply_queued(client.application)
    return response


def apply_queued(app) -> None:
    """What the scheduler's apply_webhook_events and drain_outbox jobs do: apply, then mail."""
    from fundraiser import outbox
    from fundraiser.extensions import db
    from fundraiser.payments import webhooks

    with app.app_context():
        webhooks.apply_pending()
        outbox.drain()
        db.session.remove()


# --- disputes: localstripe has none, so their objects are built here as Stripe sends them ---

DISPUTE_FEE_MINOR = 1500  # Stripe's dispute fee in USD, taken when a dispute opens


def balance_transaction(
    amount_minor: int,
    fee_minor: int,
    currency: str = "usd",
    *,
    reporting_category: str = "dispute",
    source: str | None = None,
) -> dict[str, Any]:
    """An expanded balance transaction as Stripe embeds it in a dispute."""
    now = int(time.time())
    return {
        "id": f"txn_{secrets.token_hex(12)}",
        "object": "balance_transaction",
        "amount": amount_minor,
        "available_on": now,
        "created": now,
        "currency": currency.lower(),
        "description": "Chargeback withdrawal" if amount_minor < 0 else "Chargeback reversal",
        "exchange_rate": None,
        "fee": fee_minor,
        "fee_details": [
            {
                "amount": fee_minor,
                "application": None,
                "currency": currency.lower(),
                "description": "Dispute fee",
                "type": "stripe_fee",
            }
        ]
        if fee_minor
        else [],
        "net": amount_minor - fee_minor,
        "reporting_category": reporting_category,
        "source": source,
        "status": "available",
        "type": "adjustment",
    }


def dispute(
    charge_id: str,
    payment_intent_id: str | None,
    amount_minor: int,
    *,
    status: str,
    balance_transactions: list[dict[str, Any]] | None = None,
    currency: str = "usd",
    dispute_id: str | None = None,
) -> dict[str, Any]:
    """A dispute object as Stripe sends it in charge.dispute.* events."""
    dispute_id = dispute_id or f"dp_{secrets.token_hex(12)}"
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount_minor,
        "balance_transactions": list(balance_transactions or []),
        "charge": charge_id,
        "created": int(time.time()),
        "currency": currency.lower(),
        "evidence": {"customer_email_address": None, "uncategorized_text": None},
        "evidence_details": {
            "due_by": int(time.time()) + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent_id,
        "reason": "fraudulent",
        "status": status,
    }


def dispute_events(
    charge_id: str,
    payment_intent_id: str | None,
    amount_minor: int,
    *,
    outcome: str,
    currency: str = "usd",
    fee_returned: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every event of one dispute's life, by type, each carrying the dispute as it then stood.

    ``outcome`` is "won" or "lost". Funds (and the fee) are withdrawn when it opens; a win
    reinstates the amount and, with ``fee_returned``, the fee.
    """
    dispute_id = f"dp_{secrets.token_hex(12)}"
    withdrawal = balance_transaction(
        -amount_minor, DISPUTE_FEE_MINOR, currency, source=dispute_id, reporting_category="dispute"
    )
    reinstatement = balance_transaction(
        amount_minor,
        -DISPUTE_FEE_MINOR if fee_returned else 0,
        currency,
        source=dispute_id,
        reporting_category="dispute_reversal",
    )

    def state(status: str, *transactions: dict[str, Any]) -> dict[str, Any]:
        return dispute(
            charge_id,
            payment_intent_id,
            amount_minor,
            status=status,
            balance_transactions=list(transactions),
            currency=currency,
            dispute_id=dispute_id,
        )

    events = {
        "charge.dispute.created": make_event(
            "charge.dispute.created", state("needs_response", withdrawal)
        ),
        "charge.dispute.funds_withdrawn": make_event(
            "charge.dispute.funds_withdrawn", state("needs_response", withdrawal)
        ),
        "charge.dispute.updated": make_event(
            "charge.dispute.updated", state("under_review", withdrawal)
        ),
    }
    if outcome == "won":
        events["charge.dispute.funds_reinstated"] = make_event(
            "charge.dispute.funds_reinstated", state("won", withdrawal, reinstatement)
        )
        events["charge.dispute.closed"] = make_event(
            "charge.dispute.closed", state("won", withdrawal, reinstatement)
        )
    elif outcome == "lost":
        events["charge.dispute.closed"] = make_event(
            "charge.dispute.closed", state("lost", withdrawal)
        )
    else:
        raise ValueError(f"outcome is won or lost, not {outcome!r}")
    return events


def inquiry_events(
    charge_id: str, payment_intent_id: str | None, amount_minor: int, currency: str = "usd"
) -> list[dict[str, Any]]:
    """An inquiry (a question from the bank, no chargeback): opened, then closed; no money moves."""
    dispute_id = f"dp_{secrets.token_hex(12)}"
    return [
        make_event(
            event_type,
            dispute(
                charge_id,
                payment_intent_id,
                amount_minor,
                status=status,
                currency=currency,
                dispute_id=dispute_id,
            ),
        )
        for event_type, status in (
            ("charge.dispute.created", "warning_needs_response"),
            ("charge.dispute.updated", "warning_under_review"),
            ("charge.dispute.closed", "warning_closed"),
        )
    ]


def outcome_of(app, response, event_id: str) -> str:
    """What one delivery came to: "duplicate" if the webhook had it already, else its outcome."""
    from fundraiser.extensions import db
    from fundraiser.models import StripeEvent

    if response.get_json().get("duplicate"):
        return "duplicate"
    with app.app_context():
        stored = db.session.get(StripeEvent, event_id)
        outcome = str(stored.outcome) if stored is not None and stored.outcome else "not applied"
        db.session.remove()
    return outcome
