"""The only module that talks to Stripe.

Every call goes through :func:`_call`, which sets a timeout, sends our own idempotency key on
every create, and retries rate limits (429) and network errors with backoff. Stripe-python
retries only with its own random keys, which protect nothing across our own retries; a key
derived from our ids does. Results are plain dicts so the rest of the app never sees SDK types.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import stripe
from flask import current_app

log = logging.getLogger(__name__)


class PaymentError(Exception):
    """Stripe refused the request for a reason that is not the donor's card."""


class CardDeclined(PaymentError):
    """The card was declined; ``message`` is Stripe's reason, safe to show the donor."""

    def __init__(self, message: str, code: str | None = None, decline_code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.decline_code = decline_code


class PaymentServiceUnavailable(PaymentError):
    """Stripe could not be reached, or kept rate-limiting us, after every retry."""


class InvalidSignature(Exception):
    """A webhook whose signature or payload does not verify."""


@dataclass(frozen=True)
class GatewaySettings:
    """What the gateway needs from the app's config."""

    secret_key: str
    api_base: str
    timeout_seconds: float
    max_retries: int
    retry_base_seconds: float

    @property
    def livemode(self) -> bool:
        """Live keys start sk_live_ (or rk_live_ for restricted keys)."""
        return "_live_" in self.secret_key


def _settings() -> GatewaySettings:
    cfg = current_app.config
    return GatewaySettings(
        secret_key=cfg["STRIPE_SECRET_KEY"],
        api_base=cfg["STRIPE_API_BASE"].rstrip("/"),
        timeout_seconds=cfg["STRIPE_TIMEOUT_SECONDS"],
        max_retries=cfg["STRIPE_MAX_RETRIES"],
        retry_base_seconds=cfg["STRIPE_RETRY_BASE_SECONDS"],
    )


_clients: dict[GatewaySettings, stripe.StripeClient] = {}


def _client() -> stripe.StripeClient:
    settings = _settings()
    client = _clients.get(settings)
    if client is None:
        http_client = stripe.RequestsClient(timeout=settings.timeout_seconds)
        client = stripe.StripeClient(
            settings.secret_key,
            base_addresses={"api": settings.api_base},
            # Our own loop retries, with our own fixed keys; the SDK must not add another layer.
            max_network_retries=0,
            http_client=http_client,
        )
        _clients[settings] = client
    return client


def livemode() -> bool:
    """Whether the app runs on live keys (and so must refuse test-mode events)."""
    return _settings().livemode


def _retryable(exc: stripe.StripeError) -> bool:
    """Rate limits, network errors, key conflicts (a twin request in flight) and 5xx."""
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = exc.http_status or 0
    return status == 409 or status == 429 or status >= 500


def _call(fn: Callable[[], Any], what: str) -> dict[str, Any]:
    """Run one Stripe request, retrying what is safe to retry with backoff and jitter."""
    settings = _settings()
    attempt = 0
    while True:
        try:
            result = fn()
            return result.to_dict() if hasattr(result, "to_dict") else dict(result)
        except stripe.CardError as exc:
            err = exc.error
            raise CardDeclined(
                exc.user_message or "Your card was declined.",
                code=getattr(err, "code", None) if err else None,
                decline_code=getattr(err, "decline_code", None) if err else None,
            ) from exc
        except stripe.IdempotencyError as exc:
            # Same key, different parameters: a bug on our side, never the donor's.
            raise PaymentError(f"idempotency conflict on {what}") from exc
        except stripe.StripeError as exc:
            if not _retryable(exc):
                raise PaymentError(f"{what}: {exc.user_message or exc}") from exc
            if attempt >= settings.max_retries:
                log.warning(
                    "stripe %s gave up after %d attempts: %s", what, attempt + 1, type(exc).__name__
                )
                raise PaymentServiceUnavailable(what) from exc
            delay = settings.retry_base_seconds * (2**attempt)
            delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - jitter, not crypto
            log.info(
                "stripe %s: %s, retry %d in %.2fs", what, type(exc).__name__, attempt + 1, delay
            )
            time.sleep(delay)
            attempt += 1


def _opts(idempotency_key: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if idempotency_key:
        opts["idempotency_key"] = idempotency_key
    return opts


def create_customer(*, email: str, name: str | None, idempotency_key: str) -> dict[str, Any]:
    """Create the Customer a pledge's card is saved to."""
    params: dict[str, Any] = {"email": email}
    if name:
        params["name"] = name
    return _call(
        lambda: _client().v1.customers.create(params=params, options=_opts(idempotency_key)),
        "customers.create",
    )


def create_setup_intent(
    *, customer_id: str, metadata: dict[str, str], idempotency_key: str
) -> dict[str, Any]:
    """Create a SetupIntent the browser confirms with the card element."""
    params = {
        "customer": customer_id,
        "usage": "off_session",  # pledges are charged later, on the fast day
        "payment_method_types": ["card"],
        "metadata": metadata,
    }
    return _call(
        lambda: _client().v1.setup_intents.create(params=params, options=_opts(idempotency_key)),
        "setup_intents.create",
    )


def retrieve_setup_intent(setup_intent_id: str) -> dict[str, Any]:
    """Read a SetupIntent (its status and payment method)."""
    return _call(
        lambda: _client().v1.setup_intents.retrieve(setup_intent_id), "setup_intents.retrieve"
    )


def create_payment_intent(
    *,
    amount_minor: int,
    currency: str,
    customer_id: str,
    payment_method_id: str,
    metadata: dict[str, str],
    idempotency_key: str,
    off_session: bool = False,
) -> dict[str, Any]:
    """Create and confirm a PaymentIntent on the server with a saved payment method.

    A decline raises CardDeclined. A PaymentIntent that needs authentication comes back
    with status ``requires_action`` and its client secret for ``confirmCardPayment``.
    """
    params: dict[str, Any] = {
        "amount": amount_minor,
        "currency": currency.lower(),
        "customer": customer_id,
        "payment_method": payment_method_id,
        "payment_method_types": ["card"],
        "confirm": True,
        "metadata": metadata,
    }
    if off_session:
        params["off_session"] = True
    return _call(
        lambda: _client().v1.payment_intents.create(params=params, options=_opts(idempotency_key)),
        "payment_intents.create",
    )


def retrieve_payment_intent(payment_intent_id: str) -> dict[str, Any]:
    """Read a PaymentIntent with its latest charge and that charge's balance transaction."""
    return _call(
        lambda: _client().v1.payment_intents.retrieve(
            payment_intent_id,
            params={"expand": ["latest_charge.balance_transaction"]},
        ),
        "payment_intents.retrieve",
    )


def retrieve_charge(charge_id: str) -> dict[str, Any]:
    """Read a Charge with its balance transaction."""
    return _call(
        lambda: _client().v1.charges.retrieve(
            charge_id, params={"expand": ["balance_transaction"]}
        ),
        "charges.retrieve",
    )


def list_refunds(charge_id: str) -> list[dict[str, Any]]:
    """Every refund of a charge, each with its balance transaction."""
    refunds: list[dict[str, Any]] = []
    starting_after: str | None = None
    while True:
        params: dict[str, Any] = {
            "charge": charge_id,
            "limit": 100,
            "expand": ["data.balance_transaction"],
        }
        if starting_after:
            params["starting_after"] = starting_after
        page = _call(lambda p=params: _client().v1.refunds.list(params=p), "refunds.list")
        refunds.extend(page.get("data") or [])
        if not page.get("has_more") or not page.get("data"):
            return refunds
        starting_after = page["data"][-1]["id"]


def create_refund(
    *, charge_id: str, amount_minor: int | None, idempotency_key: str
) -> dict[str, Any]:
    """Refund a charge fully (amount None) or partly."""
    params: dict[str, Any] = {"charge": charge_id}
    if amount_minor is not None:
        params["amount"] = amount_minor
    return _call(
        lambda: _client().v1.refunds.create(params=params, options=_opts(idempotency_key)),
        "refunds.create",
    )


def verify_event(payload: bytes, signature_header: str | None, secret: str) -> dict[str, Any]:
    """Verify a webhook's signature on the raw body and return the event as a dict.

    Stripe's default tolerance (300 s) stands: a replayed old delivery is refused.
    Several ``v1=`` signatures in one header (secret rotation) are accepted if any matches.
    """
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature_header, secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE
        )
    except (stripe.SignatureVerificationError, ValueError, IndexError, TypeError) as exc:
        # TypeError: hmac.compare_digest refuses a non-ASCII signature instead of returning False.
        raise InvalidSignature(str(exc)) from exc
    try:
        event = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSignature("payload is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str):
        raise InvalidSignature("payload is not a Stripe event")
    return event
