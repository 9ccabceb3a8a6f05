"""W2: one event posted 50 times at once across gunicorn workers is stored and applied once.

Stripe retries while its first attempt is still in flight, and behind gunicorn each delivery
may land in a different worker process with its own database connection. The app runs here
as in production (gunicorn, 4 sync workers) against the suite's own database: SQLite under
`make test`, PostgreSQL in CI's second pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fundraiser.extensions import db
from tests.conftest import ROOT, WEBHOOK_SECRET, free_port, wait_for_port, wait_until
from tests.factories import make_fast_day
from tests.webhook_helpers import (
    apply_with_workers,
    event_rows,
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
    post_all_at_once,
)

WORKERS = 4
DELIVERIES = 50


@dataclass(frozen=True)
class GunicornApp:
    """Where the gunicorn-served app listens, and its access log."""

    url: str
    access_log: Path

    def answers(self, method: str | None = None) -> list[tuple[str, ...]]:
        """(worker pid, method, status) of every request answered so far."""
        lines = self.access_log.read_text().split("\n")
        answers = [tuple(line.split()) for line in lines if line.strip()]
        return [a for a in answers if method in (None, a[1])]

    def wait_for_every_worker(self, timeout: float = 60.0) -> None:
        """Return once each worker has answered a request.

        Each worker imports the app after it forks; a burst sent while the others are still
        starting would all be served by the first one up, and test nothing across workers.
        """

        def get_home(_: int) -> int:
            return requests.get(f"{self.url}/", timeout=30).status_code

        def every_worker_answered() -> bool:
            with ThreadPoolExecutor(max_workers=2 * WORKERS) as pool:
                assert set(pool.map(get_home, range(2 * WORKERS))) == {200}
            return len({answer[0] for answer in self.answers()}) >= WORKERS

        wait_until(every_worker_answered, timeout=timeout, interval=0.2)


@pytest.fixture
def gunicorn_app(app, database_url, localstripe, smtp_server, tmp_path) -> Iterator[GunicornApp]:
    """The app under gunicorn with four workers, on the suite's database, Stripe and SMTP."""
    _mailbox, smtp_port = smtp_server
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "x" * 40,
        "STRIPE_API_BASE": localstripe.url,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp_port),
    }
    log = tmp_path / "gunicorn.log"
    access = tmp_path / "access.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--workers",
                str(WORKERS),
                "--worker-class",
                "sync",
                "--bind",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                # Which worker (pid) answered each request, and with what status.
                "--access-logfile",
                str(access),
                "--access-logformat",
                "%(p)s %(m)s %(s)s",
                "wsgi:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for_port(port, timeout=30)
        server = GunicornApp(f"http://127.0.0.1:{port}", access)
        server.wait_for_every_worker()
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    errors = log.read_text(errors="replace")
    assert "Traceback" not in errors, errors[-4000:]


def test_same_event_posted_50_times_at_once_across_workers_is_applied_once(
    app, client, localstripe, mailbox, gunicorn_app
):
    with app.app_context():
        slug = make_fast_day().slug
        db.session.commit()
    gift = make_gift(app, client, localstripe, slug, amount="5000")
    event = intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])

    # Every delivery must be answered within the timeout: a deadlock between workers fails here.
    statuses = post_all_at_once(gunicorn_app.url, [event] * DELIVERIES, timeout=90)

    assert statuses == [200] * DELIVERIES
    posts = wait_until(lambda: len(p := gunicorn_app.answers("POST")) >= DELIVERIES and p)
    assert len({pid for pid, _method, _status in posts}) > 1, posts  # several workers took part
    assert event_rows(app) == [(event["id"], "payment_intent.succeeded", "None")]  # stored only
    assert apply_with_workers(app) == 1
    assert event_rows(app) == [(event["id"], "payment_intent.succeeded", "applied")]
    assert ledger_rows(app) == [("gift", 5000, "USD", gift.charge_id, gift.pledge_id)]
    status, _failure, _intent, charge_id, succeeded_at, receipt_at = pledge_rows(app)[
        gift.pledge_id
    ]
    assert (status, charge_id) == ("succeeded", gift.charge_id)
    assert succeeded_at is not None and receipt_at is not None
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0]["To"] == "donor@example.org"
