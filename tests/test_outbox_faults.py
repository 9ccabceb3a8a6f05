"""The outbox under faults (RELIABILITY.md S2 and S6), against a real SMTP relay.

S2 kills a real sender process (``flask --app wsgi outbox drain``) with SIGKILL at random
moments; S6 has the relay refuse, greylist and hang up on the sender.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from fundraiser import outbox
from fundraiser.extensions import db
from fundraiser.models import OutboxMessage, OutboxState, Suppression
from tests.conftest import free_port
from tests.smtp_helpers import queue_messages, relay_for

ROOT = Path(__file__).resolve().parents[1]


def _rows() -> dict[str, OutboxMessage]:
    db.session.expire_all()
    rows = {row.to_email: row for row in db.session.scalars(select(OutboxMessage))}
    db.session.commit()  # end the read: the sender in the other process writes
    return rows


def _backlog() -> dict[str, int]:
    backlog = outbox.backlog()
    db.session.commit()
    return backlog


# --- S2 --------------------------------------------------------------------------------------


def _start_sender(app, relay_port: int, stale_seconds: float) -> subprocess.Popen:
    env = {
        **os.environ,
        "FUNDRAISER_ENV": "development",  # reads MAIL_* and DATABASE_URL from here
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(relay_port),
        "MAIL_STALE_CLAIM_SECONDS": str(stale_seconds),
        "MAIL_BATCH_SIZE": "100",
        "MAIL_SEND_ON_COMMIT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "outbox", "drain"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_s2_killing_the_sender_ten_times_misses_nobody_and_duplicates_one_per_kill_at_most(
    app, ctx
):
    recipients = 5000
    stale_seconds = 1.0
    rng = random.Random(2)
    with relay_for(app, free_port()) as relay:
        addresses = queue_messages(recipients, prefix="s2")
        db.session.commit()
        # Kill when the relay has taken a random number of messages, plus a random instant:
        # mid-conversation, between the relay's answer and the commit, or mid-commit.
        targets = sorted(rng.sample(range(100, recipients - 500), 10))
        kills = 0
        for target in targets:
            while True:
                sender = _start_sender(app, relay.port, stale_seconds)
                while relay.count() < target and sender.poll() is None:
                    time.sleep(0.002)
                if sender.poll() is None:
                    break
                # It finished what it could reach (the rest still claimed by a dead one).
                assert sender.returncode == 0, sender.stderr.read().decode()
                sender.stderr.close()
                time.sleep(stale_seconds)
            time.sleep(rng.uniform(0, 0.01))
            sender.send_signal(signal.SIGKILL)
            sender.wait(timeout=10)
            sender.stderr.close()
            kills += 1

        # Let it finish: the dead senders' claims go stale and are sent by a live one.
        deadline = time.monotonic() + 120
        while _backlog() != {"sent": recipients}:
            assert time.monotonic() < deadline, _backlog()
            sender = _start_sender(app, relay.port, stale_seconds)
            _out, err = sender.communicate(timeout=120)
            assert sender.returncode == 0, err.decode()
            if _backlog() != {"sent": recipients}:
                time.sleep(stale_seconds)

        received = relay.by_recipient()
    rows = _rows()
    assert kills == 10
    missed = [a for a in addresses if a not in received]
    assert missed == []
    duplicates = sum(len(got) - 1 for got in received.values())
    assert duplicates <= kills
    for address, got in received.items():
        # A message sent twice carries the same Message-ID both times: clients show it once.
        assert {r.message_id for r in got} == {rows[address].message_id}


# --- S6 --------------------------------------------------------------------------------------


def test_s6_greylisting_refusals_and_dropped_connections_serve_everyone_else_exactly_once(
    app, ctx, monkeypatch
):
    """451 to 10 % of recipients (their first attempt: greylisting), 550 to 2 %, and the
    connection dropped after every 37 messages."""
    recipients = 1000
    monkeypatch.setitem(app.config, "MAIL_RETRY_BASE_SECONDS", 0.02)
    rng = random.Random(6)
    with relay_for(app, free_port()) as relay:
        addresses = queue_messages(recipients, prefix="s6")
        shuffled = rng.sample(addresses, recipients)
        greylisted = set(shuffled[:100])
        unknown = set(shuffled[100:120])
        for address in greylisted:
            relay.scripted[address] = ["451 4.7.1 Greylisted, please try again later"]
        for address in unknown:
            relay.always[address] = f"550 5.1.1 <{address}>: Recipient address rejected"
        relay.drop_every = 37

        deadline = time.monotonic() + 60
        while _backlog().get("queued"):
            assert time.monotonic() < deadline, _backlog()
            outbox.drain()
            threading.Event().wait(0.02)  # the retries' backoff
        received = relay.by_recipient()
        drops = relay.drops

    rows = _rows()
    served = set(addresses) - unknown
    assert set(received) == served
    assert all(len(got) == 1 for got in received.values())  # exactly once
    assert drops >= (recipients - len(unknown)) // 37
    assert {a for a, r in rows.items() if r.state == OutboxState.BOUNCED} == unknown
    assert {a for a, r in rows.items() if r.state == OutboxState.SENT} == served
    assert set(db.session.scalars(select(Suppression.email))) == unknown
    # Each greylisted address got through on its second attempt; the others on their first.
    assert {rows[a].attempts for a in greylisted} == {2}
    assert {rows[a].attempts for a in served - greylisted} == {1}
