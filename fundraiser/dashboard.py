"""The live dashboard of a fast day: its figures, computed from the ledger and the pledges.

Every figure is an aggregate query (sums, counts, a bounded "latest 20"), so the dashboard
costs the same with ten gifts or a million. The headline figures are in the day's own
currency; ``by_currency`` holds every currency's figures side by side: the app never adds
amounts of two currencies.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, func, select

from . import fast_days, ledger
from .extensions import db
from .ledger import DayTotals, GroupAllocation
from .models import AidGroup, EntryKind, FastDay, FastDayStatus, LedgerEntry, Pledge, PledgeStatus
from .models import utcnow as _utcnow

RECENT_LIMIT = 20
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class HourBucket:
    """Gifts that went through in one hour of the day."""

    starts_at: datetime  # aware UTC
    ends_at: datetime
    local_start: datetime  # the same instant in the day's time zone, for labels
    count: int
    amount_minor: int


@dataclass(frozen=True)
class RecentGift:
    """One gift on the "latest gifts" list; ``donor_name`` is None for anonymous donors."""

    pledge_id: int
    at: datetime
    amount_minor: int
    group_name: str | None  # None: shared across all groups
    donor_name: str | None
    dedication: str | None
    status: str


@dataclass(frozen=True)
class RecentRefund:
    """One refund Stripe confirmed (a ledger row)."""

    pledge_id: int | None
    at: datetime
    amount_minor: int  # positive: what went back to the donor
    stripe_refund_id: str | None


@dataclass(frozen=True)
class RecentFailure:
    """A gift whose last payment attempt failed and that has not been paid since."""

    pledge_id: int
    at: datetime
    amount_minor: int
    message: str | None


@dataclass(frozen=True)
class DashboardFigures:
    """Everything the dashboard shows for one fast day, in the day's currency."""

    day: FastDay
    currency: str
    timezone: str
    raised_minor: int  # gifts less refunds and disputes (ledger.day_totals)
    goal_minor: int
    percent_of_goal: int | None  # may pass 100; None without a goal
    donors: int
    gift_count: int
    average_gift_minor: int | None  # None before the first gift
    fees_minor: int
    refunded_minor: int
    disputed_minor: int
    failed_count: int
    hours: list[HourBucket]
    gifts_before_day: int  # given ahead, before the day's local midnight
    gifts_after_day: int
    allocations: list[GroupAllocation]
    recent_gifts: list[RecentGift]
    recent_refunds: list[RecentRefund]
    recent_failures: list[RecentFailure]
    generated_at: datetime
    # Every currency the day holds money in, its own first, each on its own.
    by_currency: list[DayTotals]

    @property
    def net_minor(self) -> int:
        """What reaches the groups: raised less Stripe's fees."""
        return self.raised_minor - self.fees_minor

    @property
    def is_live(self) -> bool:
        """While the day is live the page refreshes itself."""
        return self.day.status == FastDayStatus.LIVE

    @property
    def busiest_hour(self) -> HourBucket | None:
        """The hour with the most gifts (the earliest on a tie), or None if none had any."""
        best = max(self.hours, key=lambda h: h.count, default=None)
        return best if best is not None and best.count > 0 else None


def _ledger_sum(day: FastDay, kinds: tuple[EntryKind, ...]) -> int:
    total = db.session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).where(
            LedgerEntry.fast_day_id == day.id,
            LedgerEntry.currency == day.currency,
            LedgerEntry.kind.in_(kinds),
        )
    )
    return int(total or 0)


def _counted_gifts(day: FastDay):
    """The pledges that count as gifts: paid and not fully refunded, in the day's currency."""
    return and_(
        Pledge.fast_day_id == day.id,
        Pledge.currency == day.currency,
        Pledge.status == PledgeStatus.SUCCEEDED,
    )


def _average(total_minor: int, count: int) -> int | None:
    """``total / count`` in whole minor units, halves rounded up (away from zero)."""
    if count <= 0:
        return None
    quotient, rest = divmod(abs(total_minor), count)
    if rest * 2 >= count:
        quotient += 1
    return quotient if total_minor >= 0 else -quotient


def hour_boundaries(day: FastDay) -> list[datetime]:
    """The instants (UTC) that cut the day into hours, from local midnight to midnight.

    The day's span is measured in its own time zone, so a day is 23 or 25 hours long when
    the clocks change. Each bucket is one elapsed hour from local midnight; for zones whose
    offset is whole hours these are exactly UTC hours, and for zones like Asia/Kathmandu
    (+05:45) they stay aligned with the local clock the organizers read.
    """
    start = fast_days.starts_at(day).astimezone(UTC)
    end = fast_days.ends_at(day).astimezone(UTC)
    edges = [start]
    while edges[-1] < end:
        edges.append(min(edges[-1] + HOUR, end))
    return edges


