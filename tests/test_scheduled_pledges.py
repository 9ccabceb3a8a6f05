"""Pledging now to be charged on the fast day: the choice, the due time, the saved card, stopping it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from fundraiser import fast_days, outbox, pledge_charges, pledges
from fundraiser.extensions import db
from fundraiser.fast_days import FastDayFields
from fundraiser.models import FastDayStatus, PledgeStatus
from tests.factories import csrf_from, make_fast_day, make_group
from tests.payments_helpers import CARD_OK, SECRET_RE, csrf_from_pay
from tests.pledge_helpers import (
    intents_for,
    pledge_by_token,
    pledge_for_day,
    scheduled_day,
    start_pledge,
)
from tests.stripe_events import make_event, post_event
from tests.webhook_helpers import stripe_get


@pytest.fixture
def day(app):
    """A scheduled fast day ten days from now, shown in UTC."""
    with app.app_context():
        day = scheduled_day()
        db.session.commit()
        return {"slug": day.slug, "date": day.local_date, "id": day.id}


def local(on: date, zone: str, at: time = time(8, 0)) -> datetime:
    return datetime.combine(on, at, tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- the choice on the give page ---------------------------------------------------------------


def test_give_page_offers_charge_on_the_day_for_a_scheduled_day_and_only_give_now_for_a_live_one(
    app, client
):
    with app.app_context():
        live = make_fast_day(status=FastDayStatus.LIVE)
        coming = scheduled_day()
        slugs = live.slug, coming.slug
        db.session.commit()
    live_page = client.get(f"/fast/{slugs[0]}/give").get_data(as_text=True)
    assert "Charge me on the fast day" not in live_page
    coming_page = client.get(f"/fast/{slugs[1]}/give").get_data(as_text=True)
    assert "Charge me on the fast day" in coming_page
    assert 'name="timezone"' in coming_page
    assert "every later fast day of the series" not in coming_page  # it belongs to no series

    # A live day refuses a pledge for later even if the choice is posted by hand.
    page = client.get(f"/fast/{slugs[0]}/give")
    response = client.post(
        f"/fast/{slugs[0]}/give",
        data={
            "csrf_token": csrf_from(page.get_data(as_text=True)),
            "amount": "2500",
            "currency": "USD",
            "allocation": "all",
            "email": "late@example.org",
            "when": "day",
        },
    )
    assert response.status_code == 400
    assert "Choose when we should charge your card." in response.get_data(as_text=True)


# --- when it is due -------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["Europe/London", "America/New_York", "Asia/Kathmandu"])
def test_pledge_is_due_at_the_donors_local_morning_on_the_fast_day(app, client, day, zone):
    token = start_pledge(client, day["slug"], timezone=zone)
    with app.app_context():
        pledge = pledge_by_token(token)
        assert pledge.charge_on_day and pledge.timezone == zone
        assert pledge.charge_due_at == local(day["date"], zone)


@pytest.mark.parametrize("zone", ["", "Mars/Olympus_Mons"])
def test_pledge_without_a_known_time_zone_is_due_when_the_day_opens(app, client, day, zone):
    token = start_pledge(client, day["slug"], timezone=zone)
    with app.app_context():
        pledge = pledge_by_token(token)
        assert pledge.timezone is None
        assert pledge.charge_due_at == local(day["date"], "UTC", time(0, 0))


def test_a_local_morning_before_the_day_opens_waits_for_the_opening(app, client):
    # 08:00 in Kiritimati (UTC+14) is the evening before the day begins in Pago Pago (UTC-11).
    with app.app_context():
        far_west = scheduled_day(timezone="Pacific/Pago_Pago")
        slug, on = far_west.slug, far_west.local_date
        db.session.commit()
    token = start_pledge(client, slug, timezone="Pacific/Kiritimati")
    with app.app_context():
        due = pledge_by_token(token).charge_due_at
    assert local(on, "Pacific/Kiritimati") < due == local(on, "Pacific/Pago_Pago", time(0, 0))


# --- saving the card --------------------------------------------------------------------------


def test_saving_the_card_schedules_the_pledge_charges_nothing_and_says_when(
    app, client, localstripe, day
):
    pledged = pledge_for_day(client, localstripe, day["slug"], timezone="Europe/London")
    assert pledged.schedule["status"] == "scheduled", pledged.schedule
    with app.app_context():
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.SCHEDULED
        assert intents_for(localstripe, pledge.stripe_customer_id) == []
    page = client.get(pledged.schedule["next"]).get_data(as_text=True)
    assert "Pledged for the fast day" in page
    when = day["date"].strftime("%A, %B %-d, %Y")
    assert f"We will charge $25.00 on {when} at 8:00" in page
    assert "(Europe/London)" in page
    assert "Cancel this pledge" in page


def test_a_pledge_for_the_day_cannot_be_charged_from_the_browser(app, client, localstripe, day):
    token = start_pledge(client, day["slug"])
    page = client.get(f"/pledge/{token}/pay").get_data(as_text=True)
    localstripe.confirm_card_setup(SECRET_RE.search(page).group(1), CARD_OK)
    answer = client.post(f"/pledge/{token}/charge", headers={"X-CSRFToken": csrf_from_pay(page)})
    assert answer.status_code == 409
    with app.app_context():
        pledge = pledge_by_token(token)
        assert pledge.status == PledgeStatus.PENDING
        assert intents_for(localstripe, pledge.stripe_customer_id) == []


def _setup_event(localstripe, token: str, app) -> dict:
    with app.app_context():
        setup_id = pledge_by_token(token).stripe_setup_intent_id
    return make_event("setup_intent.succeeded", stripe_get(localstripe, "setup_intents", setup_id))


def test_setup_intent_webhook_schedules_the_pledge_as_the_donors_return_would(
    app, client, localstripe, day
):
    # The donor closes the tab after Stripe saved the card: the webhook alone records it.
    token = start_pledge(client, day["slug"])
    page = client.get(f"/pledge/{token}/pay").get_data(as_text=True)
    localstripe.confirm_card_setup(SECRET_RE.search(page).group(1), CARD_OK)
    event = _setup_event(localstripe, token, app)
    assert post_event(client, event).status_code == 200
    with app.app_context():
        first = pledge_by_token(token)
        state = (first.status, first.charge_due_at, first.updated_at)
    assert state[0] == PledgeStatus.SCHEDULED

    # Then the return path (the same function), and the event again: nothing changes.
    again = client.post(f"/pledge/{token}/schedule", headers={"X-CSRFToken": csrf_from_pay(page)})
    assert again.get_json()["status"] == "scheduled"
    assert post_event(client, event).status_code == 200
    assert post_event(client, _setup_event(localstripe, token, app)).status_code == 200
    with app.app_context():
        after = pledge_by_token(token)
        assert (after.status, after.charge_due_at, after.updated_at) == state


def test_the_return_first_and_the_webhook_after_schedule_once(app, client, localstripe, day):
    pledged = pledge_for_day(client, localstripe, day["slug"])
    with app.app_context():
        before = pledge_by_token(pledged.token).updated_at
    assert post_event(client, _setup_event(localstripe, pledged.token, app)).status_code == 200
    with app.app_context():
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.SCHEDULED and pledge.updated_at == before
        # A SetupIntent the donor has not confirmed yet records nothing.
        other = pledges.create_pledge(
            fast_day=pledge.fast_day,
            amount_minor=1000,
            currency="USD",
            aid_group=None,
            donor_name=None,
            email="x@example.org",
            dedication=None,
            wants_messages=False,
            locale="en",
            charge_on_day=True,
        )
        pledges.prepare_card_setup(other)
        assert pledges.record_setup(other, other.stripe_setup_intent_id) is False
        assert other.status == PledgeStatus.PENDING
        db.session.rollback()


# --- cancelling ---------------------------------------------------------------------------------


def test_cancel_before_the_charge_stops_it_and_nothing_is_charged_on_the_day(
    app, client, localstripe, day
):
    pledged = pledge_for_day(client, localstripe, day["slug"])
    page = client.get(f"/pledge/{pledged.token}").get_data(as_text=True)
    response = client.post(f"/pledge/{pledged.token}/cancel", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 303
    page = client.get(f"/pledge/{pledged.token}").get_data(as_text=True)
    assert "This pledge is cancelled" in page
    with app.app_context():
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.CANCELLED and pledge.cancelled_at is not None
        report = pledge_charges.charge_due(now=pledge.charge_due_at + timedelta(hours=1))
        assert report.claimed == 0
        assert intents_for(localstripe, pledge.stripe_customer_id) == []


def test_cancel_without_the_form_token_is_refused(app, client, localstripe, day):
    pledged = pledge_for_day(client, localstripe, day["slug"])
    assert client.post(f"/pledge/{pledged.token}/cancel").status_code == 400
    with app.app_context():
        assert pledge_by_token(pledged.token).status == PledgeStatus.SCHEDULED


def test_a_pledge_cancelled_after_a_scheduler_claimed_it_is_not_charged(
    app, client, localstripe, day
):
    pledged = pledge_for_day(client, localstripe, day["slug"])
    with app.app_context():
        pledge = pledge_by_token(pledged.token)
        now = pledge.charge_due_at + timedelta(minutes=1)
        claimed = pledge_charges.claim(now, 10)
        db.session.commit()
        assert claimed == [pledge.id]
    # The donor cancels while the scheduler holds its claim …
    page = client.get(f"/pledge/{pledged.token}").get_data(as_text=True)
    client.post(f"/pledge/{pledged.token}/cancel", data={"csrf_token": csrf_from(page)})
    with app.app_context():
        # … and the scheduler, re-reading the pledge under its lock, leaves Stripe alone.
        report = pledge_charges.ChargeReport()
        pledge_charges._charge_one(claimed[0], now, report)
        db.session.commit()
        assert report.skipped == 1
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.CANCELLED
        assert intents_for(localstripe, pledge.stripe_customer_id) == []


# --- a series -------------------------------------------------------------------------------------


def _series(app, count: int = 3) -> list[dict]:
    with app.app_context():
        groups = [make_group(), make_group()]
        start = date.today() + timedelta(days=10)
        days = fast_days.create_series(
            FastDayFields(
                title="Monday Fast",
                slug="monday-fast",
                local_date=start,
                timezone="UTC",
                currency="USD",
                suggested_amounts=[1000, 2500],
            ),
            fast_days.series_dates(start, every_weeks=1, weekday=0, count=count),
            split=[(g, 1) for g in groups],
            schedule=True,
        )
        db.session.commit()
        return [{"slug": d.slug, "date": d.local_date, "series": d.series} for d in days]


def test_a_series_created_together_shares_one_name_and_only_its_own(app):
    first = _series(app, 2)
    second = _series(app, 2)
    assert len({d["series"] for d in first}) == 1
    assert len({d["series"] for d in second}) == 1
    assert first[0]["series"] != second[0]["series"]


def test_series_pledge_covers_every_later_day_and_one_button_stops_them_all(
    app, client, localstripe, mailbox
):
    days = _series(app, 3)
    page = client.get(f"/fast/{days[0]['slug']}/give").get_data(as_text=True)
    assert "every later fast day of the series (2 more)" in page

    pledged = pledge_for_day(
        client, localstripe, days[0]["slug"], when="series", timezone="Asia/Gaza"
    )
    assert pledged.schedule["status"] == "scheduled"
    with app.app_context():
        first = pledge_by_token(pledged.token)
        series = pledge_charges.series_pledges(first)
        assert [p.fast_day.local_date for p in series] == [d["date"] for d in days]
        assert {p.series_token for p in series} == {first.series_token}
        assert {(p.stripe_customer_id, p.stripe_setup_intent_id) for p in series} == {
            (first.stripe_customer_id, first.stripe_setup_intent_id)
        }
        assert all(p.status == PledgeStatus.SCHEDULED for p in series)
        assert [p.charge_due_at for p in series] == [local(d["date"], "Asia/Gaza") for d in days]
        customer = first.stripe_customer_id
        last_due = series[-1].charge_due_at

    page = client.get(f"/pledge/{pledged.token}").get_data(as_text=True)
    assert "Your pledges to this series" in page
    response = client.post(
        f"/pledge/{pledged.token}/stop-series", data={"csrf_token": csrf_from(page)}
    )
    assert response.status_code == 303
    with app.app_context():
        statuses = [p.status for p in pledge_charges.series_pledges(pledge_by_token(pledged.token))]
        assert statuses == [PledgeStatus.CANCELLED] * 3
        assert pledge_charges.charge_due(now=last_due + timedelta(days=1)).claimed == 0
        outbox.drain()
    assert intents_for(localstripe, customer) == []
    stopped = [m for m in mailbox.wait_for(1) if "stopped" in m["Subject"]]
    assert len(stopped) == 1 and stopped[0]["To"] == "donor@example.org"
    assert "None of them will be charged" in stopped[0].get_body(("plain",)).get_content()


# --- totals -------------------------------------------------------------------------------------


def test_scheduled_pledges_show_as_pledged_not_raised(app, client, localstripe, day):
    pledge_for_day(client, localstripe, day["slug"], email="one@example.org")
    pledge_for_day(client, localstripe, day["slug"], email="two@example.org", amount="5000")
    totals = client.get(f"/api/v1/fast-days/{day['slug']}/totals").get_json()
    assert totals["raised_minor"] == 0 and totals["donors"] == 0
    assert totals["pledged"] == [{"currency": "USD", "pledges": 2, "amount_minor": 7500}]
    assert totals["by_currency"][0]["pledged_minor"] == 7500
    page = client.get(f"/fast/{day['slug']}").get_data(as_text=True)
    assert "Pledged for the day, not yet charged:" in page
    assert "$75.00</bdi> (2 pledges)" in page
    with app.app_context():
        from fundraiser import ledger
        from fundraiser.models import FastDay

        fast_day = db.session.get(FastDay, day["id"])
        assert ledger.day_totals(fast_day).raised_minor == 0
        assert ledger.pledged_totals(fast_day) == {"USD": (2, 7500)}
