"""Benchmark data: one live fast day with many gifts and subscribers, loaded in bulk.

The rows are the ones the app itself writes when a gift goes through (see
``pledges.sync_payment`` and ``ledger.record_charge``): a succeeded Pledge carrying its
Stripe customer, SetupIntent, PaymentIntent and charge ids, a GIFT row under the charge id and
a FEE row under its balance transaction's id, and for the few refunded gifts a REFUND row under
the refund's id (a full refund leaves the pledge ``refunded``). Pooled rows carry the day's
split version; designated ones the group.

A million ORM objects would take many minutes to build and flush, so gifts are built as plain
tuples and written with the tables' Core ``insert()`` as one executemany per table and chunk,
one chunk per transaction. Pledge ids are reserved per chunk (under SQLite's write lock, or
from PostgreSQL's sequence) so the ledger rows can name their pledge without reading anything
back. On SQLite the load runs with ``synchronous=OFF`` and a large page cache on its own
connection, restored afterwards: a crash mid-load can lose the load, never data the app wrote.
"""

from __future__ import annotations

import bisect
import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from random import Random
from typing import Any

from sqlalchemy import Connection, func, insert, select, text

from . import demo, ledger_totals
from .database import writing
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
    Subscriber,
    SubscriberStatus,
    utcnow,
)

CURRENCY = "USD"
CHUNK = 10_000  # gifts (or subscribers) per transaction
DESIGNATED_SHARE = 0.15  # of gifts made to one group instead of the pool
REFUND_SHARE = 0.005  # of gifts refunded afterwards, half of them in full
REPEAT_DONOR_SHARE = 0.3  # of gifts from someone who gave before

# (amount in cents, relative frequency): mostly the suggested amounts, with a long tail.
AMOUNTS = [
    (500, 3),
    (1000, 22),
    (1500, 4),
    (1800, 4),
    (2000, 6),
    (2500, 24),
    (3600, 3),
    (5000, 17),
    (7500, 3),
    (10000, 9),
    (18000, 1),
    (25000, 2),
    (50000, 1),
    (100000, 0.3),
    (250000, 0.05),
]
_AMOUNT_VALUES = [amount for amount, _ in AMOUNTS]
_AMOUNT_WEIGHTS = list(itertools.accumulate(weight for _, weight in AMOUNTS))

LANGUAGES = ("en", "ar", "fr", "es", "pt")
_DONOR_LANGUAGE_WEIGHTS = list(itertools.accumulate((50, 20, 12, 10, 8)))

# The demo's donors' names, and more of them.
FIRST_NAMES = (
    *demo.FIRST_NAMES,
    "Layla",
    "Ahmad",
    "Fatima",
    "Ibrahim",
    "Sara",
    "Daniel",
    "Chloe",
    "Lucas",
    "Ana",
    "Joao",
    "Mariam",
    "Bilal",
    "Zainab",
    "Hamza",
    "Aisha",
    "Leila",
    "Malik",
    "Nadia",
    "Rami",
    "Salma",
    "Yara",
    "Elif",
    "Tomas",
    "Camille",
    "Diego",
    "Beatriz",
    "Kwame",
    "Emma",
)
LAST_NAMES = (
    "Haddad",
    "Khalil",
    "Nasser",
    "Saleh",
    "Mansour",
    "Darwish",
    "Barakat",
    "Awad",
    "Hamdan",
    "Odeh",
    "Said",
    "Shami",
    "Khoury",
    "Martin",
    "Dubois",
    "Garcia",
    "Lopez",
    "Silva",
    "Santos",
    "Okafor",
    "Tanaka",
    "Kowalski",
    "Nguyen",
    "Ahmed",
    "Rahman",
    "Smith",
    "Jones",
    "Murphy",
    "Rossi",
    "Muller",
    "Costa",
    "Fernandes",
    "Ali",
    "Hussein",
    "Yilmaz",
    "Cohen",
    "Levy",
    "Abbas",
    "Qasem",
)
DEDICATIONS = (
    "In memory of my grandmother, who always fed the neighbours first.",
    "For the children of Gaza.",
    "From our family's iftar table to yours.",
    "In honour of my students.",
    "With love from our mosque community.",
    "For every mother waiting for bread.",
    "From a reading group that fasted together.",
)

