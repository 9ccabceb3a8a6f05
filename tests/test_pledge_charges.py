"""The fast day's charge job: due pledges charged once, authentication, declines, reminders, rate."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from fundraiser import outbox, pledge_charges
from fundraiser.extensions import db
from fundraiser.models import OutboxMessage, Pledge, PledgeStatus
from fundraiser.payments import stripe_gateway as gateway
from tests.flaky_stripe import FlakyStripe
from tests.payments_helpers import CARD_DECLINED_AT_CHARGE, CARD_NEEDS_AUTH
from tests.pledge_helpers import (
    deliver_intent_events,
    intents_for,
    pledge_by_token,
    pledge_for_day,
    scheduled_day,
)
from tests.stripe_events import make_event, post_event
from tests.webhook_helpers import stripe_get


@pytest.fixture
def slug(app) -> str:
    with app.app_context():
        day = scheduled_day()
        db.session.commit()
        return day.slug


def _due(app, token: str) -> tuple:
    with app.app_context():
        pledge = pledge_by_token(token)
        return pledge.charge_due_at, pledge.stripe_customer_id


def _mail_to(mailbox, subject_part: str, count: int = 1):
    mailbox.wait_for(count)
    return [m for m in mailbox.messages if subject_part in m["Subject"]]


def test_nothing_is_charged_before_the_time_and_at_the_time_exactly_once(
    app, client, localstripe, slug, mailbox
):
    pledged = pledge_for_day(client, localstripe, slug)
    due, customer = _due(app, pledged.token)
    with app.app_context():
        early = pledge_charges.charge_due(now=due - timedelta(seconds=1))
        assert early.claimed == 0
        assert intents_for(localstripe, customer) == []

        report = pledge_charges.charge_due(now=due)
        assert (report.claimed, report.charged) == (1, 1)
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.PROCESSING and pledge.charge_attempts == 1
        pledge_id = pledge.id
        # A second pass before Stripe's news arrives finds nothing to charge.
        assert pledge_charges.charge_due(now=due + timedelta(minutes=5)).claimed == 0
    intents = intents_for(localstripe, customer)
    assert len(intents) == 1
    assert intents[0]["metadata"]["pledge_id"] == str(pledge_id)
    assert intents[0]["amount"] == 2500

    # Success arrives by webhook, as for any gift: the ledger, the receipt, the page.
    deliver_intent_events(client, localstripe, customer)
    with app.app_context():
        assert pledge_by_token(pledged.token).status == PledgeStatus.SUCCEEDED
        assert pledge_charges.charge_due(now=due + timedelta(days=1)).claimed == 0
    assert len(intents_for(localstripe, customer)) == 1
    assert _mail_to(mailbox, "Thank you for your gift")
    totals = client.get(f"/api/v1/fast-days/{slug}/totals").get_json()
    assert totals["raised_minor"] == 2500 and totals["pledged"] == []
    assert "Gift received" in client.get(f"/pledge/{pledged.token}").get_data(as_text=True)


def test_charging_due_pledges_exactly_once_with_two_schedulers_running(
    app, client, localstripe, slug
):
    tokens = [
        pledge_for_day(client, localstripe, slug, email=f"d{n}@example.org").token for n in range(8)
    ]
    with app.app_context():
        pledges = [pledge_by_token(t) for t in tokens]
        now = max(p.charge_due_at for p in pledges)
        customers = [p.stripe_customer_id for p in pledges]

    start = threading.Barrier(2)
    reports: list[pledge_charges.ChargeReport] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            with app.app_context():
                start.wait(timeout=10)
                # Small batches, so the two take turns claiming instead of one taking all.
                reports.append(pledge_charges.charge_due(now=now, batch_size=2))
                db.session.remove()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sum(r.claimed for r in reports) == 8
    assert sum(r.charged for r in reports) == 8
    assert [len(intents_for(localstripe, c)) for c in customers] == [1] * 8

    # And a rerun, after the webhooks recorded every success, creates nothing.
    for customer in customers:
        deliver_intent_events(client, localstripe, customer)
    with app.app_context():
        assert pledge_charges.charge_due(now=now + timedelta(hours=12)).claimed == 0
        statuses = set(db.session.scalars(select(Pledge.status)))
        assert statuses == {PledgeStatus.SUCCEEDED}
    assert [len(intents_for(localstripe, c)) for c in customers] == [1] * 8


def test_a_card_that_needs_authentication_gets_an_email_link_and_is_completed_on_the_pledge_page(
    app, client, localstripe, slug, mailbox
):
    pledged = pledge_for_day(client, localstripe, slug, card=CARD_NEEDS_AUTH)
    due, customer = _due(app, pledged.token)
    with app.app_context():
        report = pledge_charges.charge_due(now=due)
        assert report.requires_action == 1
        assert pledge_by_token(pledged.token).status == PledgeStatus.REQUIRES_ACTION
    asked = _mail_to(mailbox, "Please confirm your gift")
    assert len(asked) == 1
    link = f"/pledge/{pledged.token}"
    assert link in asked[0].get_body(("plain",)).get_content()

    page = client.get(link).get_data(as_text=True)
    assert "Confirm payment" in page
    (intent,) = intents_for(localstripe, customer)
    assert f'data-client-secret="{intent["client_secret"]}"' in page
    # What Stripe.js's confirmCardPayment does on that page, then Stripe's webhook.
    localstripe.authenticate(intent["id"], intent["client_secret"])
    deliver_intent_events(client, localstripe, customer)
    with app.app_context():
        assert pledge_by_token(pledged.token).status == PledgeStatus.SUCCEEDED
        assert pledge_charges.charge_due(now=due + timedelta(days=1)).claimed == 0
    assert len(intents_for(localstripe, customer)) == 1
    assert "Gift received" in client.get(link).get_data(as_text=True)


def test_a_declined_charge_is_retried_once_after_the_delay_then_the_donor_is_told(
    app, client, localstripe, slug, mailbox
):
    pledged = pledge_for_day(client, localstripe, slug, card=CARD_DECLINED_AT_CHARGE)
    due, customer = _due(app, pledged.token)
    retry_after = timedelta(hours=app.config["PLEDGE_RETRY_AFTER_HOURS"])
    with app.app_context():
        first = pledge_charges.charge_due(now=due)
        assert first.retry_later == 1
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.FAILED and pledge.charge_attempts == 1
        assert pledge.charge_due_at == due + retry_after
        assert pledge.failure_message
    told_retry = _mail_to(mailbox, "did not go through yet")
    assert len(told_retry) == 1
    assert "We will try once more on" in told_retry[0].get_body(("plain",)).get_content()
    # Stripe's own news of the first decline changes nothing and tells nobody again.
    deliver_intent_events(client, localstripe, customer)
    assert len(intents_for(localstripe, customer)) == 1

    with app.app_context():
        assert pledge_charges.charge_due(now=due + retry_after / 2).claimed == 0
        second = pledge_charges.charge_due(now=due + retry_after)
        assert second.failed == 1
        pledge = pledge_by_token(pledged.token)
        assert pledge.status == PledgeStatus.FAILED and pledge.charge_attempts == 2
        # Never a third attempt.
        assert pledge_charges.charge_due(now=due + 100 * retry_after).claimed == 0
    intents = intents_for(localstripe, customer)
    assert len(intents) == 2 and intents[0]["id"] != intents[1]["id"]
    told_final = _mail_to(mailbox, "could not be charged", count=2)
    assert len(told_final) == 1
    assert "we will not try again" in told_final[0].get_body(("plain",)).get_content()
    page = client.get(f"/pledge/{pledged.token}").get_data(as_text=True)
    assert "Try another card" in page and "try once more" not in page


def test_retry_uses_its_own_idempotency_key(app, client, localstripe, slug):
    pledged = pledge_for_day(client, localstripe, slug)
    with app.app_context():
        pledge = pledge_by_token(pledged.token)
        assert pledge_charges.idempotency_key(pledge) == f"pledge-charge:{pledge.id}"
        pledge.charge_attempts = 1
        assert pledge_charges.idempotency_key(pledge) == f"pledge-charge:{pledge.id}:retry-1"
        db.session.rollback()


def test_the_reminder_goes_once_the_day_before_with_the_cancel_link(
    app, client, localstripe, slug, mailbox
):
    pledged = pledge_for_day(client, localstripe, slug)
    due, _customer = _due(app, pledged.token)
    with app.app_context():
        assert pledge_charges.send_reminders(now=due - timedelta(hours=25)) == 0
        assert pledge_charges.send_reminders(now=due - timedelta(hours=23)) == 1
        assert pledge_charges.send_reminders(now=due - timedelta(hours=22)) == 0
        keys = list(db.session.scalars(select(OutboxMessage.key)))
        assert keys.count(f"pledge-reminder:{pledge_by_token(pledged.token).id}") == 1
        outbox.drain()
    (reminder,) = _mail_to(mailbox, "Tomorrow: your gift")
    text = reminder.get_body(("plain",)).get_content()
    assert "we will charge $25.00" in text
    assert f"/pledge/{pledged.token}" in text


def test_a_cancelled_pledge_gets_no_reminder(app, client, localstripe, slug):
    pledged = pledge_for_day(client, localstripe, slug)
    due, _customer = _due(app, pledged.token)
    with app.app_context():
        assert pledge_charges.cancel(pledge_by_token(pledged.token))
        db.session.commit()
        assert pledge_charges.send_reminders(now=due - timedelta(hours=23)) == 0


# --- staying under Stripe's rate limit ------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_spaces_requests_at_the_rate():
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    bucket = gateway.TokenBucket(5, clock=lambda: clock[0], sleep=sleep)
    for _ in range(15):
        bucket.acquire()
    # Five at once, then ten more at five a second.
    assert clock[0] == pytest.approx(2.0)
    bucket.hold(3.0)
    bucket.acquire()
    assert clock[0] == pytest.approx(5.2)


def test_the_charge_job_asks_stripe_no_faster_than_the_configured_rate(
    app, client, localstripe, slug
):
    tokens = [
        pledge_for_day(client, localstripe, slug, email=f"r{n}@example.org").token for n in range(4)
    ]
    original = app.config["STRIPE_MAX_REQUESTS_PER_SECOND"]
    app.config["STRIPE_MAX_REQUESTS_PER_SECOND"] = 3  # a rate of its own: a fresh bucket
    try:
        with app.app_context():
            now = max(pledge_by_token(t).charge_due_at for t in tokens)
            started = time.monotonic()
            report = pledge_charges.charge_due(now=now)
            elapsed = time.monotonic() - started
    finally:
        app.config["STRIPE_MAX_REQUESTS_PER_SECOND"] = original
    assert report.charged == 4
    # Two requests a pledge (read the saved card, create the PaymentIntent): eight requests,
    # three at once and five more at three a second.
    assert elapsed >= 5 / 3 - 0.1


def test_the_charge_job_backs_off_on_429_and_still_charges_once(app, client, localstripe, slug):
    pledged = pledge_for_day(client, localstripe, slug)
    due, customer = _due(app, pledged.token)
    original = app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"]
    with FlakyStripe(localstripe.url) as proxy:
        app.config["STRIPE_API_BASE"] = proxy.url
        app.config["STRIPE_MAX_RETRIES"] = 3
        proxy.fail_next = 2
        try:
            with app.app_context():
                report = pledge_charges.charge_due(now=due)
        finally:
            app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"] = original
    assert proxy.failures_served == 2
    assert report.charged == 1 and report.errors == 0
    assert len(intents_for(localstripe, customer)) == 1


def test_when_stripe_stays_unreachable_the_pass_stops_and_a_later_one_charges_once(
    app, client, localstripe, slug
):
    pledged = pledge_for_day(client, localstripe, slug)
    due, customer = _due(app, pledged.token)
    original = app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"]
    with FlakyStripe(localstripe.url) as proxy:
        app.config["STRIPE_API_BASE"] = proxy.url
        app.config["STRIPE_MAX_RETRIES"] = 1
        proxy.fail_next = 100
        try:
            with app.app_context():
                report = pledge_charges.charge_due(now=due)
                assert report.errors == 1 and report.charged == 0
                # Its claim holds until it goes stale, then the next pass takes it again.
                assert pledge_charges.charge_due(now=due).claimed == 0
                pledge = pledge_by_token(pledged.token)
                pledge.charge_claimed_at -= pledge_charges.STALE_CLAIM + timedelta(seconds=1)
                db.session.commit()
                proxy.fail_next = 0
                assert pledge_charges.charge_due(now=due).charged == 1
        finally:
            app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"] = original
    assert len(intents_for(localstripe, customer)) == 1


def test_an_event_for_a_pledge_charged_on_the_day_is_applied_like_any_gift(
    app, client, localstripe, slug
):
    pledged = pledge_for_day(client, localstripe, slug)
    due, customer = _due(app, pledged.token)
    with app.app_context():
        pledge_charges.charge_due(now=due)
    (intent,) = intents_for(localstripe, customer)
    event = make_event(
        "payment_intent.succeeded", stripe_get(localstripe, "payment_intents", intent["id"])
    )
    for _ in range(3):
        assert post_event(client, event).status_code == 200
    with app.app_context():
        assert pledge_by_token(pledged.token).status == PledgeStatus.SUCCEEDED


def test_charge_due_command_runs_one_pass_at_a_given_instant(
    app, client, localstripe, slug, runner
):
    pledged = pledge_for_day(client, localstripe, slug)
    due, customer = _due(app, pledged.token)
    early = runner.invoke(args=["pledges", "charge-due", "--now", "2000-01-01T08:00"])
    assert early.exit_code == 0 and "nothing due" in early.output
    result = runner.invoke(
        args=["pledges", "charge-due", "--now", due.strftime("%Y-%m-%dT%H:%M:%S")]
    )
    assert result.exit_code == 0, result.output
    assert "claimed 1, charged 1" in result.output
    assert len(intents_for(localstripe, customer)) == 1