def gifts_per_hour(day: FastDay) -> tuple[list[HourBucket], int, int]:
    """Counted gifts per hour of the day, plus the numbers that came before and after it.

    One GROUP BY over a CASE of the (at most 26) hour edges: the same SQL on SQLite and
    PostgreSQL, without date functions that differ between them, and without reading gifts.
    """
    edges = hour_boundaries(day)
    when = Pledge.succeeded_at
    # Index -1: before the day; 0..n-1: the hours; n: after the day.
    whens = [(when < edges[0], -1)]
    whens += [(when < edge, i) for i, edge in enumerate(edges[1:])]
    bucket = case(*whens, else_=len(edges) - 1).label("bucket")
    rows = db.session.execute(
        select(bucket, func.count(Pledge.id), func.coalesce(func.sum(Pledge.amount_minor), 0))
        .where(_counted_gifts(day), when.is_not(None))
        .group_by(bucket)
    ).all()
    found = {int(index): (int(count), int(amount)) for index, count, amount in rows}
    zone = ZoneInfo(day.timezone)
    hours = [
        HourBucket(
            starts_at=start,
            ends_at=end,
            local_start=start.astimezone(zone),
            count=found.get(i, (0, 0))[0],
            amount_minor=found.get(i, (0, 0))[1],
        )
        for i, (start, end) in enumerate(itertools.pairwise(edges))
    ]
    before = found.get(-1, (0, 0))[0]
    after = found.get(len(edges) - 1, (0, 0))[0]
    return hours, before, after


def recent_gifts(day: FastDay, limit: int = RECENT_LIMIT) -> list[RecentGift]:
    """The latest gifts that went through (fully refunded ones included, marked as such)."""
    rows = db.session.execute(
        select(
            Pledge.id,
            Pledge.succeeded_at,
            Pledge.amount_minor,
            AidGroup.name,
            Pledge.donor_name,
            Pledge.dedication,
            Pledge.status,
        )
        .outerjoin(AidGroup, AidGroup.id == Pledge.aid_group_id)
        .where(
            Pledge.fast_day_id == day.id,
            Pledge.currency == day.currency,
            Pledge.status.in_((PledgeStatus.SUCCEEDED, PledgeStatus.REFUNDED)),
            Pledge.succeeded_at.is_not(None),
        )
        .order_by(Pledge.succeeded_at.desc(), Pledge.id.desc())
        .limit(limit)
    ).all()
    return [
        RecentGift(
            pledge_id=pledge_id,
            at=at,
            amount_minor=amount,
            group_name=group_name,
            # Anonymous donors store no name; a blank one is treated the same.
            donor_name=(donor_name or "").strip() or None,
            dedication=dedication,
            status=str(status),
        )
        for pledge_id, at, amount, group_name, donor_name, dedication, status in rows
    ]


def recent_refunds(day: FastDay, limit: int = RECENT_LIMIT) -> list[RecentRefund]:
    """The latest refunds recorded in the ledger (that is, confirmed by Stripe)."""
    rows = db.session.execute(
        select(
            LedgerEntry.pledge_id,
            LedgerEntry.created_at,
            LedgerEntry.amount_minor,
            LedgerEntry.stripe_object_id,
        )
        .where(
            LedgerEntry.fast_day_id == day.id,
            LedgerEntry.currency == day.currency,
            LedgerEntry.kind == EntryKind.REFUND,
        )
        .order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc())
        .limit(limit)
    ).all()
    return [
        RecentRefund(pledge_id=pledge_id, at=at, amount_minor=-amount, stripe_refund_id=ref)
        for pledge_id, at, amount, ref in rows
    ]


def recent_failures(day: FastDay, limit: int = RECENT_LIMIT) -> list[RecentFailure]:
    """The latest gifts whose payment failed and that nobody has paid since."""
    rows = db.session.execute(
        select(Pledge.id, Pledge.updated_at, Pledge.amount_minor, Pledge.failure_message)
        .where(Pledge.fast_day_id == day.id, Pledge.status == PledgeStatus.FAILED)
        .order_by(Pledge.updated_at.desc(), Pledge.id.desc())
        .limit(limit)
    ).all()
    return [
        RecentFailure(pledge_id=pledge_id, at=at, amount_minor=amount, message=message)
        for pledge_id, at, amount, message in rows
    ]


