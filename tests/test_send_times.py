"""S4 and every send-time kind: each subscriber's copy is queued once, at its own right moment.

The scheduler's pass (``campaigns.enqueue_due(now)``) is driven with explicit instants, never
the wall clock, across the whole ~50 hours in which some time zone is on the fast day.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from astral import LocationInfo
from astral import sun as astral_sun
from sqlalchemy import func, select

from fundraiser import campaigns
from fundraiser.extensions import db
from fundraiser.models import (
    Audience,
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    FastDayStatus,
    OutboxMessage,
    OutboxState,
    SendKind,
    Subscriber,
    SubscriberStatus,
    SunEvent,
)
from tests.factories import make_fast_day

ZONES = [
    "Pacific/Kiritimati",  # UTC+14: the first place on Earth to reach 07:00
    "Pacific/Pago_Pago",  # UTC-11: among the last
    "Asia/Kathmandu",  # UTC+5:45
    "Australia/Lord_Howe",  # half-hour daylight saving
    "America/New_York",
    "Europe/London",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 07:00 local on each fast day, in UTC, worked out by hand from each zone's offset that day.
SEVEN_LOCAL = {
    # New York springs forward at 02:00 on 8 March: 07:00 is EDT (UTC-4), the day before EST.
    date(2026, 3, 7): {
        "Pacific/Kiritimati": utc(2026, 3, 6, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 3, 7, 18, 0),
        "Asia/Kathmandu": utc(2026, 3, 7, 1, 15),
        "Australia/Lord_Howe": utc(2026, 3, 6, 20, 0),  # +11 in (southern) summer
        "America/New_York": utc(2026, 3, 7, 12, 0),
        "Europe/London": utc(2026, 3, 7, 7, 0),
    },
    date(2026, 3, 8): {
        "Pacific/Kiritimati": utc(2026, 3, 7, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 3, 8, 18, 0),
        "Asia/Kathmandu": utc(2026, 3, 8, 1, 15),
        "Australia/Lord_Howe": utc(2026, 3, 7, 20, 0),
        "America/New_York": utc(2026, 3, 8, 11, 0),
        "Europe/London": utc(2026, 3, 8, 7, 0),
    },
    # London goes to BST (UTC+1) at 01:00 UTC on 29 March.
    date(2026, 3, 29): {
        "Pacific/Kiritimati": utc(2026, 3, 28, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 3, 29, 18, 0),
        "Asia/Kathmandu": utc(2026, 3, 29, 1, 15),
        "Australia/Lord_Howe": utc(2026, 3, 28, 20, 0),
        "America/New_York": utc(2026, 3, 29, 11, 0),
        "Europe/London": utc(2026, 3, 29, 6, 0),
    },
    # Lord Howe steps back half an hour (+11 -> +10:30) at 02:00 local on 5 April.
    date(2026, 4, 5): {
        "Pacific/Kiritimati": utc(2026, 4, 4, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 4, 5, 18, 0),
        "Asia/Kathmandu": utc(2026, 4, 5, 1, 15),
        "Australia/Lord_Howe": utc(2026, 4, 4, 20, 30),
        "America/New_York": utc(2026, 4, 5, 11, 0),
        "Europe/London": utc(2026, 4, 5, 6, 0),
    },
    # Lord Howe steps forward half an hour (+10:30 -> +11) at 02:00 local on 4 October.
    date(2026, 10, 4): {
        "Pacific/Kiritimati": utc(2026, 10, 3, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 10, 4, 18, 0),
        "Asia/Kathmandu": utc(2026, 10, 4, 1, 15),
        "Australia/Lord_Howe": utc(2026, 10, 3, 20, 0),
        "America/New_York": utc(2026, 10, 4, 11, 0),
        "Europe/London": utc(2026, 10, 4, 6, 0),
    },
    # London back to GMT at 01:00 UTC on 25 October.
    date(2026, 10, 25): {
        "Pacific/Kiritimati": utc(2026, 10, 24, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 10, 25, 18, 0),
        "Asia/Kathmandu": utc(2026, 10, 25, 1, 15),
        "Australia/Lord_Howe": utc(2026, 10, 24, 20, 0),
        "America/New_York": utc(2026, 10, 25, 11, 0),
        "Europe/London": utc(2026, 10, 25, 7, 0),
    },
    # New York falls back to EST (UTC-5) at 02:00 local on 1 November.
    date(2026, 11, 1): {
        "Pacific/Kiritimati": utc(2026, 10, 31, 17, 0),
        "Pacific/Pago_Pago": utc(2026, 11, 1, 18, 0),
        "Asia/Kathmandu": utc(2026, 11, 1, 1, 15),
        "Australia/Lord_Howe": utc(2026, 10, 31, 20, 0),
        "America/New_York": utc(2026, 11, 1, 12, 0),
        "Europe/London": utc(2026, 11, 1, 7, 0),
    },
}


def add_subscriber(
    email: str,
    zone: str = "UTC",
    *,
    locale: str = "en",
    status: SubscriberStatus = SubscriberStatus.CONFIRMED,
    wants_day_messages: bool = True,
    city: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
) -> Subscriber:
    subscriber = Subscriber(
        email=email,
        locale=locale,
        timezone=zone,
        status=status,
        wants_day_messages=wants_day_messages,
        city=city,
        latitude=latitude,
        longitude=longitude,
    )
    db.session.add(subscriber)
    db.session.flush()
    return subscriber


def add_message(
    day,
    *,
    kind: SendKind = SendKind.LOCAL_TIME,
    local_time: time | None = time(7, 0),
    send_at: datetime | None = None,
    sun_event: SunEvent | None = None,
    offset_minutes: int = 0,
    audience: Audience = Audience.ALL,
    status: CampaignStatus = CampaignStatus.SCHEDULED,
) -> CampaignMessage:
    message = CampaignMessage(
        fast_day=day,
        name="Morning message",
        audience=audience,
        send_kind=kind,
        local_time=local_time,
        send_at=send_at,
        sun_event=sun_event,
        offset_minutes=offset_minutes,
        default_locale="en",
        status=status,
    )
    message.texts.append(
        CampaignText(locale="en", subject="Good morning", body_markdown="The fast begins.")
    )
    db.session.add(message)
    db.session.flush()
    return message


def copies(message_id: int) -> dict[int, list[OutboxMessage]]:
    """Each subscriber's outbox rows for a message."""
    found: dict[int, list[OutboxMessage]] = {}
    for row in db.session.scalars(
        select(OutboxMessage).where(OutboxMessage.campaign_message_id == message_id)
    ):
        found.setdefault(row.subscriber_id, []).append(row)
    return found


