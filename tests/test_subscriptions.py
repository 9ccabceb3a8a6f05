"""Subscribers: double opt-in, asking again, time zone and city, preferences, erase-my-data."""

from __future__ import annotations

import re
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select, update

from fundraiser import outbox, subscriptions
from fundraiser.extensions import db
from fundraiser.models import (
    CampaignMessage,
    OutboxMessage,
    OutboxState,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.factories import csrf_from, make_fast_day, make_group, post_form

EMAIL = "layla@example.org"
LINK_RE = re.compile(r"https?://\S+/messages/\S+")


def _subscribe(client, **fields):
    page = client.get("/messages/")
    form = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "email": EMAIL,
        "locale": "en",
        "timezone": "Asia/Amman",
        "city": "",
    }
    form.update(fields)
    return client.post("/messages/", data=form)


def _subscriber(app, email: str = EMAIL) -> Subscriber | None:
    with app.app_context():
        subscriber = subscriptions.find_by_email(email)
        if subscriber is not None:
            db.session.expunge(subscriber)
        return subscriber


def _outbox(app, email: str = EMAIL) -> list[tuple[str, str]]:
    with app.app_context():
        rows = db.session.execute(
            select(OutboxMessage.kind, OutboxMessage.state)
            .where(OutboxMessage.to_email == email)
            .order_by(OutboxMessage.id)
        ).all()
        return [(kind, str(state)) for kind, state in rows]


def _link(message) -> str:
    match = LINK_RE.search(message.get_body(("plain",)).get_content())
    assert match, "no link in the message"
    return match.group(0)


def _path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# --- double opt-in -----------------------------------------------------------------------


def test_subscribing_sends_only_the_confirmation_until_the_link_is_used(app, client, mailbox):
    response = _subscribe(client)
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/messages/check-your-inbox")
    assert "Check your inbox" in client.get(response.headers["Location"]).get_data(as_text=True)

    (message,) = mailbox.wait_for(1)
    assert message["To"] == EMAIL
    assert "Confirm" in message["Subject"]
    assert message.get_body(("html",)) is not None
    assert "List-Unsubscribe" not in message  # a confirmation is not a campaign message
    assert _subscriber(app).status == SubscriberStatus.PENDING
    assert _outbox(app) == [("subscription_confirm", "sent")]

    # Opening the link (as a mail scanner would) confirms nothing: it takes the button.
    confirm_path = _path(_link(message))
    page = client.get(confirm_path)
    assert page.status_code == 200
    assert "Yes, send me the messages" in page.get_data(as_text=True)
    assert _subscriber(app).status == SubscriberStatus.PENDING

    done = post_form(client, confirm_path)
    assert done.status_code == 303 and "/messages/preferences/" in done.headers["Location"]
    subscriber = _subscriber(app)
    assert subscriber.status == SubscriberStatus.CONFIRMED
    assert subscriber.confirmed_at is not None
    landing = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "You are subscribed" in landing
    # Opening the link again lands on the preferences page, changing nothing.
    again = client.get(confirm_path)
    assert again.status_code == 303 and "/messages/preferences/" in again.headers["Location"]
    assert _outbox(app) == [("subscription_confirm", "sent")]


