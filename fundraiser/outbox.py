"""The outbox: every e-mail is a row before it is a message, and leaves exactly once.

Queuing a message inserts a row under a unique key in the caller's transaction, so the
e-mail exists if and only if the change that caused it was committed, and queuing the same
thing twice (a retried job, a second scheduler) adds nothing.

Sending claims due rows first. On PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED``, so two
senders take disjoint rows; on SQLite, where one writer holds the database at a time, it is a
conditional ``UPDATE … WHERE state = 'queued'`` that only one sender can win per row. Each
claim carries its own token in ``claimed_by``. A claimed row is committed as ``sending``
before the SMTP conversation, and its outcome is committed on its own, only if the claim is
still this sender's. A success is written while the relay reads the next message's first
command (so the database's time hides behind the relay's), and always before that next
message is complete: a sender killed mid-batch leaves at most one message sent but
unrecorded, which is sent again (with the same Message-ID, so mail clients show it once)
when its claim goes stale (``MAIL_STALE_CLAIM_SECONDS``; a live sender refreshes its claims
as it goes).

Messages are written to bytes directly (see ``wire_bytes``), not through ``EmailMessage``,
whose header handling cost more than the SMTP exchange itself. A campaign copy is queued as
a bare row and rendered when sent, from its message's text in the reader's language and
links signed from the reader's id (``campaigns.copy_parts``).

No database transaction is open while the relay is talking: the row is read in a short read
transaction, the SMTP exchange happens with nothing held, and the outcome is written in a
short write transaction. On SQLite this matters most: the write lock is the whole database's,
and holding it through SMTP (milliseconds per message locally, seconds with a slow relay)
would make every web request that writes wait behind the sender.

Answers from the relay: 2xx sent; 4xx (greylisting, a full mailbox) retried with exponential
backoff until ``MAIL_MAX_ATTEMPTS``, then failed; 5xx to the recipient is final: the row is
bounced, the address suppressed, and later messages to it are marked suppressed without
being sent. A dropped connection (or a 421) is retried at once on a new connection; a relay
that cannot be reached leaves the batch queued, untouched, for a later pass. A message whose
``expires_at`` has passed is marked missed instead of sent, with a warning in the log.

Logs name rows by id and kind, never by address, and never carry bodies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.policy
import itertools
import logging
import os
import re
import secrets
import smtplib
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from functools import lru_cache
from typing import Any

from flask import current_app, g, has_app_context
from sqlalchemy import Select, bindparam, event, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from .database import writing
from .extensions import db
from .models import OutboxMessage, OutboxState, Subscriber, Suppression, utcnow

log = logging.getLogger(__name__)

_KICK_KEY = "outbox_kick_after_commit"
_TABLE = OutboxMessage.__table__

# A dropped connection is retried at once on a new one, this many times for the same message
# before that message waits its backoff like a 4xx (a message that kills the connection every
# time must not block the queue); this many failures in a row without one answer from the
# relay, and the rest of the batch is left for a later pass.
_DROPS_PER_MESSAGE = 2
_FAILURES_BEFORE_GIVING_UP = 3
# Rows whose claim and suppression are read in one query before they are sent: the check is
# this fresh at worst, against one query per message before.
_STANDING_WINDOW = 50


def message_id_domain() -> str:
    """The domain part of the Message-IDs this app writes (MAIL_MESSAGE_ID_DOMAIN)."""
    return current_app.config.get("MAIL_MESSAGE_ID_DOMAIN") or "fundraiser.local"


def new_message_id() -> str:
    """A Message-ID fixed when a message is queued, so a re-send carries the same one."""
    return make_msgid(domain=message_id_domain())


@dataclass(frozen=True)
class Outgoing:
    """One message to queue: everything the outbox row needs."""

    key: str
    kind: str
    to_email: str
    subject: str
    text_body: str
    html_body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    due_at: datetime | None = None
    expires_at: datetime | None = None
    campaign_message_id: int | None = None
    subscriber_id: int | None = None
    state: OutboxState = OutboxState.QUEUED  # MISSED or SUPPRESSED to record a message not sent

    def row(self, now: datetime) -> dict[str, Any]:
        """The outbox row's columns."""
        if len(self.key) > 200:
            # Cutting the key could make two different messages collide, and one never leave.
            raise ValueError(f"outbox key longer than 200 characters: {self.key[:40]}…")
        due = self.due_at or now
        return {
            "key": self.key,
            "kind": self.kind,
            "to_email": self.to_email,
            "subject": self.subject[:300],
            "text_body": self.text_body,
            "html_body": self.html_body,
            "headers": dict(self.headers),
            "message_id": new_message_id(),
            "state": self.state,
            "due_at": due,
            "expires_at": self.expires_at,
            "next_attempt_at": due,
            "attempts": 0,
            "created_at": now,
            "campaign_message_id": self.campaign_message_id,
            "subscriber_id": self.subscriber_id,
        }


def _dialect() -> Any:
    return postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite


