"""The append-only ledger: every movement of money is a row, never updated in place."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .types import UTCDateTime, utcnow


class EntryKind(StrEnum):
    """What a ledger row records.

    Gifts and reversals are positive; fees, refunds, disputes and disbursements negative.
    """

    GIFT = "gift"
    FEE = "fee"
    REFUND = "refund"
    REFUND_REVERSAL = "refund_reversal"  # a refund that succeeded, then failed: money back
    DISPUTE = "dispute"
    DISPUTE_REVERSAL = "dispute_reversal"
    DISBURSEMENT = "disbursement"


class LedgerEntry(db.Model):
    """One movement of money for a fast day, in one currency.

    ``aid_group_id`` says where the money belongs: the designated group, or None for the
    common pool that is split by the day's weights. Rows that come from Stripe carry the
    Stripe object id, unique per kind, so a replayed event can never count twice.
    """

    __tablename__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("kind", "stripe_object_id"),
        Index("ix_ledger_entry_day_currency", "fast_day_id", "currency"),
        # A partner's statement reads its own group's rows by date.
        Index("ix_ledger_entry_group_created", "aid_group_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"))
    pledge_id: Mapped[int | None] = mapped_column(ForeignKey("pledge.id"), index=True)
    aid_group_id: Mapped[int | None] = mapped_column(ForeignKey("aid_group.id"))
    kind: Mapped[EntryKind] = mapped_column(String(20))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    stripe_object_id: Mapped[str | None] = mapped_column(String(64))
    # For pooled rows: the split version in force when the gift came in, which shares it.
    split_version: Mapped[int | None]
    # For disbursement rows: the payment they record (one row each).
    disbursement_id: Mapped[int | None] = mapped_column(ForeignKey("disbursement.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:
        return f"<LedgerEntry {self.kind} {self.amount_minor} {self.currency}>"
