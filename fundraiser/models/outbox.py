"""The outbox: every e-mail we send is a row first, so a crash or restart loses none."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class OutboxState(StrEnum):
    """Where one message stands. Only QUEUED rows are ever claimed for sending."""

    QUEUED = "queued"  # waiting for its time, or for a retry after a temporary failure
    SENDING = "sending"  # claimed by one sender; reclaimed if that sender died
    SENT = "sent"
    FAILED = "failed"  # temporary failures until the retries ran out
    BOUNCED = "bounced"  # the relay refused the address for good (5xx): now suppressed
    SUPPRESSED = "suppressed"  # not sent: the address is suppressed or unsubscribed
    MISSED = "missed"  # not sent: too long past its time to still make sense
    CANCELLED = "cancelled"  # not sent: the organizer cancelled its campaign


class OutboxMessage(db.Model):
    """One e-mail to one address, rendered when it was queued.

    ``key`` names what the message is for (``receipt:<pledge>``, ``campaign:<m>:<s>``) under
    a unique constraint, so queuing the same thing twice, from two schedulers or a retried
    job, adds nothing. ``message_id`` is fixed when queued: a message re-sent after a crash
    carries the same Message-ID, so mail clients show it once.
    """

    __tablename__ = "outbox_message"
    __table_args__ = (
        Index("ix_outbox_message_state_due", "state", "next_attempt_at"),
        Index("ix_outbox_message_state_expires", "state", "expires_at"),  # the expiry sweep
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    to_email: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(300))
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    # Extra headers, e.g. List-Unsubscribe on campaign messages (never on receipts).
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message_id: Mapped[str] = mapped_column(String(250))
    state: Mapped[OutboxState] = mapped_column(String(20), default=OutboxState.QUEUED)
    # When it should go (its send time), and when it is no longer worth sending.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    last_error: Mapped[str | None] = mapped_column(String(500))
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    campaign_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaign_message.id"), index=True
    )
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscriber.id"), index=True)

    def __repr__(self) -> str:
        return f"<OutboxMessage {self.key} {self.state}>"


class Suppression(db.Model):
    """An address we must not write to again: it bounced for good, or asked us to stop."""

    __tablename__ = "suppression"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    reason: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
