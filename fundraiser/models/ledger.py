"""The append-only ledger: every movement of money is a row, never updated in place."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
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


# The pseudo-kind of the running total that counts a day's distinct donors in one currency.
DONORS = "donors"
# Running totals are spread over this many rows per key, one drawn per transaction, so
# concurrent gifts to the pool do not all queue for one row lock on PostgreSQL.
TOTAL_SLOTS = 8


class LedgerTotal(db.Model):
    """A running sum of the ledger for one day, currency, group, split version and kind.

    Kept by :mod:`fundraiser.ledger_totals` in the transaction that adds the rows, so the
    figures people read cost the same at a thousand gifts and at a million. ``aid_group_key``
    is the group's id or 0 for the pool, ``split_version_key`` the version or 0, so the key
    has no NULL in it (a unique key treats NULLs as all different). The kind ``donors``
    counts distinct donors instead of money. ``flask ledger check`` compares them to the rows.
    """

    __tablename__ = "ledger_total"
    __table_args__ = (
        UniqueConstraint(
            "fast_day_id",
            "currency",
            "aid_group_key",
            "split_version_key",
            "kind",
            "slot",
            name="uq_ledger_total_key",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"))
    currency: Mapped[str] = mapped_column(String(3))
    aid_group_key: Mapped[int] = mapped_column(index=True)
    split_version_key: Mapped[int]
    kind: Mapped[str] = mapped_column(String(20))
    slot: Mapped[int]
    total: Mapped[int] = mapped_column(BigInteger)  # minor units; for ``donors``, a count
    entries: Mapped[int]  # ledger rows summed (or donors counted)


class DayDonor(db.Model):
    """How many succeeded gifts one donor has on a day in one currency, to count donors once.

    The donor is a SHA-256 digest of the pledge's e-mail address, never the address itself.
    """

    __tablename__ = "day_donor"
    __table_args__ = (
        UniqueConstraint("fast_day_id", "currency", "donor_digest", name="uq_day_donor_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"))
    currency: Mapped[str] = mapped_column(String(3))
    donor_digest: Mapped[str] = mapped_column(String(64))
    gifts: Mapped[int]
