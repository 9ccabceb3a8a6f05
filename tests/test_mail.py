"""E-mail is an outbox row from the commit, and leaves through a real SMTP server afterwards.

The row is written in the transaction that caused it; the message leaves when the request
(or command) that committed it ends, through ``outbox.send_committed()``, or when the
scheduler drains the outbox.
"""

from __future__ import annotations

from sqlalchemy import func, select

from fundraiser import mail, outbox
from fundraiser.extensions import db
from fundraiser.models import OutboxMessage, OutboxState, PledgeStatus
from tests.factories import make_fast_day, make_group, make_pledge


def _outbox() -> list[OutboxMessage]:
    db.session.expire_all()
    return list(db.session.scalars(select(OutboxMessage)))


def test_receipt_is_sent_after_commit_in_text_and_html_with_the_split(app, mailbox):
    with app.app_context():
        groups = [make_group("Olive Kitchen"), make_group("Water For All")]
        day = make_fast_day(groups=groups, weights=[1, 1])
        pledge = make_pledge(day, amount_minor=2001, status=PledgeStatus.SUCCEEDED)
        email, token = pledge.email, pledge.token
        mail.queue_receipt(pledge)
        db.session.commit()
        # The commit made it a row; it leaves as the request or command ends, not before.
        (row,) = _outbox()
        assert (row.state, row.kind, row.to_email) == (OutboxState.QUEUED, "receipt", email)
        assert mailbox.messages == []

    (message,) = mailbox.wait_for(1)
    assert message["To"] == email
    assert "Thank you for your gift" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "$20.01" in text and "$20.01" in html
    # The split is shown to the cent and sums to the gift: 10.01 + 10.00.
    assert "Olive Kitchen: $10.01" in text
    assert "Water For All: $10.00" in text
    assert f"/pledge/{token}" in text
    assert "List-Unsubscribe" not in message  # receipts carry no unsubscribe
    with app.app_context():
        (row,) = _outbox()
        assert row.state == OutboxState.SENT
        assert message["Message-ID"] == row.message_id


def test_receipt_is_not_sent_when_the_transaction_rolls_back(app, ctx, mailbox):
    day = make_fast_day()
    pledge = make_pledge(day, status=PledgeStatus.SUCCEEDED)
    mail.queue_receipt(pledge)
    db.session.rollback()
    db.session.commit()
    assert outbox.send_committed() is None
    assert outbox.drain().handled == 0
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert mailbox.messages == []


def test_the_same_receipt_queued_twice_is_sent_once(app, ctx, mailbox):
    day = make_fast_day()
    pledge = make_pledge(day, status=PledgeStatus.SUCCEEDED)
    mail.queue_receipt(pledge)
    mail.queue_receipt(pledge)  # a replayed webhook, a retried job
    db.session.commit()
    assert outbox.send_committed().sent == 1
    assert outbox.drain().handled == 0
    assert len(mailbox.messages) == 1


def test_unreachable_mail_server_does_not_break_the_commit_and_the_receipt_waits(app, ctx, mailbox):
    day = make_fast_day()
    pledge = make_pledge(day, status=PledgeStatus.SUCCEEDED)
    port = app.config["MAIL_PORT"]
    app.config["MAIL_PORT"] = 9  # nothing listens there
    try:
        mail.queue_receipt(pledge)
        db.session.commit()
        report = outbox.send_committed()
        assert report is not None and report.relay_down
    finally:
        app.config["MAIL_PORT"] = port
    assert pledge.receipt_queued_at is not None
    (row,) = _outbox()
    assert (row.state, row.attempts) == (OutboxState.QUEUED, 0)

    # The scheduler's next pass, with the relay back, sends it.
    assert outbox.drain().sent == 1
    (message,) = mailbox.wait_for(1)
    assert message["To"] == pledge.email


def test_a_batch_of_receipts_each_says_its_own_day_group_split_and_language(app, mailbox):
    """Receipts drained together are written from one read of their pledges and days."""
    with app.app_context():
        clinic, bakery = make_group("Clinic North"), make_group("Bakery South")
        first = make_fast_day(groups=[clinic, bakery], weights=[3, 1])
        first.title, first.translations = "Spring fast", {"ar": {"title": "صيام الربيع"}}
        second = make_fast_day(groups=[bakery], weights=[1])
        second.title = "Autumn fast"
        pooled = make_pledge(first, amount_minor=1001, status=PledgeStatus.SUCCEEDED)
        to_clinic = make_pledge(
            first, amount_minor=700, group=clinic, status=PledgeStatus.SUCCEEDED
        )
        in_arabic = make_pledge(first, amount_minor=400, status=PledgeStatus.SUCCEEDED)
        in_arabic.locale = "ar"
        other_day = make_pledge(second, amount_minor=900, status=PledgeStatus.SUCCEEDED)
        pledges = [pooled, to_clinic, in_arabic, other_day]
        emails = [pledge.email for pledge in pledges]
        for pledge in pledges:
            mail.queue_receipt(pledge)
        db.session.commit()
        db.session.remove()
        with app.app_context():  # one drain, no request: a single batch
            assert outbox.drain().sent == 4

    by_address = {message["To"]: message for message in mailbox.wait_for(4)}
    text = {to: m.get_body(("plain",)).get_content() for to, m in by_address.items()}
    # A pooled gift is split 3:1 to the cent: 750.75 + 250.25 of 1001 cents.
    assert "Spring fast" in text[emails[0]]
    assert "Clinic North: $7.51" in text[emails[0]] and "Bakery South: $2.50" in text[emails[0]]
    # A gift to one group names only it.
    assert "Clinic North" in text[emails[1]] and "Bakery South" not in text[emails[1]]
    # The day's title in the donor's language, where organizers wrote one.
    assert "صيام الربيع" in by_address[emails[2]]["Subject"]
    assert "صيام الربيع" in text[emails[2]]
    # Another day in the same batch keeps its own title and split.
    assert "Autumn fast" in text[emails[3]] and "Bakery South" in text[emails[3]]
    assert "Clinic North" not in text[emails[3]]