def figures(day: FastDay, *, now: datetime | None = None) -> DashboardFigures:
    """The dashboard's figures for ``day``, in its currency, from the ledger and pledges."""
    totals = ledger.day_totals(day)
    gift_count = int(
        db.session.scalar(select(func.count(Pledge.id)).where(_counted_gifts(day))) or 0
    )
    failed_count = int(
        db.session.scalar(
            select(func.count(Pledge.id)).where(
                Pledge.fast_day_id == day.id, Pledge.status == PledgeStatus.FAILED
            )
        )
        or 0
    )
    hours, before, after = gifts_per_hour(day)
    return DashboardFigures(
        day=day,
        currency=day.currency,
        timezone=day.timezone,
        raised_minor=totals.raised_minor,
        goal_minor=day.goal_minor,
        percent_of_goal=(
            max(totals.raised_minor, 0) * 100 // day.goal_minor if day.goal_minor > 0 else None
        ),
        donors=totals.donors,
        gift_count=gift_count,
        average_gift_minor=_average(totals.raised_minor, gift_count),
        fees_minor=totals.fees_minor,
        refunded_minor=-_ledger_sum(day, (EntryKind.REFUND,)),
        disputed_minor=-_ledger_sum(day, (EntryKind.DISPUTE, EntryKind.DISPUTE_REVERSAL)),
        failed_count=failed_count,
        hours=hours,
        gifts_before_day=before,
        gifts_after_day=after,
        allocations=ledger.allocations(day),
        recent_gifts=recent_gifts(day),
        recent_refunds=recent_refunds(day),
        recent_failures=recent_failures(day),
        generated_at=now or _utcnow(),
        by_currency=ledger.totals_by_currency(day),
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def as_json(fig: DashboardFigures, anonymous_label: str = "Anonymous") -> dict[str, Any]:
    """The figures as plain JSON: amounts in minor units with the currency, times in UTC."""
    data: dict[str, Any] = {
        "fast_day": {
            "id": fig.day.id,
            "slug": fig.day.slug,
            "title": fig.day.title,
            "date": fig.day.local_date.isoformat(),
            "status": str(fig.day.status),
            "timezone": fig.timezone,
        },
        "currency": fig.currency,
        "raised_minor": fig.raised_minor,
        "goal_minor": fig.goal_minor,
        "percent_of_goal": fig.percent_of_goal,
        "donors": fig.donors,
        "gift_count": fig.gift_count,
        "average_gift_minor": fig.average_gift_minor,
        "fees_minor": fig.fees_minor,
        "net_minor": fig.net_minor,
        "refunded_minor": fig.refunded_minor,
        "disputed_minor": fig.disputed_minor,
        "failed_count": fig.failed_count,
        "gifts_before_day": fig.gifts_before_day,
        "gifts_after_day": fig.gifts_after_day,
        "hours": [
            {"starts_at": _iso(h.starts_at), "count": h.count, "amount_minor": h.amount_minor}
            for h in fig.hours
        ],
        "allocations": [
            {
                "aid_group_id": a.aid_group_id,
                "slug": a.slug,
                "name": a.name,
                "designated_minor": a.designated_minor,
                "pool_share_minor": a.pool_share_minor,
                "allocated_minor": a.allocated_minor,
            }
            for a in fig.allocations
        ],
        "recent_gifts": [
            {
                "gift_id": g.pledge_id,
                "at": _iso(g.at),
                "amount_minor": g.amount_minor,
                "group": g.group_name,
                "donor": g.donor_name or anonymous_label,
                "anonymous": g.donor_name is None,
                "dedication": g.dedication,
                "status": g.status,
            }
            for g in fig.recent_gifts
        ],
        "recent_refunds": [
            {
                "gift_id": r.pledge_id,
                "at": _iso(r.at),
                "amount_minor": r.amount_minor,
                "stripe_refund_id": r.stripe_refund_id,
            }
            for r in fig.recent_refunds
        ],
        "recent_failures": [
            {"gift_id": f.pledge_id, "at": _iso(f.at), "amount_minor": f.amount_minor}
            for f in fig.recent_failures
        ],
        "by_currency": [
            {
                "currency": t.currency,
                "gifts_minor": t.flows.gifts_minor,
                "refunds_minor": t.flows.refunds_minor,
                "disputes_minor": t.flows.disputes_minor,
                "fees_minor": t.flows.fees_minor,
                "net_minor": t.net_minor,
                "disbursed_minor": t.disbursed_minor,
                "owed_minor": t.owed_minor,
                "donors": t.donors,
            }
            for t in fig.by_currency
        ],
    }
    data["state"] = state_key(data)
    data["generated_at"] = _iso(fig.generated_at)
    return data


def state_key(data: dict[str, Any]) -> str:
    """A short fingerprint of the figures, so the page can tell whether anything changed."""
    stable = {k: v for k, v in data.items() if k not in ("state", "generated_at")}
    encoded = json.dumps(stable, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]
