"""The outbox: queued in the transaction, sent once over a reused connection, with honest outcomes."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from fundraiser import outbox
from fundraiser.database import writing
from fundraiser.extensions import db
from fundraiser.models import OutboxMessage, OutboxState, Suppression, utcnow
from tests.conftest import free_port
from tests.smtp_helpers import Relay, outgoing, queue_messages, relay_for


@pytest.fixture
def relay(app):
    """A relay of this test's own, which the app sends to."""
    with relay_for(app, free_port()) as r:
        yield r


def _row(key: str) -> OutboxMessage:
    db.session.expire_all()
    return db.session.scalars(select(OutboxMessage).where(OutboxMessage.key == key)).one()


def _states() -> dict[str, int]:
    db.session.expire_all()
    backlog = outbox.backlog()
    db.session.commit()
    return backlog


# --- queuing -------------------------------------------------------------------------------


def test_queuing_the_same_key_twice_keeps_one_row(app, ctx):
    (message,) = outgoing(1)
    assert outbox.enqueue(message, kick=False) is True
    assert outbox.enqueue(message, kick=False) is False
    db.session.commit()
    assert outbox.enqueue(message, kick=False) is False  # also across transactions
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_two_concurrent_enqueues_with_overlapping_keys_add_each_key_once(app, ctx):
    first = outgoing(300)[:200]
    second = outgoing(300)[100:][::-1]  # 100 keys in common, queued in the other order
    start = threading.Barrier(2)
    added: list[int] = []
    errors: list[BaseException] = []

    def enqueue(messages) -> None:
        try:
            with app.app_context():
                start.wait()
                with writing():
                    added.append(outbox.enqueue_many(messages, kick=False))
                    db.session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=enqueue, args=(m,)) for m in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(added) == 300
    keys = db.session.scalars(select(OutboxMessage.key)).all()
    assert sorted(keys) == sorted(f"test:{i}" for i in range(300))


def test_a_rolled_back_transaction_leaves_no_row_and_sends_nothing(app, ctx, relay):
    outbox.enqueue(outgoing(1)[0])
    db.session.rollback()
    assert outbox.send_committed() is None
    assert outbox.drain().handled == 0
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    assert relay.count() == 0 and relay.connections == 0


def test_a_committed_message_is_a_row_and_leaves_when_the_context_ends(app, relay):
    with app.app_context():
        outbox.enqueue(outgoing(1)[0])
        db.session.commit()
        assert _states() == {"queued": 1}
        assert relay.count() == 0  # not while the request (or command) is still running
    (received,) = relay.received
    assert received.to == "test-0@example.org"
    with app.app_context():
        assert _states() == {"sent": 1}


# --- sending -------------------------------------------------------------------------------


def test_one_connection_carries_a_whole_batch(app, ctx, relay):
    queue_messages(30)
    report = outbox.drain()
    assert report.sent == 30
    assert relay.count() == 30
    assert relay.connections == 1


def test_a_dropped_connection_is_resumed_on_a_new_one_losing_and_doubling_nothing(app, ctx, relay):
    relay.drop_every = 7
    addresses = queue_messages(30)
    report = outbox.drain()
    assert report.sent == 30 and report.retried == 0
    assert sorted(relay.by_recipient()) == sorted(addresses)
    assert all(len(got) == 1 for got in relay.by_recipient().values())
    assert relay.drops == 4
    assert relay.connections == 5


