"""X5: login attempts are limited per account in total, across gunicorn workers (Redis)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest
import requests

from fundraiser.extensions import db
from tests.conftest import ROOT, free_port, wait_for_port
from tests.factories import CSRF_RE, make_user

ACCOUNT_LIMIT_PER_MINUTE = 10  # fundraiser/views/auth.py


@pytest.fixture
def gunicorn_with_redis(app, database_url):
    """The app under gunicorn with two workers sharing rate limits in Redis."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": "x" * 40,
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/0",
        "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",  # a fresh count for this run
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "wsgi:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_200_attempts_on_one_account_are_limited_in_total_across_workers(app, gunicorn_with_redis):
    with app.app_context():
        make_user("organizer", email="target@example.org")
        db.session.commit()

    statuses: Counter[int] = Counter()
    # Several browsers (so both workers serve), all guessing one account's password.
    browsers = []
    for _ in range(8):
        browser = requests.Session()
        page = browser.get(f"{gunicorn_with_redis}/login", timeout=10)
        browsers.append((browser, CSRF_RE.search(page.text).group(1)))
    for attempt in range(200):
        browser, token = browsers[attempt % len(browsers)]
        response = browser.post(
            f"{gunicorn_with_redis}/login",
            data={
                "csrf_token": token,
                "email": "target@example.org",
                "password": f"guess {attempt}",
            },
            headers={"Connection": "close"},  # new connections spread over the workers
            timeout=10,
        )
        statuses[response.status_code] += 1

    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses[401] <= ACCOUNT_LIMIT_PER_MINUTE, statuses
    assert statuses[429] >= 200 - ACCOUNT_LIMIT_PER_MINUTE
