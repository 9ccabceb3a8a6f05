"""Stripe events as received: each id stored once, with what became of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class EventOutcome(StrEnum):
    """What handling an event did."""

    APPLIED = "applied"
    IGNORED = "ignored"  # a type we do not act on
    UNMATCHED = "unmatched"  # refers to no pledge of ours: kept for an organizer to review


class StripeEvent(db.Model):
    """A webhook event we have handled; the primary key makes a replay a no-op."""

    __tablename__ = "stripe_event"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    livemode: Mapped[bool]
    outcome: Mapped[EventOutcome] = mapped_column(String(20))
    # Only unmatched events keep their payload, for review; the rest keep nothing personal.
    payload: Mapped[dict | None] = mapped_column(JSON)
    stripe_created: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
