"""Refunds from a gift's page, end to end against localstripe and Stripe's webhook.

localstripe refunds at once but sends no ``charge.refunded`` webhook, so after asking for a
refund the tests deliver that event themselves: signed, around the charge exactly as
localstripe holds it, the way Stripe would. It also ignores idempotency keys, so a double
submit that reached it would really refund twice: the app's own guard is what is tested.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from sqlalchemy import select

from fundraiser import refunds
from fundraiser.extensions import db
from fundraiser.models import AuditEntry, EntryKind, LedgerEntry, Pledge, PledgeStatus
from tests.conftest import WEBHOOK_SECRET, wait_until
from tests.factories import csrf_from, login, make_fast_day, make_pledge, make_user
from tests.stripe_events import post_event
from tests.webhook_helpers import charge_event, intent_event, make_gift, stripe_list

ORGANIZER = "organizer@example.org"


@pytest.fixture
def organizer(app):
    """A signed-in organizer's browser."""
    with app.app_context():
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
    browser = app.test_client()
    login(browser, ORGANIZER)
    return browser


def _paid_gift(app, localstripe, *, amount: str = "2500", currency: str = "USD"):
    """A real gift paid in localstripe and confirmed by a signed payment_intent.succeeded."""
    with app.app_context():
        day = make_fast_day(currency=currency, suggested=[int(amount)])
        db.session.commit()
        slug = day.slug
    donor = app.test_client()
    gift = make_gift(app, donor, localstripe, slug, amount=amount)
    event = intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])
    assert post_event(donor, event).status_code == 200
    with app.app_context():
        assert db.session.get(Pledge, gift.pledge_id).status == PledgeStatus.SUCCEEDED
    return gift


def _refund_rows(app, pledge_id: int) -> list[tuple[int, str]]:
    with app.app_context():
        return [
            (r.amount_minor, r.stripe_object_id)
            for r in db.session.scalars(
                select(LedgerEntry).where(
                    LedgerEntry.pledge_id == pledge_id, LedgerEntry.kind == EntryKind.REFUND
                )
            )
        ]


def _stripe_refunds(localstripe, charge_id: str) -> list[dict]:
    return stripe_list(localstripe, "refunds", charge=charge_id)


def _form(browser, pledge_id: int) -> dict[str, str]:
    """The refund form's hidden fields, as the page hands them out."""
    html = browser.get(f"/admin/gifts/{pledge_id}").get_data(as_text=True)
    seen = re.search(r'name="seen_requests" value="(\d+)"', html)
    assert seen, "the page has no refund form"
    return {"csrf_token": csrf_from(html), "seen_requests": seen.group(1)}


def _deliver_refund_webhook(browser, localstripe, charge_id: str) -> None:
    event = charge_event(localstripe, "charge.refunded", charge_id)
    assert post_event(browser, event).status_code == 200


def test_partial_refund_reaches_the_ledger_only_when_stripe_confirms_it(
    app, localstripe, organizer
):
    gift = _paid_gift(app, localstripe)

    response = organizer.post(
        f"/admin/gifts/{gift.pledge_id}",
        data={
            **_form(organizer, gift.pledge_id),
            "scope": "part",
            "amount": "10.00",
            "note": "Donor asked by e-mail",
        },
    )

    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/gifts/{gift.pledge_id}"
    page = organizer.get(response.headers["Location"]).get_data(as_text=True)
    assert "Refund requested; the ledger updates when Stripe confirms." in page
    assert "Waiting for Stripe" in page
    made = _stripe_refunds(localstripe, gift.charge_id)
    assert [r["amount"] for r in made] == [1000]
    # Stripe has refunded; our ledger has not moved yet.
    assert _refund_rows(app, gift.pledge_id) == []
    with app.app_context():
        entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == refunds.REQUESTED))
        assert (entry.actor_email, entry.target_type, entry.target_id) == (
            ORGANIZER,
            "Pledge",
            str(gift.pledge_id),
        )
        assert entry.after["amount_minor"] == 1000 and entry.after["full"] is False
        assert entry.after["stripe_refund_id"] == made[0]["id"]
        assert entry.after["note"] == "Donor asked by e-mail"

    _deliver_refund_webhook(organizer, localstripe, gift.charge_id)

    assert _refund_rows(app, gift.pledge_id) == [(-1000, made[0]["id"])]
    with app.app_context():
        assert db.session.get(Pledge, gift.pledge_id).status == PledgeStatus.SUCCEEDED
    page = organizer.get(f"/admin/gifts/{gift.pledge_id}").get_data(as_text=True)
    assert "Confirmed" in page and "$15.00" in page  # left to refund
    dashboard = organizer.get(f"/admin/fast-days/{_day_id(app, gift)}/dashboard.json").get_json()
    assert (dashboard["raised_minor"], dashboard["refunded_minor"]) == (1500, 1000)