def window(local_date: date) -> tuple[datetime, datetime]:
    """From the first zone's midnight to the last zone's end of the fast day (about 50 h)."""
    start = datetime.combine(local_date, time(), UTC) - timedelta(hours=14)
    return start, start + timedelta(hours=50)


@pytest.mark.parametrize("local_date", sorted(SEVEN_LOCAL), ids=str)
def test_seven_local_reaches_each_zone_once_at_its_own_seven(ctx, local_date):
    day = make_fast_day(when=local_date, status=FastDayStatus.SCHEDULED)
    people = {zone: add_subscriber(f"{zone.lower()}@example.org", zone).id for zone in ZONES}
    message_id = add_message(day).id
    db.session.commit()
    expected = SEVEN_LOCAL[local_date]

    # Every half hour over the whole window, and a minute before and at each subscriber's instant.
    start, end = window(local_date)
    checkpoints = {
        start + timedelta(minutes=30 * i)
        for i in range(int((end - start) / timedelta(minutes=30)) + 1)
    }
    for instant in expected.values():
        checkpoints |= {instant - timedelta(minutes=1), instant}
    for now in sorted(checkpoints):
        campaigns.enqueue_due(now)
        rows = copies(message_id)
        for zone, subscriber_id in people.items():
            mine = rows.get(subscriber_id, [])
            if now < expected[zone]:
                assert mine == [], f"{zone} queued before its 07:00 (at {now})"
            else:
                assert len(mine) == 1, f"{zone} has {len(mine)} copies at {now}"
                assert mine[0].due_at == expected[zone], zone
                assert mine[0].state == OutboxState.QUEUED
        db.session.rollback()
    assert sorted(copies(message_id)) == sorted(people.values())


