"""POST /stripe/webhook: verify, store the event for the workers, answer so Stripe knows."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from ..access import stripe_signed
from ..payments import stripe_gateway as gateway
from ..payments.webhooks import LivemodeMismatch, store_event

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

# Stripe's events are small; anything far larger is not from Stripe.
MAX_WEBHOOK_BYTES = 512 * 1024


@bp.post("/stripe/webhook")
@stripe_signed
def stripe_webhook():
    """Receive one Stripe event (CSRF-exempt: Stripe signs the raw body instead).

    The event is only stored here; the scheduler's workers apply it (``apply_pending``), so
    the answer never waits on Stripe, a pledge's lock or mail.
    """
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
        stored = store_event(event, app_livemode=gateway.livemode())
    except LivemodeMismatch:
        return jsonify(error="livemode mismatch"), 400
    except Exception:
        log.exception("stripe event %s could not be stored; Stripe will retry", event.get("id"))
        return jsonify(error="not stored, retry later"), 500
    return jsonify(received=True, duplicate=not stored), 200
