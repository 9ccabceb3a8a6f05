"""The bytes a message leaves as: written directly, and read back as the email package writes it."""

from __future__ import annotations

import email
import email.policy
from datetime import timedelta

import pytest

from fundraiser import campaigns, outbox
from fundraiser.extensions import db
from fundraiser.models import (
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    OutboxMessage,
    SendKind,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.factories import make_fast_day

ARABIC_SUBJECT = "أفطروا مع غزة الليلة"
LONG_URL = "https://example.org/messages/unsubscribe/" + "t" * 120


def _parsed(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def _wire(parts: outbox.Parts, to: str = "reader@example.org") -> bytes:
    return outbox.wire_bytes(
        parts,
        sender="Fast for Gaza <gifts@example.org>",
        to=to,
        date="Tue, 24 Nov 2026 04:01:38 +0000",
        message_id="<m.1@fundraiser.local>",
        boundary="=_test",
    )


def test_written_bytes_read_back_as_what_the_email_package_builds(ctx):
    text = "سلام\n\nA line of ASCII.\n" + "x" * 200 + "\n"
    html = '<p dir="rtl">سلام</p>\n<p>' + "y" * 300 + "</p>\n"
    parts = outbox.Parts(
        ARABIC_SUBJECT,
        text,
        html,
        {
            "List-Unsubscribe": f"<{LONG_URL}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    fast = _parsed(_wire(parts))
    row = type(
        "Row", (), {"to_email": "reader@example.org", "message_id": "<m.1@fundraiser.local>"}
    )()
    built = outbox.to_email_message(row, parts)
    # As smtplib's send_message put it on the wire before.
    slow = _parsed(built.as_bytes(policy=built.policy.clone(linesep="\r\n")))
    for name in ("From", "To", "Subject", "Message-ID", "List-Unsubscribe-Post"):
        assert fast[name] == slow[name], name
    assert fast["Subject"] == ARABIC_SUBJECT
    # Whole, on one line: the email package would write it as encoded words, which mail
    # clients do not decode in List-Unsubscribe.
    assert fast["List-Unsubscribe"] == f"<{LONG_URL}>"
    assert fast.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        assert fast.get_body((kind,)).get_content() == slow.get_body((kind,)).get_content()


def test_written_bytes_keep_to_smtp_line_rules(ctx):
    data = _wire(outbox.Parts("Hello", "é" * 500 + "\n.starts with a dot\n", "<b>" * 400, {}))
    lines = data.split(b"\r\n")
    assert b"\n" not in b"".join(lines) and b"\r" not in b"".join(lines)  # CRLF only
    assert max(len(line) for line in lines) <= 78
    assert data.isascii()  # 7-bit clean: no relay needs 8BITMIME for it


def test_a_plain_message_without_html_is_one_text_part(ctx):
    message = _parsed(_wire(outbox.Parts("Hello", "Just text.", None, {})))
    assert message.get_content_type() == "text/plain"
    assert message.get_content().replace("\r\n", "\n") == "Just text.\n"


def test_a_header_with_a_line_break_is_refused(ctx):
    with pytest.raises(ValueError, match="line break"):
        _wire(outbox.Parts("Hello\r\nBcc: victim@example.org", "Text.", None, {}))


def test_an_arabic_readers_copy_is_sent_right_to_left_with_its_own_links(ctx):
    day = make_fast_day()
    reader = Subscriber(
        email="ar@example.org", locale="ar", timezone="UTC", status=SubscriberStatus.CONFIRMED
    )
    db.session.add(reader)
    message = CampaignMessage(
        fast_day=day,
        name="Iftar",
        send_kind=SendKind.UTC_INSTANT,
        send_at=utcnow() - timedelta(minutes=5),
        default_locale="en",
        status=CampaignStatus.SCHEDULED,
    )
    message.texts.append(CampaignText(locale="en", subject="Tonight", body_markdown="Hello."))
    message.texts.append(
        CampaignText(locale="ar", subject=ARABIC_SUBJECT, body_markdown="**مرحبا**")
    )
    db.session.add(message)
    db.session.commit()
    assert campaigns.enqueue_due(utcnow()) == 1
    assert campaigns.enqueue_due(utcnow()) == 0  # a second pass adds nothing
    row = db.session.query(OutboxMessage).filter_by(subscriber_id=reader.id).one()
    sent = outbox.as_sent(row.id)
    assert sent["Subject"] == ARABIC_SUBJECT
    html = sent.get_body(("html",)).get_content()
    assert 'dir="rtl"' in html and "<strong>مرحبا</strong>" in html
    unsubscribe = sent["List-Unsubscribe"].strip("<>")
    assert f'href="{unsubscribe}"' in html
    assert sent["Message-ID"] == row.message_id
