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
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    EntryKind,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    Pledge,
    PledgeStatus,
    Role,
    Subscriber,
    SubscriberStatus,
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
                    split_version=None if pledge.aid_group_id else day.split_version,
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
                    split_version=None if pledge.aid_group_id else day.split_version,
                )
            )


def _other_currency_gifts(day: FastDay) -> None:
    """Let the live day take euros and yen too, with a few gifts in each (never converted)."""
    day.extra_currencies = ["EUR", "JPY"]
    rng = random.Random(4217)  # its own, so the day's other demo figures stay as they were
    for currency, amounts, count in (("EUR", [1000, 2000, 3500], 7), ("JPY", [1000, 3000], 4)):
        for i in range(count):
            amount = rng.choice(amounts)
            group = day.groups[0] if i == 0 else None
            pledge = Pledge(
                token=secrets.token_urlsafe(24),
                fast_day=day,
                aid_group=group,
                amount_minor=amount,
                currency=currency,
                email=f"donor{day.id}-{currency.lower()}-{i}@example.org",
                locale="en",
                status=PledgeStatus.SUCCEEDED,
                succeeded_at=utcnow(),
            )
            db.session.add(pledge)
            db.session.flush()
            fee = amount * 29 // 1000 + (30 if currency == "EUR" else 40)
            for kind, value, key in (
                (EntryKind.GIFT, amount, f"demo_ch_{pledge.id}"),
                (EntryKind.FEE, -fee, f"demo_txn_{pledge.id}"),
            ):
                db.session.add(
                    LedgerEntry(
                        fast_day_id=day.id,
                        pledge_id=pledge.id,
                        aid_group_id=pledge.aid_group_id,
                        kind=kind,
                        amount_minor=value,
                        currency=currency,
                        stripe_object_id=key,
                        split_version=None if group else day.split_version,
                    )
                )


def _demo_disbursements(day: FastDay, bank_group: AidGroup, connect_group: AidGroup) -> None:
    """Pay two groups from a past day: half of one by bank transfer, all of one by Connect."""
    from . import disbursements, ledger

    connect_group.stripe_account_id = "acct_1DemoCitrusGrove0"
    owed = {a.aid_group_id: a.balance_minor for a in ledger.allocations(day)}
    paid_on = day.local_date + timedelta(days=7)
    disbursements.record(
        day,
        group=bank_group,
        currency=day.currency,
        amount_minor=owed[bank_group.id] // 2,
        paid_on=paid_on,
        reference="DEMO-SEPA-20261009",
        note="First half; the rest after the partner's report.",
    )
    # A transfer already confirmed, as Stripe would have answered; demo_ ids never meet real ones.
    transfer = Disbursement(
        fast_day_id=day.id,
        aid_group_id=connect_group.id,
        amount_minor=owed[connect_group.id],
        currency=day.currency,
        method=DisbursementMethod.STRIPE_CONNECT,
        paid_on=paid_on,
        status=DisbursementStatus.CONFIRMED,
        stripe_destination=connect_group.stripe_account_id,
        stripe_transfer_id=f"demo_tr_{day.id}_{connect_group.id}",
        reference=f"demo_tr_{day.id}_{connect_group.id}",
        attempts=1,
        last_attempt_at=utcnow(),
        confirmed_at=utcnow(),
    )
    db.session.add(transfer)
    db.session.flush()
    ledger.record_disbursement(transfer)