def test_a_temporary_refusal_is_retried_with_doubling_delays_then_sent(
    app, ctx, relay, monkeypatch
):
    monkeypatch.setitem(app.config, "MAIL_RETRY_BASE_SECONDS", 60)
    relay.scripted["test-0@example.org"] = ["451 4.7.1 greylisted", "452 4.2.2 mailbox full"]
    queue_messages(1)
    t0 = utcnow()

    assert outbox.drain(now=t0).retried == 1
    first_retry = _row("test:0").next_attempt_at
    assert timedelta(seconds=59) < first_retry - t0 < timedelta(seconds=62)
    assert outbox.drain(now=t0 + timedelta(seconds=30)).handled == 0  # not before its time

    t1 = t0 + timedelta(seconds=61)
    assert outbox.drain(now=t1).retried == 1
    second_retry = _row("test:0").next_attempt_at
    assert timedelta(seconds=119) < second_retry - t1 < timedelta(seconds=122)

    assert outbox.drain(now=t1 + timedelta(seconds=121)).sent == 1
    row = _row("test:0")
    assert (row.state, row.attempts) == (OutboxState.SENT, 3)
    assert relay.count() == 1


def test_temporary_refusals_until_the_last_attempt_fail_the_message(
    app, ctx, relay, monkeypatch, caplog
):
    monkeypatch.setitem(app.config, "MAIL_MAX_ATTEMPTS", 3)
    monkeypatch.setitem(app.config, "MAIL_RETRY_BASE_SECONDS", 60)
    relay.always["test-0@example.org"] = "451 4.7.1 try later <test-0@example.org>"
    queue_messages(1)
    now = utcnow()
    for _ in range(5):
        now += timedelta(hours=1)
        outbox.drain(now=now)
    row = _row("test:0")
    assert (row.state, row.attempts) == (OutboxState.FAILED, 3)
    assert relay.rcpt_attempts["test-0@example.org"] == 3
    assert "failed after 3 attempts" in caplog.text
    assert "test-0@example.org" not in caplog.text  # logs never carry addresses


def test_a_permanent_refusal_bounces_suppresses_and_later_messages_are_not_sent(
    app, ctx, relay, caplog
):
    relay.always["test-0@example.org"] = "550 5.1.1 <test-0@example.org>: no such user"
    queue_messages(2)
    report = outbox.drain()
    assert (report.bounced, report.sent) == (1, 1)
    assert _row("test:0").state == OutboxState.BOUNCED
    assert db.session.scalars(select(Suppression.email)).all() == ["test-0@example.org"]

    outbox.enqueue(
        outbox.Outgoing(
            key="later",
            kind="test",
            to_email="Test-0@Example.org",  # the same address, written differently
            subject="Later",
            text_body="Later.",
        ),
        kick=False,
    )
    db.session.commit()
    assert outbox.drain().suppressed == 1
    assert _row("later").state == OutboxState.SUPPRESSED
    assert relay.rcpt_attempts["test-0@example.org"] == 1
    assert "test-0@example.org" not in caplog.text.lower()


def test_a_suppressed_address_is_marked_suppressed_without_talking_to_the_relay(app, ctx, relay):
    outbox.suppress("Test-0@example.org", "asked us to stop")
    db.session.commit()
    queue_messages(1)
    assert outbox.drain().suppressed == 1
    assert _row("test:0").state == OutboxState.SUPPRESSED
    assert relay.connections == 0


def test_a_message_past_its_expiry_is_marked_missed_with_a_warning_not_sent(
    app, ctx, relay, caplog
):
    due = utcnow() - timedelta(hours=7)
    queue_messages(3, due_at=due, expires_at=due + timedelta(hours=6), campaign_message_id=None)
    queue_messages(1, prefix="fresh", expires_at=utcnow() + timedelta(hours=6))
    with caplog.at_level(logging.WARNING, logger="fundraiser.outbox"):
        report = outbox.drain()
    assert (report.missed, report.sent) == (3, 1)
    assert _states() == {"missed": 3, "sent": 1}
    assert [r.to for r in relay.received] == ["fresh-0@example.org"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "3 test message(s)" in r.getMessage() and "missed" in r.getMessage() for r in warnings
    )
    assert "@example.org" not in caplog.text


