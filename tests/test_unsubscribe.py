"""S7: one-click unsubscribe per RFC 8058.

POST to the List-Unsubscribe URL (no cookies, no CSRF token, body List-Unsubscribe=One-Click)
unsubscribes and answers 200 without a redirect; GET shows a button and changes nothing; a
forged or tampered token answers 4xx and changes nothing; a token names one subscriber only.
"""

from __future__ import annotations

import requests
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select

from fundraiser import outbox, subscriptions
from fundraiser.extensions import db
from fundraiser.models import (
    CampaignMessage,
    OutboxMessage,
    OutboxState,
    Subscriber,
    SubscriberStatus,
)
from tests.factories import csrf_from, make_fast_day

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _confirmed(email: str) -> Subscriber:
    subscriber = subscriptions.subscribe(email, locale="en", timezone="UTC")
    subscriptions.confirm(subscriber)
    db.session.flush()
    return subscriber


def _status(app, subscriber_id: int) -> SubscriberStatus:
    with app.app_context():
        return db.session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def test_campaign_headers_name_one_absolute_https_url_and_the_one_click_post(app, ctx):
    subscriber = _confirmed("a@example.org")
    base = app.config["PUBLIC_BASE_URL"]
    app.config["PUBLIC_BASE_URL"] = "https://fast.example.org/"
    try:
        headers = subscriptions.list_unsubscribe_headers(subscriber)
        url = subscriptions.unsubscribe_url(subscriber)
    finally:
        app.config["PUBLIC_BASE_URL"] = base
    assert headers == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert url.startswith("https://fast.example.org/messages/unsubscribe/")
    assert "a@example.org" not in url


def test_one_click_post_over_http_unsubscribes_with_200_and_no_redirect(app, live_server):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        db.session.commit()
        subscriber_id, url = subscriber.id, subscriptions.unsubscribe_url(subscriber)
    assert url.startswith(live_server.url)

    # What a mail provider does: a bare POST, no cookies, no token, the RFC's body.
    response = requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=10)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "Set-Cookie" not in response.headers
    assert _status(app, subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    # The provider may retry: still 200, still unsubscribed.
    again = requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=10)
    assert again.status_code == 200
    # RFC 8058 also allows multipart/form-data.
    multipart = requests.post(
        url, files={"List-Unsubscribe": (None, "One-Click")}, allow_redirects=False, timeout=10
    )
    assert multipart.status_code == 200


def test_unsubscribing_does_not_stop_receipts(app, client):
    with app.app_context():
        subscriber = _confirmed("donor@example.org")
        db.session.commit()
        path = _path(subscriptions.unsubscribe_url(subscriber))
    assert client.post(path, data=ONE_CLICK).status_code == 200
    with app.app_context():
        assert not outbox.is_suppressed("donor@example.org")


def test_get_shows_a_button_and_changes_nothing(app, client):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        db.session.commit()
        subscriber_id, path = subscriber.id, _path(subscriptions.unsubscribe_url(subscriber))
    for _ in range(3):  # link scanners and prefetchers open links, sometimes repeatedly
        page = client.get(path)
        assert page.status_code == 200
        assert _status(app, subscriber_id) == SubscriberStatus.CONFIRMED
    html = page.get_data(as_text=True)
    assert f'action="{path}/confirm"' in html
    # The button is an ordinary form with its CSRF token.
    response = client.post(
        f"{path}/confirm", data={"csrf_token": csrf_from(html)}, follow_redirects=False
    )
    assert response.status_code == 303
    assert _status(app, subscriber_id) == SubscriberStatus.UNSUBSCRIBED
    assert "You are unsubscribed" in client.get(path).get_data(as_text=True)


def test_the_button_without_its_csrf_token_is_refused(app, client):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        db.session.commit()
        subscriber_id, path = subscriber.id, _path(subscriptions.unsubscribe_url(subscriber))
    assert client.post(f"{path}/confirm", data=ONE_CLICK).status_code == 400
    assert _status(app, subscriber_id) == SubscriberStatus.CONFIRMED


