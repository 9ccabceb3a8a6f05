"""Disbursements: money paid out to an aid group, by bank transfer or Stripe Connect."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Date, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .aid_group import AidGroup
from .fast_day import FastDay
from .types import UTCDateTime, utcnow


class DisbursementMethod(StrEnum):
    """How the money left us."""

    BANK_TRANSFER = "bank_transfer"
    STRIPE_CONNECT = "stripe_connect"
    OTHER = "other"


class DisbursementStatus(StrEnum):
    """A recorded payment is confirmed at once; a Connect transfer once Stripe answers."""

    PENDING = "pending"  # sent (or about to be) to Stripe; no answer recorded yet
    CONFIRMED = "confirmed"  # money left us: the ledger holds its row
    FAILED = "failed"  # Stripe refused it; nothing left us


class DisbursementRun(db.Model):
    """One sitting in which an organizer paid out a fast day's balances."""

    __tablename__ = "disbursement_run"

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"), index=True)
    # The confirmation form's one-time token: a double submit finds the run already made.
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    fast_day: Mapped[FastDay] = relationship()
    disbursements: Mapped[list[Disbursement]] = relationship(
        back_populates="run", order_by="Disbursement.id"
    )


class Disbursement(db.Model):
    """One payment to one group from one fast day's money, in one currency."""

    __tablename__ = "disbursement"
    __table_args__ = (CheckConstraint("amount_minor > 0", name="disbursement_positive"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"), index=True)
    aid_group_id: Mapped[int] = mapped_column(ForeignKey("aid_group.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("disbursement_run.id"))
    amount_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    method: Mapped[DisbursementMethod] = mapped_column(String(20))
    paid_on: Mapped[date] = mapped_column(Date)
    reference: Mapped[str] = mapped_column(String(200), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[DisbursementStatus] = mapped_column(
        String(20), default=DisbursementStatus.PENDING, index=True
    )
    # Connect only: where it went, and the Transfer Stripe made.
    stripe_destination: Mapped[str | None] = mapped_column(String(64))
    stripe_transfer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    failure_message: Mapped[str | None] = mapped_column(String(500))
    attempts: Mapped[int] = mapped_column(default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    fast_day: Mapped[FastDay] = relationship()
    aid_group: Mapped[AidGroup] = relationship()
    run: Mapped[DisbursementRun | None] = relationship(back_populates="disbursements")

    def __repr__(self) -> str:
        return f"<Disbursement {self.id} {self.amount_minor} {self.currency} {self.status}>"
