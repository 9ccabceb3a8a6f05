"""Fixtures: the app on SQLite or PostgreSQL, a real localstripe, a real SMTP server, a live server.

The database schema is created once per session; every test starts from empty tables
(rows are deleted after each test), which also works for the live server's threads and
for PostgreSQL. Set DATABASE_URL to run the suite against PostgreSQL.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from aiosmtpd.controller import Controller
from sqlalchemy import text
from werkzeug.serving import make_server

from fundraiser import create_app
from fundraiser.extensions import db, limiter
from tests.connect_helpers import FakeConnect

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "whsec_test_secret"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Wait until 127.0.0.1:port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open within {timeout}s")


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; return it, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


# --- localstripe -------------------------------------------------------------------------


class LocalStripe:
    """A running localstripe process, and the calls a browser's Stripe.js would make."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.http = requests.Session()
        self.http.auth = ("sk_test_localstripe", "")

    def count(self, resource: str) -> int:
        """How many objects of a kind localstripe holds (payment_intents, customers …)."""
        response = self.http.get(f"{self.url}/v1/{resource}", params={"limit": 1000})
        response.raise_for_status()
        return len(response.json()["data"])

    def confirm_card_setup(self, client_secret: str, number: str) -> requests.Response:
        """Do what Stripe.js's confirmCardSetup does with the card element's data."""
        setup_id = client_secret.split("_secret_")[0]
        url = f"{self.url}/v1/setup_intents/{setup_id}/confirm"
        response = requests.post(
            url,
            json={
                "key": "pk_test_localstripe",
                "client_secret": client_secret,
                "payment_method_data": {
                    "type": "card",
                    "card": {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
                },
            },
            timeout=10,
        )
        if response.status_code == 200 and response.json()["status"] == "requires_action":
            # Stripe.js shows the bank's challenge, then confirms again once it is passed.
            response = requests.post(
                url, json={"key": "pk_test_localstripe", "client_secret": client_secret}, timeout=10
            )
        return response

    def authenticate(
        self, payment_intent_id: str, client_secret: str, success: bool = True
    ) -> None:
        """Do what Stripe.js's confirmCardPayment does for a 3-D Secure challenge."""
        response = requests.post(
            f"{self.url}/v1/payment_intents/{payment_intent_id}/_authenticate",
            params={"success": "true" if success else "false"},
            json={"key": "pk_test_localstripe", "client_secret": client_secret},
            timeout=10,
        )
        response.raise_for_status()

    def send_webhooks_to(self, url: str | None, secret: str = WEBHOOK_SECRET) -> None:
        """Point localstripe's signed webhooks at ``url``, or stop them (None)."""
        body = {"url": url or "http://127.0.0.1:9/", "secret": secret}
        if url is None:
            body["events"] = []  # an empty filter delivers nothing
        requests.post(
            f"{self.url}/_config/webhooks/fundraiser", json=body, timeout=10
        ).raise_for_status()


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    """A real localstripe process on a free port, keeping no state on disk."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fundraiser.dev.localstripe_server", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield LocalStripe(port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --- SMTP --------------------------------------------------------------------------------


class Mailbox:
    """What the test SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least ``count`` messages arrived; return them all."""
        wait_until(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """A real aiosmtpd server in this process."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def mailbox(smtp_server) -> Mailbox:
    """The test SMTP server's inbox, empty at the start of each test."""
    box, _port = smtp_server
    box.clear()
    return box


# --- the app -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """DATABASE_URL if set (PostgreSQL in CI), else a fresh SQLite file."""
    return (
        os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    )


@pytest.fixture(scope="session")
def connect_server() -> Iterator[FakeConnect]:
    """The fake Stripe Connect transfers API (localstripe has none), in a thread."""
    from fundraiser.dev.connect_server import ConnectServer

    server = ConnectServer().start()
    yield FakeConnect(server.url)
    server.stop()


@pytest.fixture
def connect(connect_server) -> FakeConnect:
    """The fake Connect server, emptied for this test (ids repeat once tables are emptied)."""
    connect_server.reset()
    return connect_server


@pytest.fixture(scope="session")
def app(database_url, localstripe, smtp_server, connect_server, tmp_path_factory):
    """The app under test, with its schema created once."""
    _box, smtp_port = smtp_server
    app = create_app(
        {
            "ENV_NAME": "test",
            "SQLALCHEMY_DATABASE_URI": database_url,
            "STRIPE_API_BASE": localstripe.url,
            "STRIPE_JS_URL": f"{localstripe.url}/js.stripe.com/v3/",
            "STRIPE_CONNECT_API_BASE": connect_server.url,
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": smtp_port,
            "WTF_CSRF_ENABLED": True,
        }
    )
    app.instance_path = str(tmp_path_factory.mktemp("instance"))
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()


def _empty_tables(app) -> None:
    with app.app_context():
        db.session.remove()
        tables = list(reversed(db.metadata.sorted_tables))
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                names = ", ".join(t.name for t in tables)
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    conn.execute(table.delete())


@pytest.fixture(autouse=True)
def _clean_database(request):
    """Every test that uses the app starts and ends with empty tables."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    _empty_tables(app)
    with app.app_context():
        limiter.reset()  # rate-limit counts are per test too
    yield
    try:
        if request.node.get_closest_marker("ledger_invalid") is None:
            _check_ledger(app)
    finally:
        _empty_tables(app)


def _check_ledger(app) -> None:
    """M5: whatever a test did, the ledger it leaves behind keeps every invariant."""
    from fundraiser.ledger_checks import check_invariants

    with app.app_context():
        try:
            violations = check_invariants()
        finally:
            db.session.remove()
    if violations:
        listed = "\n".join(f"  {v}" for v in violations)
        pytest.fail(f"the test left a ledger that breaks its invariants (M5):\n{listed}")


@pytest.fixture
def ctx(app):
    """An app context for tests that use the database directly."""
    with app.app_context():
        yield
        db.session.remove()


@pytest.fixture
def client(app):
    """A test client (CSRF on, as in production)."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner for the flask commands."""
    return app.test_cli_runner()


# --- a live server, for localstripe's webhooks and the browser ----------------------------


class LiveServer:
    """The app served over real HTTP by werkzeug in a thread."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(app) -> Iterator[LiveServer]:
    """The app on a real port, shared by the tests that need one."""
    server = LiveServer(app)
    server.start()
    app.config["PUBLIC_BASE_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture
def webhook_worker(app) -> Iterator[None]:
    """A thread applying what the webhook stores during this test, as the scheduler would."""
    from tests.stripe_events import apply_queued

    stopping = threading.Event()

    def work() -> None:
        while not stopping.wait(0.1):
            try:
                apply_queued(app)
            except Exception as exc:  # the test sees the missing effect; say why here
                print(f"applying queued webhook events failed: {exc!r}", file=sys.stderr)

    worker = threading.Thread(target=work, name="webhook-worker", daemon=True)
    worker.start()
    yield
    stopping.set()
    worker.join(timeout=30)


@pytest.fixture
def stripe_webhooks(localstripe, live_server, webhook_worker) -> Iterator[LiveServer]:
    """localstripe sends its signed webhooks to the live server during this test only."""
    # localstripe picks a webhook's recipients one second after the event: let the previous
    # test's events go by before listening, and this test's before leaving.
    time.sleep(1.2)
    localstripe.send_webhooks_to(f"{live_server.url}/stripe/webhook")
    yield live_server
    time.sleep(1.2)
    localstripe.send_webhooks_to(None)
