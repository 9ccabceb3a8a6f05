"""Fast days as the public sees them: the one live now or next, and the ones past."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from .extensions import db
from .models import FastDay, FastDayStatus, utcnow

PUBLIC_STATUSES = (FastDayStatus.SCHEDULED, FastDayStatus.LIVE, FastDayStatus.CLOSED)


def get_public(slug: str) -> FastDay | None:
    """A fast day the public may see (never a draft)."""
    return db.session.scalar(
        select(FastDay).where(FastDay.slug == slug, FastDay.status.in_(PUBLIC_STATUSES))
    )


def featured() -> FastDay | None:
    """The day to put first: the live one, else the next scheduled one."""
    live = db.session.scalar(
        select(FastDay).where(FastDay.status == FastDayStatus.LIVE).order_by(FastDay.local_date)
    )
    if live is not None:
        return live
    return db.session.scalar(
        select(FastDay)
        .where(FastDay.status == FastDayStatus.SCHEDULED)
        .order_by(FastDay.local_date)
    )


def upcoming(exclude: FastDay | None = None) -> list[FastDay]:
    """Scheduled days after the featured one."""
    days = db.session.scalars(
        select(FastDay)
        .where(FastDay.status == FastDayStatus.SCHEDULED)
        .order_by(FastDay.local_date)
    )
    return [d for d in days if d is not exclude]


def past() -> list[FastDay]:
    """Closed days, most recent first."""
    return list(
        db.session.scalars(
            select(FastDay)
            .where(FastDay.status == FastDayStatus.CLOSED)
            .order_by(FastDay.local_date.desc())
        )
    )


def starts_at(day: FastDay) -> datetime:
    """The instant the day begins in its display time zone (local midnight)."""
    return datetime.combine(day.local_date, time(0, 0), tzinfo=ZoneInfo(day.timezone))


def ends_at(day: FastDay) -> datetime:
    """The instant the day ends in its display time zone."""
    return datetime.combine(
        day.local_date + timedelta(days=1), time(0, 0), tzinfo=ZoneInfo(day.timezone)
    )


def time_until_start(day: FastDay, now: datetime | None = None) -> timedelta | None:
    """How long until the day begins, or None once it has begun."""
    remaining = starts_at(day) - (now or utcnow())
    return remaining if remaining > timedelta(0) else None


def time_until_end(day: FastDay, now: datetime | None = None) -> timedelta | None:
    """How long a live day has left, or None unless it is live and not yet over."""
    if day.status != FastDayStatus.LIVE:
        return None
    remaining = ends_at(day) - (now or utcnow())
    return remaining if remaining > timedelta(0) else None


def local_today(day: FastDay) -> date:
    """Today's date in the day's display time zone."""
    return utcnow().astimezone(ZoneInfo(day.timezone)).date()