# Group names: a word from home, and what the group does (with a line describing it).
NAME_WORDS = (
    "Olive Branch",
    "Sunbird",
    "Citrus Grove",
    "Almond Tree",
    "Lantern",
    "Jasmine",
    "Pomegranate",
    "Fig Tree",
    "Cedar",
    "Sea Breeze",
    "Harvest Table",
    "Morning Star",
    "Sabra",
    "Red Anemone",
    "Orange Blossom",
    "Sumac",
    "Za'atar",
    "White Dove",
    "Crescent",
    "Mulberry",
    "Date Palm",
    "Carob",
    "Lemon Tree",
    "Grapevine",
    "Wheat Field",
    "Tatreez",
    "Sunrise",
    "Open Hands",
    "Old City",
    "Sea Gate",
)
GROUP_KINDS = (
    ("Family Relief", "Food parcels and cash for families who have lost their homes."),
    ("Medical Aid", "Keeps small clinics stocked with medicines, dressings and generator fuel."),
    ("Children's Fund", "Hot meals, clean water and safe play spaces for children in shelters."),
    ("Shelter Network", "Tents, blankets and winter kits, bought locally where markets still run."),
    ("Water Project", "Desalination units and water trucking to camps with no running water."),
    ("Community Kitchen", "Cooks daily meals over wood fires for displaced neighbourhoods."),
    ("Women's Collective", "Women-led relief: hygiene kits, maternity care and cash support."),
    ("Youth Initiative", "Young volunteers who distribute aid street by street."),
    ("Bakery Fund", "Flour and fuel so neighbourhood bakeries can keep baking bread."),
    ("Mobile Clinic", "A van and nurses bringing first aid and medicines to shelters."),
    ("Learning Circle", "Tent schools, notebooks and teachers' stipends for displaced pupils."),
    ("Trauma Support", "Counsellors and group sessions for children and carers."),
    ("Disability Aid", "Wheelchairs, crutches and home visits for people with disabilities."),
    ("Fishermen's Cooperative", "Nets, repairs and income for families who fish off the coast."),
    ("Farmers' Union", "Seeds, tools and water so small farms can grow food again."),
)
# Most groups work in Gaza and the West Bank; some from the diaspora next door.
GROUP_COUNTRIES = ("PS",) * 7 + ("JO", "LB", "EG")

# (IANA zone, a city there, latitude, longitude, the language most people there choose).
ZONES = (
    ("Asia/Gaza", "Gaza", 31.50, 34.47, "ar"),
    ("Asia/Hebron", "Hebron", 31.53, 35.10, "ar"),
    ("Asia/Amman", "Amman", 31.95, 35.93, "ar"),
    ("Asia/Beirut", "Beirut", 33.89, 35.50, "ar"),
    ("Africa/Cairo", "Cairo", 30.04, 31.24, "ar"),
    ("Asia/Riyadh", "Riyadh", 24.71, 46.68, "ar"),
    ("Asia/Dubai", "Dubai", 25.20, 55.27, "ar"),
    ("Asia/Qatar", "Doha", 25.29, 51.53, "ar"),
    ("Europe/Istanbul", "Istanbul", 41.01, 28.98, "en"),
    ("Asia/Karachi", "Karachi", 24.86, 67.00, "en"),
    ("Asia/Kolkata", "Mumbai", 19.08, 72.88, "en"),
    ("Asia/Dhaka", "Dhaka", 23.81, 90.41, "en"),
    ("Asia/Jakarta", "Jakarta", -6.21, 106.85, "en"),
    ("Asia/Kuala_Lumpur", "Kuala Lumpur", 3.14, 101.69, "en"),
    ("Asia/Singapore", "Singapore", 1.35, 103.82, "en"),
    ("Asia/Tokyo", "Tokyo", 35.68, 139.69, "en"),
    ("Australia/Sydney", "Sydney", -33.87, 151.21, "en"),
    ("Pacific/Auckland", "Auckland", -36.85, 174.76, "en"),
    ("Europe/London", "London", 51.51, -0.13, "en"),
    ("Europe/Dublin", "Dublin", 53.35, -6.26, "en"),
    ("Europe/Paris", "Paris", 48.86, 2.35, "fr"),
    ("Europe/Brussels", "Brussels", 50.85, 4.35, "fr"),
    ("Europe/Berlin", "Berlin", 52.52, 13.40, "en"),
    ("Europe/Madrid", "Madrid", 40.42, -3.70, "es"),
    ("Europe/Lisbon", "Lisbon", 38.72, -9.14, "pt"),
    ("Europe/Rome", "Rome", 41.90, 12.50, "en"),
    ("Europe/Stockholm", "Stockholm", 59.33, 18.07, "en"),
    ("Africa/Casablanca", "Casablanca", 33.57, -7.59, "fr"),
    ("Africa/Algiers", "Algiers", 36.75, 3.06, "fr"),
    ("Africa/Tunis", "Tunis", 36.81, 10.18, "fr"),
    ("Africa/Dakar", "Dakar", 14.72, -17.47, "fr"),
    ("Africa/Lagos", "Lagos", 6.52, 3.38, "en"),
    ("Africa/Johannesburg", "Johannesburg", -26.20, 28.05, "en"),
    ("America/New_York", "New York", 40.71, -74.01, "en"),
    ("America/Chicago", "Chicago", 41.88, -87.63, "en"),
    ("America/Los_Angeles", "Los Angeles", 34.05, -118.24, "en"),
    ("America/Toronto", "Toronto", 43.65, -79.38, "en"),
    ("America/Mexico_City", "Mexico City", 19.43, -99.13, "es"),
    ("America/Sao_Paulo", "Sao Paulo", -23.55, -46.63, "pt"),
    ("America/Argentina/Buenos_Aires", "Buenos Aires", -34.60, -58.38, "es"),
)
# How many subscribers live in each zone, roughly: more where the coalition is strongest.
_ZONE_WEIGHTS = list(
    itertools.accumulate(
        6
        if zone.startswith(("Asia/Gaza", "Asia/Hebron", "Europe/London", "America/New_York"))
        else 2
        for zone, *_ in ZONES
    )
)

