"""Pledges for the fast day made through the app's own routes, and what localstripe holds for them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from fundraiser.extensions import db
from fundraiser.models import FastDay, FastDayStatus, Pledge
from tests.factories import csrf_from, make_fast_day
from tests.payments_helpers import CARD_OK, SECRET_RE, csrf_from_pay
from tests.stripe_events import make_event, post_event
from tests.webhook_helpers import stripe_get


def scheduled_day(
    *, days_ahead: int = 10, timezone: str = "UTC", series: str | None = None, **kwargs
) -> FastDay:
    """A scheduled fast day ``days_ahead`` days from now in ``timezone`` (not committed)."""
    day = make_fast_day(
        status=FastDayStatus.SCHEDULED, when=date.today() + timedelta(days=days_ahead), **kwargs
    )
    day.timezone = timezone
    day.series = series
    db.session.flush()
    return day


@dataclass
class Pledged:
    """A pledge for the fast day: its token and what the server said when the card was saved."""

    token: str
    schedule: dict[str, Any]


def start_pledge(
    client,
    slug: str,
    *,
    when: str = "day",
    timezone: str = "Europe/London",
    email: str = "donor@example.org",
    amount: str = "2500",
) -> str:
    """Fill in the give form choosing when to be charged; return the new pledge's token."""
    page = client.get(f"/fast/{slug}/give")
    assert page.status_code == 200
    form = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "amount": amount,
        "other_amount": "",
        "currency": "USD",
        "allocation": "all",
        "donor_name": "Huda",
        "email": email,
        "dedication": "",
        "when": when,
        "timezone": timezone,
    }
    response = client.post(f"/fast/{slug}/give", data=form)
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    return response.headers["Location"].split("/pledge/")[1].split("/")[0]


def save_card(client, localstripe, token: str, card: str = CARD_OK) -> dict[str, Any]:
    """The pay page's part: confirm the SetupIntent as Stripe.js would, then tell the server."""
    page = client.get(f"/pledge/{token}/pay")
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    assert "data-schedule-url" in html and "data-charge-url" not in html
    setup = localstripe.confirm_card_setup(SECRET_RE.search(html).group(1), card)
    assert setup.status_code == 200, setup.text
    answer = client.post(f"/pledge/{token}/schedule", headers={"X-CSRFToken": csrf_from_pay(html)})
    return answer.get_json() | {"http": answer.status_code}


def pledge_for_day(client, localstripe, slug: str, *, card: str = CARD_OK, **kwargs) -> Pledged:
    """Give form, card saved, pledge scheduled: the whole donor's side of "charge me on the day"."""
    token = start_pledge(client, slug, **kwargs)
    return Pledged(token=token, schedule=save_card(client, localstripe, token, card))


def pledge_by_token(token: str) -> Pledge:
    """The pledge as the database holds it now (inside an app context)."""
    db.session.expire_all()
    return db.session.scalar(select(Pledge).where(Pledge.token == token))


def intents_for(localstripe, customer_id: str) -> list[dict[str, Any]]:
    """Every PaymentIntent localstripe holds for one Customer."""
    response = localstripe.http.get(
        f"{localstripe.url}/v1/payment_intents", params={"limit": 1000}, timeout=10
    )
    response.raise_for_status()
    return [pi for pi in response.json()["data"] if pi.get("customer") == customer_id]


def deliver_intent_events(client, localstripe, customer_id: str) -> None:
    """Post each of the Customer's PaymentIntents to the webhook as Stripe would report it."""
    for intent in intents_for(localstripe, customer_id):
        current = stripe_get(localstripe, "payment_intents", intent["id"])
        kind = {
            "succeeded": "payment_intent.succeeded",
            "requires_action": "payment_intent.requires_action",
        }.get(current["status"], "payment_intent.payment_failed")
        assert post_event(client, make_event(kind, current)).status_code == 200


TOKEN_RE = re.compile(r"/pledge/([\w-]+)")