def test_a_message_that_expires_while_waiting_in_a_batch_is_missed(app, ctx, relay):
    queue_messages(1, expires_at=utcnow() + timedelta(minutes=5))
    with writing():
        ids = outbox.claim(10)
        db.session.commit()
    report = outbox.send_claimed(ids, now=utcnow() + timedelta(minutes=6))
    assert report.missed == 1
    assert _row("test:0").state == OutboxState.MISSED
    assert relay.count() == 0


def test_a_relay_that_is_down_leaves_rows_queued_and_they_go_when_it_is_back(app, ctx):
    port = free_port()  # nothing listens here yet
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(app.config, "MAIL_PORT", port)
        queue_messages(5)
        report = outbox.drain()
        assert report.relay_down and report.handled == 0
        assert _states() == {"queued": 5}
        assert {r.attempts for r in db.session.scalars(select(OutboxMessage))} == {0}

        relay = Relay(port).start()
        try:
            assert outbox.drain().sent == 5
            assert relay.count() == 5
        finally:
            relay.stop()


def test_a_message_sent_again_after_a_crash_keeps_its_message_id(app, ctx, relay):
    queue_messages(1)
    assert outbox.drain().sent == 1
    message_id = _row("test:0").message_id
    # What a sender killed between the relay's "250" and its commit leaves behind: the row
    # still claimed, by nobody alive, long ago.
    db.session.execute(
        update(OutboxMessage).values(
            state=OutboxState.SENDING,
            claimed_by="dead-host:1/x",
            claimed_at=utcnow() - timedelta(hours=1),
            sent_at=None,
        )
    )
    db.session.commit()
    assert outbox.drain().sent == 1
    first, second = relay.received
    assert first.message_id == second.message_id == message_id
    assert message_id.startswith("<") and message_id.endswith(">")


def test_a_dead_senders_claims_are_queued_again_after_the_stale_claim_time(
    app, ctx, relay, monkeypatch
):
    monkeypatch.setitem(app.config, "MAIL_STALE_CLAIM_SECONDS", 0.3)
    queue_messages(3)
    with writing():
        assert len(outbox.claim(10)) == 3  # a sender claims, then dies
        db.session.commit()
    assert outbox.drain().handled == 0  # its claims are still fresh
    threading.Event().wait(0.4)
    assert outbox.drain().sent == 3
    assert relay.count() == 3


def test_a_message_cancelled_while_claimed_is_not_sent(app, ctx, relay):
    queue_messages(1)
    with writing():
        ids = outbox.claim(10)
        db.session.commit()
    # What erasing a subscriber does to a message a sender holds.
    db.session.execute(update(OutboxMessage).values(state=OutboxState.CANCELLED))
    db.session.commit()
    assert outbox.send_claimed(ids).handled == 0
    assert _row("test:0").state == OutboxState.CANCELLED
    assert relay.count() == 0


def test_two_senders_on_one_queue_send_each_message_once(app, ctx, relay):
    queue_messages(200)
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            with app.app_context():
                outbox.drain(batch_size=20)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    got = relay.by_recipient()
    assert len(got) == 200 and all(len(v) == 1 for v in got.values())
    assert _states() == {"sent": 200}


def test_the_sender_holds_no_lock_while_the_relay_is_talking(app, ctx, relay):
    """A slow relay must not make every request that writes wait behind the sender."""
    queue_messages(2)
    relay.hold = threading.Event()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            with app.app_context():
                outbox.drain()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        assert relay.holding.wait(10), "the relay never received the message"
        # Meanwhile another writer changes the very row being sent, and must not wait.
        with writing(), db.engine.connect() as conn:
            sqlite = conn.dialect.name == "sqlite"
            raw = conn.connection.driver_connection
            if sqlite:
                raw.execute("PRAGMA busy_timeout=500")
            else:
                conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
            try:
                conn.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.key == "test:0")
                    .values(last_error="touched while sending")
                )
                conn.commit()
            finally:
                if sqlite:
                    raw.execute("PRAGMA busy_timeout=30000")
    finally:
        relay.hold.set()
        thread.join(timeout=30)
    assert errors == []
    assert _states() == {"sent": 2}