DAY_TITLES = {
    "ar": ("يوم صيام للقياس من أجل غزة", "يوم صيام وعطاء، ببيانات للقياس."),
    "fr": ("Jeûne de référence pour Gaza", "Une journée de jeûne et de dons, pour les mesures."),
    "es": ("Ayuno de referencia por Gaza", "Un día de ayuno y donación, para las mediciones."),
    "pt": ("Jejum de referência por Gaza", "Um dia de jejum e doação, para as medições."),
}


class BenchDataError(ValueError):
    """The load cannot start (the slug is taken, a size is out of range)."""


@dataclass(frozen=True)
class BenchReport:
    """What one load wrote."""

    slug: str
    fast_day_id: int
    groups: int
    gifts: int
    ledger_rows: int
    refunds: int
    subscribers: int


Progress = Callable[[int], None]
# A naive UTC datetime as the driver takes it for a UTCDateTime column.
Stamp = Callable[[datetime], Any]


def _insert_many(
    conn: Connection, model: type[db.Model], columns: tuple[str, ...], rows: list[tuple]
) -> None:
    """Insert ``rows`` (values for ``columns``, ready for the driver) in one go.

    On SQLite the statement is the model's Core ``insert()``, compiled for the dialect, and
    the rows go straight to the driver's executemany: executing it through SQLAlchemy would
    convert every value of every row on the way (a million gifts carry six million datetimes
    through UTCDateTime and SQLite's formatter) and want a dict per row. Here each value is
    built once, in the form the column type itself produces (see ``_stamp_for``).
    """
    if conn.dialect.name == "postgresql":
        # PostgreSQL runs an executemany row by row; COPY takes the chunk in one stream, in
        # the same transaction (about ten times faster).
        names = ", ".join(columns)
        cursor = conn.connection.dbapi_connection.cursor()
        with cursor, cursor.copy(f"COPY {model.__tablename__} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    statement = insert(model.__table__).compile(dialect=conn.dialect, column_keys=list(columns))
    if not statement.positional or tuple(statement.positiontup or ()) != columns:
        raise ValueError(f"list {model.__tablename__}'s columns in the table's order")
    conn.exec_driver_sql(str(statement), rows)


def _stamp_for(conn: Connection) -> Stamp:
    """How a UTCDateTime column stores a naive UTC datetime on this connection's database."""
    if conn.dialect.name == "sqlite":
        # SQLAlchemy's SQLite DateTime format: always six digits of microseconds, so stored
        # times compare correctly as text.
        return lambda moment: moment.isoformat(" ", "microseconds")
    return lambda moment: moment


def _slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _stripe_id_tail(pledge_id: int) -> str:
    """What follows ``ch_``, ``pi_`` … in a bench pledge's Stripe ids: unique, never real."""
    return f"Bench{pledge_id:016d}"


def _create_groups(rng: Random, count: int) -> list[AidGroup]:
    taken = set(db.session.scalars(select(AidGroup.slug)))
    names = [f"{word} {kind}" for word in NAME_WORDS for kind, _ in GROUP_KINDS]
    about = {f"{word} {kind}": line for word in NAME_WORDS for kind, line in GROUP_KINDS}
    rng.shuffle(names)
    groups = []
    now = utcnow()
    for n in range(count):
        base = names[n % len(names)]
        name = base if n < len(names) else f"{base} {n // len(names) + 1}"
        slug = _slugify(name)
        for suffix in itertools.count(2):
            if slug not in taken:
                break
            slug = f"{_slugify(name)}-{suffix}"
        taken.add(slug)
        group = AidGroup(
            slug=slug,
            name=name,
            country=rng.choice(GROUP_COUNTRIES),
            description=about[base],
            status=AidGroupStatus.APPROVED,
            contact_name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            contact_email=f"contact@{slug}.bench.invalid",
            funds_method="bank_transfer",
            funds_details="A registered charity account; details with the organizers.",
            locale=rng.choice(("en", "ar", "ar")),
            reviewed_at=now - timedelta(days=rng.randint(20, 200)),
        )
        db.session.add(group)
        groups.append(group)
    db.session.flush()
    return groups


def _create_day(rng: Random, slug: str, groups: list[AidGroup], gifts: int) -> FastDay:
    now = utcnow()
    day = FastDay(
        slug=slug,
        title="Bench Fast for Gaza",
        description="Fast from dawn to sunset with people in more than 120 countries, "
        "and give what your meals would have cost.",
        local_date=now.date(),
        timezone="UTC",
        currency=CURRENCY,
        locale="en",
        translations={code: {"title": t, "description": d} for code, (t, d) in DAY_TITLES.items()},
        # Gifts average about $48: a goal a little beyond what the load raises.
        goal_minor=max(1_000_000, -(-gifts * 6_000 // 1_000_000) * 1_000_000),
        suggested_amounts=[1000, 2500, 5000, 10000],
        status=FastDayStatus.LIVE,
        split_version=1,
        created_at=now - timedelta(days=30),
    )
    for position, group in enumerate(groups):
        day.split_rows.append(
            FastDayGroup(aid_group=group, weight=rng.randint(1, 3), position=position)
        )
    db.session.add(day)
    db.session.flush()
    return day


@contextmanager
def _bulk_connection() -> Iterator[Connection]:
    """A connection for the load; on SQLite with durability traded for speed until it ends."""
    with db.engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        # SQLite refuses to change these inside a transaction, and SQLAlchemy would begin
        # one around any statement, so they go straight to the driver's connection.
        cursor = conn.connection.dbapi_connection.cursor()
        before = {
            name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("synchronous", "cache_size")
        }
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB
        try:
            yield conn
        finally:
            for name, value in before.items():
                cursor.execute(f"PRAGMA {name}={int(value)}")
            cursor.close()


def _reserve_pledge_ids(conn: Connection, count: int) -> list[int]:
    """Ids for ``count`` new pledges, inside the chunk's transaction."""
    if conn.dialect.name == "postgresql":
        return list(
            conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence('pledge', 'id')) "
                    "FROM generate_series(1, :n)"
                ),
                {"n": count},
            ).scalars()
        )
    # SQLite: the chunk's transaction began with BEGIN IMMEDIATE, so no one else can insert
    # a pledge between this read and our inserts.
    start = conn.execute(select(func.coalesce(func.max(Pledge.id), 0))).scalar_one() + 1
    return list(range(start, start + count))


