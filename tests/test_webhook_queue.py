"""Store and acknowledge, then apply: the webhook only stores, the workers apply.

The webhook answers 2xx once the verified event is stored; the scheduler's
apply_webhook_events job (or `flask webhooks apply`) applies it later from Stripe's own state.
These tests hold the queue still between the two steps to look at it: what is stored, that
a duplicate stays one row, that a failing event waits and is finally kept as failed, that a
dead worker's claim lapses, and that workers running at once never apply one event twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fundraiser import outbox, scheduler
from fundraiser.extensions import db
from fundraiser.models import EventOutcome, OutboxMessage, PledgeStatus, StripeEvent, utcnow
from fundraiser.models.stripe_event import EventState
from fundraiser.payments import webhooks
from tests.conftest import free_port
from tests.factories import make_fast_day
from tests.stripe_events import make_event, post_event
from tests.webhook_helpers import (
    apply_with_workers,
    charge_event,
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
    stripe_get,
)


@pytest.fixture
def slug(app) -> str:
    """A fast day open for gifts."""
    with app.app_context():
        slug = make_fast_day().slug
        db.session.commit()
    return slug


@pytest.fixture
def gift(app, client, localstripe, slug):
    """A pledge whose card was charged in localstripe; no webhook has told the app yet."""
    return make_gift(app, client, localstripe, slug, amount="2500")


@pytest.fixture
def event(localstripe, gift):
    """The real payment_intent.succeeded event for the gift."""
    return intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])


@pytest.fixture
def stripe_down(app):
    """Stripe unreachable (nothing listens on the port) until the test puts it back."""
    saved = {k: app.config[k] for k in ("STRIPE_API_BASE", "STRIPE_MAX_RETRIES")}
    app.config.update(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}", STRIPE_MAX_RETRIES=1)
    yield lambda: app.config.update(saved)
    app.config.update(saved)


def _stored(app, event_id: str) -> StripeEvent:
    with app.app_context():
        row = db.session.get(StripeEvent, event_id)
        db.session.expunge(row)
        return row


def _apply(app, **kwargs) -> webhooks.ApplyReport:
    with app.app_context():
        report = webhooks.apply_pending(**kwargs)
        db.session.remove()
    return report


def test_webhook_answers_before_applying_and_the_scheduler_job_applies_it(
    app, client, gift, event, mailbox
):
    response = post_event(client, event, apply=False)

    assert response.status_code == 200
    assert response.get_json() == {"received": True, "duplicate": False}
    # Acknowledged, not applied: the event waits with its payload; nothing else moved.
    stored = _stored(app, event["id"])
    assert (stored.state, stored.outcome, stored.attempts) == (EventState.RECEIVED, None, 0)
    assert stored.payload == event
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.PROCESSING
    assert ledger_rows(app) == []

    outcomes = scheduler.run_once(app, ["apply_webhook_events"])

    assert outcomes["apply_webhook_events"].ok
    assert outcomes["apply_webhook_events"].summary.startswith("1 applied")
    stored = _stored(app, event["id"])
    assert (stored.state, stored.outcome, stored.attempts) == (
        EventState.PROCESSED,
        EventOutcome.APPLIED,
        1,
    )
    assert stored.payload is None and stored.processed_at is not None
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.SUCCEEDED
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]
    # The receipt is queued, not sent by the worker: the outbox's own job sends it.
    assert mailbox.messages == []
    with app.app_context():
        assert db.session.scalar(select(func.count(OutboxMessage.id))) == 1
    scheduler.run_once(app, ["drain_outbox"])
    assert len(mailbox.wait_for(1)) == 1


def test_scheduler_polls_for_webhook_events_at_least_every_second(app):
    trigger = next(
        job.trigger
        for job in scheduler.build_scheduler(app).get_jobs()
        if job.id == "apply_webhook_events"
    )
    assert trigger.interval <= timedelta(seconds=1)


def test_one_event_delivered_three_times_is_one_row_applied_once(app, client, gift, event):
    answers = [post_event(client, event, apply=False) for _ in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.get_json()["duplicate"] for a in answers] == [False, True, True]
    with app.app_context():
        assert db.session.scalar(select(func.count(StripeEvent.id))) == 1

    assert _apply(app).applied == 1
    assert _apply(app).handled == 0
    # A late redelivery of an applied event is a duplicate too, and changes nothing.
    assert post_event(client, event).get_json()["duplicate"] is True
    assert _stored(app, event["id"]).attempts == 1
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]


def test_an_event_that_keeps_failing_is_retried_with_backoff_then_kept_as_failed(
    app, client, runner, gift, event, stripe_down, caplog
):
    caplog.set_level(logging.WARNING, logger="fundraiser.payments.webhooks")
    assert post_event(client, event, apply=False).status_code == 200
    delays = []
    for attempt in range(1, webhooks.MAX_ATTEMPTS + 1):
        due = _stored(app, event["id"]).next_attempt_at
        # Not tried again before its time.
        assert _apply(app, now=due - timedelta(seconds=1)).handled == 0
        before = utcnow()
        report = _apply(app, now=due)
        after = utcnow()
        stored = _stored(app, event["id"])
        assert stored.attempts == attempt
        if attempt < webhooks.MAX_ATTEMPTS:
            assert (report.retrying, stored.state) == (1, EventState.RECEIVED)
            assert before <= stored.next_attempt_at - webhooks._retry_delay(attempt) <= after
            delays.append(webhooks._retry_delay(attempt))
        else:
            assert (report.failed, stored.state) == (1, EventState.FAILED)
    assert delays[:3] == [webhooks.FIRST_RETRY * n for n in (1, 2, 4)]
    assert delays[-1] == webhooks.MAX_RETRY
    # Kept for review: the payload and the kind of error, never its text (it may hold addresses).
    assert stored.payload == event
    assert stored.last_error == "PaymentServiceUnavailable"
    assert "donor@example.org" not in caplog.text
    assert f"stripe event {event['id']}" in caplog.text
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.PROCESSING
    assert ledger_rows(app) == []
    assert _apply(app, now=utcnow() + timedelta(days=30)).handled == 0  # failed is final
    with app.app_context():
        problems = scheduler.health(app).problems
    assert "1 Stripe event(s) failed to apply and wait for review" in problems

    # Once Stripe answers again, an operator puts failed events back and they apply, once.
    stripe_down()
    result = runner.invoke(args=["webhooks", "apply", "--failed"])
    assert result.exit_code == 0, result.output
    assert "1 failed event(s) queued again" in result.output
    assert "1 applied" in result.output
    assert (_stored(app, event["id"]).state, _stored(app, event["id"]).outcome) == (
        EventState.PROCESSED,
        EventOutcome.APPLIED,
    )
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]


def test_one_failing_event_does_not_undo_the_others_in_its_batch(
    app, client, localstripe, slug, gift, event
):
    other = make_gift(app, client, localstripe, slug, amount="1000", email="other@example.org")
    intent = stripe_get(localstripe, "payment_intents", other.intent_ids[-1])
    # Our pledge and its customer, but a PaymentIntent Stripe does not have: applying raises.
    broken = make_event("payment_intent.succeeded", intent | {"id": "pi_stripe_has_no_such"})
    for delivered in (event, broken):
        assert post_event(client, delivered, apply=False).status_code == 200

    report = _apply(app)

    assert (report.applied, report.retrying) == (1, 1)
    assert _stored(app, event["id"]).outcome == EventOutcome.APPLIED
    assert _stored(app, broken["id"]).state == EventState.RECEIVED
    pledges = pledge_rows(app)
    assert pledges[gift.pledge_id][0] == PledgeStatus.SUCCEEDED
    assert pledges[other.pledge_id][0] == PledgeStatus.PROCESSING
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]
    # The batch was first tried whole and rolled back: what it queued then is gone with it.
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


@pytest.mark.parametrize("failing_first", [True, False])
def test_a_batch_with_a_failing_event_applies_each_other_event_once(
    app, client, localstripe, slug, failing_first
):
    gifts = [
        make_gift(app, client, localstripe, slug, amount="1000", email=f"b{n}@example.org")
        for n in range(3)
    ]
    # The failing event is for the first or the last pledge, so the whole-batch attempt
    # fails before or after applying the others.
    broken_gift = gifts[0] if failing_first else gifts[-1]
    intent = stripe_get(localstripe, "payment_intents", broken_gift.intent_ids[-1])
    broken = make_event("payment_intent.succeeded", intent | {"id": "pi_stripe_has_no_such"})
    good = [g for g in gifts if g is not broken_gift]
    for delivered in [
        broken,
        *(intent_event(localstripe, "payment_intent.succeeded", g.intent_ids[-1]) for g in good),
    ]:
        assert post_event(client, delivered, apply=False).status_code == 200

    report = _apply(app)

    assert (report.applied, report.retrying) == (2, 1)
    assert sorted(ledger_rows(app)) == sorted(
        ("gift", 1000, "USD", g.charge_id, g.pledge_id) for g in good
    )
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 2
        assert {r.attempts for r in db.session.scalars(select(StripeEvent))} == {1}


def test_a_dead_workers_claim_lapses_and_its_late_batch_applies_nothing(app, client, gift, event):
    assert post_event(client, event, apply=False).status_code == 200
    with app.app_context():
        token, ids = webhooks._claim(10, utcnow())  # a worker claims, then dies
        db.session.remove()
    assert ids == [event["id"]]

    assert _apply(app).handled == 0  # claimed: nobody else takes it meanwhile
    later = utcnow() + timedelta(seconds=webhooks.CLAIM_SECONDS + 1)
    assert _apply(app, now=later).applied == 1
    # The first worker wakes up and carries on with its batch: the event is no longer its own.
    with app.app_context():
        late = webhooks._Batch(token, {event["id"]: event}, dict)  # it had read its events
        assert webhooks._apply_claimed(late).handled == 0
        db.session.remove()
    assert _stored(app, event["id"]).attempts == 1
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]


def test_workers_applying_at_once_never_apply_an_event_twice(
    app, client, localstripe, slug, mailbox
):
    """Four workers at once, one event per batch. On PostgreSQL (CI's second pass, or
    DATABASE_URL) they claim with FOR UPDATE SKIP LOCKED; on SQLite they take turns."""
    gifts = [
        make_gift(app, client, localstripe, slug, amount="1000", email=f"d{n}@example.org")
        for n in range(3)
    ]
    customer = stripe_get(localstripe, "customers", gifts[0].customer_id)
    events = [make_event("customer.updated", customer) for _ in range(60)]
    for g in gifts:
        events.append(intent_event(localstripe, "payment_intent.succeeded", g.intent_ids[-1]))
        events.append(charge_event(localstripe, "charge.succeeded", g.charge_id))
    for delivered in events:
        assert post_event(client, delivered, apply=False).status_code == 200

    handled = apply_with_workers(app, workers=4)

    assert handled == len(events)  # an event claimed twice would be counted twice
    with app.app_context():
        rows = list(db.session.scalars(select(StripeEvent)))
        assert {(r.state, r.attempts) for r in rows} == {(EventState.PROCESSED, 1)}
        assert sum(r.outcome == EventOutcome.APPLIED for r in rows) == 2 * len(gifts)
        assert outbox.backlog() == {"sent": len(gifts)}
    assert sorted(ledger_rows(app)) == sorted(
        ("gift", 1000, "USD", g.charge_id, g.pledge_id) for g in gifts
    )
    assert len(mailbox.wait_for(len(gifts))) == len(gifts)


def test_a_batch_that_cannot_be_committed_gives_its_claims_back_at_once(
    app, client, gift, event, monkeypatch
):
    assert post_event(client, event, apply=False).status_code == 200

    def broken(batch):
        raise RuntimeError("the database went away mid-batch")

    monkeypatch.setattr(webhooks, "_apply_claimed", broken)
    with pytest.raises(RuntimeError):
        _apply(app)
    stored = _stored(app, event["id"])
    assert (stored.state, stored.claim_token) == (EventState.RECEIVED, None)

    monkeypatch.undo()
    assert _apply(app).applied == 1  # no lease to wait out
    assert _stored(app, event["id"]).outcome == EventOutcome.APPLIED