def enqueue_many(messages: Iterable[Outgoing], *, kick: bool = True) -> int:
    """Queue messages in the current transaction; keys already queued are skipped.

    Returns how many rows were added. With ``kick`` (the default for one-off messages such as
    receipts), the web process sends them right after the commit instead of waiting for
    the scheduler; whatever it cannot send, the scheduler sends later.
    """
    now = utcnow()
    # Sorted by key: two transactions inserting overlapping keys in different orders could
    # each wait for the other's row on PostgreSQL (a deadlock); in one order, one just waits.
    rows = sorted((m.row(now) for m in messages), key=lambda r: r["key"])
    if not rows:
        return 0
    # One statement for any number of rows, given the rows as executemany parameters:
    # SQLAlchemy sends them as multi-row INSERTs ("insertmanyvalues") from one compiled
    # statement, instead of compiling a new 500-row VALUES clause per chunk (most of the
    # time of a large campaign's enqueue). Keys already queued return no id.
    statement = (
        _dialect()
        .insert(_TABLE)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(_TABLE.c.id)
    )
    ids = list(db.session.execute(statement, rows).scalars())
    if kick and ids:
        db.session.info.setdefault(_KICK_KEY, []).extend(ids)
    return len(ids)


def enqueue_from_select(columns: list[str], rows: Select[Any]) -> int:
    """Queue one row per result of ``rows`` (in ``columns`` order) in one statement.

    For large audiences: the database builds the rows itself (``INSERT … SELECT``), keys
    already queued are skipped as in :func:`enqueue_many`, and nothing is kicked. Returns
    how many rows were added.
    """
    statement = (
        _dialect()
        .insert(_TABLE)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=["key"])
        # Counted from RETURNING: psycopg reports no rowcount for INSERT … SELECT here.
        .returning(_TABLE.c.id)
    )
    return len(db.session.execute(statement).all())


def enqueue(message: Outgoing, *, kick: bool = True) -> bool:
    """Queue one message (see :func:`enqueue_many`); True if it was not queued before."""
    return enqueue_many([message], kick=kick) == 1


def is_suppressed(email: str) -> bool:
    """Whether an address must not be written to."""
    return (
        db.session.scalar(select(Suppression.id).where(Suppression.email == email.lower()))
        is not None
    )


def suppress(email: str, reason: str) -> None:
    """Never write to this address again (idempotent)."""
    db.session.execute(
        _dialect()
        .insert(Suppression)
        .values(email=email.lower(), reason=reason[:200], created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["email"])
    )


# --- claiming --------------------------------------------------------------------------


def stale_claim_after() -> timedelta:
    """How old a claim must be before its sender is taken for dead (MAIL_STALE_CLAIM_SECONDS)."""
    return timedelta(seconds=float(current_app.config.get("MAIL_STALE_CLAIM_SECONDS", 600)))


def worker_name() -> str:
    """Who holds a claim: host and process, for the health page and the logs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _claim_token() -> str:
    # Unique per claim, not per process: a thread of the same process that claims the row
    # again after it went stale must not be mistaken for the first claimant.
    return f"{worker_name()[:80]}/{secrets.token_hex(6)}"


def _unlocked(candidates: Select[Any]) -> Any:
    """``candidates`` (a select of ids) as an IN subquery that skips rows locked elsewhere.

    On PostgreSQL two senders updating the same rows would wait on each other's row locks,
    possibly in opposite orders; skipping locked rows leaves them to whoever holds them.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    return candidates.scalar_subquery()


def release_stale_claims(now: datetime | None = None) -> int:
    """Queue again the rows a dead sender claimed and never finished (caller commits).

    ``now`` is the wall clock: a claim's age says whether its sender is alive, whatever
    time a test pretends it is.
    """
    now = now or utcnow()
    stale = (
        OutboxMessage.state == OutboxState.SENDING,
        OutboxMessage.claimed_at < now - stale_claim_after(),
    )
    result = db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(_unlocked(select(OutboxMessage.id).where(*stale))), *stale)
        .values(state=OutboxState.QUEUED, claimed_at=None, claimed_by=None)
        .execution_options(synchronize_session=False)
    )
    released = result.rowcount or 0
    if released:
        log.warning("outbox: %d message(s) claimed by a sender that died queued again", released)
    return released


