"""A gift end to end against a real localstripe: the app's routes, Stripe's webhook, the ledger."""

from __future__ import annotations

from sqlalchemy import select

from fundraiser.extensions import db
from fundraiser.models import EntryKind, LedgerEntry, Pledge, PledgeStatus
from tests.conftest import wait_until
from tests.factories import make_fast_day
from tests.payments_helpers import (
    CARD_DECLINED_AT_CHARGE,
    CARD_DECLINED_AT_SETUP,
    CARD_NEEDS_AUTH,
    pay,
    start_gift,
)


def _pledge(app, token: str) -> Pledge:
    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        db.session.expunge_all()
        return pledge


def _status(app, token: str) -> PledgeStatus:
    return PledgeStatus(_pledge(app, token).status)


def test_gift_confirmed_by_localstripes_own_webhook_shows_in_ledger_and_totals(
    app, client, localstripe, stripe_webhooks, mailbox
):
    with app.app_context():
        day = make_fast_day(goal_minor=100_000)
        slug = day.slug
        db.session.commit()

    token = start_gift(client, slug, amount="2500")
    attempt = pay(client, localstripe, token)
    assert attempt.charge["status"] == "processing"
    # Only the webhook may say it succeeded: until then the page says "confirming".
    wait_until(lambda: _status(app, token) == PledgeStatus.SUCCEEDED)

    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        rows = db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.pledge_id == pledge.id)
        ).all()
        gift = [r for r in rows if r.kind == EntryKind.GIFT]
        assert [(r.amount_minor, r.currency, r.stripe_object_id) for r in gift] == [
            (2500, "USD", pledge.stripe_charge_id)
        ]

    totals = client.get(f"/api/v1/fast-days/{slug}/totals").get_json()
    assert totals["raised_minor"] == 2500
    assert totals["donors"] == 1
    assert sum(g["allocated_minor"] for g in totals["groups"]) == 2500  # localstripe takes no fee

    page = client.get(f"/pledge/{token}").get_data(as_text=True)
    assert "Thank you, Amal" in page

    receipt = mailbox.wait_for(1)[0]
    assert receipt["To"] == "donor@example.org"
    assert "$25.00" in receipt.get_body(("plain",)).get_content()


def test_card_declined_at_setup_creates_no_payment_and_can_be_retried(app, client, localstripe):
    with app.app_context():
        day = make_fast_day()
        slug = day.slug
        db.session.commit()
    intents_before = localstripe.count("payment_intents")

    token = start_gift(client, slug)
    declined = pay(client, localstripe, token, card=CARD_DECLINED_AT_SETUP)
    assert declined.setup_error["message"] == "Your card was declined."
    assert localstripe.count("payment_intents") == intents_before

    # The pay page hands out a fresh SetupIntent and the next card goes through.
    retry = pay(client, localstripe, token)
    assert retry.charge["status"] == "processing"


def test_card_declined_at_charge_shows_the_reason_and_a_new_card_succeeds(app, client, localstripe):
    with app.app_context():
        day = make_fast_day()
        slug = day.slug
        db.session.commit()

    token = start_gift(client, slug)
    first = pay(client, localstripe, token, card=CARD_DECLINED_AT_CHARGE)
    assert first.charge["status"] == "failed"
    assert first.charge["message"] == "Your card was declined."
    assert _status(app, token) == PledgeStatus.FAILED

    second = pay(client, localstripe, token)
    assert second.charge["status"] == "processing"


def test_card_needing_authentication_returns_client_secret_for_confirm_card_payment(
    app, client, localstripe, stripe_webhooks
):
    with app.app_context():
        day = make_fast_day()
        slug = day.slug
        db.session.commit()

    token = start_gift(client, slug)
    attempt = pay(client, localstripe, token, card=CARD_NEEDS_AUTH)
    assert attempt.charge["status"] == "requires_action"
    assert _status(app, token) == PledgeStatus.REQUIRES_ACTION
    secret = attempt.charge["client_secret"]
    localstripe.authenticate(secret.split("_secret_")[0], secret)
    wait_until(lambda: _status(app, token) == PledgeStatus.SUCCEEDED)