def _signed_days_ago(app, subscriber: Subscriber, purpose: str, days: int) -> str:
    """A genuine token for ``purpose`` as if it had been e-mailed ``days`` ago."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - days * 86400

    serializer = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=purpose, signer=Earlier)
    return serializer.dumps([subscriber.id, subscriber.link_version])


def test_a_confirmation_link_older_than_a_week_no_longer_confirms(app, ctx, client):
    subscriber = subscriptions.subscribe(EMAIL, locale="en", timezone="UTC")
    db.session.commit()
    fresh = _signed_days_ago(app, subscriber, subscriptions.Purpose.CONFIRM, 6)
    stale = _signed_days_ago(app, subscriber, subscriptions.Purpose.CONFIRM, 8)
    assert client.get(f"/messages/confirm/{fresh}").status_code == 200
    assert client.get(f"/messages/confirm/{stale}").status_code == 404
    # Unsubscribe links have no age: they work from any old message.
    old = _signed_days_ago(app, subscriber, subscriptions.Purpose.UNSUBSCRIBE, 400)
    assert client.get(f"/messages/unsubscribe/{old}").status_code == 200


def test_asking_again_shows_the_same_page_and_resends_at_most_once_per_window(app, client, mailbox):
    first = _subscribe(client)
    mailbox.wait_for(1)
    again = _subscribe(client, locale="fr", timezone="Europe/Paris")
    stranger = _subscribe(client, email="someone.new@example.org")
    # The same answer whether the address was known or not.
    assert first.status_code == again.status_code == stranger.status_code == 303
    assert first.headers["Location"] == again.headers["Location"] == stranger.headers["Location"]
    # Within ten minutes the known address is not sent a second confirmation.
    assert _outbox(app) == [("subscription_confirm", "sent")]
    # Still pending, it takes the latest settings.
    assert (_subscriber(app).locale, _subscriber(app).timezone) == ("fr", "Europe/Paris")

    with app.app_context():
        later = utcnow() + subscriptions.RESEND_WINDOW
        subscriptions.subscribe(EMAIL, locale="fr", timezone="Europe/Paris", now=later)
        db.session.commit()
    assert _outbox(app) == [("subscription_confirm", "sent")] * 2
    messages = mailbox.wait_for(3)
    resent = [m for m in messages if m["To"] == EMAIL][-1]
    assert "/messages/confirm/" in _link(resent)


def test_asking_again_never_changes_a_confirmed_subscribers_settings(app, ctx, mailbox):
    subscriber = subscriptions.subscribe(EMAIL, locale="ar", timezone="Asia/Gaza")
    subscriptions.confirm(subscriber)
    db.session.commit()
    later = utcnow() + subscriptions.RESEND_WINDOW
    subscriptions.subscribe(EMAIL.upper(), locale="en", timezone="UTC", now=later)
    db.session.commit()
    db.session.refresh(subscriber)
    assert (subscriber.status, subscriber.locale, subscriber.timezone) == (
        SubscriberStatus.CONFIRMED,
        "ar",
        "Asia/Gaza",
    )
    assert db.session.scalar(select(func.count()).select_from(Subscriber)) == 1
    # They get the confirmation again, whose link now leads to their preferences.
    assert [kind for kind, _ in _outbox(app)] == ["subscription_confirm"] * 2


def test_the_give_forms_checkbox_makes_a_pending_subscriber_in_the_donors_language(
    app, client, mailbox
):
    with app.app_context():
        day = make_fast_day(groups=[make_group()])
        day.timezone = "Asia/Amman"
        db.session.commit()
        slug = day.slug
    page = client.get(f"/fast/{slug}/give?lang=fr")
    response = client.post(
        f"/fast/{slug}/give",
        data={
            "csrf_token": csrf_from(page.get_data(as_text=True)),
            "amount": "other",
            "other_amount": "25",
            "currency": "USD",
            "allocation": "all",
            "email": "donor@example.org",
            "wants_messages": "y",
        },
    )
    assert response.status_code == 303
    subscriber = _subscriber(app, "donor@example.org")
    assert (subscriber.status, subscriber.locale, subscriber.timezone) == (
        SubscriberStatus.PENDING,
        "fr",
        "Asia/Amman",
    )
    (message,) = mailbox.wait_for(1)
    assert message["To"] == "donor@example.org"


def test_a_gift_without_the_checkbox_subscribes_nobody(app, client):
    with app.app_context():
        day = make_fast_day(groups=[make_group()])
        db.session.commit()
        slug = day.slug
    page = client.get(f"/fast/{slug}/give")
    client.post(
        f"/fast/{slug}/give",
        data={
            "csrf_token": csrf_from(page.get_data(as_text=True)),
            "amount": "other",
            "other_amount": "25",
            "currency": "USD",
            "allocation": "all",
            "email": "donor@example.org",
        },
    )
    assert _subscriber(app, "donor@example.org") is None


# --- the form: language, time zone, city ---------------------------------------------------


def test_the_form_defaults_to_the_pages_language_and_the_fast_days_zone(app, client):
    with app.app_context():
        day = make_fast_day()
        day.timezone = "Asia/Kathmandu"
        db.session.commit()
        slug = day.slug
    html = client.get(f"/messages/?day={slug}&lang=ar").get_data(as_text=True)
    assert re.search(r'<option selected value="ar">', html)
    zone = re.search(r'<input[^>]*name="timezone"[^>]*>', html).group(0)
    assert 'value="Asia/Kathmandu"' in zone
    # The browser's own zone replaces it when scripts run.
    assert "data-browser-timezone" in zone
    assert "js/timezone.js" in html
    assert '<option value="Pacific/Kiritimati">' in html


def test_without_a_fast_day_the_zone_defaults_to_utc(app, client):
    html = client.get("/messages/").get_data(as_text=True)
    zone = re.search(r'<input[^>]*name="timezone"[^>]*>', html).group(0)
    assert 'value="UTC"' in zone


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "We do not know this time zone"),
        ({"timezone": ""}, "timezone", "Choose your time zone"),
        ({"city": "Atlantis"}, "city", "We do not know this city"),
        ({"locale": "xx"}, "locale", "Choose a language"),
        ({"email": "not-an-address"}, "email", "valid e-mail"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(app, client, mailbox, fields, field, message):
    response = _subscribe(client, **fields)
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    # The error sits beside its field, and the summary names the field and links to it.
    assert re.search(rf'<p class="field-error" id="{field}-error">[^<]*{message}', html), html
    assert f'<a href="#{field}">' in html
    assert _subscriber(app) is None
    assert mailbox.messages == []


def test_a_known_city_is_stored_with_its_coordinates(app, client):
    assert _subscribe(client, city="amman").status_code == 303
    subscriber = _subscriber(app)
    assert subscriber.city == "Amman, Jordan"
    assert subscriber.latitude == pytest.approx(31.95, abs=0.1)
    assert subscriber.longitude == pytest.approx(35.93, abs=0.1)


def test_a_city_can_be_named_with_its_region():
    city = subscriptions.find_city("London, England")
    assert city is not None and city.timezone == "Europe/London"
    assert subscriptions.find_city("London, Narnia") is None
    assert subscriptions.find_city("   ") is None


def test_posted_status_is_ignored(app, client):
    _subscribe(client, status="confirmed", link_version="1", confirmed_at="2020-01-01")
    subscriber = _subscriber(app)
    assert subscriber.status == SubscriberStatus.PENDING and subscriber.confirmed_at is None


# --- managing: preferences, asking for a link, erasing ---------------------------------------


@pytest.fixture
def confirmed(app):
    """A confirmed subscriber; returns its id."""
    with app.app_context():
        subscriber = subscriptions.subscribe(EMAIL, locale="en", timezone="Europe/London")
        subscriptions.confirm(subscriber)
        db.session.commit()
        return subscriber.id


def _token(app, subscriber_id: int, purpose: str) -> str:
    with app.app_context():
        return subscriptions.token_for(db.session.get(Subscriber, subscriber_id), purpose)


def test_preferences_are_saved_from_the_signed_link(app, client, confirmed):
    url = f"/messages/preferences/{_token(app, confirmed, subscriptions.Purpose.PREFERENCES)}"
    page = client.get(url)
    assert page.status_code == 200 and EMAIL in page.get_data(as_text=True)
    response = post_form(
        client,
        url,
        {
            "locale": "es",
            "timezone": "America/New_York",
            "city": "New York",
            "wants_reminders": "y",
            # wants_day_messages left out: unticked
            "status": "unsubscribed",
            "email": "hijack@example.org",
        },
    )
    assert response.status_code == 303
    subscriber = _subscriber(app)
    assert (subscriber.locale, subscriber.timezone, subscriber.city) == (
        "es",
        "America/New_York",
        "New York, USA",
    )
    assert subscriber.latitude is not None
    assert (subscriber.wants_day_messages, subscriber.wants_reminders) == (False, True)
    assert subscriber.status == SubscriberStatus.CONFIRMED  # posted extras are ignored
    assert "saved" in client.get(url).get_data(as_text=True)


def test_preferences_refuse_an_unknown_zone_and_keep_the_old_one(app, client, confirmed):
    url = f"/messages/preferences/{_token(app, confirmed, subscriptions.Purpose.PREFERENCES)}"
    response = post_form(client, url, {"locale": "en", "timezone": "Europe/Londres"})
    assert response.status_code == 400
    assert 'id="timezone-error"' in response.get_data(as_text=True)
    assert _subscriber(app).timezone == "Europe/London"


def test_a_link_for_one_purpose_opens_no_other_page(app, client, confirmed):
    unsubscribe = _token(app, confirmed, subscriptions.Purpose.UNSUBSCRIBE)
    preferences = _token(app, confirmed, subscriptions.Purpose.PREFERENCES)
    assert client.get(f"/messages/preferences/{unsubscribe}").status_code == 404
    assert client.get(f"/messages/erase/{preferences}").status_code == 404
    assert client.get(f"/messages/confirm/{preferences}").status_code == 404
    assert client.get(f"/messages/preferences/{preferences}x").status_code == 404


def test_asking_for_a_link_answers_the_same_for_known_and_unknown_addresses(
    app, client, confirmed, mailbox
):
    known = post_form(client, "/messages/manage", {"email": EMAIL})
    unknown = post_form(client, "/messages/manage", {"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 303
    assert known.headers["Location"] == unknown.headers["Location"]
    (message,) = mailbox.wait_for(1)
    assert message["To"] == EMAIL
    links = LINK_RE.findall(message.get_body(("plain",)).get_content())
    assert any("/messages/preferences/" in link for link in links)
    assert any("/messages/unsubscribe/" in link for link in links)
    assert _outbox(app, "nobody@example.org") == []


def test_a_pending_address_asking_for_a_link_gets_its_confirmation_instead(app, ctx):
    subscriber = subscriptions.subscribe(EMAIL, locale="en", timezone="UTC")
    db.session.commit()
    subscriptions.send_manage_link(EMAIL, now=utcnow() + subscriptions.RESEND_WINDOW)
    db.session.commit()
    kinds = db.session.scalars(
        select(OutboxMessage.kind).where(OutboxMessage.subscriber_id == subscriber.id)
    ).all()
    assert kinds == ["subscription_confirm", "subscription_confirm"]


def test_an_unsubscribed_person_can_subscribe_again_from_preferences(app, client, confirmed):
    with app.app_context():
        subscriptions.unsubscribe(db.session.get(Subscriber, confirmed))
        db.session.commit()
    url = f"/messages/preferences/{_token(app, confirmed, subscriptions.Purpose.PREFERENCES)}"
    assert "Subscribe again" in client.get(url).get_data(as_text=True)
    response = post_form(client, url + "/resubscribe", form_page=url)
    assert response.status_code == 303
    assert _subscriber(app).status == SubscriberStatus.CONFIRMED


def _campaign_row(subscriber: Subscriber, campaign: CampaignMessage, state: OutboxState) -> None:
    outbox.enqueue(
        outbox.Outgoing(
            key=f"campaign:{campaign.id}:{subscriber.id}:{state}",
            kind="campaign",
            to_email=subscriber.email,
            subject="Fasting begins",
            text_body=f"Stop: {subscriptions.unsubscribe_url(subscriber)}",
            headers=subscriptions.list_unsubscribe_headers(subscriber),
            campaign_message_id=campaign.id,
            subscriber_id=subscriber.id,
            state=state,
        ),
        kick=False,
    )


def test_erasing_removes_the_person_and_every_trace_of_their_address(
    app, client, confirmed, mailbox
):
    with app.app_context():
        subscriber = db.session.get(Subscriber, confirmed)
        campaign = CampaignMessage(fast_day=make_fast_day(), name="Morning")
        db.session.add(campaign)
        db.session.flush()
        _campaign_row(subscriber, campaign, OutboxState.SENT)
        _campaign_row(subscriber, campaign, OutboxState.QUEUED)
        db.session.commit()
        campaign_id = campaign.id
    url = f"/messages/erase/{_token(app, confirmed, subscriptions.Purpose.ERASE)}"
    preferences = (
        f"/messages/preferences/{_token(app, confirmed, subscriptions.Purpose.PREFERENCES)}"
    )

    page = client.get(url)
    assert page.status_code == 200 and "Erase my data" in page.get_data(as_text=True)
    assert _subscriber(app) is not None  # the page only asks

    response = post_form(client, url)
    assert response.status_code == 303 and response.headers["Location"].endswith("/erased")
    assert _subscriber(app) is None
    with app.app_context():
        rows = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        # The queued message is gone; the sent ones stay, counted, without the person.
        assert [(r.kind, r.state) for r in rows] == [
            ("subscription_confirm", OutboxState.SENT),
            ("campaign", OutboxState.SENT),
        ]
        assert rows[1].campaign_message_id == campaign_id
        for row in rows:
            assert row.to_email == "erased" and row.subscriber_id is None
            assert EMAIL not in f"{row.subject}{row.text_body}{row.html_body}{row.headers}"
    # Every earlier link is dead.
    assert client.get(url).status_code == 404
    assert client.get(preferences).status_code == 404


def test_links_of_an_erased_subscriber_do_not_reach_whoever_subscribes_next(app, ctx):
    first = subscriptions.subscribe(EMAIL, locale="en", timezone="UTC")
    db.session.commit()
    old_token = subscriptions.token_for(first, subscriptions.Purpose.UNSUBSCRIBE)
    old_id = first.id
    subscriptions.erase(first)
    db.session.commit()
    second = subscriptions.subscribe("next@example.org", locale="en", timezone="UTC")
    db.session.commit()
    # SQLite hands the id out again by itself; PostgreSQL would after a restore. Make sure.
    if second.id != old_id:
        rows = update(OutboxMessage).where(OutboxMessage.subscriber_id == second.id)
        db.session.execute(rows.values(subscriber_id=None))
        db.session.execute(update(Subscriber).where(Subscriber.id == second.id).values(id=old_id))
        db.session.commit()
    assert db.session.get(Subscriber, old_id).email == "next@example.org"
    assert subscriptions.from_token(old_token, subscriptions.Purpose.UNSUBSCRIBE) is None


def test_turning_off_day_messages_holds_back_those_already_queued(app, ctx, confirmed):
    subscriber = db.session.get(Subscriber, confirmed)
    campaign = CampaignMessage(fast_day=make_fast_day(), name="Evening")
    db.session.add(campaign)
    db.session.flush()
    _campaign_row(subscriber, campaign, OutboxState.QUEUED)
    subscriptions.update_preferences(
        subscriber,
        subscriptions.Preferences(
            locale="en",
            timezone="UTC",
            city=None,
            wants_day_messages=False,
            wants_reminders=True,
        ),
    )
    db.session.commit()
    state = db.session.scalar(
        select(OutboxMessage.state).where(OutboxMessage.campaign_message_id == campaign.id)
    )
    assert state == OutboxState.SUPPRESSED


def test_subscriber_pages_fit_a_phone_and_carry_no_inline_script(app, client, confirmed):
    tokens = {
        purpose: _token(app, confirmed, purpose)
        for purpose in (
            subscriptions.Purpose.PREFERENCES,
            subscriptions.Purpose.UNSUBSCRIBE,
            subscriptions.Purpose.ERASE,
        )
    }
    pages = [
        "/messages/",
        "/messages/manage",
        "/messages/check-your-inbox",
        f"/messages/preferences/{tokens[subscriptions.Purpose.PREFERENCES]}",
        f"/messages/unsubscribe/{tokens[subscriptions.Purpose.UNSUBSCRIBE]}",
        f"/messages/erase/{tokens[subscriptions.Purpose.ERASE]}",
        "/messages/erased",
    ]
    for url in pages:
        response = client.get(url)
        html = response.get_data(as_text=True)
        assert response.status_code == 200, url
        assert 'name="viewport"' in html
        assert re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html) is None, url


def test_footer_and_fast_day_page_lead_to_the_messages(app, client):
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        slug = day.slug
    html = client.get(f"/fast/{slug}").get_data(as_text=True)
    assert f'href="/messages/?day={slug}"' in html
    assert 'href="/messages/"' in html and 'href="/messages/manage"' in html