def _day_id(app, gift) -> int:
    with app.app_context():
        return db.session.get(Pledge, gift.pledge_id).fast_day_id


def test_full_refund_takes_what_is_left_and_the_webhook_marks_the_gift_refunded(
    app, localstripe, organizer
):
    gift = _paid_gift(app, localstripe)
    organizer.post(
        f"/admin/gifts/{gift.pledge_id}",
        data={**_form(organizer, gift.pledge_id), "scope": "part", "amount": "5"},
    )
    _deliver_refund_webhook(organizer, localstripe, gift.charge_id)

    response = organizer.post(
        f"/admin/gifts/{gift.pledge_id}",
        data={**_form(organizer, gift.pledge_id), "scope": "full", "amount": ""},
    )

    assert response.status_code == 303
    assert sorted(r["amount"] for r in _stripe_refunds(localstripe, gift.charge_id)) == [500, 2000]
    assert sorted(a for a, _ in _refund_rows(app, gift.pledge_id)) == [-500]
    _deliver_refund_webhook(organizer, localstripe, gift.charge_id)
    assert sorted(a for a, _ in _refund_rows(app, gift.pledge_id)) == [-2000, -500]
    with app.app_context():
        assert db.session.get(Pledge, gift.pledge_id).status == PledgeStatus.REFUNDED
    page = organizer.get(f"/admin/gifts/{gift.pledge_id}").get_data(as_text=True)
    assert 'name="seen_requests"' not in page  # nothing left: no form
    assert "Nothing is left to refund on this gift." in page


def test_partial_refund_above_what_is_left_is_refused_beside_the_field(app, localstripe, organizer):
    gift = _paid_gift(app, localstripe)

    response = organizer.post(
        f"/admin/gifts/{gift.pledge_id}",
        data={**_form(organizer, gift.pledge_id), "scope": "part", "amount": "25.01"},
    )

    assert response.status_code == 400
    html = response.get_data(as_text=True)
    error = re.search(r'<p class="field-error" id="amount-error">([^<]+)</p>', html)
    assert error and error.group(1) == "At most $25.00 is left to refund."
    assert 'aria-describedby="amount-error"' in html
    assert _stripe_refunds(localstripe, gift.charge_id) == []
    with app.app_context():
        assert (
            db.session.scalar(select(AuditEntry).where(AuditEntry.action == refunds.REQUESTED))
            is None
        )


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "Enter an amount."),
        ("ten", "Enter a number, like 25 or 25.50."),
        ("-3", "Enter an amount greater than zero."),
        ("1.005", "USD allows at most 2 decimal places."),
    ],
)
def test_a_partial_refund_needs_an_amount_stripe_could_take(app, organizer, typed, message):
    with app.app_context():
        pledge = make_pledge(make_fast_day(), status=PledgeStatus.SUCCEEDED)
        pledge.stripe_charge_id = "ch_never_asked"  # the form stops it before Stripe
        db.session.commit()
        pledge_id = pledge.id

    response = organizer.post(
        f"/admin/gifts/{pledge_id}",
        data={**_form(organizer, pledge_id), "scope": "part", "amount": typed},
    )

    assert response.status_code == 400
    assert f'id="amount-error">{message}</p>' in response.get_data(as_text=True)
    with app.app_context():
        assert (
            db.session.scalar(select(AuditEntry).where(AuditEntry.action.like("gift.refund%")))
            is None
        )


def test_a_double_submit_refunds_once(app, localstripe, organizer):
    gift = _paid_gift(app, localstripe)
    form = {**_form(organizer, gift.pledge_id), "scope": "part", "amount": "7.50"}

    first = organizer.post(f"/admin/gifts/{gift.pledge_id}", data=form)
    second = organizer.post(f"/admin/gifts/{gift.pledge_id}", data=form)

    assert first.status_code == 303
    assert second.status_code == 400
    assert "Another refund of this gift was requested after this page was opened." in (
        second.get_data(as_text=True)
    )
    assert [r["amount"] for r in _stripe_refunds(localstripe, gift.charge_id)] == [750]
    with app.app_context():
        requested = db.session.scalars(
            select(AuditEntry).where(AuditEntry.action == refunds.REQUESTED)
        ).all()
        assert len(requested) == 1


