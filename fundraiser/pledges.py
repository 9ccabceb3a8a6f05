"""Pledges: creating a gift, taking the donor's card, and applying what Stripe reports.

The payment path (the one both real Stripe and localstripe support):
1. :func:`prepare_card_setup` creates a Customer and a SetupIntent for the pledge;
2. the browser confirms the SetupIntent with Stripe.js (``confirmCardSetup``);
3. :func:`charge_now` creates and confirms a PaymentIntent with that card on the server,
   under an idempotency key made from the pledge and the SetupIntent, so a double click,
   a retry after a network error, or a crash between Stripe and our commit can never
   charge twice;
4. if Stripe asks for authentication the browser calls ``confirmCardPayment``.
The pledge only becomes ``succeeded`` when :func:`sync_payment` reads it from Stripe,
which the webhook triggers: the thank-you page shows what the webhook recorded.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from . import ledger, mail
from .extensions import db
from .models import AidGroup, FastDay, Pledge, PledgeStatus
from .payments import stripe_gateway as gateway

log = logging.getLogger(__name__)

# SetupIntent states in which the browser can still confirm a card on it.
_SETUP_USABLE = {"requires_payment_method", "requires_confirmation", "requires_action"}


class PledgeError(Exception):
    """Something the donor can act on, with a message for them."""


def create_pledge(
    *,
    fast_day: FastDay,
    amount_minor: int,
    currency: str,
    aid_group: AidGroup | None,
    donor_name: str | None,
    email: str,
    dedication: str | None,
    wants_messages: bool,
    locale: str,
    charge_on_day: bool = False,
    timezone: str | None = None,
    whole_series: bool = False,
) -> Pledge:
    """Record a donor's intention to give; no money moves yet.

    With ``charge_on_day`` the card is only saved now and charged on the fast day (see
    ``pledge_charges``); with ``whole_series`` too, on every later day of its series.
    """
    from . import pledge_charges  # it builds on this module

    if charge_on_day and not pledge_charges.can_pledge_for_day(fast_day):
        raise PledgeError(_l("This fast day has begun: you can give now."))
    if not fast_day.is_open_for_gifts:
        raise PledgeError(_l("This fast day is not taking gifts."))
    if currency.upper() not in fast_day.accepted_currencies:
        raise PledgeError(
            _l(
                "This fast day takes gifts in %(currency)s.",
                currency=", ".join(fast_day.accepted_currencies),
            )
        )
    if aid_group is not None and aid_group not in fast_day.groups:
        raise PledgeError(_l("That group is not funded by this fast day."))
    pledge = Pledge(
        token=secrets.token_urlsafe(24),
        fast_day=fast_day,
        aid_group=aid_group,
        amount_minor=amount_minor,
        currency=currency.upper(),
        donor_name=(donor_name or "").strip() or None,
        email=email.strip().lower(),
        dedication=(dedication or "").strip() or None,
        wants_messages=wants_messages,
        locale=locale,
        status=PledgeStatus.PENDING,
        charge_on_day=charge_on_day,
        timezone=timezone if charge_on_day else None,
        series_token=pledge_charges.new_series_token() if charge_on_day and whole_series else None,
    )
    if charge_on_day:
        pledge.charge_due_at = pledge_charges.charge_due_at_for(fast_day, pledge.timezone)
    db.session.add(pledge)
    db.session.flush()
    return pledge


def get_by_token(token: str) -> Pledge | None:
    """The pledge with this token, or None."""
    if not token or len(token) > 64:
        return None
    return db.session.scalar(select(Pledge).where(Pledge.token == token))


def _key(pledge: Pledge, purpose: str) -> str:
    # The token part keeps keys unique even if a database is reset and ids repeat.
    return f"pledge:{pledge.id}:{pledge.token[:12]}:{purpose}"


def _metadata(pledge: Pledge) -> dict[str, str]:
    return {"pledge_id": str(pledge.id), "fast_day": pledge.fast_day.slug}


def prepare_card_setup(pledge: Pledge) -> str:
    """Make sure the pledge has a Customer and a usable SetupIntent; return its client secret."""
    if pledge.stripe_customer_id is None:
        customer = gateway.create_customer(
            email=pledge.email, name=pledge.donor_name, idempotency_key=_key(pledge, "customer")
        )
        pledge.stripe_customer_id = customer["id"]
    previous = pledge.stripe_setup_intent_id
    if previous:
        setup = gateway.retrieve_setup_intent(previous)
        if setup["status"] in _SETUP_USABLE:
            return setup["client_secret"]
    # A used or cancelled SetupIntent (after a decline) is replaced by a fresh one; the key
    # names the one it replaces, so a retried request gets the same replacement.
    setup = gateway.create_setup_intent(
        customer_id=pledge.stripe_customer_id,
        metadata=_metadata(pledge),
        idempotency_key=_key(pledge, f"setup-after:{previous or 'none'}"),
    )
    pledge.stripe_setup_intent_id = setup["id"]
    db.session.flush()
    return setup["client_secret"]


@dataclass(frozen=True)
class ChargeOutcome:
    """What the browser should do next after asking to charge the card."""

    status: str  # "processing", "requires_action", "failed", "succeeded"
    client_secret: str | None = None
    message: str | None = None


def charge_now(pledge: Pledge) -> ChargeOutcome:
    """Charge the card saved by the pledge's SetupIntent now (a "give now" gift)."""
    if pledge.status in (PledgeStatus.SUCCEEDED, PledgeStatus.REFUNDED):
        return ChargeOutcome(status="succeeded")
    if pledge.charge_on_day and pledge.status in (
        PledgeStatus.PENDING,
        PledgeStatus.SCHEDULED,
        PledgeStatus.CANCELLED,
    ):
        # Charged by the scheduler on the day, never from the browser before it.
        raise PledgeError(_l("This gift is charged on the fast day, not now."))
    if pledge.stripe_setup_intent_id is None:
        raise PledgeError(_l("Enter your card details first."))
    setup = gateway.retrieve_setup_intent(pledge.stripe_setup_intent_id)
    payment_method = setup.get("payment_method")
    if isinstance(payment_method, dict):
        payment_method = payment_method.get("id")
    if setup["status"] != "succeeded" or not payment_method:
        raise PledgeError(_l("Your card was not saved. Please enter it again."))
    try:
        intent = gateway.create_payment_intent(
            amount_minor=pledge.amount_minor,
            currency=pledge.currency,
            customer_id=pledge.stripe_customer_id or setup["customer"],
            payment_method_id=payment_method,
            metadata=_metadata(pledge),
            # One PaymentIntent per saved card: the same card can never be charged twice.
            idempotency_key=_key(pledge, f"pay:{pledge.stripe_setup_intent_id}"),
        )
    except gateway.CardDeclined as declined:
        pledge.transition_to(PledgeStatus.FAILED)
        pledge.failure_message = declined.message[:500]
        db.session.flush()
        return ChargeOutcome(status="failed", message=declined.message)
    pledge.stripe_payment_intent_id = intent["id"]
    return _apply_intent_status(pledge, intent)