def test_a_post_without_the_one_click_body_changes_nothing(app, client):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        db.session.commit()
        subscriber_id, path = subscriber.id, _path(subscriptions.unsubscribe_url(subscriber))
    for body in ({}, {"List-Unsubscribe": "yes"}, {"anything": "1"}):
        assert client.post(path, data=body).status_code == 400
    assert _status(app, subscriber_id) == SubscriberStatus.CONFIRMED


def test_forged_and_tampered_tokens_are_refused_and_change_nothing(app, client):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        db.session.commit()
        subscriber_id = subscriber.id
        token = subscriptions.token_for(subscriber, subscriptions.Purpose.UNSUBSCRIBE)
        other_purpose = subscriptions.token_for(subscriber, subscriptions.Purpose.PREFERENCES)
        other_secret = URLSafeTimedSerializer(
            "not-our-secret", salt=subscriptions.Purpose.UNSUBSCRIBE
        ).dumps([subscriber_id, subscriber.link_version])
        old_version = URLSafeTimedSerializer(
            app.config["SECRET_KEY"], salt=subscriptions.Purpose.UNSUBSCRIBE
        ).dumps([subscriber_id, subscriber.link_version + 1])
    payload, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    forged = [
        "x",
        "not-a-token.at.all",
        # One character changed in the payload, or in the signature. (Not the signature's
        # last character: its low bits are base64 padding, so some changes decode alike.)
        ("A" if token[0] != "A" else "B") + token[1:],
        f"{payload}.{flipped}{signature[1:]}",
        token + "x",
        other_purpose,  # a preferences link is not an unsubscribe link
        other_secret,  # signed with someone else's key
        old_version,  # a version this subscriber does not have
    ]
    for bad in forged:
        assert client.post(f"/messages/unsubscribe/{bad}", data=ONE_CLICK).status_code == 404
        assert client.get(f"/messages/unsubscribe/{bad}").status_code == 404
    assert _status(app, subscriber_id) == SubscriberStatus.CONFIRMED


def test_a_token_acts_only_on_the_subscriber_it_was_made_for(app, client):
    with app.app_context():
        alice, bob = _confirmed("alice@example.org"), _confirmed("bob@example.org")
        db.session.commit()
        alice_id, bob_id = alice.id, bob.id
        alice_path = _path(subscriptions.unsubscribe_url(alice))
        # Bob's id swapped into Alice's payload, with Alice's signature: refused.
        token = alice_path.rsplit("/", 1)[1]
        bob_token = subscriptions.token_for(bob, subscriptions.Purpose.UNSUBSCRIBE)
        spliced = bob_token.split(".")[0] + "." + ".".join(token.split(".")[1:])
    assert client.post(f"/messages/unsubscribe/{spliced}", data=ONE_CLICK).status_code == 404
    assert _status(app, bob_id) == SubscriberStatus.CONFIRMED
    assert client.post(alice_path, data=ONE_CLICK).status_code == 200
    assert _status(app, alice_id) == SubscriberStatus.UNSUBSCRIBED
    assert _status(app, bob_id) == SubscriberStatus.CONFIRMED


def test_campaign_messages_already_queued_are_not_sent_after_unsubscribing(app, client):
    with app.app_context():
        subscriber = _confirmed("a@example.org")
        campaign = CampaignMessage(fast_day=make_fast_day(), name="Sunset")
        db.session.add(campaign)
        db.session.flush()
        outbox.enqueue(
            outbox.Outgoing(
                key=f"campaign:{campaign.id}:{subscriber.id}",
                kind="campaign",
                to_email=subscriber.email,
                subject="Breaking the fast",
                text_body="…",
                headers=subscriptions.list_unsubscribe_headers(subscriber),
                campaign_message_id=campaign.id,
                subscriber_id=subscriber.id,
            ),
            kick=False,
        )
        db.session.commit()
        path = _path(subscriptions.unsubscribe_url(subscriber))
    assert client.post(path, data=ONE_CLICK).status_code == 200
    with app.app_context():
        state = db.session.scalar(
            select(OutboxMessage.state).where(OutboxMessage.kind == "campaign")
        )
        assert state == OutboxState.SUPPRESSED
        assert outbox.drain().sent == 0
