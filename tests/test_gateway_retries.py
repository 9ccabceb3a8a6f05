"""Stripe's rate limits and network errors are retried with backoff, never shown as declines."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from fundraiser.extensions import db
from fundraiser.models import Pledge, PledgeStatus
from tests.factories import make_fast_day
from tests.flaky_stripe import FlakyStripe
from tests.payments_helpers import pay, start_gift


@pytest.fixture
def flaky(app, localstripe):
    """Route the app's Stripe calls through a proxy that fails on command."""
    original = app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"]
    with FlakyStripe(localstripe.url) as proxy:
        app.config["STRIPE_API_BASE"] = proxy.url
        app.config["STRIPE_MAX_RETRIES"] = 3
        yield proxy
    app.config["STRIPE_API_BASE"], app.config["STRIPE_MAX_RETRIES"] = original


@pytest.fixture
def slug(app):
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        return day.slug


@pytest.mark.parametrize("failure", ["429", "drop"])
def test_rate_limits_and_dropped_connections_are_retried_until_the_gift_goes_through(
    app, client, localstripe, flaky, slug, failure
):
    intents_before = localstripe.count("payment_intents")
    token = start_gift(client, slug)
    flaky.failure = failure
    flaky.fail_next = 2  # the pay page's first Stripe calls fail twice, then pass
    page = client.get(f"/pledge/{token}/pay")
    assert page.status_code == 200
    assert flaky.failures_served == 2

    flaky.fail_next = 0
    attempt = pay(client, localstripe, token)
    assert attempt.charge["status"] == "processing"
    assert localstripe.count("payment_intents") == intents_before + 1


def test_charge_retried_after_429_charges_once_and_is_not_a_decline(
    app, client, localstripe, flaky, slug
):
    intents_before = localstripe.count("payment_intents")
    token = start_gift(client, slug)
    client.get(f"/pledge/{token}/pay")
    # The SetupIntent read and the PaymentIntent create both meet 429s first.
    flaky.fail_next = 3
    attempt = pay(client, localstripe, token)
    assert attempt.charge["status"] == "processing"
    assert localstripe.count("payment_intents") == intents_before + 1


def test_stripe_rate_limiting_beyond_retries_says_unavailable_not_declined(
    app, client, localstripe, flaky, slug
):
    token = start_gift(client, slug)
    page = client.get(f"/pledge/{token}/pay")
    assert page.status_code == 200
    flaky.fail_next = 1000
    from tests.payments_helpers import SECRET_RE, csrf_from_pay

    html = page.get_data(as_text=True)
    secret = SECRET_RE.search(html).group(1)
    assert localstripe.confirm_card_setup(secret, "4242424242424242").status_code == 200
    response = client.post(f"/pledge/{token}/charge", headers={"X-CSRFToken": csrf_from_pay(html)})

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unavailable"
    assert "declined" not in body["message"].lower()
    with app.app_context():
        pledge = db.session.scalar(select(Pledge).where(Pledge.token == token))
        assert pledge.status == PledgeStatus.PENDING
        assert pledge.failure_message is None


def test_pay_page_when_stripe_is_unreachable_explains_and_charges_nothing(app, client, flaky, slug):
    token = start_gift(client, slug)
    flaky.fail_next = 1000
    page = client.get(f"/pledge/{token}/pay")
    assert page.status_code == 503
    assert "Nothing has been charged" in page.get_data(as_text=True)