def claim(limit: int, now: datetime | None = None, ids: list[int] | None = None) -> list[int]:
    """Claim up to ``limit`` due rows for this process; returns their ids (caller commits)."""
    now = now or utcnow()
    candidates = (
        select(OutboxMessage.id)
        .where(OutboxMessage.state == OutboxState.QUEUED, OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    if ids is not None:
        candidates = candidates.where(OutboxMessage.id.in_(ids))
    # Rows another sender has locked are skipped, not waited for (PostgreSQL): senders take
    # disjoint rows instead of queueing behind each other. The state condition is repeated
    # outside the subquery: on SQLite it is what makes the claim conditional (one writer at
    # a time, and the row must still be queued).
    state: Any = OutboxMessage.state
    if db.session.get_bind().dialect.name == "sqlite":
        # Written so SQLite's planner cannot use an index on state for it: without table
        # statistics it takes "state = 'queued'" for selective and walks every queued row
        # testing each against the ids (a 100,000-copy campaign: tens of ms per batch),
        # instead of looking the ids up. The condition itself is unchanged.
        state = state.op("||")(literal(""))
    statement = (
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(_unlocked(candidates)),
            state == OutboxState.QUEUED,
        )
        .values(state=OutboxState.SENDING, claimed_at=utcnow(), claimed_by=_claim_token())
        .returning(OutboxMessage.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(db.session.execute(statement).scalars())


def expire_overdue(now: datetime | None = None) -> int:
    """Mark queued rows past their ``expires_at`` as missed, and warn (caller commits).

    The warning is the alert: one line per kind and campaign, with a count, never addresses.
    """
    now = now or utcnow()
    overdue = (
        OutboxMessage.state == OutboxState.QUEUED,
        OutboxMessage.expires_at.is_not(None),
        OutboxMessage.expires_at < now,
    )
    groups = db.session.execute(
        select(OutboxMessage.kind, OutboxMessage.campaign_message_id, func.count())
        .where(*overdue)
        .group_by(OutboxMessage.kind, OutboxMessage.campaign_message_id)
    ).all()
    if not groups:
        return 0
    result = db.session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(_unlocked(select(OutboxMessage.id).where(*overdue))), *overdue)
        .values(state=OutboxState.MISSED, last_error="past its time")
        .execution_options(synchronize_session=False)
    )
    for kind, campaign_message_id, count in groups:
        log.warning(
            "outbox: %d %s message(s)%s missed: past their expiry, not sent",
            count,
            kind,
            f" of campaign message {campaign_message_id}" if campaign_message_id else "",
        )
    return result.rowcount or 0


# --- sending ---------------------------------------------------------------------------


@dataclass
class DrainReport:
    """What one pass of the sender did."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    bounced: int = 0
    suppressed: int = 0
    missed: int = 0
    reconnects: int = 0
    relay_down: bool = False

    @property
    def handled(self) -> int:
        """Rows this pass finished or rescheduled."""
        return self.sent + self.retried + self.failed + self.bounced + self.suppressed + self.missed

    def __str__(self) -> str:
        parts = [
            f"{name} {value}"
            for name, value in vars(self).items()
            if value and name != "relay_down"
        ]
        if self.relay_down:
            parts.append("relay unreachable")
        return ", ".join(parts) or "nothing due"


def _open_smtp() -> smtplib.SMTP:
    cfg = current_app.config
    timeout = cfg["MAIL_TIMEOUT_SECONDS"]
    if cfg["MAIL_USE_SSL"]:
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(
            cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=timeout,
            context=ssl.create_default_context(),
        )  # fmt: skip
    else:
        smtp = smtplib.SMTP(cfg["MAIL_SERVER"], cfg["MAIL_PORT"], timeout=timeout)
    try:
        if cfg["MAIL_USE_TLS"]:
            smtp.starttls(context=ssl.create_default_context())
        if cfg["MAIL_USERNAME"]:
            smtp.login(cfg["MAIL_USERNAME"], cfg["MAIL_PASSWORD"] or "")
    except BaseException:
        smtp.close()
        raise
    return smtp


def _close_smtp(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()


@contextmanager
def smtp_connection() -> Iterator[smtplib.SMTP]:
    """One SMTP session to the configured relay, closed at the end of the block."""
    smtp = _open_smtp()
    try:
        yield smtp
    finally:
        _close_smtp(smtp)


@dataclass(frozen=True)
class Parts:
    """What one message says: subject, plain text, optional HTML, and extra headers."""

    subject: str
    text_body: str
    html_body: str | None
    headers: dict[str, str]


def parts_of(row: Any, cache: dict[Any, Any]) -> Parts:
    """What a row's message says; a campaign copy or receipt queued bare is rendered now.

    Campaign copies are queued as bare rows (recipient, due time, Message-ID) and take their
    text from the campaign message, rendered once per language, and their signed links from
    the subscriber's id, when they are sent. ``cache`` keeps those renderings for a batch.
    """
    if row.kind == CAMPAIGN_KIND and not row.text_body and row.subscriber_id is not None:
        from . import campaigns  # campaigns imports this module

        return campaigns.copy_parts(row, cache)
    if row.kind == RECEIPT_KIND and not row.text_body:
        from . import mail  # mail imports this module

        return mail.receipt_parts(row, cache)
    return Parts(row.subject, row.text_body, row.html_body, dict(row.headers or {}))


# The kind of a subscriber's copy of a campaign message.
CAMPAIGN_KIND = "campaign"
# A donor's receipt, queued bare by the webhook applier and written when sent.
RECEIPT_KIND = "receipt"


def to_email_message(row: Any, parts: Parts | None = None) -> EmailMessage:
    """The MIME message of an outbox row: plain text, with an HTML alternative if any.

    The slow, general path (``email``'s default policy parses and refolds every header): it
    is used only for what :func:`wire_bytes` does not write itself (non-ASCII addresses).
    """
    parts = parts or parts_of(row, {})
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    msg["To"] = row.to_email
    msg["Subject"] = parts.subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = row.message_id
    for name, value in parts.headers.items():
        msg[name] = value
    msg.set_content(parts.text_body)
    if parts.html_body:
        msg.add_alternative(parts.html_body, subtype="html")
    return msg


# --- the wire format, written directly ---------------------------------------------------
# Building an EmailMessage costs far more than the SMTP exchange with a local relay (its
# default policy parses every header back into objects to fold it). The messages sent here
# have one fixed shape, so their bytes are written directly: ASCII headers as they are (one
# line, within RFC 5322's 998 octets; a long List-Unsubscribe URL must not be turned into
# encoded words, which mail clients do not decode there), other headers folded by the
# ``email`` package once per distinct value, and each body part in 7bit, quoted-printable or
# base64, whichever is shortest, all encoded in C by binascii.

_SMTP_POLICY = email.policy.SMTP
_HEADER_MAX = 998


@lru_cache(maxsize=1024)
def _folded(name: str, value: str) -> bytes:
    """One header as ``email`` folds and encodes it (non-ASCII, or too long for one line)."""
    header = _SMTP_POLICY.header_factory(name, value)
    return header.fold(policy=_SMTP_POLICY).encode("ascii")


def _header(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError(f"the {name} header holds a line break")
    if value.isascii() and len(name) + len(value) + 2 <= _HEADER_MAX:
        return f"{name}: {value}\r\n".encode("ascii")
    return _folded(name, value)


def _body_part(content: str, subtype: str) -> bytes:
    """One text part: its headers, a blank line, and the encoded body (CRLF line ends)."""
    data = content.replace("\r\n", "\n").replace("\r", "\n")
    if not data.endswith("\n"):
        data += "\n"
    raw = data.encode("utf-8")
    crlf = raw.replace(b"\n", b"\r\n")
    if raw.isascii() and max(map(len, raw.split(b"\n"))) <= 78:
        cte, payload = "7bit", crlf
    else:
        cte, payload = "quoted-printable", binascii.b2a_qp(crlf, istext=True)
        if len(payload) * 3 > len(raw) * 4:  # longer than base64 would be (mostly non-ASCII)
            cte, payload = "base64", base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    return head.encode("ascii") + b"\r\n" + payload


def wire_bytes(
    parts: Parts, *, sender: str, to: str, date: str, message_id: str, boundary: str
) -> bytes:
    """A message as it goes over SMTP: headers, then text, or text and HTML as alternatives."""
    head = [
        _header("From", sender),
        _header("To", to),
        _header("Subject", parts.subject),
        _header("Date", date),
        _header("Message-ID", message_id),
        *(_header(name, value) for name, value in parts.headers.items()),
        b"MIME-Version: 1.0\r\n",
    ]
    text = _body_part(parts.text_body, "plain")
    if not parts.html_body:
        return b"".join(head) + text
    html = _body_part(parts.html_body, "html")
    mark = boundary.encode("ascii")
    if mark in text or mark in html:  # practically never: then a fresh one
        return wire_bytes(
            parts, sender=sender, to=to, date=date, message_id=message_id,
            boundary=_boundary(),
        )  # fmt: skip
    return b"".join(
        [
            *head,
            b'Content-Type: multipart/alternative; boundary="' + mark + b'"\r\n\r\n',
            b"--" + mark + b"\r\n",
            text,
            b"\r\n--" + mark + b"\r\n",
            html,
            b"\r\n--" + mark + b"--\r\n",
        ]
    )


def _boundary() -> str:
    # "=_" cannot occur in quoted-printable or base64 text; the random part makes a 7bit
    # body that holds it by chance practically impossible (and wire_bytes checks).
    return f"=_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Wire:
    """One message ready for the relay: envelope sender and recipient, and its content."""

    sender: str
    to: str
    content: bytes | EmailMessage  # bytes on the fast path


def rows_for_sending(ids: Iterable[int], state: OutboxState | None = None) -> list[Row]:
    """Outbox rows as :class:`Composer` needs them (with the subscriber's link parts)."""
    statement = (
        select(
            _TABLE,
            # What a campaign copy's signed links and language are made from.
            Subscriber.link_version.label("reader_link_version"),
            Subscriber.locale.label("reader_locale"),
        )
        .outerjoin(Subscriber, Subscriber.id == _TABLE.c.subscriber_id)
        .where(_TABLE.c.id.in_(list(ids)))
        .order_by(_TABLE.c.next_attempt_at, _TABLE.c.id)
    )
    if state is not None:
        statement = statement.where(_TABLE.c.state == state)
    return list(db.session.execute(statement).all())


def as_sent(row_id: int) -> EmailMessage:
    """The message a row makes, as the relay would receive it (parsed back, for checks)."""
    (row,) = rows_for_sending([row_id])
    content = Composer().wire(row).content
    if isinstance(content, EmailMessage):
        return content
    return email.message_from_bytes(content, policy=email.policy.default)  # type: ignore[return-value]


class Composer:
    """Turns outbox rows into :class:`Wire` messages, reusing what rows share."""

    def __init__(self) -> None:
        self.from_header = current_app.config["MAIL_DEFAULT_SENDER"]
        self.envelope_sender = getaddresses([self.from_header])[0][1]
        self.cache: dict[Any, Any] = {}
        self._date_second = -1
        self._date = ""

    def date(self) -> str:
        """The Date header, formatted once a second."""
        now = utcnow()
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second, self._date = second, format_datetime(now.replace(microsecond=0))
        return self._date

    def prefetch(self, rows: Iterable[Any]) -> None:
        """Read at once what a batch of receipts queued bare will be written from."""
        from . import mail  # mail imports this module

        mail.prefetch_receipts(rows, self.cache)
        _end_transaction()

    def wire(self, row: Any) -> Wire:
        """The message for ``row``; ValueError or TypeError if a header cannot be written."""
        parts = parts_of(row, self.cache)
        if not (row.to_email.isascii() and self.envelope_sender.isascii()):
            # Needs SMTPUTF8, which send_message negotiates: the general path.
            return Wire(self.envelope_sender, row.to_email, to_email_message(row, parts))
        content = wire_bytes(
            parts,
            sender=self.from_header,
            to=row.to_email,
            date=self.date(),
            message_id=row.message_id,
            boundary=_boundary(),
        )
        return Wire(self.envelope_sender, row.to_email, content)


def _backoff(attempts: int) -> timedelta:
    base = current_app.config["MAIL_RETRY_BASE_SECONDS"]
    return timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 6 * 3600))


class _Dropped(Exception):
    """The connection to the relay went away in the middle of a message."""


@dataclass(frozen=True)
class _Answer:
    """The relay's answer to one message."""

    code: int
    text: str
    stage: str  # "rcpt", "mail", "data" or "" when accepted

    @classmethod
    def of(cls, code: int, reply: Any, stage: str) -> _Answer:
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return cls(code, text, stage)


def _reset(smtp: smtplib.SMTP, code: int) -> None:
    """After a refusal, as smtplib's sendmail does: close on 421, else RSET the transaction."""
    if code == 421:
        smtp.close()
        return
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()


@lru_cache(maxsize=16)
def _quoted(address: str) -> str:
    """An envelope address as smtplib writes it (it parses the address for every message)."""
    return smtplib.quoteaddr(address)


def _send_bytes(
    smtp: smtplib.SMTP,
    message: Wire,
    meanwhile: Callable[[], None] | None,
    then: Callable[[], None] | None = None,
) -> dict[str, tuple[int, bytes]]:
    """smtplib's ``sendmail`` for one recipient, running ``meanwhile`` while MAIL is read.

    The relay spends a moment on each command; the previous message's outcome is written
    to the database in that moment instead of before it. It is still committed before this
    message's DATA is complete, so a sender killed at any point leaves at most one message
    sent but unrecorded. ``then`` runs while the relay takes in the message itself (the
    sender writes the next message meanwhile; it records nothing).
    """
    smtp.ehlo_or_helo_if_needed()
    options = f" size={len(message.content)}" if smtp.has_extn("size") else ""
    smtp.putcmd("mail", f"FROM:{_quoted(message.sender)}{options}")
    if meanwhile is not None:
        meanwhile()
    code, reply = smtp.getreply()
    if code != 250:
        _reset(smtp, code)
        raise smtplib.SMTPSenderRefused(code, reply, message.sender)
    code, reply = smtp.rcpt(message.to)
    if code not in (250, 251):
        _reset(smtp, code)
        raise smtplib.SMTPRecipientsRefused({message.to: (code, reply)})
    code, reply = smtp.docmd("data")
    if code != 354:
        _reset(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    smtp.send(_data_block(message.content))
    if then is not None:
        then()  # while the relay takes the message in
    code, reply = smtp.getreply()
    if code != 250:
        _reset(smtp, code)
        raise smtplib.SMTPDataError(code, reply)
    return {}


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _data_block(content: bytes) -> bytes:
    """A message as DATA carries it, as smtplib's ``data`` writes it: dots doubled, then "."."""
    block = _LEADING_DOT.sub(b"..", content)
    if not block.endswith(b"\r\n"):
        block += b"\r\n"
    return block + b".\r\n"


def _exchange(
    smtp: smtplib.SMTP,
    message: Wire,
    meanwhile: Callable[[], None] | None = None,
    then: Callable[[], None] | None = None,
) -> _Answer:
    """Hand one message to the relay; raises :class:`_Dropped` if the connection went away.

    ``meanwhile`` runs once the relay has the first command, ``then`` once it has the
    message (see :func:`_send_bytes`).
    """
    try:
        if isinstance(message.content, bytes):
            refused = _send_bytes(smtp, message, meanwhile, then)
        else:
            if meanwhile is not None:
                meanwhile()
            refused = smtp.send_message(message.content)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = next(iter(exc.recipients.values()))
        answer = _Answer.of(code, reply, "rcpt")
    except smtplib.SMTPSenderRefused as exc:
        answer = _Answer.of(exc.smtp_code, exc.smtp_error, "mail")
    except smtplib.SMTPDataError as exc:
        answer = _Answer.of(exc.smtp_code, exc.smtp_error, "data")
    except smtplib.SMTPNotSupportedError as exc:  # e.g. an address needing SMTPUTF8
        answer = _Answer(554, str(exc), "mail")
    except (OSError, smtplib.SMTPException) as exc:
        raise _Dropped(type(exc).__name__) from exc
    else:
        if refused:  # only some recipients refused; we send to one at a time
            code, reply = next(iter(refused.values()))
            return _Answer.of(code, reply, "rcpt")
        return _Answer(250, "OK", "")
    if answer.code == 421:  # "closing the connection": smtplib has already closed it
        raise _Dropped(f"421 at {answer.stage}")
    return answer


# What _Sender.record writes for a message the relay accepted, as one reusable statement.
_MARK_SENT = (
    update(_TABLE)
    .where(
        _TABLE.c.id == bindparam("p_id"),
        _TABLE.c.state == OutboxState.SENDING,
        _TABLE.c.claimed_by == bindparam("p_claimed_by"),
    )
    .values(
        state=OutboxState.SENT,
        sent_at=bindparam("p_sent_at", type_=_TABLE.c.sent_at.type),
        attempts=bindparam("p_attempts"),
        claimed_at=None,
        claimed_by=None,
    )
)


class _Sender:
    """Sends one claimed batch over one reused connection, recording each outcome at once."""

    def __init__(self, report: DrainReport, now: datetime | None, patience: int) -> None:
        self.report = report
        self.patience = patience  # failures in a row before the rest waits for a later pass
        # A pass run "as if at" ``now`` keeps that offset from the wall clock throughout.
        self.offset = (now - utcnow()) if now is not None else timedelta(0)
        self.smtp: smtplib.SMTP | None = None
        self.gave_up = False  # the relay could not be reached: the rest waits for a later pass
        self.heartbeat_every = stale_claim_after().total_seconds() / 3
        self.last_heartbeat = time.monotonic()
        # A message the relay accepted whose outcome is not written yet (see _send_bytes).
        self.accepted: Row | None = None
        # Where those outcomes are written: one connection for the batch, not one checked
        # out of the pool (and pinged) per message.
        self.outcomes: Connection | None = None

    def now(self) -> datetime:
        return utcnow() + self.offset

    # -- database: short transactions, never open during SMTP ---------------------------

    @contextmanager
    def _write(self) -> Iterator[None]:
        # A transaction of its own: on SQLite it begins IMMEDIATE (waits its turn for the
        # lock instead of failing to upgrade a read) and holds the lock only for the update.
        _end_transaction()
        with writing():
            try:
                yield
                db.session.commit()
            except BaseException:
                db.session.rollback()
                raise

    def load(self, ids: list[int]) -> list[Row]:
        rows = rows_for_sending(ids, OutboxState.SENDING)
        _end_transaction()
        return rows

    def standing(self, rows: Iterable[Row]) -> tuple[set[int], set[str]]:
        """Which of ``rows`` this sender still holds, and which addresses are suppressed.

        Checked for a slice of the batch at a time (one query each, not one per message):
        a row cancelled or erased meanwhile is skipped, and whatever changes between the
        check and a message's outcome is caught by :meth:`record`, which writes only if
        the claim still holds.
        """
        rows = list(rows)
        current = db.session.execute(
            select(_TABLE.c.id, _TABLE.c.state, _TABLE.c.claimed_by).where(
                _TABLE.c.id.in_([row.id for row in rows])
            )
        ).all()
        claims = {row.id: row.claimed_by for row in rows}
        ours = {
            row_id
            for row_id, state, claimed_by in current
            if state == OutboxState.SENDING and claimed_by == claims[row_id]
        }
        suppressed = set(
            db.session.scalars(
                select(Suppression.email).where(
                    Suppression.email.in_({row.to_email.lower() for row in rows})
                )
            )
        )
        _end_transaction()
        return ours, suppressed

    def record(self, row: Row, *, suppress_reason: str | None = None, **values: Any) -> bool:
        """Write a row's outcome if the claim is still ours; False if someone else took it."""
        values.setdefault("claimed_at", None)
        values.setdefault("claimed_by", None)
        with self._write():
            result = db.session.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.id == row.id,
                    _TABLE.c.state == OutboxState.SENDING,
                    _TABLE.c.claimed_by == row.claimed_by,
                )
                .values(**values)
            )
            if suppress_reason is not None:
                suppress(row.to_email, suppress_reason)
        if result.rowcount != 1:
            log.warning("outbox %s (%s): claim lost while sending", row.id, row.kind)
            return False
        return True

    def heartbeat(self, rows: Iterable[Row]) -> None:
        """Refresh this sender's claims so a long batch is not taken for a dead one."""
        if time.monotonic() - self.last_heartbeat < self.heartbeat_every:
            return
        tokens = {row.claimed_by for row in rows}
        with self._write():
            db.session.execute(
                update(_TABLE)
                .where(_TABLE.c.state == OutboxState.SENDING, _TABLE.c.claimed_by.in_(tokens))
                .values(claimed_at=utcnow())
            )
        self.last_heartbeat = time.monotonic()

    def release(self, rows: Iterable[Row]) -> None:
        """Give rows back to the queue untouched (the relay is down: not their fault)."""
        rows = list(rows)
        if not rows:
            return
        with self._write():
            db.session.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.id.in_([row.id for row in rows]),
                    _TABLE.c.state == OutboxState.SENDING,
                    _TABLE.c.claimed_by.in_({row.claimed_by for row in rows}),
                )
                .values(state=OutboxState.QUEUED, claimed_at=None, claimed_by=None)
            )

    # -- outcomes --------------------------------------------------------------------------

    def sent(self, row: Row) -> None:
        # The path every message takes: one statement built and compiled once, on the batch's
        # own connection, in a transaction of its own (BEGIN IMMEDIATE on SQLite).
        if self.outcomes is None:
            self.outcomes = db.engine.connect()
        with writing(), self.outcomes.begin():
            result = self.outcomes.execute(
                _MARK_SENT,
                {
                    "p_id": row.id,
                    "p_claimed_by": row.claimed_by,
                    "p_sent_at": utcnow(),
                    "p_attempts": row.attempts + 1,
                },
            )
        if result.rowcount == 1:
            self.report.sent += 1
        else:
            log.warning("outbox %s (%s): claim lost while sending", row.id, row.kind)

    def retry_later(self, row: Row, error: str) -> None:
        attempts = row.attempts + 1
        if attempts >= current_app.config["MAIL_MAX_ATTEMPTS"]:
            if self.record(row, state=OutboxState.FAILED, attempts=attempts, last_error=error):
                self.report.failed += 1
                log.warning(
                    "outbox %s (%s) failed after %d attempts: %s",
                    row.id, row.kind, attempts, error.split(" ", 1)[0],
                )  # fmt: skip
            return
        if self.record(
            row,
            state=OutboxState.QUEUED,
            attempts=attempts,
            last_error=error,
            next_attempt_at=self.now() + _backoff(attempts),
        ):
            self.report.retried += 1

    def flush(self) -> None:
        """Write the outcome of the message the relay last accepted, if not written yet."""
        if self.accepted is not None:
            row, self.accepted = self.accepted, None
            self.sent(row)

    def answered(self, row: Row, answer: _Answer) -> None:
        error = f"{answer.code} {answer.text}"[:500]
        if answer.code < 400:
            # Written during the next exchange, or by flush() before anything else.
            self.flush()
            self.accepted = row
        elif answer.code < 500 or answer.stage == "mail":
            # 4xx is temporary by definition. A 5xx to MAIL FROM is about us (our sender
            # address or our account at the relay), not the recipient: retry, don't suppress.
            self.retry_later(row, error)
        elif answer.stage == "rcpt":
            if self.record(
                row,
                state=OutboxState.BOUNCED,
                attempts=row.attempts + 1,
                last_error=error,
                suppress_reason=f"bounced: {answer.code}",
            ):
                self.report.bounced += 1
        else:
            # 5xx after DATA refuses this message (size, content), not the address.
            if self.record(
                row, state=OutboxState.FAILED, attempts=row.attempts + 1, last_error=error
            ):
                self.report.failed += 1
                log.warning(
                    "outbox %s (%s) refused by the relay: %d", row.id, row.kind, answer.code
                )

    # -- the batch -------------------------------------------------------------------------

    def close(self) -> None:
        if self.smtp is not None:
            _close_smtp(self.smtp)
            self.smtp = None
        if self.outcomes is not None:
            self.outcomes.close()
            self.outcomes = None

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def send(self, ids: list[int]) -> None:
        pending = deque(self.load(ids))
        composer = Composer()
        composer.prefetch(pending)
        # The next message, written while the relay takes in this one (or why it cannot be).
        written: dict[int, Wire | Exception] = {}

        def write_next() -> None:
            if len(pending) < 2 or pending[1].id in written or pending[1].id not in ours:
                return
            upcoming = pending[1]
            try:
                written[upcoming.id] = composer.wire(upcoming)
            except (ValueError, TypeError, LookupError) as exc:
                written[upcoming.id] = exc
            _end_transaction()

        failures = 0  # connection failures and drops since the relay last answered
        drops = 0  # drops while sending the message at the head of ``pending``
        ours: set[int] = set()
        suppressed: set[str] = set()
        checked: set[int] = set()  # rows whose standing was read
        try:
            while pending:
                row = pending[0]
                if row.id not in checked:
                    self.flush()
                    window = list(itertools.islice(pending, _STANDING_WINDOW))
                    ours, suppressed = self.standing(window)
                    checked.update(r.id for r in window)
                if row.id not in ours:  # cancelled, or taken by another sender after going stale
                    pending.popleft()
                    continue
                if row.expires_at is not None and row.expires_at < self.now():
                    self.flush()
                    if self.record(row, state=OutboxState.MISSED, last_error="past its time"):
                        self.report.missed += 1
                        log.warning(
                            "outbox %s (%s) missed: %s past its due time",
                            row.id, row.kind, self.now() - row.due_at,
                        )  # fmt: skip
                    pending.popleft()
                    continue
                if row.to_email.lower() in suppressed:
                    self.flush()
                    if self.record(row, state=OutboxState.SUPPRESSED, last_error="suppressed"):
                        self.report.suppressed += 1
                    pending.popleft()
                    continue
                self.heartbeat(pending)
                try:
                    message = written.pop(row.id, None) or composer.wire(row)
                    if isinstance(message, Exception):
                        raise message
                except (ValueError, TypeError, LookupError) as exc:  # cannot be written
                    _end_transaction()
                    self.flush()
                    if self.record(
                        row, state=OutboxState.FAILED, last_error=f"unsendable: {exc}"[:500]
                    ):
                        self.report.failed += 1
                    pending.popleft()
                    continue
                _end_transaction()  # rendering may have read; nothing open during SMTP
                try:
                    if self.smtp is None:
                        self.smtp = _open_smtp()
                    answer = _exchange(self.smtp, message, meanwhile=self.flush, then=write_next)
                except (_Dropped, OSError, smtplib.SMTPException) as exc:
                    self.flush()
                    in_flight = isinstance(exc, _Dropped)
                    self.drop()
                    self.report.reconnects += 1
                    failures += 1
                    drops += in_flight
                    error = str(exc) if in_flight else type(exc).__name__
                    if drops >= _DROPS_PER_MESSAGE:
                        self.retry_later(row, f"connection lost: {error}")
                        pending.popleft()
                        drops = 0
                    if failures >= self.patience:
                        self.gave_up = True
                        self.release(pending)
                        log.error(
                            "outbox: SMTP relay unreachable (%s); %d left queued",
                            error, len(pending),
                        )  # fmt: skip
                        return
                    continue
                self.flush()  # if the exchange ended before running it
                failures = drops = 0
                self.answered(row, answer)
                if answer.code >= 500 and answer.stage == "rcpt":
                    suppressed.add(row.to_email.lower())  # later rows of this batch
                pending.popleft()
        finally:
            try:
                self.flush()
            finally:
                self.close()


