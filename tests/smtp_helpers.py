"""A real SMTP relay for the outbox's tests that can misbehave on command.

``Relay`` runs aiosmtpd on a free port, keeps what it accepted (recipient, Message-ID,
subject), and can answer chosen recipients with 4xx or 5xx codes, drop the connection every
N messages, or hold a message in DATA until the test lets it go.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Received:
    """One message the relay accepted."""

    to: str
    message_id: str
    subject: str
    body: str


class Relay:
    """An aiosmtpd handler with faults, and the controller that serves it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.received: list[Received] = []
        # Replies to RCPT TO, per address, one per attempt; once used up, the address is accepted.
        self.scripted: dict[str, list[str]] = {}
        # Replies to RCPT TO for every attempt (a 550 stays a 550).
        self.always: dict[str, str] = {}
        self.rcpt_attempts: Counter[str] = Counter()
        self.drop_every: int | None = None  # drop the connection after every N-th message
        self.drops = 0
        self.connections = 0
        self._accepted_since_drop = 0
        self.hold: threading.Event | None = None  # DATA waits for this, if set
        self.holding = threading.Event()  # set while a message is held in DATA
        self._controller = Controller(self, hostname="127.0.0.1", port=port)

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> Relay:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    # -- aiosmtpd hooks --------------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            drop = self.drop_every is not None and self._accepted_since_drop >= self.drop_every
            if drop:
                self._accepted_since_drop = 0
                self.drops += 1
        if drop:
            # A hard drop, no reply: the client cannot know more than that the line went dead.
            server.transport.abort()
            return "421 4.4.2 connection dropped"  # never reaches the client
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        key = address.lower()
        with self.lock:
            self.rcpt_attempts[key] += 1
            if key in self.always:
                return self.always[key]
            replies = self.scripted.get(key)
            if replies:
                return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.hold is not None:
            self.holding.set()
            await asyncio.get_running_loop().run_in_executor(None, self.hold.wait)
        message = message_from_bytes(envelope.content, policy=policy.default)
        body = message.get_body(("plain",))
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append(
                    Received(
                        to=rcpt.lower(),
                        message_id=str(message["Message-ID"]),
                        subject=str(message["Subject"]),
                        body=body.get_content() if body is not None else "",
                    )
                )
            self._accepted_since_drop += 1
        return "250 OK"

    async def handle_exception(self, error):
        # A write to a connection this relay dropped on purpose: nothing to report.
        return "421 4.4.2 closing"

    # -- for the tests ---------------------------------------------------------------------

    def count(self) -> int:
        """How many messages were accepted so far."""
        with self.lock:
            return len(self.received)

    def by_recipient(self) -> dict[str, list[Received]]:
        """What each address received, in order."""
        result: dict[str, list[Received]] = {}
        with self.lock:
            for item in self.received:
                result.setdefault(item.to, []).append(item)
        return result

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.scripted.clear()
            self.always.clear()
            self.rcpt_attempts.clear()
            self.drop_every = None
            self.drops = self.connections = self._accepted_since_drop = 0
            self.hold = None
            self.holding.clear()


@contextmanager
def relay_for(app, port: int) -> Iterator[Relay]:
    """Run a Relay on ``port`` and point the app's mail settings at it for the block."""
    relay = Relay(port).start()
    saved = app.config["MAIL_PORT"]
    app.config["MAIL_PORT"] = port
    try:
        yield relay
    finally:
        app.config["MAIL_PORT"] = saved
        if relay.hold is not None:
            relay.hold.set()
        relay.stop()


def outgoing(n: int, *, prefix: str = "test", domain: str = "example.org", **extra):
    """``n`` distinct test messages, ``<prefix>-<i>@<domain>``, keyed ``<prefix>:<i>``."""
    from fundraiser.outbox import Outgoing

    return [
        Outgoing(
            key=f"{prefix}:{i}",
            kind=prefix,
            to_email=f"{prefix}-{i}@{domain}",
            subject=f"Message {i}",
            text_body=f"Hello number {i}.",
            **extra,
        )
        for i in range(n)
    ]


def queue_messages(n: int, *, prefix: str = "test", **extra) -> list[str]:
    """Queue and commit ``n`` messages for the scheduler to send; returns their addresses."""
    from fundraiser import outbox
    from fundraiser.database import writing
    from fundraiser.extensions import db

    messages = outgoing(n, prefix=prefix, **extra)
    with writing():
        outbox.enqueue_many(messages, kick=False)
        db.session.commit()
    return [m.to_email for m in messages]
