"""`make run`'s stand-in for the charge.refunded webhooks localstripe never sends."""

from __future__ import annotations

from sqlalchemy import select

from fundraiser.dev.refund_relay import relay_once
from fundraiser.extensions import db
from fundraiser.models import EntryKind, LedgerEntry
from fundraiser.payments import webhooks
from tests.conftest import WEBHOOK_SECRET, wait_until
from tests.factories import make_fast_day
from tests.stripe_events import post_event
from tests.webhook_helpers import intent_event, make_gift, refund


def test_relay_delivers_each_refund_once_and_the_ledger_follows(
    app, client, localstripe, live_server, webhook_worker
):
    with app.app_context():
        slug = make_fast_day().slug
        db.session.commit()
    gift = make_gift(app, client, localstripe, slug)
    post_event(client, intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[0]))
    refund(app, gift.charge_ids[0], 1000, "relay-test")

    seen: set[str] = set()
    url = f"{live_server.url}/stripe/webhook"
    assert relay_once(localstripe.url, url, WEBHOOK_SECRET, seen) >= 1
    assert relay_once(localstripe.url, url, WEBHOOK_SECRET, seen) == 0
    # A restarted relay (nothing seen) sends again: the app records it once.
    relay_once(localstripe.url, url, WEBHOOK_SECRET, set())
    wait_until(lambda: not _waiting(app))  # the worker applies what the relay delivered
    with app.app_context():
        refunds = db.session.scalars(
            select(LedgerEntry.amount_minor).where(
                LedgerEntry.pledge_id == gift.pledge_id, LedgerEntry.kind == EntryKind.REFUND
            )
        ).all()
        assert refunds == [-1000]


def _waiting(app) -> int:
    with app.app_context():
        return webhooks.backlog().get("received", 0)