def _gift_times(rng: Random, count: int) -> list[float]:
    """How long before the load's end each gift came in, in seconds, oldest first.

    A fast day is a calendar date that reaches every zone in turn, so its gifts come over
    about a day, bunched around sunsets (the Middle East's, Europe's, the Americas').
    Counting back from the load's own time keeps every gift in the past.
    """
    peaks = (0.62, 0.45, 0.18)  # as fractions of the day back from the end
    day = 86_400.0
    seconds = []
    for _ in range(count):
        if rng.random() < 0.5:
            back = rng.random()
        else:
            back = min(0.999_999, max(0.0, rng.gauss(rng.choice(peaks), 0.04)))
        seconds.append(back * day)
    seconds.sort(reverse=True)
    return seconds


class _Donors:
    """Donor e-mail addresses: most gifts from someone new, some from a donor who gave before."""

    def __init__(self, rng: Random) -> None:
        self.rng = rng
        self.count = 0

    def next_email(self) -> str:
        if self.count and self.rng.random() < REPEAT_DONOR_SHARE:
            number = self.rng.randrange(self.count) + 1
        else:
            self.count += 1
            number = self.count
        return f"donor{number}@bench.invalid"


def _fee(amount_minor: int) -> int:
    """Stripe's standard US card fee: 2.9% + 30¢."""
    return (amount_minor * 29 + 500) // 1000 + 30


