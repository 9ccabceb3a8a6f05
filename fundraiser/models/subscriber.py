"""People who asked for the fast day's messages, in their language and time zone."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class SubscriberStatus(StrEnum):
    """Double opt-in: nothing is sent to a subscriber before they confirm."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"


class Subscriber(db.Model):
    """One address that may receive campaign messages once confirmed.

    Erasing one deletes the row: nothing of the person is kept.
    """

    __tablename__ = "subscriber"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    locale: Mapped[str] = mapped_column(String(10), default="en")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Optional, for sunrise and sunset: a city name astral knows, and its coordinates.
    city: Mapped[str | None] = mapped_column(String(120))
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    status: Mapped[SubscriberStatus] = mapped_column(
        String(20), default=SubscriberStatus.PENDING, index=True
    )
    # Which messages they want: the day's own messages, and reminders about their pledges.
    wants_day_messages: Mapped[bool] = mapped_column(Boolean, default=True)
    wants_reminders: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped to invalidate every signed link sent before (after erase-and-resubscribe, say).
    link_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def __repr__(self) -> str:
        return f"<Subscriber {self.id} {self.status}>"
