"""An aid group: a registered Palestinian-led organisation that fast days fund."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class AidGroupStatus(StrEnum):
    """Where a group stands with the organizers; only approved groups can be funded."""

    APPLIED = "applied"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class AidGroup(db.Model):
    """A group that receives a share of fast-day gifts."""

    __tablename__ = "aid_group"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))  # ISO 3166-1 alpha-2
    description: Mapped[str] = mapped_column(Text, default="")
    website: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[AidGroupStatus] = mapped_column(String(20), default=AidGroupStatus.APPLIED)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # The application. Only organizers ever see the contact and the funds details.
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    funds_method: Mapped[str] = mapped_column(String(20), default="")  # partners.FundsMethod
    funds_details: Mapped[str] = mapped_column(Text, default="")
    # The applicant's language, so the review e-mails reach them in it.
    locale: Mapped[str] = mapped_column(String(10), default="en")
    # The latest review decision's reason (rejection, suspension), and when it was taken.
    review_note: Mapped[str] = mapped_column(Text, default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The Stripe Connect account (acct_...) disbursements may be transferred to; set only
    # from a payout change an organizer confirmed.
    stripe_account_id: Mapped[str | None] = mapped_column(String(64))

    def __repr__(self) -> str:
        return f"<AidGroup {self.slug}>"
