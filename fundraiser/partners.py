"""Aid groups as partners see them: their own allocations, and applying to be listed."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from . import ledger
from .extensions import db
from .fast_days import PUBLIC_STATUSES
from .models import AidGroup, FastDay


@dataclass(frozen=True)
class GroupDayFigures:
    """One fast day's figures for one group, in the day's currency."""

    fast_day: FastDay
    currency: str
    designated_minor: int
    pool_share_minor: int

    @property
    def allocated_minor(self) -> int:
        """Designated gifts plus the group's share of the pool."""
        return self.designated_minor + self.pool_share_minor


def allocations_for_group(group: AidGroup) -> list[GroupDayFigures]:
    """The group's allocation from every public fast day that funds it, newest first."""
    days = db.session.scalars(
        select(FastDay)
        .where(FastDay.status.in_(PUBLIC_STATUSES))
        .order_by(FastDay.local_date.desc())
    )
    rows = []
    for day in days:
        mine = next((a for a in ledger.allocations(day) if a.aid_group_id == group.id), None)
        if mine is not None:
            rows.append(
                GroupDayFigures(day, day.currency, mine.designated_minor, mine.pool_share_minor)
            )
    return rows
