"""A pledge: one donor's gift to one fast day, and the states its payment goes through."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .aid_group import AidGroup
from .fast_day import FastDay
from .types import UTCDateTime, utcnow


class PledgeStatus(StrEnum):
    """The payment's state, as Stripe last told us (the webhook is the source of truth)."""

    PENDING = "pending"  # the donor filled in the form; no card yet
    SCHEDULED = "scheduled"  # card saved; to be charged on the fast day (pledged, not raised)
    PROCESSING = "processing"  # a PaymentIntent was confirmed; waiting for Stripe's word
    REQUIRES_ACTION = "requires_action"  # the card issuer asks the donor to authenticate
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the last attempt failed; the donor may try another card
    REFUNDED = "refunded"  # fully refunded
    CANCELLED = "cancelled"  # a scheduled pledge the donor stopped before it was charged


# Which state may follow which. A success may follow a failure (the donor tried another
# card) but never the other way round, and a full refund is final, so late or repeated
# events can never move a pledge backwards.
ALLOWED_TRANSITIONS: dict[PledgeStatus, frozenset[PledgeStatus]] = {
    PledgeStatus.PENDING: frozenset(
        {
            PledgeStatus.SCHEDULED,
            PledgeStatus.CANCELLED,
            PledgeStatus.PROCESSING,
            PledgeStatus.REQUIRES_ACTION,
            PledgeStatus.SUCCEEDED,
            PledgeStatus.FAILED,
            PledgeStatus.REFUNDED,
        }
    ),
    # Charged on the day by the scheduler, or stopped by the donor before that.
    PledgeStatus.SCHEDULED: frozenset(
        {
            PledgeStatus.PROCESSING,
            PledgeStatus.REQUIRES_ACTION,
            PledgeStatus.SUCCEEDED,
            PledgeStatus.FAILED,
            PledgeStatus.CANCELLED,
        }
    ),
    PledgeStatus.PROCESSING: frozenset(
        {
            PledgeStatus.REQUIRES_ACTION,
            PledgeStatus.SUCCEEDED,
            PledgeStatus.FAILED,
            PledgeStatus.REFUNDED,
        }
    ),
    PledgeStatus.REQUIRES_ACTION: frozenset(
        {
            PledgeStatus.PROCESSING,
            PledgeStatus.SUCCEEDED,
            PledgeStatus.FAILED,
            PledgeStatus.REFUNDED,
        }
    ),
    PledgeStatus.FAILED: frozenset(
        {
            PledgeStatus.PROCESSING,
            PledgeStatus.REQUIRES_ACTION,
            PledgeStatus.SUCCEEDED,
            PledgeStatus.REFUNDED,
        }
    ),
    PledgeStatus.SUCCEEDED: frozenset({PledgeStatus.REFUNDED}),
    PledgeStatus.REFUNDED: frozenset(),
    PledgeStatus.CANCELLED: frozenset(),
}


class Pledge(db.Model):
    """One gift: what the donor chose, and the Stripe objects that carry its payment."""

    __tablename__ = "pledge"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        # The day's pledges still to be charged, found without reading its million gifts.
        Index("ix_pledge_day_status", "fast_day_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Unguessable; the only way to reach a pledge's page.
    token: Mapped[str] = mapped_column(String(64), unique=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"), index=True)
    # None: split across all the day's groups; otherwise the one group the donor chose.
    aid_group_id: Mapped[int | None] = mapped_column(ForeignKey("aid_group.id"))
    amount_minor: Mapped[int]
    # active_history on the fields a donor is counted under (see ledger_totals): the running
    # count must know what they were before they changed.
    currency: Mapped[str] = mapped_column(String(3), active_history=True)
    # None means anonymous: the name is never shown or stored unless the donor gives it.
    donor_name: Mapped[str | None] = mapped_column(String(120))
    email: Mapped[str] = mapped_column(String(254), active_history=True)
    dedication: Mapped[str | None] = mapped_column(Text)
    wants_messages: Mapped[bool] = mapped_column(Boolean, default=False)
    locale: Mapped[str] = mapped_column(String(10), default="en")

    status: Mapped[PledgeStatus] = mapped_column(
        String(20), default=PledgeStatus.PENDING, index=True, active_history=True
    )
    failure_message: Mapped[str | None] = mapped_column(String(500))

    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    stripe_setup_intent_id: Mapped[str | None] = mapped_column(String(64))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(64), unique=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    receipt_queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # "Charge me on the fast day": the card is saved now and charged by the scheduler at the
    # donor's local morning on the day (or when the day opens, with no time zone known).
    charge_on_day: Mapped[bool] = mapped_column(Boolean, default=False)
    timezone: Mapped[str | None] = mapped_column(String(64))  # the donor's, from the browser
    charge_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    charge_attempts: Mapped[int] = mapped_column(default=0)
    # Claimed by one scheduler while it charges, so a second one skips it.
    charge_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Pledges made together for every day of a series share this; one link stops them all.
    series_token: Mapped[str | None] = mapped_column(String(64), index=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    fast_day: Mapped[FastDay] = relationship()
    aid_group: Mapped[AidGroup | None] = relationship()

    @property
    def is_anonymous(self) -> bool:
        """True when the donor gave no name to show."""
        return not self.donor_name

    def transition_to(self, new: PledgeStatus) -> bool:
        """Move to ``new`` if allowed; return True if the state changed.

        Repeating the current state is a no-op, and a move the table forbids (a late
        failure after a success) is ignored, so replayed or reordered events are harmless.
        """
        if new == self.status:
            return False
        if new not in ALLOWED_TRANSITIONS[PledgeStatus(self.status)]:
            return False
        self.status = new
        if new == PledgeStatus.SUCCEEDED and self.succeeded_at is None:
            self.succeeded_at = utcnow()
        if new != PledgeStatus.FAILED:
            self.failure_message = None
        return True

    def __repr__(self) -> str:
        return f"<Pledge {self.id} {self.status}>"
