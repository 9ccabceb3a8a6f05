"""A partner's request to change where its group is paid, waiting for an organizer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .aid_group import AidGroup
from .types import UTCDateTime, utcnow


class PayoutChangeStatus(StrEnum):
    """Payout details are only used once an organizer has confirmed them."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"  # replaced by a newer request before anyone decided


class PayoutChange(db.Model):
    """New payout details for a group, as a partner asked; applied only when confirmed."""

    __tablename__ = "payout_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    aid_group_id: Mapped[int] = mapped_column(ForeignKey("aid_group.id"), index=True)
    funds_method: Mapped[str] = mapped_column(String(20))
    funds_details: Mapped[str] = mapped_column(Text, default="")
    stripe_account_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[PayoutChangeStatus] = mapped_column(
        String(20), default=PayoutChangeStatus.PENDING, index=True
    )
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str] = mapped_column(Text, default="")

    aid_group: Mapped[AidGroup] = relationship()
