"""Scheduler processes, a counting SMTP server and bulk subscribers, for the scheduler tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, insert, select

from fundraiser.extensions import db
from fundraiser.models import (
    CampaignMessage,
    CampaignStatus,
    CampaignText,
    FastDay,
    OutboxMessage,
    SendKind,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from tests.conftest import ROOT, WEBHOOK_SECRET, free_port

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class CountingSMTP:
    """A real aiosmtpd server that keeps only (recipient, Message-ID) of what it receives.

    Parsing 10,000 whole messages per run would make the test server the bottleneck; the
    envelope recipient and the Message-ID header are all a duplicate check needs.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.received: list[tuple[str, str]] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        headers = envelope.content.split(b"\r\n\r\n", 1)[0]
        found = _MESSAGE_ID.search(headers)
        message_id = found.group(1).decode() if found else ""
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append((rcpt.lower(), message_id))
        return "250 OK"

    def start(self) -> CountingSMTP:
        """Listen on the free port chosen at construction."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        self._controller.stop()

    def count(self) -> int:
        """How many messages arrived since the last clear."""
        with self.lock:
            return len(self.received)

    def take(self) -> list[tuple[str, str]]:
        """Everything received so far, emptying the record."""
        with self.lock:
            taken, self.received = self.received, []
        return taken


def duplicates(received: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(recipients received more than once, Message-IDs received more than once)."""
    by_to = Counter(to for to, _mid in received)
    by_id = Counter(mid for _to, mid in received)
    return (
        sorted(to for to, n in by_to.items() if n > 1),
        sorted(mid for mid, n in by_id.items() if n > 1),
    )


def scheduler_env(
    database_url: str,
    smtp_port: int,
    stripe_url: str,
    *,
    tick: float | None = 1,
    **extra: str,
) -> dict[str, str]:
    """The environment a scheduler (or gunicorn) process needs to run on the suite's services."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "x" * 40,
        "STRIPE_API_BASE": stripe_url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp_port),
        **extra,
    }
    env.pop("SCHEDULER_TICK_SECONDS", None)
    if tick is not None:
        env["SCHEDULER_TICK_SECONDS"] = str(tick)
    return env


class SchedulerProcess:
    """One real `flask --app wsgi scheduler` process, logging to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminated = False  # one SIGTERM per start, as a process manager sends

    def start(self) -> SchedulerProcess:
        """Start the process (it runs every job at once, then every tick)."""
        self._terminated = False
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "scheduler"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def terminate(self) -> None:
        """Ask it to stop, as `make run` and systemd do (SIGTERM)."""
        assert self.proc is not None
        if self.proc.poll() is None and not self._terminated:
            self.proc.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 30) -> int | str:
        """Stop it (SIGTERM) and return its exit code, or "killed" if it did not stop in time."""
        assert self.proc is not None
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
            time.sleep(1)
            self.proc.kill()
            self.proc.wait(timeout=10)
            return "killed"

    @property
    def pid(self) -> int:
        """The process id, as the outbox's claims and the logs name it."""
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text(errors="replace")

    def sent(self) -> int:
        """How many messages this process's drain job says it sent."""
        return sum(int(n) for n in re.findall(r"job drain_outbox: sent (\d+)", self.log()))

    def queued(self) -> int:
        """How many campaign copies this process's enqueue job says it queued."""
        pattern = r"job enqueue_campaign_messages: queued (\d+)"
        return sum(int(n) for n in re.findall(pattern, self.log()))


def add_confirmed_subscribers(count: int, *, prefix: str = "s") -> list[int]:
    """``count`` confirmed subscribers who want the day's messages (bulk insert, committed)."""
    now = utcnow()
    rows = [
        {
            "email": f"{prefix}{n}@example.org",
            "locale": "en",
            "timezone": "UTC",
            "status": SubscriberStatus.CONFIRMED,
            "wants_day_messages": True,
            "wants_reminders": True,
            "link_version": 1,
            "created_at": now,
            "confirmed_at": now,
        }
        for n in range(count)
    ]
    for start in range(0, len(rows), 1000):
        db.session.execute(insert(Subscriber), rows[start : start + 1000])
    db.session.commit()
    return list(
        db.session.scalars(
            select(Subscriber.id).where(Subscriber.email.like(f"{prefix}%")).order_by(Subscriber.id)
        )
    )


def schedule_utc_message(day: FastDay, send_at: datetime, name: str) -> int:
    """A scheduled campaign message for everyone, at one UTC instant (committed); its id."""
    message = CampaignMessage(
        fast_day=day,
        name=name,
        send_kind=SendKind.UTC_INSTANT,
        send_at=send_at,
        default_locale="en",
        status=CampaignStatus.SCHEDULED,
        scheduled_at=utcnow(),
    )
    message.texts.append(
        CampaignText(locale="en", subject=f"{name}", body_markdown=f"Today we fast. *{name}*")
    )
    db.session.add(message)
    db.session.commit()
    return message.id


def outbox_states(campaign_message_id: int | None = None) -> dict[str, int]:
    """How many outbox rows (of one campaign message, or all) are in each state."""
    query = select(OutboxMessage.state, func.count()).group_by(OutboxMessage.state)
    if campaign_message_id is not None:
        query = query.where(OutboxMessage.campaign_message_id == campaign_message_id)
    db.session.commit()  # a fresh snapshot: the scheduler processes commit on their own
    return {str(state): int(n) for state, n in db.session.execute(query)}
