"""Campaign messages: the organizer's pages, what each subscriber's copy says, and who gets one."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import select

from fundraiser import campaigns, outbox, subscriptions
from fundraiser.extensions import db
from fundraiser.models import (
    Audience,
    AuditEntry,
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    FastDayStatus,
    OutboxMessage,
    OutboxState,
    PledgeStatus,
    SendKind,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.factories import login, make_fast_day, make_group, make_pledge, make_user, post_form

TODAY = date.today()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def setup(app, build):
    """Run ``build`` in its own app context, commit, and return what it returns (ids)."""
    with app.app_context():
        result = build()
        db.session.commit()
        return result


def add_subscriber(
    email: str,
    *,
    locale: str = "en",
    zone: str = "UTC",
    status: SubscriberStatus = SubscriberStatus.CONFIRMED,
    wants_day_messages: bool = True,
) -> Subscriber:
    subscriber = Subscriber(
        email=email,
        locale=locale,
        timezone=zone,
        status=status,
        wants_day_messages=wants_day_messages,
    )
    db.session.add(subscriber)
    db.session.flush()
    return subscriber


def add_message(
    day,
    *,
    texts: dict[str, tuple[str, str]] | None = None,
    default_locale: str = "en",
    audience: Audience = Audience.ALL,
    send_at: datetime | None = None,
    status: CampaignStatus = CampaignStatus.SCHEDULED,
) -> CampaignMessage:
    """A message sent at one UTC instant (an hour ago by default)."""
    message = CampaignMessage(
        fast_day=day,
        name="Iftar",
        audience=audience,
        send_kind=SendKind.UTC_INSTANT,
        send_at=send_at or utcnow() - timedelta(hours=1),
        default_locale=default_locale,
        status=status,
    )
    for locale, (subject, body) in (texts or {"en": ("Break your fast", "Thank you.")}).items():
        message.texts.append(CampaignText(locale=locale, subject=subject, body_markdown=body))
    db.session.add(message)
    db.session.flush()
    return message


def rows_for(message_id: int) -> list[OutboxMessage]:
    return list(
        db.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.campaign_message_id == message_id)
            .order_by(OutboxMessage.subscriber_id)
        )
    )


def recipients(message_id: int) -> set[str]:
    return {row.to_email for row in rows_for(message_id)}


# --- what a copy says -------------------------------------------------------------------------


def test_each_subscriber_gets_their_language_or_the_default_one(ctx):
    day = make_fast_day()
    add_subscriber("en@example.org", locale="en")
    add_subscriber("fr@example.org", locale="fr")
    add_subscriber("pt@example.org", locale="pt")  # the message has no Portuguese
    message = add_message(
        day,
        texts={"en": ("Good morning", "The fast begins."), "fr": ("Bonjour", "Le jeûne commence.")},
        default_locale="fr",
    )
    db.session.commit()
    assert campaigns.enqueue_due(utcnow()) == 3
    subjects = {row.to_email: row.subject for row in rows_for(message.id)}
    assert subjects == {
        "en@example.org": "Good morning",
        "fr@example.org": "Bonjour",
        "pt@example.org": "Bonjour",
    }
    pt = next(r for r in rows_for(message.id) if r.to_email == "pt@example.org")
    sent = outbox.as_sent(pt.id)
    assert sent["Subject"] == "Bonjour"
    assert "Le jeûne commence." in sent.get_body(("plain",)).get_content()
    # The wrapper follows the language of the text.
    assert 'lang="fr"' in sent.get_body(("html",)).get_content()


def test_copy_carries_one_click_unsubscribe_and_footer_links(ctx):
    day = make_fast_day()
    subscriber = add_subscriber("s@example.org")
    message = add_message(day)
    db.session.commit()
    campaigns.enqueue_due(utcnow())
    row = rows_for(message.id)[0]
    sent = outbox.as_sent(row.id)
    # Signed when the copy is sent (a timed signature: compare what the tokens name).
    unsubscribe = sent["List-Unsubscribe"].removeprefix("<").removesuffix(">")
    assert unsubscribe.startswith(subscriptions.unsubscribe_url(subscriber).rsplit("/", 1)[0])
    assert sent["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = sent.get_body(("plain",)).get_content()
    html = sent.get_body(("html",)).get_content()
    preferences = re.search(r"https?://\S+/preferences/\S+", text).group(0)
    assert unsubscribe in text and f'href="{unsubscribe}"' in html  # the footer's is the header's
    assert f'href="{preferences}"' in html
    for link, purpose in (
        (unsubscribe, subscriptions.Purpose.UNSUBSCRIBE),
        (preferences, subscriptions.Purpose.PREFERENCES),
    ):
        assert subscriptions.from_token(link.rsplit("/", 1)[1], purpose) == subscriber
    forged = unsubscribe[:-3] + ("AAA" if not unsubscribe.endswith("AAA") else "BBB")
    assert (
        subscriptions.from_token(forged.rsplit("/", 1)[1], subscriptions.Purpose.UNSUBSCRIBE)
        is None
    )
    assert row.key == f"campaign:{message.id}:{subscriber.id}"


def test_markdown_becomes_sanitized_html_with_safe_links():
    html = str(
        campaigns.markdown_to_html(
            "# Tonight\n\n**Give** at [our page](https://example.org/give).\n\n"
            "<script>alert(1)</script>\n\n[bad](javascript:alert(1)) "
            '<img src="https://tracker.example/p.gif"> <a href="https://x.example" onclick="e()">x</a>'
        )
    )
    assert "<h1>Tonight</h1>" in html and "<strong>Give</strong>" in html
    assert '<a href="https://example.org/give" rel="noopener noreferrer">our page</a>' in html
    assert "<script" not in html and "alert(1)" not in html.replace("javascript", "")
    assert "javascript:" not in html
    assert "<img" not in html and "tracker" not in html
    assert "onclick" not in html


def test_copies_reach_the_relay_with_their_headers(ctx, mailbox):
    day = make_fast_day()
    for n in range(3):
        add_subscriber(f"s{n}@example.org")
    add_message(day, texts={"en": ("Break your fast", "Thank you, **friend**.")})
    db.session.commit()
    assert campaigns.enqueue_due(utcnow()) == 3
    outbox.drain()
    received = mailbox.wait_for(3)
    assert sorted(m["To"] for m in received) == [f"s{n}@example.org" for n in range(3)]
    for mail in received:
        assert mail["Subject"] == "Break your fast"
        assert mail["List-Unsubscribe"].startswith("<http")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "<strong>friend</strong>" in mail.get_body(("html",)).get_content()
        assert "Thank you, **friend**." in mail.get_body(("plain",)).get_content()


# --- who gets one -----------------------------------------------------------------------------


@pytest.fixture
def crowd(ctx):
    """Subscribers of every kind, a donor who gave, and one who pledged for the day."""
    day = make_fast_day(status=FastDayStatus.LIVE)
    other_day = make_fast_day(status=FastDayStatus.LIVE)
    add_subscriber("everyone@example.org")
    add_subscriber("donor@example.org")
    add_subscriber("pledger@example.org")
    add_subscriber("other-day@example.org")
    add_subscriber("failed@example.org")
    add_subscriber("pending@example.org", status=SubscriberStatus.PENDING)
    add_subscriber("gone@example.org", status=SubscriberStatus.UNSUBSCRIBED)
    add_subscriber("quiet@example.org", wants_day_messages=False)
    # The donor typed their address in capitals on the give form.
    make_pledge(day, email="Donor@Example.org", status=PledgeStatus.SUCCEEDED)
    make_pledge(day, email="pledger@example.org", status=PledgeStatus.SCHEDULED)
    make_pledge(day, email="failed@example.org", status=PledgeStatus.FAILED)
    make_pledge(other_day, email="other-day@example.org", status=PledgeStatus.SUCCEEDED)
    make_pledge(day, email="pending@example.org", status=PledgeStatus.SUCCEEDED)
    make_pledge(day, email="gone@example.org", status=PledgeStatus.SCHEDULED)
    make_pledge(day, email="quiet@example.org", status=PledgeStatus.SUCCEEDED)
    db.session.commit()
    return day


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        (
            Audience.ALL,
            {
                "everyone@example.org",
                "donor@example.org",
                "pledger@example.org",
                "other-day@example.org",
                "failed@example.org",
            },
        ),
        (Audience.DAY_DONORS, {"donor@example.org"}),
        (Audience.PLEDGERS, {"pledger@example.org"}),
    ],
)
def test_audience_is_confirmed_subscribers_who_want_day_messages(crowd, audience, expected):
    message = add_message(crowd, audience=audience)
    db.session.commit()
    assert campaigns.audience_count(message) == len(expected)
    campaigns.enqueue_due(utcnow())
    assert recipients(message.id) == expected


def test_nothing_is_queued_for_a_draft_message_or_a_draft_day(ctx):
    add_subscriber("s@example.org")
    draft_message = add_message(make_fast_day(), status=CampaignStatus.DRAFT)
    on_draft_day = add_message(make_fast_day(status=FastDayStatus.DRAFT))
    db.session.commit()
    assert campaigns.enqueue_due(utcnow()) == 0
    assert rows_for(draft_message.id) == [] and rows_for(on_draft_day.id) == []


def test_cancel_stops_what_is_unsent_and_nothing_more_is_queued(ctx, mailbox):
    day = make_fast_day()
    add_subscriber("first@example.org")
    message = add_message(day)
    db.session.commit()
    campaigns.enqueue_due(utcnow())
    assert [r.state for r in rows_for(message.id)] == [OutboxState.QUEUED]
    assert campaigns.cancel(message) == 1
    db.session.commit()
    add_subscriber("later@example.org")
    db.session.commit()
    assert campaigns.enqueue_due(utcnow()) == 0
    assert [r.state for r in rows_for(message.id)] == [OutboxState.CANCELLED]
    assert str(outbox.drain()) == "nothing due"
    assert mailbox.messages == []
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "campaign.cancel")
    ).one()
    assert entry.after == {"status": "cancelled", "copies_stopped": 1}


def test_counts_group_each_messages_copies_by_state(ctx):
    day = make_fast_day()
    people = [add_subscriber(f"s{n}@example.org") for n in range(6)]
    message = add_message(day)
    db.session.commit()
    campaigns.enqueue_due(utcnow())
    rows = rows_for(message.id)
    sent_at = utcnow() - timedelta(minutes=30)
    for row, state in zip(
        rows,
        [
            OutboxState.SENT,
            OutboxState.SENT,
            OutboxState.SENT,
            OutboxState.BOUNCED,
            OutboxState.MISSED,
        ],
        strict=False,
    ):
        row.state = state
        row.sent_at = sent_at if state == OutboxState.SENT else None
    # One reader unsubscribed after receiving it.
    subscriptions.unsubscribe(people[0])
    db.session.commit()
    c = campaigns.counts([message])[message.id]
    assert (c.sent, c.bounced, c.missed, c.queued) == (3, 1, 1, 1)
    assert c.unsubscribed_after == 1
    assert c.total == 6


# --- the organizer's pages --------------------------------------------------------------------


@pytest.fixture
def organizer(app, client):
    """A signed-in organizer."""
    setup(app, lambda: make_user("organizer", email="organizer@example.org"))
    assert login(client, "organizer@example.org").status_code == 302
    return "organizer@example.org"


@pytest.fixture
def day_id(app):
    return setup(
        app,
        lambda: make_fast_day(status=FastDayStatus.SCHEDULED, when=TODAY + timedelta(days=20)).id,
    )


def message_form(**overrides) -> dict:
    data = {
        "name": "Dawn",
        "audience": "all",
        "send_kind": "local",
        "local_time": "07:00",
        "sun_event": "",
        "offset_minutes": "0",
        "send_at": "",
        "default_locale": "en",
        "subject_en": "The fast begins",
        "body_en": "Today we fast **together**. [Give](https://example.org/give)",
        "subject_fr": "Le jeûne commence",
        "body_fr": "Aujourd'hui nous jeûnons **ensemble**.",
    }
    data.update(overrides)
    return data


def create(client, day_id: int, **overrides):
    response = post_form(
        client, f"/admin/fast-days/{day_id}/messages/new", message_form(**overrides)
    )
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(re.search(r"/messages/(\d+)$", response.headers["Location"]).group(1))


def message_in_db(app, message_id: int) -> dict:
    with app.app_context():
        m = db.session.get(CampaignMessage, message_id)
        return {
            "status": m.status,
            "send_kind": m.send_kind,
            "local_time": m.local_time,
            "texts": {t.locale: (t.subject, t.body_markdown) for t in m.texts},
        }


def audit_actions(app) -> list[str]:
    with app.app_context():
        return list(
            db.session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.action.like("campaign.%"))
                .order_by(AuditEntry.id)
            )
        )


def test_organizer_writes_previews_tests_schedules_and_cancels(
    app, client, organizer, day_id, mailbox
):
    message_id = create(client, day_id)
    facts = message_in_db(app, message_id)
    assert facts["status"] == "draft" and facts["local_time"] == time(7, 0)
    assert set(facts["texts"]) == {"en", "fr"}  # the empty languages are left out
    url = f"/admin/fast-days/{day_id}/messages/{message_id}"

    page = client.get(url).get_data(as_text=True)
    assert "The fast begins" in page and "Le jeûne commence" in page
    assert "<strong>together</strong>" in page and "<strong>ensemble</strong>" in page
    assert "07:00 in each subscriber" in page

    preview = client.get(f"{url}/preview/fr")
    assert preview.status_code == 200
    assert "<strong>ensemble</strong>" in preview.get_data(as_text=True)
    assert "script-src" not in preview.headers["Content-Security-Policy"]
    assert "default-src 'none'" in preview.headers["Content-Security-Policy"]

    sent = post_form(client, f"{url}/test", {"locale": "fr"}, form_page=url)
    assert sent.status_code == 303
    mail = mailbox.wait_for(1)[0]
    assert mail["To"] == organizer
    assert "Le jeûne commence" in mail["Subject"] and "Test" in mail["Subject"]
    assert "<strong>ensemble</strong>" in mail.get_body(("html",)).get_content()
    with app.app_context():  # a test is not one of the message's copies
        assert rows_for(message_id) == []

    assert post_form(client, f"{url}/schedule", form_page=url).status_code == 303
    assert message_in_db(app, message_id)["status"] == "scheduled"
    # Scheduled messages are frozen: editing is refused.
    edit = post_form(client, f"{url}/edit", message_form(name="Changed"), form_page=url)
    assert edit.status_code == 400
    assert "Only a draft can be edited" in edit.get_data(as_text=True)

    assert post_form(client, f"{url}/cancel", form_page=url).status_code == 303
    assert message_in_db(app, message_id)["status"] == "cancelled"
    assert audit_actions(app) == ["campaign.create", "campaign.schedule", "campaign.cancel"]


def test_draft_can_be_edited_and_a_scheduled_one_put_back_to_draft(app, client, organizer, day_id):
    message_id = create(client, day_id)
    url = f"/admin/fast-days/{day_id}/messages/{message_id}"
    form = client.get(f"{url}/edit").get_data(as_text=True)
    assert 'value="The fast begins"' in form
    changed = post_form(
        client, f"{url}/edit", message_form(subject_fr="", body_fr="", local_time="06:30")
    )
    assert changed.status_code == 303
    facts = message_in_db(app, message_id)
    assert facts["local_time"] == time(6, 30) and set(facts["texts"]) == {"en"}
    assert post_form(client, f"{url}/schedule", form_page=url).status_code == 303
    assert post_form(client, f"{url}/unschedule", form_page=url).status_code == 303
    assert message_in_db(app, message_id)["status"] == "draft"
    assert audit_actions(app) == [
        "campaign.create",
        "campaign.update",
        "campaign.schedule",
        "campaign.unschedule",
    ]


@pytest.mark.parametrize(
    ("overrides", "label", "error"),
    [
        ({"subject_en": ""}, "Subject in English", "Enter a subject in the default language."),
        (
            {"body_en": "  "},
            "Message in English (Markdown)",
            "Write the message in the default language.",
        ),
        ({"local_time": "25:00"}, "Local time", "Enter a time like 07:00."),
        ({"local_time": ""}, "Local time", "Enter the local time of day."),
        ({"send_kind": "sun", "sun_event": "noon"}, "Sun event", "Choose sunrise or sunset."),
        ({"send_kind": "sun", "sun_event": ""}, "Sun event", "Choose sunrise or sunset."),
        (
            {"send_kind": "utc", "send_at": "tomorrow"},
            "Date and time in UTC",
            "Enter a date and time like",
        ),
        ({"send_kind": "utc"}, "Date and time in UTC", "Enter the date and time in UTC."),
        ({"subject_fr": ""}, "Subject in French", "Give both a subject and a message"),
        (
            {"send_kind": "sun", "sun_event": "sunset", "offset_minutes": "900"},
            "Minutes after",
            "Keep the shift within 720 minutes.",
        ),
        ({"name": ""}, "Name", "Give the message a name."),
    ],
)
def test_editor_names_the_field_at_fault_and_saves_nothing(
    app, client, organizer, day_id, overrides, label, error
):
    response = post_form(
        client, f"/admin/fast-days/{day_id}/messages/new", message_form(**overrides)
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert error in html
    assert label in html
    with app.app_context():
        assert db.session.scalar(select(CampaignMessage.id)) is None


def test_message_time_in_the_past_cannot_be_scheduled(app, client, organizer, day_id):
    message_id = create(client, day_id, send_kind="utc", send_at="2020-01-01T05:00")
    url = f"/admin/fast-days/{day_id}/messages/{message_id}"
    response = post_form(client, f"{url}/schedule", form_page=url)
    assert response.status_code == 400
    assert "time has passed" in response.get_data(as_text=True)
    assert message_in_db(app, message_id)["status"] == "draft"


def test_list_shows_each_message_with_its_counts(app, client, organizer):
    def build():
        day = make_fast_day()
        for n in range(3):
            add_subscriber(f"s{n}@example.org")
        message = add_message(day)
        db.session.commit()
        campaigns.enqueue_due(utcnow())
        first = rows_for(message.id)[0]
        first.state, first.sent_at = OutboxState.SENT, utcnow()
        rows_for(message.id)[1].state = OutboxState.BOUNCED
        add_message(day, status=CampaignStatus.DRAFT).name = "Sunset draft"
        return day.id

    day_id = setup(app, build)
    html = client.get(f"/admin/fast-days/{day_id}/messages").get_data(as_text=True)
    assert "Iftar" in html and "Sunset draft" in html
    assert re.search(r"<strong>1</strong> sent", html)
    assert re.search(r"<strong>1</strong> queued", html)
    assert re.search(r"<strong>1</strong> bounced", html)
    day_page = client.get(f"/admin/fast-days/{day_id}").get_data(as_text=True)
    assert f'href="/admin/fast-days/{day_id}/messages"' in day_page


def test_cancel_from_the_page_drops_queued_copies(app, client, organizer):
    def build():
        day = make_fast_day()
        add_subscriber("s@example.org")
        message = add_message(day)
        db.session.commit()
        campaigns.enqueue_due(utcnow())
        return day.id, message.id

    day_id, message_id = setup(app, build)
    url = f"/admin/fast-days/{day_id}/messages/{message_id}"
    assert "1 queued" in re.sub(r"</?strong>", "", client.get(url).get_data(as_text=True))
    assert post_form(client, f"{url}/cancel", form_page=url).status_code == 303
    with app.app_context():
        assert [r.state for r in rows_for(message_id)] == [OutboxState.CANCELLED]


def test_partners_and_visitors_are_kept_out(app, client, day_id):
    setup(app, lambda: make_user("partner", email="partner@example.org", group=make_group()))
    url = f"/admin/fast-days/{day_id}/messages"
    assert client.get(url).status_code == 302  # to sign in
    login(client, "partner@example.org")
    assert client.get(url).status_code == 403
    assert client.get(f"{url}/new").status_code == 403


def test_posting_without_a_csrf_token_is_refused(app, client, organizer, day_id):
    response = client.post(f"/admin/fast-days/{day_id}/messages/new", data=message_form())
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(select(CampaignMessage.id)) is None


def test_send_due_command_queues_and_sends_in_one_pass(app, runner, mailbox):
    def build():
        day = make_fast_day()
        add_subscriber("a@example.org")
        add_subscriber("b@example.org")
        add_message(day)

    setup(app, build)
    result = runner.invoke(args=["campaigns", "send-due"])
    assert result.exit_code == 0, result.output
    assert "queued 2 new copies" in result.output
    assert "sent 2" in result.output
    assert sorted(m["To"] for m in mailbox.wait_for(2)) == ["a@example.org", "b@example.org"]
    again = runner.invoke(args=["campaigns", "send-due"])
    assert "queued 0 new copies" in again.output and "nothing due" in again.output
    assert len(mailbox.messages) == 2


def test_editor_shows_every_missing_piece_at_once(app, client, organizer, day_id):
    response = post_form(
        client,
        f"/admin/fast-days/{day_id}/messages/new",
        message_form(name="", subject_en="", body_en="", local_time=""),
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    for error in (
        "Give the message a name.",
        "Enter a subject in the default language.",
        "Write the message in the default language.",
        "Enter the local time of day.",
    ):
        assert html.count(error) == 2  # in the summary at the top and beside its field
