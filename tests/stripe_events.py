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


def post_event(client, event: dict[str, Any], **kwargs):
    """Deliver a signed event to the app's webhook endpoint."""
    body, headers = signed(event, **kwargs)
    return client.post("/stripe/webhook", data=body, headers=headers)
