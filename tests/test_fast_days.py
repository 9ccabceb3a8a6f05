"""Which fast day the home page features, and its countdown in the day's own time zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from fundraiser import fast_days
from fundraiser.extensions import db
from fundraiser.models import FastDayStatus
from tests.factories import make_fast_day


def test_live_day_is_featured_before_scheduled_ones_and_drafts_never(app, ctx):
    make_fast_day(slug="draft", status=FastDayStatus.DRAFT, when=date.today())
    make_fast_day(
        slug="next", status=FastDayStatus.SCHEDULED, when=date.today() + timedelta(days=9)
    )
    make_fast_day(
        slug="later", status=FastDayStatus.SCHEDULED, when=date.today() + timedelta(days=30)
    )
    assert fast_days.featured().slug == "next"
    assert [d.slug for d in fast_days.upcoming(exclude=fast_days.featured())] == ["later"]
    make_fast_day(slug="live", status=FastDayStatus.LIVE)
    db.session.flush()
    assert fast_days.featured().slug == "live"
    assert fast_days.get_public("draft") is None


def test_countdown_uses_the_days_time_zone(app, ctx):
    day = make_fast_day(status=FastDayStatus.SCHEDULED, when=date(2027, 3, 6))
    day.timezone = "Asia/Kathmandu"  # UTC+05:45: the day starts at 18:15 UTC the day before
    now = datetime(2027, 3, 5, 18, 0, tzinfo=UTC)
    assert fast_days.time_until_start(day, now) == timedelta(minutes=15)
    assert fast_days.time_until_end(day, now) is None  # only a live day counts down to its end
    day.status = FastDayStatus.LIVE
    assert fast_days.time_until_end(day, now) == timedelta(hours=24, minutes=15)
    assert fast_days.time_until_start(day, now + timedelta(hours=1)) is None