# The columns the load writes, in each table's order; the others stay NULL, as for a gift
# given now (no failure, no charge on the day, no disbursement).
PLEDGE_COLUMNS = (
    "id",
    "token",
    "fast_day_id",
    "aid_group_id",
    "amount_minor",
    "currency",
    "donor_name",
    "email",
    "dedication",
    "wants_messages",
    "locale",
    "status",
    "stripe_customer_id",
    "stripe_setup_intent_id",
    "stripe_payment_intent_id",
    "stripe_charge_id",
    "created_at",
    "updated_at",
    "succeeded_at",
    "receipt_queued_at",
    "charge_on_day",
    "charge_attempts",
)
ENTRY_COLUMNS = (
    "fast_day_id",
    "pledge_id",
    "aid_group_id",
    "kind",
    "amount_minor",
    "currency",
    "stripe_object_id",
    "split_version",
    "created_at",
)
SUBSCRIBER_COLUMNS = (
    "email",
    "locale",
    "timezone",
    "city",
    "latitude",
    "longitude",
    "status",
    "wants_day_messages",
    "wants_reminders",
    "link_version",
    "created_at",
    "confirmed_at",
)


def _gift_chunk(
    conn: Connection,
    rng: Random,
    day_id: int,
    version: int,
    group_ids: list[int],
    donors: _Donors,
    backs: list[float],
    end: datetime,
    stamp: Stamp,
) -> tuple[int, int]:
    """Write one chunk of gifts and their ledger rows; returns (ledger rows, refunds)."""
    count = len(backs)
    ids = _reserve_pledge_ids(conn, count)
    amounts = rng.choices(_AMOUNT_VALUES, cum_weights=_AMOUNT_WEIGHTS, k=count)
    locales = rng.choices(LANGUAGES, cum_weights=_DONOR_LANGUAGE_WEIGHTS, k=count)
    succeeded = PledgeStatus.SUCCEEDED.value
    refunded = PledgeStatus.REFUNDED.value
    gift, fee, refund = EntryKind.GIFT.value, EntryKind.FEE.value, EntryKind.REFUND.value
    random = rng.random
    pledges: list[tuple] = []
    entries: list[tuple] = []
    refunds = 0
    for pledge_id, amount, locale, back in zip(ids, amounts, locales, backs, strict=True):
        group_id = rng.choice(group_ids) if random() < DESIGNATED_SHARE else None
        pooled_version = None if group_id else version
        tail = _stripe_id_tail(pledge_id)
        created = end - timedelta(seconds=back)
        paid_at = created + timedelta(seconds=4 + 40 * random())
        paid = updated = stamp(paid_at)
        status = succeeded
        entries.append(
            (
                day_id,
                pledge_id,
                group_id,
                gift,
                amount,
                CURRENCY,
                "ch_" + tail,
                pooled_version,
                paid,
            )
        )
        entries.append(
            (
                day_id,
                pledge_id,
                group_id,
                fee,
                -_fee(amount),
                CURRENCY,
                "txn_" + tail,
                pooled_version,
                paid,
            )
        )
        if random() < REFUND_SHARE:
            refunds += 1
            full = random() < 0.5
            taken_back = amount if full else max(1, int(amount * (0.1 + 0.8 * random())))
            # Stripe keeps its fee on a refund, so a refund has no FEE row of its own.
            updated = stamp(min(end, paid_at + timedelta(minutes=5 + 600 * random())))
            status = refunded if full else succeeded
            entries.append(
                (
                    day_id,
                    pledge_id,
                    group_id,
                    refund,
                    -taken_back,
                    CURRENCY,
                    "re_" + tail,
                    pooled_version,
                    updated,
                )
            )
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}" if random() < 0.4 else None
        pledges.append(
            (
                pledge_id,
                secrets.token_urlsafe(24),
                day_id,
                group_id,
                amount,
                CURRENCY,
                name,
                donors.next_email(),
                rng.choice(DEDICATIONS) if random() < 0.03 else None,
                random() < 0.3,
                locale,
                status,
                "cus_" + tail,
                "seti_" + tail,
                "pi_" + tail,
                "ch_" + tail,
                stamp(created),
                updated,
                paid,
                paid,
                False,
                0,
            )
        )
    _insert_many(conn, Pledge, PLEDGE_COLUMNS, pledges)
    _insert_many(conn, LedgerEntry, ENTRY_COLUMNS, entries)
    return len(entries), refunds


