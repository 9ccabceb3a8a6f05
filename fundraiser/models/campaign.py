"""Campaign messages: what organizers send on a fast day, to whom, and when."""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, Time, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .fast_day import FastDay
from .types import UTCDateTime, utcnow


class Audience(StrEnum):
    """Who receives a message; always among confirmed subscribers who want day messages."""

    ALL = "all"
    DAY_DONORS = "day_donors"  # gave to this fast day
    PLEDGERS = "pledgers"  # have a pledge for this day still to be charged


class SendKind(StrEnum):
    """How a message's send time is given."""

    UTC_INSTANT = "utc"  # one instant for everyone
    LOCAL_TIME = "local"  # a time of day on the fast day, in each subscriber's own zone
    SUN = "sun"  # sunrise or sunset at the subscriber's city, plus or minus minutes


class SunEvent(StrEnum):
    """The two sun events a fast is timed by."""

    SUNRISE = "sunrise"
    SUNSET = "sunset"


class CampaignStatus(StrEnum):
    """A message is written as a draft, then scheduled; cancelling stops what is unsent."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"


class CampaignMessage(db.Model):
    """One message of a fast day, in several languages, with its audience and send time."""

    __tablename__ = "campaign_message"

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))  # for organizers only
    audience: Mapped[Audience] = mapped_column(String(20), default=Audience.ALL)
    send_kind: Mapped[SendKind] = mapped_column(String(10), default=SendKind.LOCAL_TIME)
    send_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # UTC_INSTANT
    local_time: Mapped[time | None] = mapped_column(Time)  # LOCAL_TIME, and SUN's fallback
    sun_event: Mapped[SunEvent | None] = mapped_column(String(10))  # SUN
    offset_minutes: Mapped[int] = mapped_column(default=0)  # SUN: minutes after (+) or before (-)
    # The language for subscribers whose own the message lacks.
    default_locale: Mapped[str] = mapped_column(String(10), default="en")
    status: Mapped[CampaignStatus] = mapped_column(
        String(20), default=CampaignStatus.DRAFT, index=True
    )
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    fast_day: Mapped[FastDay] = relationship()
    texts: Mapped[list[CampaignText]] = relationship(
        back_populates="message", cascade="all, delete-orphan", order_by="CampaignText.locale"
    )

    def text_for(self, locale: str) -> CampaignText | None:
        """The text in ``locale``, else in the message's default language."""
        by_locale = {t.locale: t for t in self.texts}
        return by_locale.get(locale) or by_locale.get(self.default_locale)


class CampaignText(db.Model):
    """A message's subject and Markdown body in one language."""

    __tablename__ = "campaign_text"
    __table_args__ = (UniqueConstraint("message_id", "locale"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("campaign_message.id"))
    locale: Mapped[str] = mapped_column(String(10))
    subject: Mapped[str] = mapped_column(String(200))
    body_markdown: Mapped[str] = mapped_column(Text)

    message: Mapped[CampaignMessage] = relationship(back_populates="texts")