def _end_transaction() -> None:
    # Reads end with a commit, not a rollback: the caller's session may hold work that an
    # edge function like drain() is documented to commit, never to throw away.
    if db.session().in_transaction():
        db.session.commit()


def send_claimed(
    ids: list[int],
    report: DrainReport | None = None,
    *,
    now: datetime | None = None,
    patience: int = _FAILURES_BEFORE_GIVING_UP,
) -> DrainReport:
    """Send claimed rows over one reused connection, committing each row's outcome at once.

    A dropped connection puts the message it was sending back at the head of the batch (it
    may or may not have reached the relay: it goes again with the same Message-ID) and
    carries on over a new connection; a relay that cannot be reached at all leaves every
    row for a later pass. Commits the session: call it at the edge.
    """
    report = report or DrainReport()
    if ids:
        sender = _Sender(report, now, patience)
        sender.send(ids)
        report.relay_down = report.relay_down or sender.gave_up
    return report


def drain(
    *, batch_size: int | None = None, limit: int | None = None, now: datetime | None = None
) -> DrainReport:
    """Send everything due now, in claimed batches, until nothing is due (or ``limit`` rows).

    Commits the session: call it at the edge (the scheduler's job, a command). ``now``
    pretends the pass runs at another time (due times, expiry, backoff); claims always use
    the wall clock.
    """
    batch_size = batch_size or current_app.config["MAIL_BATCH_SIZE"]
    report = DrainReport()
    _end_transaction()
    while limit is None or report.handled < limit:
        size = batch_size if limit is None else min(batch_size, limit - report.handled)
        with writing():
            # Each batch, not only the first: a long pass also picks up a dead sender's rows.
            release_stale_claims()
            report.missed += expire_overdue(now)
            ids = claim(size, now=now)
            db.session.commit()
        if not ids:
            break
        send_claimed(ids, report, now=now)
        if report.relay_down:
            break  # the scheduler's next run tries again
    return report


