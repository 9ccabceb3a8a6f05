"""Handling Stripe's webhook events: each stored once, each applied from Stripe's own state.

Stripe delivers at least once, in any order, for up to three days. So: the event id is the
primary key of ``stripe_event`` (a replay finds it and does nothing), the pledge row is
locked while it changes, and the pledge is rebuilt from the PaymentIntent and Charge as
Stripe holds them now, not from the event type. Any failure raises, the transaction rolls
back (the event row with it) and the view answers 500, so Stripe delivers again later.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from .. import ledger, pledges
from ..extensions import db
from ..models import EventOutcome, Pledge, StripeEvent
from . import stripe_gateway as gateway

log = logging.getLogger(__name__)

PAYMENT_INTENT_EVENTS = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.canceled",
}
CHARGE_EVENTS = {"charge.refunded", "charge.succeeded", "charge.failed", "charge.refund.updated"}
DISPUTE_EVENTS = {
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
}
SETUP_INTENT_EVENTS = {"setup_intent.succeeded"}
# A refund never leaves these states, so a refund object in one of them is news we can act on
# whenever it arrives (Stripe's refund list may say the same or, in tests, lag behind).
REFUND_FINAL_FAILURES = {"failed", "canceled"}


class LivemodeMismatch(Exception):
    """A test-mode event reached a live app, or the other way round."""


def _pledge_from_metadata(obj: dict[str, Any]) -> Pledge | None:
    pledge_id = (obj.get("metadata") or {}).get("pledge_id")
    if not (pledge_id and str(pledge_id).isdigit()):
        return None
    pledge = db.session.get(Pledge, int(pledge_id))
    customer = obj.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    if pledge is not None and customer and pledge.stripe_customer_id not in (None, customer):
        # Ids repeat after a database restore while Stripe keeps its objects: a pledge id
        # alone is not proof, the Customer it was paid by must be the pledge's own.
        return None
    return pledge


def _stripe_id(value: Any) -> str | None:
    """An id from a field Stripe sends either as an id or as the expanded object."""
    return value.get("id") if isinstance(value, dict) else value


def _find_pledge(obj: dict[str, Any]) -> Pledge | None:
    """The pledge a PaymentIntent, Charge or Refund belongs to, by our metadata or Stripe ids."""
    pledge = _pledge_from_metadata(obj)
    if pledge is not None:
        return pledge
    if obj.get("object") == "refund" and obj.get("charge") and not obj.get("payment_intent"):
        # A refund made on the charge (as ours are) may name no PaymentIntent; its charge
        # does, and that PaymentIntent carries our pledge id.
        charge_id = _stripe_id(obj["charge"])
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == charge_id))
        if pledge is not None:
            return pledge
        charge = gateway.find_charge(charge_id)
        intent_id = _stripe_id(charge.get("payment_intent")) if charge else None
        intent = gateway.find_payment_intent(intent_id) if intent_id else None
        return _pledge_from_metadata(intent) if intent else None
    intent_id = obj["id"] if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    if isinstance(intent_id, dict):
        intent_id = intent_id.get("id")
    if intent_id:
        pledge = db.session.scalar(
            select(Pledge).where(Pledge.stripe_payment_intent_id == intent_id)
        )
        if pledge is not None:
            return pledge
    if obj.get("object") == "charge":
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == obj["id"]))
        if pledge is None and intent_id:
            # The charge of an attempt whose PaymentIntent id we never kept (a declined card,
            # or the first card of a donor who retried) may carry no metadata of its own, and
            # whether it matched would depend on which event came first. Its PaymentIntent,
            # as Stripe holds it, carries our pledge id.
            pledge = _pledge_from_metadata(gateway.retrieve_payment_intent(intent_id))
        return pledge
    return None


def _intent_id(obj: dict[str, Any]) -> str | None:
    if obj.get("object") == "payment_intent":
        return obj["id"]
    intent = obj.get("payment_intent")
    return intent.get("id") if isinstance(intent, dict) else intent


def _find_disputed_pledge(dispute: dict[str, Any]) -> Pledge | None:
    """The pledge whose payment a dispute is about: by the charge, its PaymentIntent, or Stripe."""
    charge_id = _stripe_id(dispute.get("charge"))
    intent_id = _stripe_id(dispute.get("payment_intent"))
    if charge_id:
        pledge = db.session.scalar(select(Pledge).where(Pledge.stripe_charge_id == charge_id))
        if pledge is not None:
            return pledge
    if intent_id:
        pledge = db.session.scalar(
            select(Pledge).where(Pledge.stripe_payment_intent_id == intent_id)
        )
        if pledge is not None:
            return pledge
    # A dispute can come before any of its payment's events, on an attempt whose ids we never
    # kept; the PaymentIntent, as Stripe holds it, carries our pledge id. A charge Stripe does
    # not know here is not ours (answered 2xx and kept for review, so Stripe stops retrying).
    if not intent_id and charge_id:
        charge = gateway.find_charge(charge_id)
        intent_id = _stripe_id(charge.get("payment_intent")) if charge else None
    intent = gateway.find_payment_intent(intent_id) if intent_id else None
    return _pledge_from_metadata(intent) if intent else None


def _apply_dispute(dispute: dict[str, Any]) -> bool:
    """Record a dispute against its pledge; False if it is about no pledge of ours.

    The pledge's status stays as it is: a dispute is money taken back and perhaps returned,
    which the ledger shows, not a new state of the donor's gift.
    """
    found = _find_disputed_pledge(dispute)
    pledge = pledges.lock(found.id) if found is not None else None
    if pledge is None:
        return False
    if pledge.stripe_charge_id is None or pledge.stripe_charge_id != _stripe_id(
        dispute.get("charge")
    ):
        # The dispute came before the payment's own events: record the payment from Stripe
        # first, so the gift the dispute takes from is in the ledger beside it.
        intent_id = _stripe_id(dispute.get("payment_intent")) or pledge.stripe_payment_intent_id
        if intent_id:
            pledges.sync_payment(pledge, intent_id)
    ledger.record_dispute(pledge, dispute)
    return True


def handle_event(event: dict[str, Any], *, app_livemode: bool) -> EventOutcome | None:
    """Apply one verified event; return its outcome, or None if it was already handled."""
    if bool(event.get("livemode")) != app_livemode:
        raise LivemodeMismatch(event.get("id"))
    if db.session.get(StripeEvent, event["id"]) is not None:
        return None

    event_type = event.get("type", "")
    obj = (event.get("data") or {}).get("object") or {}
    outcome = EventOutcome.IGNORED
    if event_type in PAYMENT_INTENT_EVENTS or event_type in CHARGE_EVENTS:
        found = _find_pledge(obj)
        pledge = pledges.lock(found.id) if found is not None else None
        intent_id = _intent_id(obj) or (pledge.stripe_payment_intent_id if pledge else None)
        if pledge is None or intent_id is None:
            outcome = EventOutcome.UNMATCHED
            log.warning(
                "stripe event %s (%s) matches no pledge; kept for review", event["id"], event_type
            )
        else:
            pledges.sync_payment(pledge, intent_id)
            if obj.get("object") == "refund" and obj.get("status") in REFUND_FINAL_FAILURES:
                ledger.record_refund(pledge, obj)
            outcome = EventOutcome.APPLIED
    elif event_type in SETUP_INTENT_EVENTS:
        # A card saved for a pledge charged on the fast day: the same function the donor's
        # return to the app calls, reading the SetupIntent from Stripe.
        found = _pledge_from_metadata(obj)
        pledge = pledges.lock(found.id) if found is not None else None
        if pledge is None:
            outcome = EventOutcome.UNMATCHED
            log.warning(
                "stripe event %s (%s) matches no pledge; kept for review", event["id"], event_type
            )
        else:
            pledges.record_setup(pledge, obj["id"])
            outcome = EventOutcome.APPLIED
    elif event_type in DISPUTE_EVENTS:
        if _apply_dispute(obj):
            outcome = EventOutcome.APPLIED
        else:
            outcome = EventOutcome.UNMATCHED
            log.warning(
                "stripe event %s (%s) matches no pledge; kept for review", event["id"], event_type
            )

    db.session.add(
        StripeEvent(
            id=event["id"],
            type=event_type[:100],
            livemode=bool(event.get("livemode")),
            outcome=outcome,
            payload=event if outcome == EventOutcome.UNMATCHED else None,
            stripe_created=datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        )
    )
    db.session.flush()
    return outcome
