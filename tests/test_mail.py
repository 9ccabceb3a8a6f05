"""E-mail leaves only after the database commit, through a real SMTP server."""

from __future__ import annotations

import time

from fundraiser import mail
from fundraiser.extensions import db
from fundraiser.models import PledgeStatus
from tests.factories import make_fast_day, make_group, make_pledge


def test_receipt_is_sent_after_commit_in_text_and_html_with_the_split(app, ctx, mailbox):
    groups = [make_group("Olive Kitchen"), make_group("Water For All")]
    day = make_fast_day(groups=groups, weights=[1, 1])
    pledge = make_pledge(day, amount_minor=2001, status=PledgeStatus.SUCCEEDED)
    mail.queue_receipt(pledge)
    assert mailbox.messages == []  # nothing leaves before the commit
    db.session.commit()

    (message,) = mailbox.wait_for(1)
    assert message["To"] == pledge.email
    assert "Thank you for your gift" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "$20.01" in text and "$20.01" in html
    # The split is shown to the cent and sums to the gift: 10.01 + 10.00.
    assert "Olive Kitchen: $10.01" in text
    assert "Water For All: $10.00" in text
    assert f"/pledge/{pledge.token}" in text
    assert message["Message-ID"]


def test_receipt_is_not_sent_when_the_transaction_rolls_back(app, ctx, mailbox):
    day = make_fast_day()
    pledge = make_pledge(day, status=PledgeStatus.SUCCEEDED)
    mail.queue_receipt(pledge)
    db.session.rollback()
    db.session.commit()
    time.sleep(0.3)
    assert mailbox.messages == []


def test_unreachable_mail_server_does_not_break_the_commit(app, ctx, mailbox):
    day = make_fast_day()
    pledge = make_pledge(day, status=PledgeStatus.SUCCEEDED)
    port = app.config["MAIL_PORT"]
    app.config["MAIL_PORT"] = 9  # nothing listens there
    try:
        mail.queue_receipt(pledge)
        db.session.commit()
    finally:
        app.config["MAIL_PORT"] = port
    assert pledge.receipt_queued_at is not None