def _subscriber_chunk(
    conn: Connection, rng: Random, slug: str, first: int, count: int, now: datetime, stamp: Stamp
) -> None:
    """Write subscribers ``first`` … ``first + count - 1``: confirmed, in their zones."""
    confirmed = SubscriberStatus.CONFIRMED.value
    rows = []
    for number in range(first, first + count):
        # The first forty cover every zone once; the rest follow where people live.
        index = (
            number
            if number < len(ZONES)
            else bisect.bisect(_ZONE_WEIGHTS, rng.random() * _ZONE_WEIGHTS[-1])
        )
        zone, city, latitude, longitude, language = ZONES[index]
        locale = language if rng.random() < 0.7 else rng.choice(LANGUAGES)
        located = rng.random() < 0.5
        joined = now - timedelta(days=60 * rng.random())
        rows.append(
            (
                f"subscriber{number + 1}@{slug}.bench.invalid",
                locale,
                zone,
                city if located else None,
                latitude if located else None,
                longitude if located else None,
                confirmed,
                True,
                rng.random() < 0.8,
                secrets.randbelow(2**31 - 2) + 1,
                stamp(joined),
                stamp(joined + timedelta(minutes=1 + 120 * rng.random())),
            )
        )
    _insert_many(conn, Subscriber, SUBSCRIBER_COLUMNS, rows)


def _chunks(total: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, CHUNK):
        yield start, min(CHUNK, total - start)


def load(
    *,
    gifts: int,
    groups: int,
    subscribers: int,
    seed: int = 1,
    slug: str = "bench-day",
    progress: Progress | None = None,
) -> BenchReport:
    """Create a live fast day for ``groups`` groups, with ``gifts`` gifts and ``subscribers``.

    Commits as it goes (the day first, then one transaction per chunk); ``progress`` is
    called with the number of gifts or subscribers each chunk wrote.
    """
    if groups < 1 or gifts < 0 or subscribers < 0:
        raise BenchDataError("a load needs at least one group, and no negative counts")
    rng = Random(seed)  # noqa: S311 - invented data, reproducible from its seed
    step = progress or (lambda _n: None)
    with writing():
        if db.session.scalar(select(FastDay.id).where(FastDay.slug == slug)) is not None:
            db.session.rollback()
            raise BenchDataError(f"a fast day with the slug {slug!r} already exists")
        aid_groups = _create_groups(rng, groups)
        day = _create_day(rng, slug, aid_groups, gifts)
        day_id, version = day.id, day.split_version
        group_ids = [group.id for group in aid_groups]
        db.session.commit()
        # Touching the committed objects again would open a session transaction, and on
        # SQLite hold the write lock the load's own connection needs.
        db.session.remove()
        end = utcnow().replace(tzinfo=None)  # naive UTC, as the columns store it
        backs = _gift_times(rng, gifts)
        donors = _Donors(rng)
        ledger_rows = refunds = 0
        with _bulk_connection() as conn:
            stamp = _stamp_for(conn)
            for start, count in _chunks(gifts):
                with conn.begin():
                    rows, refunded = _gift_chunk(
                        conn,
                        rng,
                        day_id,
                        version,
                        group_ids,
                        donors,
                        backs[start : start + count],
                        end,
                        stamp,
                    )
                ledger_rows += rows
                refunds += refunded
                step(count)
            for start, count in _chunks(subscribers):
                with conn.begin():
                    _subscriber_chunk(conn, rng, slug, start, count, end, stamp)
                step(count)
        # The bulk inserts went around the ORM's flush hook: sum the day's running totals once.
        ledger_totals.rebuild([day_id])
        db.session.commit()
    return BenchReport(
        slug=slug,
        fast_day_id=day_id,
        groups=groups,
        gifts=gifts,
        ledger_rows=ledger_rows,
        refunds=refunds,
        subscribers=subscribers,
    )
