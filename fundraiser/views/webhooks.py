"""POST /stripe/webhook: verify, hand the event to the handler, answer so Stripe knows."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError

from ..access import stripe_signed
from ..extensions import db
from ..models import StripeEvent
from ..payments import stripe_gateway as gateway
from ..payments.webhooks import LivemodeMismatch, handle_event

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

# Stripe's events are small; anything far larger is not from Stripe.
MAX_WEBHOOK_BYTES = 512 * 1024


@bp.post("/stripe/webhook")
@stripe_signed
def stripe_webhook():
    """Receive one Stripe event (CSRF-exempt: Stripe signs the raw body instead)."""
    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        return jsonify(error="payload too large"), 413
    payload = request.get_data(cache=False)
    try:
        event = gateway.verify_event(
            payload,
            request.headers.get("Stripe-Signature"),
            current_app.config["STRIPE_WEBHOOK_SECRET"],
        )
    except gateway.InvalidSignature:
        return jsonify(error="invalid signature"), 400
    try:
        outcome = handle_event(event, app_livemode=gateway.livemode())
        db.session.commit()
    except LivemodeMismatch:
        db.session.rollback()
        return jsonify(error="livemode mismatch"), 400
    except IntegrityError:
        db.session.rollback()
        if db.session.get(StripeEvent, event["id"]) is not None:
            # A twin delivery of the same event committed first: it is handled.
            return jsonify(received=True, duplicate=True), 200
        log.exception("stripe event %s broke a constraint; Stripe will retry", event["id"])
        return jsonify(error="not processed, retry later"), 500
    except Exception:
        db.session.rollback()
        log.exception("stripe event %s could not be processed; Stripe will retry", event.get("id"))
        return jsonify(error="not processed, retry later"), 500
    return jsonify(received=True, outcome=str(outcome) if outcome else "duplicate"), 200
