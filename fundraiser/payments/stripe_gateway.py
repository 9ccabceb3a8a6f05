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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
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


class TokenBucket:
    """At most ``rate`` requests a second on average, with bursts of up to ``rate`` at once.

    Shared by every thread of a process. A 429 from Stripe empties it and holds it for the
    backoff delay, so the job's other threads slow down too instead of piling on.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be above zero")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def acquire(self) -> float:
        """Take one token, sleeping until it is due; returns how long it waited.

        A token not there yet is reserved (the count goes below zero) and waited for, so
        threads are served in the order they asked and nobody spins.
        """
        with self._lock:
            self._refill(self._clock())
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait

    def hold(self, seconds: float) -> None:
        """Hand out nothing for ``seconds`` more (after a 429)."""
        with self._lock:
            self._refill(self._clock())
            self._tokens = min(self._tokens, 0.0) - seconds * self.rate


_buckets: dict[float, TokenBucket] = {}
_buckets_lock = threading.Lock()
_throttle: ContextVar[TokenBucket | None] = ContextVar("stripe_throttle", default=None)


def rate_limiter() -> TokenBucket:
    """This process's token bucket for STRIPE_MAX_REQUESTS_PER_SECOND."""
    rate = float(current_app.config["STRIPE_MAX_REQUESTS_PER_SECOND"])
    with _buckets_lock:
        bucket = _buckets.get(rate)
        if bucket is None:
            bucket = _buckets[rate] = TokenBucket(rate)
        return bucket


@contextmanager
def throttled() -> Iterator[TokenBucket]:
    """Every Stripe request made inside waits for the process's rate limiter (bulk jobs)."""
    bucket = rate_limiter()
    token = _throttle.set(bucket)
    try:
        yield bucket
    finally:
        _throttle.reset(token)


def _rate_limited(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.RateLimitError) or exc.http_status == 429


def _call(fn: Callable[[], Any], what: str) -> dict[str, Any]:
    """Run one Stripe request, retrying what is safe to retry with backoff and jitter."""
    settings = _settings()
    bucket = _throttle.get()
    attempt = 0
    while True:
        if bucket is not None:
            bucket.acquire()
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
            if bucket is not None and _rate_limited(exc):
                bucket.hold(delay)  # the whole job backs off, not just this request
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


# --- Disputes ------------------------------------------------------------------------------
# Disputes arrive only as events, whose dispute object already holds every balance transaction
# (Stripe expands them), so nothing here reads a dispute. What a dispute needs is the payment
# it is about, which may be nobody's here: Stripe answers 404 for an object that is not ours.


def _missing(exc: PaymentError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, stripe.InvalidRequestError) and cause.http_status == 404


def find_payment_intent(payment_intent_id: str) -> dict[str, Any] | None:
    """A PaymentIntent as :func:`retrieve_payment_intent` reads it, or None if Stripe has none."""
    try:
        return retrieve_payment_intent(payment_intent_id)
    except PaymentServiceUnavailable:
        raise
    except PaymentError as exc:
        if _missing(exc):
            return None
        raise


def find_charge(charge_id: str) -> dict[str, Any] | None:
    """A Charge as :func:`retrieve_charge` reads it, or None if Stripe has none."""
    try:
        return retrieve_charge(charge_id)
    except PaymentServiceUnavailable:
        raise
    except PaymentError as exc:
        if _missing(exc):
            return None
        raise


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


# --- Balance transactions ------------------------------------------------------------------
#
# Reconciliation reads every movement of our Stripe balance in a time range. Stripe lists
# them newest first; localstripe takes no ``created`` filter (it answers 400), so the range is
# applied here: page back from now and stop at the first transaction older than the range.


def list_balance_transactions(
    created_gte: int, created_lt: int, *, page_size: int = 100
) -> list[dict[str, Any]]:
    """Every balance transaction created in [created_gte, created_lt) (Unix seconds), newest first.

    Each carries its ``source`` expanded (the charge, refund, dispute or transfer), because
    the ledger books the source's own amount and currency, which differ from the
    transaction's when Stripe converted the money to our settlement currency.
    """
    found: list[dict[str, Any]] = []
    starting_after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": page_size, "expand": ["data.source"]}
        if starting_after:
            params["starting_after"] = starting_after
        page = _call(
            lambda p=params: _client().v1.balance_transactions.list(params=p),
            "balance_transactions.list",
        )
        data = page.get("data") or []
        for transaction in data:
            if created_gte <= int(transaction["created"]) < created_lt:
                found.append(transaction)
        if not page.get("has_more") or not data or int(data[-1]["created"]) < created_gte:
            return found
        starting_after = data[-1]["id"]


# --- Connect transfers ---------------------------------------------------------------------
#
# Transfers move money from our balance to an aid group's connected account. They go to
# STRIPE_CONNECT_API_BASE, which is api.stripe.com in production like everything else, and
# a small fake in development and tests (localstripe has no transfers).


class TransferRefused(PaymentError):
    """Stripe answered a transfer with a refusal (insufficient funds, unknown account …).

    Stripe acted on nothing, so the disbursement failed; ``code`` is Stripe's error code.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _connect_client() -> stripe.StripeClient:
    base = (current_app.config.get("STRIPE_CONNECT_API_BASE") or _settings().api_base).rstrip("/")
    settings = replace(_settings(), api_base=base)
    client = _clients.get(settings)
    if client is None:
        client = stripe.StripeClient(
            settings.secret_key,
            base_addresses={"api": base},
            max_network_retries=0,  # as in _client: our loop retries, with our fixed keys
            http_client=stripe.RequestsClient(timeout=settings.timeout_seconds),
        )
        _clients[settings] = client
    return client


def _refusal(exc: PaymentError) -> PaymentError:
    """A non-retryable answer as TransferRefused, keeping Stripe's own message and code."""
    cause = exc.__cause__
    if isinstance(cause, stripe.StripeError):
        return TransferRefused(cause.user_message or str(exc), code=cause.code)
    return exc


def create_transfer(
    *,
    amount_minor: int,
    currency: str,
    destination: str,
    transfer_group: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    """Transfer ``amount_minor`` to a connected account; a refusal raises TransferRefused.

    PaymentServiceUnavailable means we do not know whether Stripe acted: retry with the
    same key (within 24 hours), or look the transfer up first.
    """
    params = {
        "amount": amount_minor,
        "currency": currency.lower(),
        "destination": destination,
        "transfer_group": transfer_group,
        "metadata": metadata,
    }
    try:
        return _call(
            lambda: _connect_client().v1.transfers.create(
                params=params, options=_opts(idempotency_key)
            ),
            "transfers.create",
        )
    except PaymentServiceUnavailable:
        raise
    except PaymentError as exc:
        raise _refusal(exc) from exc.__cause__


def retrieve_transfer(transfer_id: str) -> dict[str, Any]:
    """Read one transfer."""
    return _call(lambda: _connect_client().v1.transfers.retrieve(transfer_id), "transfers.retrieve")


def list_transfers(*, transfer_group: str) -> list[dict[str, Any]]:
    """Every transfer in a transfer group, newest first, all pages."""
    transfers: list[dict[str, Any]] = []
    starting_after: str | None = None
    while True:
        params: dict[str, Any] = {"transfer_group": transfer_group, "limit": 100}
        if starting_after:
            params["starting_after"] = starting_after
        page = _call(
            lambda p=params: _connect_client().v1.transfers.list(params=p), "transfers.list"
        )
        transfers.extend(page.get("data") or [])
        if not page.get("has_more") or not page.get("data"):
            return transfers
        starting_after = page["data"][-1]["id"]


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
