"""The scheduler as a process: never inside web workers, catch-up after downtime, S1 and S3.

Every scheduler here is a real `flask --app wsgi scheduler` process on the suite's database
(SQLite under `make test`, PostgreSQL in CI's second pass), with SCHEDULER_TICK_SECONDS
shortening every periodic job to a second; mail goes to a real aiosmtpd server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
import requests
from sqlalchemy import func, select

from fundraiser.extensions import db
from fundraiser.models import FastDay, FastDayStatus, JobRun, utcnow
from tests.conftest import ROOT, free_port, wait_for_port, wait_until
from tests.factories import make_fast_day
from tests.scheduler_helpers import (
    CountingSMTP,
    SchedulerProcess,
    add_confirmed_subscribers,
    duplicates,
    outbox_states,
    schedule_utc_message,
    scheduler_env,
)


@pytest.fixture
def relay() -> Iterator[CountingSMTP]:
    """A real SMTP server of this test's own, counting what it receives."""
    server = CountingSMTP().start()
    yield server
    server.stop()


@pytest.fixture
def env(database_url, localstripe, relay) -> dict[str, str]:
    """What a scheduler or gunicorn process needs: the suite's database, Stripe and relay."""
    return scheduler_env(database_url, relay.port, localstripe.url, tick=1)


@pytest.fixture
def start_scheduler(env, tmp_path) -> Iterator:
    """Start scheduler processes; every one still running is stopped (SIGTERM) at the end."""
    started: list[SchedulerProcess] = []

    def start(**extra: str) -> SchedulerProcess:
        process = SchedulerProcess(
            {**env, **extra}, tmp_path / f"scheduler-{len(started)}.log"
        ).start()
        started.append(process)
        return process

    yield start
    for process in started:  # all at once, as a deploy would
        process.terminate()
    codes = [process.stop() for process in started]
    for process in started:
        assert "Traceback" not in process.log(), process.log()[-4000:]
    for process, code in zip(started, codes, strict=True):  # each stopped cleanly on SIGTERM
        assert code == 0, f"exit {code}:\n{process.log()[-8000:]}"


def day_status(day_id: int) -> str:
    db.session.commit()  # a fresh snapshot
    return db.session.get(FastDay, day_id).status


def job_runs() -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(JobRun))


# --- web workers never schedule --------------------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["gunicorn", "gunicorn-preload"])
def test_gunicorn_workers_never_run_a_job_and_one_scheduler_process_does(
    app, ctx, env, tmp_path, start_scheduler, preload
):
    day_id = make_fast_day(status=FastDayStatus.SCHEDULED, when=date.today()).id
    db.session.commit()
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as stderr:
        web = subprocess.Popen(
            [*args, *(["--preload"] if preload else []), "--log-level", "warning", "wsgi:app"],
            cwd=ROOT,
            env=env,  # SCHEDULER_TICK_SECONDS=1: a scheduler in there would act at once
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for_port(port, timeout=30)
        for _ in range(4):  # each worker has imported the app and served
            assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        time.sleep(2.5)
        assert day_status(day_id) == FastDayStatus.SCHEDULED
        assert job_runs() == 0

        start_scheduler()
        wait_until(lambda: day_status(day_id) == FastDayStatus.LIVE, timeout=30)
        assert job_runs() > 0
    finally:
        web.terminate()
        web.wait(timeout=20)
    assert "Traceback" not in log.read_text(errors="replace")


# --- S3: down across a send time -------------------------------------------------------------


def test_s3_a_message_due_while_the_scheduler_was_down_is_sent_once_after_restart_and_one_past_expiry_is_not(
    app, ctx, relay, start_scheduler
):
    day = make_fast_day()
    subscribers = add_confirmed_subscribers(5)
    now = utcnow()
    # The scheduler stopped 10 minutes before this one's time and comes back 30 minutes after.
    late = schedule_utc_message(day, now - timedelta(minutes=30), "thirty minutes late")
    # This one's time passed 7 hours ago: beyond CAMPAIGN_EXPIRY_HOURS (6).
    expired = schedule_utc_message(day, now - timedelta(hours=7), "seven hours late")

    first = start_scheduler()
    wait_until(lambda: outbox_states(late) == {"sent": 5} and relay.count() >= 5, timeout=30)
    wait_until(lambda: outbox_states(expired) == {"missed": 5}, timeout=30)
    time.sleep(2)  # two more ticks of every job: nothing more goes out
    first.stop()
    second = start_scheduler()  # and a restart sends nothing again
    wait_until(lambda: "scheduler: started" in second.log())
    time.sleep(2)

    received = relay.take()
    assert sorted(to for to, _ in received) == sorted(f"s{n}@example.org" for n in range(5))
    assert duplicates(received) == ([], [])
    assert outbox_states(late) == {"sent": 5} and outbox_states(expired) == {"missed": 5}
    assert len(subscribers) == 5
    # The alert: a WARNING line naming the message and the count, never an address.
    alerts = [line for line in first.log().splitlines() if "WARNING" in line and "missed" in line]
    assert any(f"campaign message {expired}: 5 copies" in line for line in alerts), alerts
    assert "@example.org" not in first.log() + second.log()


# --- S1: two and four schedulers, one campaign to 10,000 ---------------------------------------

S1_SUBSCRIBERS = 10_000
# The bar is 10 runs: five with two schedulers and five with four, each a fresh campaign to
# 10,000 subscribers. A run takes 30-60 s on a two-core machine (sending is bounded by one
# commit per message, which is what limits a killed sender to one duplicate), so the whole of
# S1 is about 6-8 minutes per database; S1_RUNS trims or extends it.
S1_RUNS = int(os.environ.get("S1_RUNS", "5"))


@pytest.mark.slow
@pytest.mark.parametrize("run", range(1, S1_RUNS + 1), ids=lambda n: f"run{n}")
@pytest.mark.parametrize("processes", [2, 4], ids=lambda n: f"{n}-schedulers")
def test_s1_schedulers_side_by_side_send_a_10000_campaign_exactly_once(
    app, ctx, relay, start_scheduler, processes, run
):
    day = make_fast_day()
    add_confirmed_subscribers(S1_SUBSCRIBERS)
    # Due a minute ago: every process, started together, queues it at once, side by side.
    message = schedule_utc_message(day, utcnow() - timedelta(minutes=1), f"run {run}")
    began = time.monotonic()
    schedulers = [start_scheduler(MAIL_BATCH_SIZE="200") for _ in range(processes)]

    wait_until(
        lambda: outbox_states(message) == {"sent": S1_SUBSCRIBERS}, timeout=240, interval=0.5
    )
    elapsed = time.monotonic() - began
    time.sleep(1.5)  # another tick of every job in every process: nothing more goes out

    received = relay.take()
    to_twice, ids_twice = duplicates(received)
    assert (to_twice[:5], ids_twice[:5]) == ([], [])
    assert len(received) == S1_SUBSCRIBERS
    assert {to for to, _ in received} == {f"s{n}@example.org" for n in range(S1_SUBSCRIBERS)}
    senders = [process.sent() for process in schedulers]
    queuers = [process.queued() for process in schedulers]
    print(
        f"\nS1 {processes} schedulers, run {run}: {elapsed:.1f} s; sent {senders}, queued {queuers}"
    )
    assert sum(senders) == S1_SUBSCRIBERS and sum(queuers) == S1_SUBSCRIBERS