# Organizers give each day's title and description in the coalition's languages.
DAY_TRANSLATIONS = {
    "autumn-fast-2026": {
        "ar": ("صيام الخريف من أجل غزة", "يومنا الخريفي للصيام والعطاء."),
        "fr": ("Jeûne d'automne pour Gaza", "Notre journée d'automne de jeûne et de dons."),
        "es": ("Ayuno de otoño por Gaza", "Nuestro día de ayuno y donación de otoño."),
        "pt": ("Jejum de outono por Gaza", "Nosso dia de outono de jejum e doação."),
    },
    "winter-fast-2026": {
        "ar": (
            "صيام الشتاء من أجل غزة",
            "صوموا من الفجر إلى الغروب مع أناس في أكثر من 120 بلدًا، "
            "وتبرّعوا بما كانت ستكلّفه وجباتكم.",
        ),
        "fr": (
            "Jeûne d'hiver pour Gaza",
            "Jeûnez de l'aube au coucher du soleil avec des personnes de plus de 120 pays, "
            "et donnez ce qu'auraient coûté vos repas.",
        ),
        "es": (
            "Ayuno de invierno por Gaza",
            "Ayune desde el alba hasta la puesta del sol con personas de más de 120 países "
            "y done lo que habrían costado sus comidas.",
        ),
        "pt": (
            "Jejum de inverno por Gaza",
            "Jejue do amanhecer ao pôr do sol com pessoas de mais de 120 países "
            "e doe o que suas refeições teriam custado.",
        ),
    },
    "new-year-fast-2027": {
        "ar": (
            "صيام العام الجديد من أجل غزة",
            "ابدؤوا العام صائمين معًا: تعهّدوا الآن وتبرّعوا في يوم الصيام.",
        ),
        "fr": (
            "Jeûne du Nouvel An pour Gaza",
            "Commencez l'année en jeûnant ensemble : promettez maintenant, donnez le jour même.",
        ),
        "es": (
            "Ayuno de Año Nuevo por Gaza",
            "Comience el año ayunando en comunidad: comprométase ahora y done el mismo día.",
        ),
        "pt": (
            "Jejum de Ano-Novo por Gaza",
            "Comece o ano jejuando juntos: prometa agora e doe no dia.",
        ),
    },
}


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
    titles = DAY_TRANSLATIONS.get(slug, {})
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
        translations={
            code: {"title": title, "description": text} for code, (title, text) in titles.items()
        },
    )
    for position, group in enumerate(groups):
        day.split_rows.append(
            FastDayGroup(aid_group=group, weight=1 + position % 2, position=position)
        )
    db.session.add(day)
    db.session.flush()
    return day


# Subscribers around the world, so a "07:00 local" message visibly reaches some now and others
# later: (address, language, time zone, city for sunrise and sunset or None).
SUBSCRIBERS = [
    ("amina@example.org", "ar", "Asia/Gaza", "Jerusalem"),
    ("yusuf@example.org", "en", "Asia/Kuala_Lumpur", "Kuala Lumpur"),
    ("claire@example.org", "fr", "Europe/Paris", "Paris"),
    ("lucia@example.org", "es", "America/Mexico_City", "Mexico City"),
    ("joao@example.org", "pt", "America/Sao_Paulo", "Sao Paulo"),
    ("sam@example.org", "en", "Europe/London", "London"),
    ("dana@example.org", "en", "America/New_York", "New York"),
    ("tui@example.org", "en", "Pacific/Auckland", None),
    ("kai@example.org", "en", "America/Los_Angeles", None),
    ("farah@example.org", "ar", "Asia/Karachi", "Karachi"),
]


def _demo_subscribers() -> None:
    """Confirmed subscribers in many zones, and one who has not confirmed (gets nothing)."""
    now = utcnow()
    for email, locale, zone, city in SUBSCRIBERS:
        db.session.add(
            Subscriber(
                email=email,
                locale=locale,
                timezone=zone,
                city=city,
                latitude=None,
                longitude=None,
                status=SubscriberStatus.CONFIRMED,
                confirmed_at=now,
            )
        )
    db.session.add(Subscriber(email="not-yet@example.org", locale="en", timezone="Africa/Cairo"))
    _locate_cities()


def _locate_cities() -> None:
    """Fill in coordinates for the demo cities astral knows (sunrise and sunset messages)."""
    try:
        from astral.geocoder import database, lookup
    except ImportError:  # astral arrives with the campaign messages; the demo works without
        return
    places = database()
    for subscriber in db.session.scalars(select(Subscriber).where(Subscriber.city.is_not(None))):
        try:
            place = lookup(subscriber.city, places)
        except KeyError:
            subscriber.city = None
            continue
        subscriber.latitude, subscriber.longitude = place.latitude, place.longitude


def is_empty() -> bool:
    """True when the database has no fast days yet."""
    return not db.session.scalar(select(func.count()).select_from(FastDay))


def load(today: date | None = None) -> None:
    """Create demo groups, three fast days (past, live today, upcoming), gifts and logins."""
    # A fast day is a calendar date that reaches every time zone in turn. The live demo day
    # is the date six hours ahead of UTC, so whenever the demo starts, the day's mornings are
    # under way: a "07:00 local" message has reached some subscribers (Auckland, Kuala
    # Lumpur) and not yet others (London, New York), which is what the demo is for.
    today = today or (utcnow() + timedelta(hours=6)).date()
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
    _other_currency_gifts(live)
    _demo_disbursements(past, groups[0], groups[1])
    _demo_subscribers()

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