def backlog() -> dict[str, int]:
    """How many rows are in each state, for the health command."""
    rows = db.session.execute(
        select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
    ).all()
    return {str(state): int(count) for state, count in rows}


@event.listens_for(Session, "after_commit")
def _remember_committed(session: Session) -> None:
    # No SQL may run inside after_commit; the request sends them once the view is done.
    ids = session.info.pop(_KICK_KEY, None)
    if ids and has_app_context():
        g.setdefault("outbox_committed", []).extend(ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget_rolled_back(session: Session, previous_transaction: Any) -> None:
    # A savepoint rolled back leaves the outer transaction's messages queued with it.
    if not previous_transaction.nested:
        session.info.pop(_KICK_KEY, None)


def send_committed() -> DrainReport | None:
    """Send, now, the messages this request (or app context) queued and committed.

    Called as the app context ends (see ``create_app``): receipts and confirmations leave
    within the request instead of waiting for the scheduler's next pass; whatever cannot
    be sent now, the scheduler sends later. Work the request did not commit is dropped
    first, as the end of the context would drop it anyway.
    """
    ids = g.pop("outbox_committed", None) if has_app_context() else None
    if not ids or not current_app.config.get("MAIL_SEND_ON_COMMIT", True):
        return None
    try:
        db.session.rollback()
        with writing():
            claimed = claim(len(ids), ids=ids)
            db.session.commit()
        # One try: a request must not wait for a relay that is down (the scheduler retries).
        return send_claimed(claimed, patience=1)
    except Exception as exc:  # the scheduler sends whatever this could not
        db.session.rollback()
        # SQL errors carry their parameters (addresses): name the error, not its text.
        log.error(
            "outbox: sending after commit failed (%s); the scheduler will retry",
            type(exc).__name__,
            exc_info=not isinstance(exc, StatementError),
        )
        return None