def _apply_intent_status(pledge: Pledge, intent: dict[str, Any]) -> ChargeOutcome:
    """Move the pledge to what a PaymentIntent's status says, short of success.

    Success is only recorded from :func:`sync_payment`, which also writes the ledger.
    """
    from . import pledge_charges  # the donor of a pledge charged on the day is told by e-mail

    status = intent["status"]
    if status == "requires_action":
        if pledge.transition_to(PledgeStatus.REQUIRES_ACTION):
            pledge_charges.on_requires_action(pledge)
        db.session.flush()
        return ChargeOutcome(status="requires_action", client_secret=intent.get("client_secret"))
    if status in ("requires_payment_method", "canceled"):
        error = intent.get("last_payment_error") or {}
        message = error.get("message") or "Your card was declined."
        moved = pledge.transition_to(PledgeStatus.FAILED)
        pledge.failure_message = message[:500]
        if moved:
            pledge_charges.on_failed(pledge)
        db.session.flush()
        return ChargeOutcome(status="failed", message=message)
    pledge.transition_to(PledgeStatus.PROCESSING)
    db.session.flush()
    return ChargeOutcome(status="processing")


def record_setup(pledge: Pledge, setup_intent_id: str) -> bool:
    """Record a saved card from Stripe's SetupIntent; True if the pledge became scheduled.

    The one path for a pledge to be charged on the fast day, used by the donor's return to the
    app (localstripe sends no setup_intent webhook) and by ``setup_intent.succeeded`` alike.
    The state comes from Stripe's object, so either may come first, or twice.
    """
    from . import pledge_charges  # it builds on this module

    if not pledge.charge_on_day or pledge.status != PledgeStatus.PENDING:
        return False
    if setup_intent_id != pledge.stripe_setup_intent_id:
        return False  # an older SetupIntent: the donor has since started another card
    setup = gateway.retrieve_setup_intent(setup_intent_id)
    if setup.get("status") != "succeeded" or not setup.get("payment_method"):
        return False
    pledge_charges.schedule(pledge)
    return True


