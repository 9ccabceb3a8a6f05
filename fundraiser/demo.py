"""Demo data for `make run`: invented groups and donors, never real organisations or people."""

from __future__ import annotations

import random
import secrets
from datetime import date, timedelta

from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from .extensions import db
from .models import (
    AidGroup,
    AidGroupStatus,
    EntryKind,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    Pledge,
    PledgeStatus,
    Role,
    User,
    utcnow,
)

GROUPS = [
    (
        "sunbird-family-relief",
        "Sunbird Family Relief",
        "PS",
        "Food parcels and cash for families who have lost their homes, delivered by volunteers in their own neighbourhoods.",
    ),
    (
        "citrus-grove-medical",
        "Citrus Grove Medical Aid",
        "PS",
        "Keeps three small clinics stocked with medicines, dressings and fuel for their generators.",
    ),
    (
        "lantern-childrens-fund",
        "Lantern Children's Fund",
        "PS",
        "Hot meals, clean water and safe play spaces for children in shelters.",
    ),
    (
        "almond-tree-shelters",
        "Almond Tree Shelter Network",
        "PS",
        "Tents, blankets and winter kits for displaced families, bought locally where markets still run.",
    ),
    (
        "sea-breeze-water",
        "Sea Breeze Water Project",
        "PS",
        "Desalination units and water trucking to camps that have no running water.",
    ),
    (
        "harvest-table-collective",
        "Harvest Table Collective",
        "JO",
        "A diaspora-run kitchen network that funds bakeries and community kitchens in Gaza.",
    ),
]

FIRST_NAMES = [
    "Amal",
    "Sami",
    "Lina",
    "Omar",
    "Noor",
    "Karim",
    "Maya",
    "Yusuf",
    "Rania",
    "Tariq",
    "Sofia",
    "Jonas",
    "Aiko",
    "Chidi",
    "Ines",
    "Mateo",
    "Priya",
    "Hana",
]


def _fee(amount_minor: int) -> int:
    """A typical card fee (2.9% + 30), for demo figures only."""
    return amount_minor * 29 // 1000 + 30


def _gifts(day: FastDay, count: int, rng: random.Random, refunds: int = 0) -> None:
    groups = day.groups
    for i in range(count):
        amount = rng.choice([*day.suggested_amounts, 1500, 4000, 7500]) * rng.choice([1, 1, 1, 2])
        group = rng.choice(groups) if rng.random() < 0.3 else None
        named = rng.random() < 0.4
        pledge = Pledge(
            token=secrets.token_urlsafe(24),
            fast_day=day,
            aid_group=group,
            amount_minor=amount,
            currency=day.currency,
            donor_name=rng.choice(FIRST_NAMES) if named else None,
            email=f"donor{day.id}-{i}@example.org",
            locale="en",
            status=PledgeStatus.SUCCEEDED,
            succeeded_at=utcnow(),
        )
        db.session.add(pledge)
        db.session.flush()
        # Demo rows use demo_ ids where Stripe's would be, so they can never meet real ones.
        for kind, value, key in (
            (EntryKind.GIFT, amount, f"demo_ch_{pledge.id}"),
            (EntryKind.FEE, -_fee(amount), f"demo_txn_{pledge.id}"),
        ):
            db.session.add(
                LedgerEntry(
                    fast_day_id=day.id,
                    pledge_id=pledge.id,
                    aid_group_id=pledge.aid_group_id,
                    kind=kind,
                    amount_minor=value,
                    currency=day.currency,
                    stripe_object_id=key,
                )
            )
        if i < refunds:
            pledge.status = PledgeStatus.REFUNDED
            db.session.add(
                LedgerEntry(
                    fast_day_id=day.id,
                    pledge_id=pledge.id,
                    aid_group_id=pledge.aid_group_id,
                    kind=EntryKind.REFUND,
                    amount_minor=-amount,
                    currency=day.currency,
                    stripe_object_id=f"demo_re_{pledge.id}",
                )
            )


def _day(
    slug: str,
    title: str,
    when: date,
    status: FastDayStatus,
    currency: str,
    goal: int,
    groups: list[AidGroup],
    description: str,
) -> FastDay:
    day = FastDay(
        slug=slug,
        title=title,
        local_date=when,
        timezone="UTC",
        currency=currency,
        goal_minor=goal,
        suggested_amounts=[1000, 2500, 5000, 10000],
        status=status,
        description=description,
    )
    for position, group in enumerate(groups):
        day.split_rows.append(
            FastDayGroup(aid_group=group, weight=1 + position % 2, position=position)
        )
    db.session.add(day)
    db.session.flush()
    return day


def is_empty() -> bool:
    """True when the database has no fast days yet."""
    return not db.session.scalar(select(func.count()).select_from(FastDay))


def load(today: date | None = None) -> None:
    """Create demo groups, three fast days (past, live today, upcoming), gifts and logins."""
    today = today or date.today()
    rng = random.Random(20261123)
    groups = []
    for slug, name, country, description in GROUPS:
        group = AidGroup(
            slug=slug,
            name=name,
            country=country,
            description=description,
            status=AidGroupStatus.APPROVED,
        )
        db.session.add(group)
        groups.append(group)
    # One application waiting for review, so the demo shows the approval flow.
    db.session.add(
        AidGroup(
            slug="morning-star-clinic",
            name="Morning Star Mobile Clinic",
            country="PS",
            description="A van and two nurses bringing first aid and medicines to shelters.",
            status=AidGroupStatus.APPLIED,
            contact_name="Dr. Example Contact",
            contact_email="clinic@example.org",
            funds_method="bank_transfer",
            funds_details="A registered charity account; details on request.",
        )
    )
    db.session.flush()

    past = _day(
        "autumn-fast-2026",
        "Autumn Fast for Gaza",
        today - timedelta(days=45),
        FastDayStatus.CLOSED,
        "EUR",
        2_000_000,
        groups[:5],
        "Our autumn day of fasting and giving.",
    )
    live = _day(
        "winter-fast-2026",
        "Winter Fast for Gaza",
        today,
        FastDayStatus.LIVE,
        "USD",
        5_000_000,
        groups,
        "Fast from dawn to sunset with people in more than 120 countries, and give what your meals would have cost.",
    )
    _day(
        "new-year-fast-2027",
        "New Year Fast for Gaza",
        today + timedelta(days=40),
        FastDayStatus.SCHEDULED,
        "USD",
        5_000_000,
        groups,
        "Begin the year fasting together; pledge now and give on the day.",
    )
    _gifts(past, 320, rng, refunds=4)
    _gifts(live, 48, rng, refunds=1)

    db.session.add_all(
        [
            User(
                email="organizer@example.org",
                role=Role.ORGANIZER,
                password_hash=generate_password_hash("fastday-organizer"),
            ),
            User(
                email="partner@example.org",
                role=Role.PARTNER,
                aid_group_id=groups[0].id,
                password_hash=generate_password_hash("fastday-partner"),
            ),
        ]
    )
    db.session.flush()
