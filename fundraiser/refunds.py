"""Refunds: an organizer asks Stripe to give a gift back, in full or in part.

Nothing here writes the ledger. Stripe answers a refund request at once, but the ledger only
ever records what Stripe confirms through its ``charge.refunded`` webhook (which
:func:`fundraiser.pledges.sync_payment` turns into refund rows), so a refund shows up in the
totals the same way whether it was asked for here or in Stripe's own dashboard.

Asking twice must never refund twice. The refund form carries how many refunds of the gift
had been requested when the page was drawn; a request made from an older page (a double
click, a second tab, the back button) is refused, and the Stripe idempotency key is built
from that same number, so a retry after a lost answer gets Stripe's first refund back
instead of a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from . import audit, pledges
from .extensions import db
from .models import AuditEntry, EntryKind, LedgerEntry, Pledge, PledgeStatus
from .money import format_amount
from .payments import stripe_gateway as gateway

REQUESTED = "gift.refund_requested"
FAILED = "gift.refund_failed"

# Stripe refund states that will never move money: such a request is not awaited.
_DEAD_REFUND_STATES = {"failed", "canceled"}


class RefundError(Exception):
    """A refund that cannot be asked for, with a message for the organizer.

    ``field`` names the form field the message belongs beside, if any.
    """

    def __init__(self, message: Any, field: str | None = None) -> None:
        super().__init__(str(message))
        self.message = str(message)
        self.field = field


@dataclass(frozen=True)
class RefundRequest:
    """One refund an organizer asked Stripe for, and whether Stripe has confirmed it yet."""

    at: datetime
    by: str | None
    amount_minor: int
    stripe_refund_id: str | None
    stripe_status: str | None
    confirmed: bool
    note: str | None

    @property
    def awaiting(self) -> bool:
        """Asked for, not yet in the ledger, and not refused by Stripe."""
        return not self.confirmed and self.stripe_status not in _DEAD_REFUND_STATES


@dataclass(frozen=True)
class RefundSummary:
    """Where a gift stands with refunds, as our ledger and audit log know it."""

    amount_minor: int
    currency: str
    confirmed_minor: int  # refunds in the ledger (confirmed by Stripe), positive
    requests: list[RefundRequest]
    can_refund: bool

    @property
    def request_count(self) -> int:
        """How many refunds have been requested here: the form's guard against repeats."""
        return len(self.requests)

    @property
    def awaiting_minor(self) -> int:
        """Requested here and not yet confirmed by Stripe's webhook."""
        return sum(r.amount_minor for r in self.requests if r.awaiting)

    @property
    def left_minor(self) -> int:
        """What could still be refunded, counting requests that await confirmation."""
        return max(0, self.amount_minor - self.confirmed_minor - self.awaiting_minor)


def _requests(pledge: Pledge) -> list[AuditEntry]:
    return list(
        db.session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.action == REQUESTED,
                AuditEntry.target_type == Pledge.__name__,
                AuditEntry.target_id == str(pledge.id),
            )
            .order_by(AuditEntry.at, AuditEntry.id)
        )
    )


def _request_count(pledge: Pledge) -> int:
    return int(
        db.session.scalar(
            select(func.count(AuditEntry.id)).where(
                AuditEntry.action == REQUESTED,
                AuditEntry.target_type == Pledge.__name__,
                AuditEntry.target_id == str(pledge.id),
            )
        )
        or 0
    )


def ledger_rows(pledge: Pledge) -> list[LedgerEntry]:
    """Every ledger row of a gift, oldest first."""
    return list(
        db.session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.pledge_id == pledge.id)
            .order_by(LedgerEntry.created_at, LedgerEntry.id)
        )
    )