def test_minute_by_minute_across_new_yorks_spring_forward(ctx):
    """Every minute of the 50 hours: each copy appears exactly at its minute, never before."""
    local_date = date(2026, 3, 8)
    day = make_fast_day(when=local_date, status=FastDayStatus.SCHEDULED)
    people = {add_subscriber(f"{zone.lower()}@example.org", zone).id: zone for zone in ZONES}
    message_id = add_message(day).id
    db.session.commit()
    expected = SEVEN_LOCAL[local_date]
    first_seen: dict[int, datetime] = {}
    start, end = window(local_date)
    now = start
    while now <= end:
        campaigns.enqueue_due(now)
        for subscriber_id in copies(message_id):
            first_seen.setdefault(subscriber_id, now)
        db.session.rollback()
        now += timedelta(minutes=1)
    assert {people[s]: at for s, at in first_seen.items()} == expected
    counted = db.session.execute(
        select(OutboxMessage.subscriber_id, func.count())
        .where(OutboxMessage.campaign_message_id == message_id)
        .group_by(OutboxMessage.subscriber_id)
    ).all()
    assert sorted(n for _s, n in counted) == [1] * len(ZONES)


def test_a_time_skipped_by_spring_forward_is_sent_just_after_the_gap(ctx):
    # 02:30 does not exist in New York on 8 March 2026: it is sent at 03:30 EDT (07:30 UTC).
    day = make_fast_day(when=date(2026, 3, 8), status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber("ny@example.org", "America/New_York")
    message = add_message(day, local_time=time(2, 30))
    db.session.commit()
    assert campaigns.send_instant(message, subscriber) == utc(2026, 3, 8, 7, 30)


def test_a_time_repeated_by_fall_back_is_sent_the_first_time(ctx):
    # 01:30 happens twice in New York on 1 November 2026: the first (EDT, 05:30 UTC) counts.
    day = make_fast_day(when=date(2026, 11, 1), status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber("ny@example.org", "America/New_York")
    message = add_message(day, local_time=time(1, 30))
    db.session.commit()
    assert campaigns.send_instant(message, subscriber) == utc(2026, 11, 1, 5, 30)
    campaigns.enqueue_due(utc(2026, 11, 1, 6, 30))  # the second 01:30
    assert len(copies(message.id)[subscriber.id]) == 1


def test_rerun_restart_or_second_scheduler_adds_nothing(ctx):
    day = make_fast_day(when=date(2026, 3, 8), status=FastDayStatus.SCHEDULED)
    for zone in ZONES:
        add_subscriber(f"{zone.lower()}@example.org", zone)
    message_id = add_message(day).id
    db.session.commit()
    now = utc(2026, 3, 8, 19, 0)  # every zone's 07:00 has passed (some too long ago)
    campaigns.enqueue_due(now)
    assert sum(len(rows) for rows in copies(message_id).values()) == len(ZONES)
    assert campaigns.enqueue_due(now) == 0
    assert campaigns.enqueue_due(now + timedelta(minutes=1)) == 0
    rows = copies(message_id)
    assert sorted(len(r) for r in rows.values()) == [1] * len(ZONES)


# --- a UTC instant ----------------------------------------------------------------------------


def test_utc_instant_reaches_everyone_at_that_moment_and_not_before(ctx):
    day = make_fast_day(when=date(2026, 5, 1), status=FastDayStatus.LIVE)
    ids = [add_subscriber(f"{z.lower()}@example.org", z).id for z in ZONES]
    at = utc(2026, 5, 1, 12, 0)
    message_id = add_message(day, kind=SendKind.UTC_INSTANT, local_time=None, send_at=at).id
    db.session.commit()
    assert campaigns.enqueue_due(at - timedelta(seconds=1)) == 0
    assert copies(message_id) == {}
    assert campaigns.enqueue_due(at) == len(ids)
    rows = copies(message_id)
    assert sorted(rows) == sorted(ids)
    assert {r[0].due_at for r in rows.values()} == {at}
    assert {r[0].expires_at for r in rows.values()} == {at + timedelta(hours=6)}


# --- sunrise and sunset -----------------------------------------------------------------------


LONDON = LocationInfo("London", "England", "Europe/London", 51.5072, -0.1276)


def test_sunrise_at_a_known_city_minus_thirty_minutes(ctx):
    local_date = date(2026, 6, 21)
    day = make_fast_day(when=local_date, status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber(
        "sam@example.org",
        "Europe/London",
        city="London, England",
        latitude=LONDON.latitude,
        longitude=LONDON.longitude,
    )
    message = add_message(day, kind=SendKind.SUN, sun_event=SunEvent.SUNRISE, offset_minutes=-30)
    db.session.commit()
    sunrise = astral_sun.sun(LONDON.observer, date=local_date, tzinfo=ZoneInfo("Europe/London"))[
        "sunrise"
    ]
    expected = sunrise.astimezone(UTC) - timedelta(minutes=30)
    assert utc(2026, 6, 21, 3, 0) < expected < utc(2026, 6, 21, 3, 30)  # about 04:43 BST - 30
    assert campaigns.enqueue_due(expected - timedelta(seconds=1)) == 0
    assert campaigns.enqueue_due(expected) == 1
    row = copies(message.id)[subscriber.id][0]
    assert abs(row.due_at - expected) < timedelta(seconds=1)


def test_sunset_plus_offset_in_a_southern_city(ctx):
    local_date = date(2026, 6, 21)
    sydney = LocationInfo("Sydney", "Australia", "Australia/Sydney", -33.8688, 151.2093)
    day = make_fast_day(when=local_date, status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber(
        "s@example.org",
        "Australia/Sydney",
        city="Sydney, Australia",
        latitude=sydney.latitude,
        longitude=sydney.longitude,
    )
    message = add_message(day, kind=SendKind.SUN, sun_event=SunEvent.SUNSET, offset_minutes=10)
    db.session.commit()
    sunset = astral_sun.sun(sydney.observer, date=local_date, tzinfo=ZoneInfo("Australia/Sydney"))[
        "sunset"
    ]
    expected = sunset.astimezone(UTC) + timedelta(minutes=10)
    assert abs(campaigns.send_instant(message, subscriber) - expected) < timedelta(seconds=1)
    assert expected.astimezone(ZoneInfo("Australia/Sydney")).date() == local_date


def test_sun_message_without_a_city_falls_back_to_the_local_time(ctx):
    day = make_fast_day(when=date(2026, 6, 21), status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber("nocity@example.org", "Asia/Kathmandu")
    message = add_message(
        day, kind=SendKind.SUN, sun_event=SunEvent.SUNRISE, offset_minutes=-30, local_time=time(7)
    )
    db.session.commit()
    assert campaigns.send_instant(message, subscriber) == utc(2026, 6, 21, 1, 15)


def test_sun_message_where_the_sun_never_rises_falls_back_to_the_local_time(ctx):
    # Longyearbyen, Svalbard, in the polar night of December.
    day = make_fast_day(when=date(2026, 12, 21), status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber(
        "polar@example.org",
        "Arctic/Longyearbyen",
        city="Longyearbyen",
        latitude=78.2232,
        longitude=15.6267,
    )
    message = add_message(day, kind=SendKind.SUN, sun_event=SunEvent.SUNRISE, local_time=time(9))
    db.session.commit()
    assert campaigns.send_instant(message, subscriber) == utc(2026, 12, 21, 8, 0)
    assert campaigns.enqueue_due(utc(2026, 12, 21, 7, 59)) == 0
    assert campaigns.enqueue_due(utc(2026, 12, 21, 8, 0)) == 1


def test_sun_message_finds_a_city_by_name_when_coordinates_are_missing(ctx):
    local_date = date(2026, 6, 21)
    day = make_fast_day(when=local_date, status=FastDayStatus.SCHEDULED)
    subscriber = add_subscriber("p@example.org", "Europe/Paris", city="Paris")
    message = add_message(day, kind=SendKind.SUN, sun_event=SunEvent.SUNSET)
    db.session.commit()
    paris = LocationInfo("Paris", "France", "Europe/Paris", 48.8566, 2.3522)
    sunset = astral_sun.sun(paris.observer, date=local_date, tzinfo=ZoneInfo("Europe/Paris"))[
        "sunset"
    ]
    # astral's own Paris sits a little off these coordinates: within two minutes.
    assert abs(campaigns.send_instant(message, subscriber) - sunset) < timedelta(minutes=2)


def test_subscribers_sharing_a_zone_share_one_computation_per_pass(ctx, monkeypatch):
    # 300 subscribers in two zones: the instant is worked out per zone, not per person.
    day = make_fast_day(when=date(2026, 3, 8), status=FastDayStatus.SCHEDULED)
    for n in range(300):
        add_subscriber(f"p{n}@example.org", "Europe/London" if n % 2 else "Asia/Kathmandu")
    add_message(day)
    db.session.commit()
    calls = []
    real = campaigns.group_instant
    monkeypatch.setattr(
        campaigns, "group_instant", lambda m, key: calls.append(key) or real(m, key)
    )
    assert campaigns.enqueue_due(utc(2026, 3, 8, 7, 0)) == 300
    assert len(calls) == 2


# --- the missed rule --------------------------------------------------------------------------


def test_copy_first_seen_past_its_expiry_is_recorded_missed_with_an_alert(ctx, caplog):
    day = make_fast_day(when=date(2026, 3, 8), status=FastDayStatus.SCHEDULED)
    london = add_subscriber("late@example.org", "Europe/London")
    pago = add_subscriber("ontime@example.org", "Pacific/Pago_Pago")
    message_id = add_message(day).id
    db.session.commit()
    # The scheduler was down from before London's 07:00 until 7 hours after it.
    with caplog.at_level(logging.WARNING, logger="fundraiser.campaigns"):
        queued = campaigns.enqueue_due(utc(2026, 3, 8, 14, 0))
    assert queued == 0  # Pago Pago's 07:00 (18:00 UTC) is still to come
    rows = copies(message_id)
    assert rows[london.id][0].state == OutboxState.MISSED
    assert pago.id not in rows
    alerts = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(alerts) == 1 and "missed" in alerts[0].getMessage()
    assert "1 copy" in alerts[0].getMessage()
    assert "@" not in alerts[0].getMessage()  # counts, never addresses
    assert campaigns.enqueue_due(utc(2026, 3, 8, 18, 0)) == 1
    assert copies(message_id)[pago.id][0].state == OutboxState.QUEUED


def test_copy_late_but_within_its_expiry_is_still_queued(ctx):
    day = make_fast_day(when=date(2026, 3, 8), status=FastDayStatus.SCHEDULED)
    london = add_subscriber("late@example.org", "Europe/London")
    message_id = add_message(day).id
    db.session.commit()
    assert campaigns.enqueue_due(utc(2026, 3, 8, 12, 59)) == 1  # 5 h 59 after 07:00 GMT
    row = copies(message_id)[london.id][0]
    assert row.state == OutboxState.QUEUED
    assert row.expires_at == utc(2026, 3, 8, 13, 0)
