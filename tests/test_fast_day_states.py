"""Organizing fast days without HTTP: the state machine, the scheduler's moves, split versions, series."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from fundraiser import fast_days, ledger
from fundraiser.extensions import db
from fundraiser.fast_days import FastDayError, FastDayFields
from fundraiser.models import (
    AidGroupStatus,
    AuditEntry,
    EntryKind,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    SplitVersion,
)
from tests.factories import make_fast_day, make_group, make_pledge, make_user

DRAFT, SCHEDULED, LIVE, CLOSED = (
    FastDayStatus.DRAFT,
    FastDayStatus.SCHEDULED,
    FastDayStatus.LIVE,
    FastDayStatus.CLOSED,
)
ALLOWED = [(DRAFT, SCHEDULED), (SCHEDULED, DRAFT), (SCHEDULED, LIVE), (LIVE, CLOSED)]
REFUSED = [(a, b) for a in FastDayStatus for b in FastDayStatus if a != b and (a, b) not in ALLOWED]
FUTURE = date.today() + timedelta(days=30)


@pytest.fixture(autouse=True)
def _english(request):
    """Refusals are lazy translations; read them in English outside a request."""
    if "ctx" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("ctx")
    with force_locale("en"):
        yield


def audit_rows(action: str | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(AuditEntry.id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(db.session.scalars(query))


def fields(**overrides) -> FastDayFields:
    values = {
        "title": "Fast for Gaza",
        "slug": "",
        "local_date": date(2027, 1, 9),
        "timezone": "Asia/Gaza",
        "currency": "usd",
        "goal_minor": 5_000_000,
        "suggested_amounts": [5000, 1000, 2500, 1000],
        "description": "  One day.  ",
    }
    values.update(overrides)
    return FastDayFields(**values)


# --- the state machine ---------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), ALLOWED, ids=lambda s: str(s))
def test_allowed_transition_moves_the_day_and_is_audited(app, ctx, before, after):
    organizer = make_user("organizer")
    day = make_fast_day(status=before, when=FUTURE)
    assert fast_days.transition(day, after, actor=organizer) is True
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(FastDay, day.id).status == after
    (entry,) = audit_rows()
    assert entry.action == fast_days.TRANSITION_ACTIONS[(before, after)]
    assert (entry.before, entry.after) == ({"status": before}, {"status": after})
    assert entry.actor_email == organizer.email
    assert entry.target_type == "FastDay" and entry.target_id == str(day.id)


@pytest.mark.parametrize(("before", "after"), REFUSED, ids=lambda s: str(s))
def test_refused_transition_raises_and_changes_nothing(app, ctx, before, after):
    day = make_fast_day(status=before, when=FUTURE)
    with pytest.raises(FastDayError, match="cannot become"):
        fast_days.transition(day, after)
    db.session.expire_all()
    assert day.status == before
    assert audit_rows() == []


@pytest.mark.parametrize("status", list(FastDayStatus))
def test_repeating_the_current_status_is_a_no_op(app, ctx, status):
    day = make_fast_day(status=status, when=FUTURE)
    assert fast_days.transition(day, status) is False
    assert day.status == status
    assert audit_rows() == []


def test_a_day_without_groups_cannot_be_scheduled_or_opened(app, ctx):
    draft = make_fast_day(status=DRAFT, groups=[], when=FUTURE)
    with pytest.raises(FastDayError, match="at least one aid group") as refused:
        fast_days.transition(draft, SCHEDULED)
    assert refused.value.field == "split"
    scheduled = make_fast_day(status=SCHEDULED, groups=[], when=FUTURE)
    with pytest.raises(FastDayError, match="at least one aid group"):
        fast_days.transition(scheduled, LIVE)
    assert (draft.status, scheduled.status) == (DRAFT, SCHEDULED)


def test_a_day_whose_date_has_passed_cannot_be_scheduled(app, ctx):
    day = make_fast_day(status=DRAFT, when=date(2027, 1, 9))
    day.timezone = "America/New_York"  # the day ends at 05:00 UTC on 10 January
    still_on = datetime(2027, 1, 10, 4, 59, tzinfo=UTC)
    over = datetime(2027, 1, 10, 5, 0, tzinfo=UTC)
    with pytest.raises(FastDayError, match="already passed"):
        fast_days.transition(day, SCHEDULED, now=over)
    assert fast_days.transition(day, SCHEDULED, now=still_on) is True


def test_a_scheduled_day_with_pledges_cannot_go_back_to_draft(app, ctx):
    day = make_fast_day(status=SCHEDULED, when=FUTURE)
    make_pledge(day)
    with pytest.raises(FastDayError, match="cannot go back to draft"):
        fast_days.transition(day, DRAFT)
    assert day.status == SCHEDULED


def test_a_move_made_elsewhere_meanwhile_is_not_recorded_twice(app, ctx):
    day = make_fast_day(status=SCHEDULED, when=FUTURE)
    db.session.commit()
    # Another process opened the day after this session read it as scheduled.
    with db.engine.begin() as conn:
        conn.execute(FastDay.__table__.update().values(status="live"))
    set_committed_value(day, "status", SCHEDULED)
    assert fast_days.transition(day, LIVE) is False
    assert day.status == LIVE
    assert audit_rows() == []


# --- the scheduler's moves -----------------------------------------------------------------


def test_advance_follows_each_days_own_time_zone(app, ctx):
    kiritimati = make_fast_day(status=SCHEDULED, when=date(2027, 1, 9), slug="kiritimati")
    kiritimati.timezone = "Pacific/Kiritimati"  # UTC+14: 8 Jan 10:00 UTC to 9 Jan 10:00 UTC
    new_york = make_fast_day(status=SCHEDULED, when=date(2027, 1, 9), slug="new-york")
    new_york.timezone = "America/New_York"  # UTC-5: 9 Jan 05:00 UTC to 10 Jan 05:00 UTC
    db.session.flush()

    assert fast_days.advance_statuses(datetime(2027, 1, 8, 9, 59, tzinfo=UTC)) == []

    moved = fast_days.advance_statuses(datetime(2027, 1, 8, 10, 0, tzinfo=UTC))
    assert [(c.day.slug, c.before, c.after) for c in moved] == [("kiritimati", SCHEDULED, LIVE)]
    assert new_york.status == SCHEDULED

    moved = fast_days.advance_statuses(datetime(2027, 1, 9, 10, 0, tzinfo=UTC))
    assert [(c.day.slug, c.before, c.after) for c in moved] == [
        ("kiritimati", LIVE, CLOSED),
        ("new-york", SCHEDULED, LIVE),
    ]

    assert fast_days.advance_statuses(datetime(2027, 1, 10, 4, 59, tzinfo=UTC)) == []
    moved = fast_days.advance_statuses(datetime(2027, 1, 10, 5, 0, tzinfo=UTC))
    assert [(c.day.slug, c.after) for c in moved] == [("new-york", CLOSED)]
    assert (kiritimati.status, new_york.status) == (CLOSED, CLOSED)


def test_advance_writes_audit_rows_with_no_actor_marked_by_schedule(app, ctx):
    make_fast_day(status=SCHEDULED, when=date(2027, 1, 9))
    fast_days.advance_statuses(datetime(2027, 1, 9, 12, 0, tzinfo=UTC))
    (entry,) = audit_rows()
    assert entry.action == "fast_day.open"
    assert entry.actor_id is None and entry.actor_email is None
    assert entry.before == {"status": "scheduled"}
    assert entry.after == {"status": "live", "by": "schedule"}


def test_advance_opens_and_closes_a_day_it_missed_entirely(app, ctx):
    day = make_fast_day(status=SCHEDULED, when=date(2027, 1, 9))
    moved = fast_days.advance_statuses(datetime(2027, 1, 12, tzinfo=UTC))
    assert [(c.before, c.after) for c in moved] == [(SCHEDULED, LIVE), (LIVE, CLOSED)]
    assert day.status == CLOSED
    assert [e.action for e in audit_rows()] == ["fast_day.open", "fast_day.close"]


def test_advance_leaves_drafts_closed_days_and_early_opened_days_alone(app, ctx):
    draft = make_fast_day(status=DRAFT, when=date(2027, 1, 9))
    closed = make_fast_day(status=CLOSED, when=date(2027, 1, 9))
    opened_early = make_fast_day(status=LIVE, when=date(2027, 1, 20))
    now = datetime(2027, 1, 12, tzinfo=UTC)
    assert fast_days.advance_statuses(now) == []
    assert fast_days.advance_statuses(now) == []  # and a second run finds nothing either
    assert (draft.status, closed.status, opened_early.status) == (DRAFT, CLOSED, LIVE)


def test_advance_skips_a_day_it_cannot_open_and_moves_the_others(app, ctx):
    broken = make_fast_day(status=SCHEDULED, groups=[], when=date(2027, 1, 9), slug="no-groups")
    fine = make_fast_day(status=SCHEDULED, when=date(2027, 1, 9), slug="fine")
    moved = fast_days.advance_statuses(datetime(2027, 1, 9, 12, tzinfo=UTC))
    assert [c.day.slug for c in moved] == ["fine"]
    assert (broken.status, fine.status) == (SCHEDULED, LIVE)


# --- creating, editing and deleting ------------------------------------------------------


def test_create_tidies_the_facts_makes_a_dated_slug_and_audits(app, ctx):
    organizer = make_user("organizer")
    day = fast_days.create_fast_day(fields(), actor=organizer)
    assert day.status == DRAFT and day.split_version == 1
    assert day.slug == "fast-for-gaza-2027-01-09"
    assert day.currency == "USD"
    assert day.suggested_amounts == [1000, 2500, 5000]
    assert day.description == "One day."
    (entry,) = audit_rows()
    assert entry.action == "fast_day.create" and entry.actor_email == organizer.email
    assert entry.after["slug"] == day.slug and entry.after["local_date"] == "2027-01-09"
    assert entry.after["goal_minor"] == 5_000_000 and entry.after["status"] == "draft"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"title": "  "}, "title"),
        ({"slug": "Not A Slug"}, "slug"),
        ({"slug": "a--b"}, "slug"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"timezone": "../etc/passwd"}, "timezone"),
        ({"currency": "XXX"}, "currency"),
        ({"goal_minor": -1}, "goal"),
        ({"suggested_amounts": [100, 0]}, "suggested_amounts"),
        ({"suggested_amounts": list(range(1, 10))}, "suggested_amounts"),
    ],
)
def test_create_refuses_bad_facts_naming_the_field(app, ctx, override, field):
    with pytest.raises(FastDayError) as refused:
        fast_days.create_fast_day(fields(**override))
    assert refused.value.field == field
    assert db.session.scalar(select(func.count(FastDay.id))) == 0
    assert audit_rows() == []


def test_a_slug_in_use_is_refused(app, ctx):
    make_fast_day(slug="taken")
    with pytest.raises(FastDayError, match="already uses") as refused:
        fast_days.create_fast_day(fields(slug="taken"))
    assert refused.value.field == "slug"


def test_update_records_only_what_changed(app, ctx):
    day = fast_days.create_fast_day(fields())
    changed = fast_days.update_fast_day(day, fields(title="Fast and give", slug=day.slug))
    assert changed == ["title"]
    entry = audit_rows("fast_day.update")[0]
    assert (entry.before, entry.after) == ({"title": "Fast for Gaza"}, {"title": "Fast and give"})
    assert fast_days.update_fast_day(day, fields(title="Fast and give", slug=day.slug)) == []
    assert len(audit_rows("fast_day.update")) == 1


def test_an_empty_slug_on_edit_keeps_the_address(app, ctx):
    day = fast_days.create_fast_day(fields(slug="kept"))
    fast_days.update_fast_day(day, fields(slug="", title="New title"))
    assert day.slug == "kept"


def test_currency_cannot_change_once_the_ledger_has_rows(app, ctx):
    day = make_fast_day(status=SCHEDULED, when=FUTURE)
    same = fields(slug=day.slug, local_date=day.local_date, timezone="UTC")
    assert "currency" in fast_days.update_fast_day(day, replace(same, currency="EUR"))
    db.session.add(
        LedgerEntry(fast_day_id=day.id, kind=EntryKind.GIFT, amount_minor=500, currency="EUR")
    )
    db.session.flush()
    with pytest.raises(FastDayError, match="cannot change") as refused:
        fast_days.update_fast_day(day, replace(same, currency="GBP"))
    assert refused.value.field == "currency"
    assert day.currency == "EUR"


def test_an_opened_days_date_and_time_zone_stay_put(app, ctx):
    day = make_fast_day(status=LIVE, when=date(2027, 1, 9))
    base = fields(slug=day.slug, local_date=day.local_date, timezone="UTC")
    with pytest.raises(FastDayError, match="cannot change") as refused:
        fast_days.update_fast_day(day, replace(base, local_date=date(2027, 1, 10)))
    assert refused.value.field == "local_date"
    with pytest.raises(FastDayError, match="cannot change") as refused:
        fast_days.update_fast_day(day, replace(base, timezone="Asia/Tokyo"))
    assert refused.value.field == "timezone"
    assert fast_days.update_fast_day(day, base) != []  # the title and the rest may change


def test_only_a_draft_nobody_gave_to_can_be_deleted(app, ctx):
    scheduled = make_fast_day(status=SCHEDULED, when=FUTURE)
    with pytest.raises(FastDayError, match="Only a draft"):
        fast_days.delete_draft(scheduled)
    pledged = make_fast_day(status=DRAFT, when=FUTURE)
    make_pledge(pledged)
    with pytest.raises(FastDayError, match="pledged"):
        fast_days.delete_draft(pledged)

    draft = make_fast_day(status=DRAFT, when=FUTURE, slug="gone")
    draft_id = draft.id
    fast_days.delete_draft(draft)
    assert db.session.get(FastDay, draft_id) is None
    assert (
        db.session.scalar(
            select(func.count(FastDayGroup.id)).where(FastDayGroup.fast_day_id == draft_id)
        )
        == 0
    )
    (entry,) = audit_rows("fast_day.delete")
    assert entry.target_id == str(draft_id) and entry.before["slug"] == "gone"
    assert len(entry.before["split"]) == 3


# --- the split and its versions ----------------------------------------------------------


def test_split_needs_approved_groups_positive_weights_and_no_duplicates(app, ctx):
    day = make_fast_day(status=DRAFT, groups=[], when=FUTURE)
    good, applied = make_group(), make_group()
    applied.status = AidGroupStatus.APPLIED
    for split, message in [
        ([], "at least one"),
        ([(applied, 1)], "not an approved"),
        ([(good, 0)], "above zero"),
        ([(good, -2)], "above zero"),
        ([(good, 1.5)], "whole numbers"),
        ([(good, 1), (good, 2)], "twice"),
    ]:
        with pytest.raises(FastDayError, match=message):
            fast_days.set_split(day, split, None)
    assert day.split_rows == []
    assert audit_rows() == []


def test_before_opening_the_split_is_edited_in_place(app, ctx):
    a, b, c = make_group("A"), make_group("B"), make_group("C")
    day = make_fast_day(status=SCHEDULED, groups=[a, b], weights=[1, 1], when=FUTURE)
    assert fast_days.set_split(day, [(b, 3), (c, 1)], None) is True
    db.session.expire_all()
    assert day.split_version == 1
    assert [(r.aid_group.name, r.weight, r.position) for r in day.split_rows] == [
        ("B", 3, 0),
        ("C", 1, 1),
    ]
    assert db.session.scalar(select(func.count(SplitVersion.id))) == 0
    (entry,) = audit_rows("fast_day.split")
    assert entry.before["version"] == entry.after["version"] == 1
    assert [g["weight"] for g in entry.after["split"]] == [3, 1]
    assert fast_days.set_split(day, [(b, 3), (c, 1)], None) is False  # same again: no-op


def test_after_opening_a_change_makes_version_two_and_keeps_version_one(app, ctx):
    organizer = make_user("organizer")
    a, b = make_group("A"), make_group("B")
    day = make_fast_day(status=LIVE, groups=[a, b], weights=[1, 1])
    with pytest.raises(FastDayError, match="say why") as refused:
        fast_days.set_split(day, [(a, 1), (b, 3)], organizer)
    assert refused.value.field == "reason"

    assert fast_days.set_split(day, [(a, 1), (b, 3)], organizer, "B opened a new kitchen")
    db.session.commit()
    db.session.expire_all()
    assert day.split_version == 2
    assert [(r.aid_group.name, r.weight) for r in day.split_of(1)] == [("A", 1), ("B", 1)]
    assert [(r.aid_group.name, r.weight) for r in day.allocations] == [("A", 1), ("B", 3)]
    (version,) = day.split_versions
    assert (version.number, version.reason, version.created_by_id) == (
        2,
        "B opened a new kitchen",
        organizer.id,
    )
    entry = audit_rows("fast_day.split")[-1]
    assert entry.before["version"] == 1 and entry.after["version"] == 2
    assert entry.after["reason"] == "B opened a new kitchen"

    history = fast_days.split_history(day)
    assert [(h.number, h.is_current) for h in history] == [(2, True), (1, False)]
    assert history[0].changed_by == organizer.email
    assert [r.weight for r in history[1].rows] == [1, 1]


def test_pooled_gifts_stay_split_by_the_version_they_came_in_under(app, ctx):
    a, b = make_group("A"), make_group("B")
    day = make_fast_day(status=LIVE, groups=[a, b], weights=[1, 1])
    first = make_pledge(day, amount_minor=1000)
    ledger.record_charge(first, {"id": "ch_first", "amount": 1000, "currency": "usd"})
    before = {g.name: g.allocated_minor for g in ledger.allocations(day)}
    assert before == {"A": 500, "B": 500}

    fast_days.set_split(day, [(a, 1), (b, 3)], None, "more for B")
    second = make_pledge(day, amount_minor=400)
    ledger.record_charge(second, {"id": "ch_second", "amount": 400, "currency": "usd"})

    rows = db.session.execute(select(LedgerEntry.stripe_object_id, LedgerEntry.split_version))
    versions = {object_id: version for object_id, version in rows}
    assert versions == {"ch_first": 1, "ch_second": 2}
    after = {g.name: g.allocated_minor for g in ledger.allocations(day)}
    assert after == {"A": 500 + 100, "B": 500 + 300}


# --- series ------------------------------------------------------------------------------


def test_every_second_saturday_from_a_friday():
    dates = fast_days.series_dates(date(2027, 1, 1), every_weeks=2, weekday=5, count=4)
    assert dates == [date(2027, 1, 2), date(2027, 1, 16), date(2027, 1, 30), date(2027, 2, 13)]
    assert all(d.weekday() == 5 for d in dates)


def test_a_series_starting_on_its_weekday_includes_the_start():
    assert fast_days.series_dates(date(2027, 1, 2), every_weeks=1, weekday=5, count=2) == [
        date(2027, 1, 2),
        date(2027, 1, 9),
    ]


def test_series_from_a_list_of_dates_gets_unique_dated_slugs(app, ctx):
    make_fast_day(slug="saturday-2027-01-09")  # already taken by an older day
    days = fast_days.create_series(fields(slug="saturday"), [date(2027, 1, 23), date(2027, 1, 9)])
    assert [(d.local_date, d.slug) for d in days] == [
        (date(2027, 1, 9), "saturday-2027-01-09-2"),
        (date(2027, 1, 23), "saturday-2027-01-23"),
    ]
    assert all(d.status == DRAFT and d.title == "Fast for Gaza" for d in days)
    assert len(audit_rows("fast_day.create")) == 2


def test_series_can_copy_a_split_and_schedule_every_day(app, ctx):
    a, b = make_group("A"), make_group("B")
    dates = fast_days.series_dates(date(2027, 1, 1), every_weeks=2, weekday=5, count=3)
    days = fast_days.create_series(
        fields(),
        dates,
        split=[(a, 2), (b, 1)],
        schedule=True,
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert [d.slug for d in days] == [f"fast-for-gaza-{d.isoformat()}" for d in dates]
    assert all(d.status == SCHEDULED for d in days)
    assert all(
        [(r.aid_group.name, r.weight) for r in d.allocations] == [("A", 2), ("B", 1)] for d in days
    )
    # Each day has rows of its own, so changing one day's split leaves the others alone.
    assert len({r.id for d in days for r in d.split_rows}) == 6


def test_series_refuses_duplicate_dates_and_too_many(app, ctx):
    with pytest.raises(FastDayError, match="twice"):
        fast_days.create_series(fields(), [date(2027, 1, 9), date(2027, 1, 9)])
    with pytest.raises(FastDayError, match="At most"):
        fast_days.create_series(fields(), [date(2027, 1, 1) + timedelta(days=i) for i in range(53)])
    assert db.session.scalar(select(func.count(FastDay.id))) == 0
