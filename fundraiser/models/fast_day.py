"""A fast day and the groups it funds with their weights."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from flask_babel import get_locale
from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    ForeignKey,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .aid_group import AidGroup
from .types import UTCDateTime, utcnow


class FastDayStatus(StrEnum):
    """A fast day moves draft -> scheduled -> live -> closed."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    LIVE = "live"
    CLOSED = "closed"


class FastDay(db.Model):
    """One global day of fasting and giving."""

    __tablename__ = "fast_day"
    __table_args__ = (CheckConstraint("goal_minor >= 0", name="goal_not_negative"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    local_date: Mapped[date] = mapped_column(Date, index=True)
    # The time zone in which the day's date and times are shown to visitors by default.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    currency: Mapped[str] = mapped_column(String(3))
    # The language its pages fall back to when a visitor's browser asks for none of ours,
    # and the language of ``title`` and ``description``.
    locale: Mapped[str] = mapped_column(String(10), default="en", server_default="en")
    # The title and description in other languages: {"ar": {"title": ..., "description": ...}}.
    translations: Mapped[dict[str, dict[str, str]]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    goal_minor: Mapped[int] = mapped_column(default=0)
    # Suggested gift amounts in minor units of ``currency``, smallest first.
    suggested_amounts: Mapped[list[int]] = mapped_column(JSON, default=list)
    # Other currencies donors may give in. Each currency's money stands alone: its own
    # totals, allocations and balances; the goal is in ``currency`` only.
    extra_currencies: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[FastDayStatus] = mapped_column(String(20), default=FastDayStatus.DRAFT)
    # The split in force. It freezes when the day opens; a later change adds version n+1.
    split_version: Mapped[int] = mapped_column(default=1)
    # Days created together as a series share this key; donors may pledge for all of them.
    series: Mapped[str | None] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Every version's rows; ``allocations`` is the current version's.
    split_rows: Mapped[list[FastDayGroup]] = relationship(
        back_populates="fast_day",
        order_by="(FastDayGroup.version, FastDayGroup.position)",
        cascade="all, delete-orphan",
    )
    split_versions: Mapped[list[SplitVersion]] = relationship(
        order_by="SplitVersion.number", cascade="all, delete-orphan"
    )

    @property
    def shown_title(self) -> str:
        """The title in the reader's language when organizers wrote one, else the title."""
        return self._in_readers_language("title") or self.title

    @property
    def shown_description(self) -> str:
        """The description in the reader's language when organizers wrote one."""
        return self._in_readers_language("description") or self.description

    def title_in(self, language: str) -> str:
        """The title as a reader of ``language`` sees it."""
        return self._in_language("title", language) or self.title

    def _in_readers_language(self, part: str) -> str:
        locale = get_locale()
        return "" if locale is None else self._in_language(part, locale.language)

    def _in_language(self, part: str, language: str) -> str:
        if language == self.locale:
            return ""
        return (self.translations or {}).get(language, {}).get(part, "")

    @property
    def allocations(self) -> list[FastDayGroup]:
        """The groups and weights of the split in force, in published order."""
        return self.split_of(self.split_version)

    def split_of(self, version: int) -> list[FastDayGroup]:
        """The groups and weights of one version of the split."""
        return [row for row in self.split_rows if row.version == version]

    @property
    def accepted_currencies(self) -> list[str]:
        """The day's own currency first, then the others it takes."""
        return [self.currency, *(c for c in self.extra_currencies or [] if c != self.currency)]

    @property
    def split_is_frozen(self) -> bool:
        """Once the day opens, its split can only change by a new version."""
        return self.status in (FastDayStatus.LIVE, FastDayStatus.CLOSED)

    @property
    def groups(self) -> list[AidGroup]:
        """The groups this day funds, in their published order."""
        return [a.aid_group for a in self.allocations]

    @property
    def is_open_for_gifts(self) -> bool:
        """Gifts are taken while a day is scheduled (given ahead) or live."""
        return self.status in (FastDayStatus.SCHEDULED, FastDayStatus.LIVE)

    def __repr__(self) -> str:
        return f"<FastDay {self.slug}>"


class FastDayGroup(db.Model):
    """A group funded by a fast day, with its weight in the split of the common pool."""

    __tablename__ = "fast_day_group"
    __table_args__ = (
        UniqueConstraint("fast_day_id", "version", "aid_group_id"),
        CheckConstraint("weight > 0", name="weight_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    aid_group_id: Mapped[int] = mapped_column(ForeignKey("aid_group.id"))
    weight: Mapped[int] = mapped_column(default=1)
    # Stable order for display and for breaking ties in the largest-remainder split.
    position: Mapped[int] = mapped_column(default=0)

    fast_day: Mapped[FastDay] = relationship(back_populates="split_rows")
    aid_group: Mapped[AidGroup] = relationship(lazy="joined")


class SplitVersion(db.Model):
    """Who changed a live day's split, when and why; version 1 is the split as scheduled."""

    __tablename__ = "split_version"
    __table_args__ = (UniqueConstraint("fast_day_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    fast_day_id: Mapped[int] = mapped_column(ForeignKey("fast_day.id"))
    number: Mapped[int]
    reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
