"""Stripe events as received: each id stored once, queued, then applied with an outcome."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class EventOutcome(StrEnum):
    """What handling an event did."""

    APPLIED = "applied"
    IGNORED = "ignored"  # a type we do not act on
    UNMATCHED = "unmatched"  # refers to no pledge of ours: kept for an organizer to review


class EventState(StrEnum):
    """Where an event is in the queue between the webhook's answer and its effect."""

    RECEIVED = "received"  # verified, stored and acknowledged; waiting for a worker
    PROCESSED = "processed"  # handled once: see its outcome
    FAILED = "failed"  # applying it kept raising: kept, with its payload, for review


class StripeEvent(db.Model):
    """A verified webhook event; the primary key makes a replay a no-op."""

    __tablename__ = "stripe_event"
    __table_args__ = (
        # The workers' claim: due events of one state, oldest first.
        Index("ix_stripe_event_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    livemode: Mapped[bool]
    state: Mapped[EventState] = mapped_column(String(20), default=EventState.RECEIVED)
    outcome: Mapped[EventOutcome | None] = mapped_column(String(20))
    # Kept until the event is handled; afterwards only for unmatched or failed events (for
    # review): the rest keep nothing personal.
    payload: Mapped[dict | None] = mapped_column(JSON)
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A worker's claim: its token, and until when the claim holds (a dead worker's lapses).
    claim_token: Mapped[str | None] = mapped_column(String(32))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last failure's exception class and a short reason: never a payload or an address.
    last_error: Mapped[str | None] = mapped_column(String(200))