def lock(pledge_id: int) -> Pledge | None:
    """Load a pledge under a row lock, so concurrent events for it apply one at a time."""
    # The webhook finds the pledge before it locks it, so the session already holds it; without
    # populate_existing SQLAlchemy keeps the columns read before the lock was granted, and an
    # event that waited would act on a state another event has since changed (on PostgreSQL
    # every event that waited sent the receipt again).
    return db.session.scalar(
        select(Pledge)
        .where(Pledge.id == pledge_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def sync_payment(
    pledge: Pledge, payment_intent_id: str, *, intent: dict[str, Any] | None = None
) -> None:
    """Bring a pledge and its ledger rows in line with Stripe's own PaymentIntent and charge.

    Whatever the event that brought us here, the state comes from Stripe's object, so
    duplicate, late and reordered events all end in the same place. ``intent``: that
    PaymentIntent as the caller just read it (expanded as the gateway does), read before
    any lock was taken; without it, it is read here.
    """
    if intent is None or intent.get("id") != payment_intent_id:
        intent = gateway.retrieve_payment_intent(payment_intent_id)
    charge = intent.get("latest_charge")
    if intent["status"] == "succeeded" and isinstance(charge, dict):
        # A success on any attempt is money received, even from an older attempt.
        known = ledger.recorded(pledge, ledger.charge_objects(charge))
        pledge.stripe_payment_intent_id = intent["id"]
        pledge.stripe_charge_id = charge["id"]
        ledger.record_charge(pledge, charge, known)
        # A refund that failed after it succeeded no longer counts in amount_refunded, yet
        # its REFUND row needs the reversal that Stripe's refund list now shows.
        if int(charge.get("amount_refunded") or 0) > 0 or known.has_refund:
            for refund in gateway.list_refunds(charge["id"]):
                ledger.record_refund(pledge, refund)
        # One flush writes the gift, the pledge's new state and its receipt: each flush is
        # a round trip per table, and this runs once per payment at the day's peak.
        with db.session.no_autoflush:
            if pledge.transition_to(PledgeStatus.SUCCEEDED):
                mail.queue_receipt(pledge)
            if charge.get("refunded"):
                pledge.transition_to(PledgeStatus.REFUNDED)
        db.session.flush()
        return
    if pledge.stripe_payment_intent_id not in (None, intent["id"]):
        return  # an older attempt's news says nothing about the current one
    pledge.stripe_payment_intent_id = intent["id"]
    _apply_intent_status(pledge, intent)


def public_status(pledge: Pledge) -> dict[str, Any]:
    """What the thank-you page may show about its own pledge, and nothing else."""
    return {
        "status": str(pledge.status),
        "failure_message": pledge.failure_message if pledge.status == PledgeStatus.FAILED else None,
        "settled": pledge.status
        in (PledgeStatus.SUCCEEDED, PledgeStatus.FAILED, PledgeStatus.REFUNDED),
    }
