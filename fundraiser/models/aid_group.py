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

    def __repr__(self) -> str:
        return f"<AidGroup {self.slug}>"
