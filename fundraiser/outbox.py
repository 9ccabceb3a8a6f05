"""The outbox: every e-mail is a row before it is a message, and leaves exactly once.

Queuing a message inserts a row under a unique key in the caller's transaction, so the
e-mail exists if and only if the change that caused it was committed, and queuing the same
thing twice (a retried job, a second scheduler) adds nothing.

Sending claims due rows first. On PostgreSQL the claim is ``FOR UPDATE SKIP LOCKED``, so two
senders take disjoint rows; on SQLite, where one writer holds the database at a time, it is a
conditional ``UPDATE … WHERE state = 'queued'`` that only one sender can win per row. Each
claim carries its own token in ``claimed_by``. A claimed row is committed as ``sending``
before the SMTP conversation, and its outcome is committed on its own as soon as the relay
answers, and only if the claim is still this sender's: a sender killed mid-batch leaves at
most the one message it was sending unrecorded, which is sent again (with the same
Message-ID, so mail clients show it once) when its claim goes stale
(``MAIL_STALE_CLAIM_SECONDS``; a live sender refreshes its claims as it goes).

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

import logging
import os
import secrets
import smtplib
import socket
import ssl
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from flask import current_app, g, has_app_context
from sqlalchemy import Select, event, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session

from .database import writing
from .extensions import db
from .models import OutboxMessage, OutboxState, Suppression, utcnow

log = logging.getLogger(__name__)

_KICK_KEY = "outbox_kick_after_commit"
_TABLE = OutboxMessage.__table__

# A dropped connection is retried at once on a new one, this many times for the same message
# before that message waits its backoff like a 4xx (a message that kills the connection every
# time must not block the queue); this many failures in a row without one answer from the
# relay, and the rest of the batch is left for a later pass.
_DROPS_PER_MESSAGE = 2
_FAILURES_BEFORE_GIVING_UP = 3


def new_message_id() -> str:
    """A Message-ID fixed when a message is queued, so a re-send carries the same one."""
    domain = current_app.config.get("MAIL_MESSAGE_ID_DOMAIN") or "fundraiser.local"
    return make_msgid(domain=domain)


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
    statement = (
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(_unlocked(candidates)),
            OutboxMessage.state == OutboxState.QUEUED,
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


def to_email_message(row: Any) -> EmailMessage:
    """The MIME message of an outbox row: plain text, with an HTML alternative if any."""
    msg = EmailMessage()
    msg["From"] = current_app.config["MAIL_DEFAULT_SENDER"]
    msg["To"] = row.to_email
    msg["Subject"] = row.subject
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = row.message_id
    for name, value in (row.headers or {}).items():
        msg[name] = value
    msg.set_content(row.text_body)
    if row.html_body:
        msg.add_alternative(row.html_body, subtype="html")
    return msg


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


def _exchange(smtp: smtplib.SMTP, message: EmailMessage) -> _Answer:
    """Hand one message to the relay; raises :class:`_Dropped` if the connection went away."""
    try:
        refused = smtp.send_message(message)
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
        rows = db.session.execute(
            select(_TABLE)
            .where(_TABLE.c.id.in_(ids), _TABLE.c.state == OutboxState.SENDING)
            .order_by(_TABLE.c.next_attempt_at, _TABLE.c.id)
        ).all()
        _end_transaction()
        return rows

    def still_ours(self, row: Row) -> tuple[bool, bool]:
        """Whether the claim on ``row`` still holds, and whether its address is suppressed."""
        current = db.session.execute(
            select(
                _TABLE.c.state,
                _TABLE.c.claimed_by,
                exists().where(Suppression.email == row.to_email.lower()),
            ).where(_TABLE.c.id == row.id)
        ).one_or_none()
        _end_transaction()
        if current is None or current[0] != OutboxState.SENDING or current[1] != row.claimed_by:
            return False, False
        return True, bool(current[2])

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
        if self.record(row, state=OutboxState.SENT, sent_at=utcnow(), attempts=row.attempts + 1):
            self.report.sent += 1

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

    def answered(self, row: Row, answer: _Answer) -> None:
        error = f"{answer.code} {answer.text}"[:500]
        if answer.code < 400:
            self.sent(row)
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

    def drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    def send(self, ids: list[int]) -> None:
        pending = deque(self.load(ids))
        failures = 0  # connection failures and drops since the relay last answered
        drops = 0  # drops while sending the message at the head of ``pending``
        try:
            while pending:
                row = pending[0]
                ours, suppressed = self.still_ours(row)
                if not ours:  # cancelled, or taken by another sender after going stale
                    pending.popleft()
                    continue
                if row.expires_at is not None and row.expires_at < self.now():
                    if self.record(row, state=OutboxState.MISSED, last_error="past its time"):
                        self.report.missed += 1
                        log.warning(
                            "outbox %s (%s) missed: %s past its due time",
                            row.id, row.kind, self.now() - row.due_at,
                        )  # fmt: skip
                    pending.popleft()
                    continue
                if suppressed:
                    if self.record(row, state=OutboxState.SUPPRESSED, last_error="suppressed"):
                        self.report.suppressed += 1
                    pending.popleft()
                    continue
                self.heartbeat(pending)
                try:
                    message = to_email_message(row)
                except (ValueError, TypeError) as exc:  # a header that cannot be written
                    if self.record(
                        row, state=OutboxState.FAILED, last_error=f"unsendable: {exc}"[:500]
                    ):
                        self.report.failed += 1
                    pending.popleft()
                    continue
                try:
                    if self.smtp is None:
                        self.smtp = _open_smtp()
                    answer = _exchange(self.smtp, message)
                except (_Dropped, OSError, smtplib.SMTPException) as exc:
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
                failures = drops = 0
                self.answered(row, answer)
                pending.popleft()
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