def test_the_idempotency_key_follows_the_page_not_the_click(app, ctx):
    """A retry from the same page reuses the key, so Stripe returns its first refund."""
    pledge = make_pledge(make_fast_day())
    assert refunds.idempotency_key(pledge, 0) == refunds.idempotency_key(pledge, 0)
    assert refunds.idempotency_key(pledge, 0) != refunds.idempotency_key(pledge, 1)
    assert refunds.idempotency_key(pledge, 3).startswith(f"refund:{pledge.id}:")


def test_refunds_made_in_stripes_dashboard_count_against_what_is_left(app, localstripe, organizer):
    gift = _paid_gift(app, localstripe)
    form = _form(organizer, gift.pledge_id)
    # Someone refunds 20.00 in Stripe's dashboard; its webhook has not arrived yet.
    localstripe.http.post(
        f"{localstripe.url}/v1/refunds", data={"charge": gift.charge_id, "amount": 2000}
    ).raise_for_status()

    response = organizer.post(
        f"/admin/gifts/{gift.pledge_id}", data={**form, "scope": "part", "amount": "10"}
    )

    assert response.status_code == 400
    assert 'id="amount-error">At most $5.00 is left to refund.</p>' in response.get_data(
        as_text=True
    )
    assert [r["amount"] for r in _stripe_refunds(localstripe, gift.charge_id)] == [2000]


def test_only_a_gift_that_went_through_can_be_refunded(app, client, organizer):
    with app.app_context():
        failed = make_pledge(make_fast_day(), status=PledgeStatus.FAILED)
        db.session.commit()
        pledge_id = failed.id
    page = organizer.get(f"/admin/gifts/{pledge_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="seen_requests"' not in html
    assert "Only a gift that went through can be refunded." in html

    response = organizer.post(
        f"/admin/gifts/{pledge_id}",
        data={
            # The page has no form of its own: take the token the header's sign-out form carries.
            "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', html).group(1),
            "seen_requests": "0",
            "scope": "full",
        },
    )

    assert response.status_code == 400
    assert "Only a gift that went through, and is not fully refunded, can be refunded." in (
        response.get_data(as_text=True)
    )


def test_gift_page_shows_its_facts_and_ledger_rows(app, localstripe, organizer):
    gift = _paid_gift(app, localstripe, amount="1000")

    html = organizer.get(f"/admin/gifts/{gift.pledge_id}").get_data(as_text=True)

    assert f"Gift #{gift.pledge_id}" in html
    assert "$10.00" in html and "Went through" in html
    assert gift.charge_id in html  # the gift's ledger row carries Stripe's charge id
    assert "All groups, shared by the day's weights" in html
    assert re.search(r'<td>Gift</td>\s*<td class="num">\$10.00</td>', html)


def test_refund_through_localstripes_own_webhook_flow(
    app, localstripe, organizer, live_server, webhook_worker
):
    """The succeeded gift arrives by localstripe's own webhook; the refund by a signed event."""
    # localstripe sends each webhook a second after the event and picks its recipients only
    # then, so events of the tests before this one would reach this test's server and write
    # while the donor's pay page (a GET that writes) holds an SQLite snapshot: "database is
    # locked". Let them go nowhere first, then listen for this gift's success only.
    time.sleep(1.2)
    requests.post(
        f"{localstripe.url}/_config/webhooks/fundraiser",
        json={
            "url": f"{live_server.url}/stripe/webhook",
            "secret": WEBHOOK_SECRET,
            "events": ["payment_intent.succeeded"],
        },
        timeout=10,
    ).raise_for_status()
    try:
        _refund_after_localstripes_webhook(app, localstripe, organizer)
    finally:
        localstripe.send_webhooks_to(None)


def _refund_after_localstripes_webhook(app, localstripe, organizer) -> None:
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        slug = day.slug
    donor = app.test_client()
    gift = make_gift(app, donor, localstripe, slug, amount="2500")

    def succeeded():
        with app.app_context():
            return db.session.get(Pledge, gift.pledge_id).status == PledgeStatus.SUCCEEDED

    wait_until(succeeded)
    response = organizer.post(
        f"/admin/gifts/{gift.pledge_id}", data={**_form(organizer, gift.pledge_id), "scope": "full"}
    )
    assert response.status_code == 303
    assert _refund_rows(app, gift.pledge_id) == []
    _deliver_refund_webhook(organizer, localstripe, gift.charge_id)
    assert [a for a, _ in _refund_rows(app, gift.pledge_id)] == [-2500]
