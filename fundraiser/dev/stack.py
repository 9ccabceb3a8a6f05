"""`make run`: localstripe, a local mail server, the app and the scheduler, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from fundraiser.dev import refund_relay

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = ROOT / "instance"
APP_PORT = int(os.environ.get("APP_PORT", "5000"))
STRIPE_PORT = int(os.environ.get("LOCALSTRIPE_PORT", "8420"))
SMTP_PORT = int(os.environ.get("MAIL_PORT", "8025"))
MAIL_VIEWER_PORT = int(os.environ.get("MAIL_VIEWER_PORT", "8026"))
CONNECT_PORT = int(os.environ.get("CONNECT_PORT", "8421"))  # the fake Connect transfers API


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing is listening on port {port} after {timeout:.0f}s")


def port_in_use(port: int) -> bool:
    """True if a process already listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def register_webhook(stripe_base: str, url: str, secret: str) -> None:
    """Tell localstripe where to send its signed webhooks."""
    data = urllib.parse.urlencode({"url": url, "secret": secret}).encode()
    request = urllib.request.Request(f"{stripe_base}/_config/webhooks/fundraiser", data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def main() -> None:
    """Start everything, print where to go, and stop everything on Ctrl-C."""
    for port, what in (
        (APP_PORT, "the app"),
        (STRIPE_PORT, "localstripe"),
        (SMTP_PORT, "SMTP"),
        (CONNECT_PORT, "the fake Connect server"),
    ):
        if port_in_use(port):
            raise SystemExit(
                f"port {port} (for {what}) is already in use: stop what runs there first"
            )
    INSTANCE.mkdir(exist_ok=True)
    python = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # localstripe has no transfers: disbursements by Stripe Connect go to the local fake.
    env.setdefault("STRIPE_CONNECT_API_BASE", f"http://127.0.0.1:{CONNECT_PORT}")
    children: list[subprocess.Popen] = []

    def start(args: list[str]) -> None:
        children.append(subprocess.Popen(args, cwd=ROOT, env=env))

    def stop(*_args: object) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()

    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a shell that starts us in the background ignores SIGINT by default.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    try:
        start(
            [
                python,
                "-m",
                "fundraiser.dev.localstripe_server",
                "--port",
                str(STRIPE_PORT),
                "--store",
                str(INSTANCE / "localstripe.pickle"),
            ]
        )
        start(
            [
                python,
                "-m",
                "fundraiser.dev.mailbox",
                "--port",
                str(SMTP_PORT),
                "--dir",
                str(INSTANCE / "mail"),
                "--viewer-port",
                str(MAIL_VIEWER_PORT),
            ]
        )
        start([python, "-m", "fundraiser.dev.connect_server", "--port", str(CONNECT_PORT)])
        wait_for_port(STRIPE_PORT)
        wait_for_port(SMTP_PORT)
        wait_for_port(CONNECT_PORT)
        secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_localstripe_dev")
        register_webhook(
            f"http://127.0.0.1:{STRIPE_PORT}", f"http://127.0.0.1:{APP_PORT}/stripe/webhook", secret
        )
        start(
            [
                python,
                "-m",
                "flask",
                "--app",
                "wsgi",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(APP_PORT),
                "--no-reload",
            ]
        )
        wait_for_port(APP_PORT)
        # Opens and closes fast days, queues campaign messages, sends mail, charges pledges.
        start([python, "-m", "flask", "--app", "wsgi", "scheduler"])
        # localstripe sends no charge.refunded webhook; deliver what Stripe would.
        refund_relay.start(
            f"http://127.0.0.1:{STRIPE_PORT}", f"http://127.0.0.1:{APP_PORT}/stripe/webhook", secret
        )
        print(
            f"""
  fundraiser is running
  ---------------------
  App:          http://127.0.0.1:{APP_PORT}/
  Totals API:   http://127.0.0.1:{APP_PORT}/api/v1/fast-days
  localstripe:  http://127.0.0.1:{STRIPE_PORT}/  (test card 4242 4242 4242 4242, any future date, any CVC)
  Connect fake: {env["STRIPE_CONNECT_API_BASE"]}  (Stripe Connect transfers for disbursements)
  Mail:         SMTP 127.0.0.1:{SMTP_PORT}; every message is saved in {INSTANCE / "mail"}
  Mail viewer:  http://127.0.0.1:{MAIL_VIEWER_PORT}/  (what the app sent, newest first)
  Scheduler:    its own process (jobs every minute); `flask --app wsgi scheduler health`
  Logins (for the organizer and partner areas):
                organizer@example.org / fastday-organizer
                partner@example.org   / fastday-partner
  Press Ctrl-C to stop everything.
""",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a component stopped; stopping the rest", file=sys.stderr)
    except KeyboardInterrupt:
        print(
            "\nstopping localstripe, the mail server, the Connect fake, the app and the scheduler",
            flush=True,
        )
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut stop() short
        stop()


if __name__ == "__main__":
    main()