def summary(pledge: Pledge) -> RefundSummary:
    """The gift's refunds: confirmed ones from the ledger, requested ones from the audit log."""
    refund_rows = db.session.execute(
        select(LedgerEntry.stripe_object_id, LedgerEntry.amount_minor).where(
            LedgerEntry.pledge_id == pledge.id,
            LedgerEntry.kind == EntryKind.REFUND,
            LedgerEntry.currency == pledge.currency,
        )
    ).all()
    confirmed_ids = {ref for ref, _amount in refund_rows}
    requests = []
    for entry in _requests(pledge):
        after = entry.after or {}
        refund_id = after.get("stripe_refund_id")
        requests.append(
            RefundRequest(
                at=entry.at,
                by=entry.actor_email,
                amount_minor=int(after.get("amount_minor") or 0),
                stripe_refund_id=refund_id,
                stripe_status=after.get("stripe_status"),
                confirmed=refund_id in confirmed_ids,
                note=after.get("note") or None,
            )
        )
    return RefundSummary(
        amount_minor=pledge.amount_minor,
        currency=pledge.currency,
        confirmed_minor=-sum(int(amount) for _ref, amount in refund_rows),
        requests=requests,
        can_refund=pledge.status == PledgeStatus.SUCCEEDED and bool(pledge.stripe_charge_id),
    )


def idempotency_key(pledge: Pledge, seen_requests: int) -> str:
    """The Stripe key of the ``seen_requests``-th refund of a gift.

    The token part keeps keys unique if a database is reset and pledge ids repeat.
    """
    return f"refund:{pledge.id}:{pledge.token[:12]}:{seen_requests}"


def request_refund(
    pledge: Pledge, *, amount_minor: int | None, seen_requests: int, note: str = ""
) -> dict[str, Any]:
    """Ask Stripe to refund ``amount_minor`` (None: all that is left) and note it in the audit log.

    ``seen_requests`` is how many refunds had been requested when the organizer's page was
    drawn; if more have been requested since, this is a repeat and nothing is asked.
    Returns Stripe's refund. The ledger changes only when Stripe's webhook confirms it.
    """
    locked = pledges.lock(pledge.id)
    if locked is None:
        raise RefundError(_l("This gift no longer exists."))
    pledge = locked
    if pledge.status != PledgeStatus.SUCCEEDED or not pledge.stripe_charge_id:
        raise RefundError(
            _l("Only a gift that went through, and is not fully refunded, can be refunded.")
        )
    if _request_count(pledge) != seen_requests:
        raise RefundError(
            _l(
                "Another refund of this gift was requested after this page was opened. "
                "Check the refunds below before asking again."
            )
        )

    # Stripe's own count of what is refunded is the authority: it includes refunds made in
    # Stripe's dashboard and refunds whose webhook has not arrived yet.
    try:
        charge = gateway.retrieve_charge(pledge.stripe_charge_id)
    except gateway.PaymentError as exc:
        raise RefundError(_l("Stripe could not be asked about this gift. Try again.")) from exc
    left = int(charge["amount"]) - int(charge.get("amount_refunded") or 0)
    if left <= 0:
        raise RefundError(_l("Nothing is left to refund on this gift."))
    if amount_minor is not None and amount_minor > left:
        raise RefundError(
            _l(
                "At most %(amount)s is left to refund.",
                amount=format_amount(left, pledge.currency),
            ),
            field="amount",
        )
    full = amount_minor is None
    # Always name the amount: Stripe refunds what is left when none is given, but the amount
    # we checked is the one we mean, and localstripe would refund the whole charge again.
    amount = left if full else amount_minor
    before = {
        "status": pledge.status,
        "refunded_minor": int(charge.get("amount_refunded") or 0),
    }
    try:
        refund = gateway.create_refund(
            charge_id=pledge.stripe_charge_id,
            amount_minor=amount,
            idempotency_key=idempotency_key(pledge, seen_requests),
        )
    except gateway.PaymentError as exc:
        audit.record(
            FAILED,
            target=pledge,
            before=before,
            after={"amount_minor": amount, "currency": pledge.currency, "error": str(exc)[:300]},
        )
        db.session.flush()
        if isinstance(exc, gateway.PaymentServiceUnavailable):
            raise RefundError(
                _l("Stripe did not answer. Try again: the same request cannot refund twice.")
            ) from exc
        raise RefundError(_l("Stripe refused the refund: %(reason)s", reason=str(exc))) from exc

    audit.record(
        REQUESTED,
        target=pledge,
        before=before,
        after={
            "amount_minor": int(refund.get("amount") or amount),
            "currency": pledge.currency,
            "full": full,
            "stripe_refund_id": refund.get("id"),
            "stripe_status": refund.get("status"),
            "note": note.strip()[:500] or None,
        },
    )
    db.session.flush()
    return refund
