"""The scheduler's jobs, run in this process: what each does, its JobRun record, and health.

The scheduler process itself (real `flask --app wsgi scheduler` processes, gunicorn beside
them, S1 and S3) is tested in test_scheduler_processes.py.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from fundraiser import outbox, scheduler
from fundraiser.extensions import db
from fundraiser.models import EntryKind, FastDay, FastDayStatus, JobRun, PledgeStatus, utcnow
from tests.conftest import free_port, wait_until
from tests.factories import make_entry, make_fast_day, make_pledge

JOBS = [
    "advance_fast_days",
    "enqueue_campaign_messages",
    "apply_webhook_events",
    "drain_outbox",
    "charge_due_pledges",
    "send_pledge_reminders",
    "reconcile_yesterday",
]


def job_run(name: str) -> JobRun | None:
    db.session.commit()  # a fresh read
    return db.session.get(JobRun, name)


def queue_mail(key: str, *, due_at: datetime | None = None) -> None:
    outbox.enqueue(
        outbox.Outgoing(
            key=key,
            kind="test",
            to_email=f"{key}@example.org",
            subject="Hello",
            text_body="Hello",
            due_at=due_at,
        ),
        kick=False,
    )


@pytest.fixture
def stripe_unreachable(app):
    before = app.config["STRIPE_API_BASE"]
    app.config["STRIPE_API_BASE"] = f"http://127.0.0.1:{free_port()}"
    yield
    app.config["STRIPE_API_BASE"] = before


# --- the declaration -------------------------------------------------------------------------


def test_every_job_is_declared_once_and_runs_however_late_once_and_never_beside_itself(app):
    jobs = scheduler.build_scheduler(app).get_jobs()

    assert [job.id for job in jobs] == JOBS
    for job in jobs:
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, None)


def test_a_wake_up_two_hours_late_still_runs_the_job_once(app, ctx):
    day = make_fast_day(status=FastDayStatus.SCHEDULED, when=date.today())
    db.session.commit()
    background = BackgroundScheduler(timezone=UTC)
    scheduler.register_jobs(background, app)
    for job in background.get_jobs():
        if job.id != "advance_fast_days":
            background.remove_job(job.id)
    # As if the machine slept: 120 runs were due, the last one 30 s ago (APScheduler's
    # default grace of 1 s would skip it silently).
    background.modify_job(
        "advance_fast_days", next_run_time=datetime.now(UTC) - timedelta(hours=2, seconds=30)
    )
    background.start()
    try:
        wait_until(lambda: (run := job_run("advance_fast_days")) and run.last_finished_at)
        time.sleep(0.5)
    finally:
        background.shutdown(wait=True)

    run = job_run("advance_fast_days")
    assert run.runs == 1 and run.last_ok
    assert db.session.get(FastDay, day.id).status == FastDayStatus.LIVE


# --- the jobs --------------------------------------------------------------------------------


def test_each_job_records_its_start_finish_outcome_and_count(app, ctx, localstripe, mailbox):
    first = scheduler.run_once(app)
    second = scheduler.run_once(app, ["advance_fast_days"])

    assert list(first) == JOBS and list(second) == ["advance_fast_days"]
    runs = {row.job: row for row in db.session.scalars(select(JobRun))}
    assert set(runs) == set(JOBS)
    assert runs["advance_fast_days"].runs == 2
    assert runs["drain_outbox"].runs == 1
    for row in runs.values():
        assert row.last_started_at <= row.last_finished_at
    assert runs["advance_fast_days"].last_summary == "nothing to move"
    assert runs["drain_outbox"].last_summary == "nothing due"


def test_the_advance_job_opens_a_day_whose_local_start_has_passed(app, ctx):
    due = make_fast_day(status=FastDayStatus.SCHEDULED, when=date.today(), slug="due")
    later = make_fast_day(
        status=FastDayStatus.SCHEDULED, when=date.today() + timedelta(days=2), slug="later"
    )
    db.session.commit()

    outcome = scheduler.run_job(app, "advance_fast_days", scheduler.advance_fast_days)

    assert outcome.ok and outcome.summary == "due scheduled -> live"
    db.session.expire_all()
    assert (due.status, later.status) == (FastDayStatus.LIVE, FastDayStatus.SCHEDULED)
    assert job_run("advance_fast_days").last_summary == "due scheduled -> live"


def test_the_drain_job_sends_due_mail_once_and_leaves_mail_not_yet_due(app, ctx, mailbox):
    queue_mail("due")
    queue_mail("later", due_at=utcnow() + timedelta(hours=1))
    db.session.commit()

    first = scheduler.run_job(app, "drain_outbox", scheduler.drain_outbox)
    second = scheduler.run_job(app, "drain_outbox", scheduler.drain_outbox)

    assert (first.summary, second.summary) == ("sent 1", "nothing due")
    assert [m["To"] for m in mailbox.wait_for(1)] == ["due@example.org"]
    assert outbox.backlog() == {"sent": 1, "queued": 1}


def test_reconciliation_with_stripe_unreachable_fails_the_run_without_raising(
    app, ctx, stripe_unreachable, caplog
):
    outcome = scheduler.run_job(app, "reconcile_yesterday", scheduler.reconcile_yesterday)

    assert not outcome.ok
    assert "Stripe could not be read" in outcome.summary
    run = job_run("reconcile_yesterday")
    assert run.last_ok is False and "Stripe could not be read" in run.last_summary
    assert any(
        r.levelno == logging.WARNING and "job reconcile_yesterday" in r.getMessage()
        for r in caplog.records
    )


def test_nightly_reconciliation_logs_each_difference_as_a_warning(app, ctx, localstripe, caplog):
    pledge = make_pledge(make_fast_day(), status=PledgeStatus.SUCCEEDED)
    make_entry(pledge, EntryKind.GIFT, 2500, "ch_nobody_made")
    db.session.commit()
    tomorrow = utcnow() + timedelta(days=1)  # so "yesterday" is today, when the row was booked

    outcome = scheduler.run_job(
        app, "reconcile_yesterday", scheduler.reconcile_yesterday, now=tomorrow
    )

    assert not outcome.ok and "difference(s)" in outcome.summary
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("missing_at_stripe: gift ch_nobody_made" in w for w in warnings), warnings


def test_a_job_that_raises_is_recorded_as_failed_and_the_next_run_starts_afresh(app, ctx):
    def broken(now: datetime) -> scheduler.Outcome:
        raise RuntimeError("the database said no")

    outcome = scheduler.run_job(app, "broken", broken)
    assert not outcome.ok and outcome.summary == "failed: RuntimeError: the database said no"
    assert job_run("broken").last_ok is False

    outcome = scheduler.run_job(app, "broken", lambda now: scheduler.Outcome("fine again"))
    run = job_run("broken")
    assert (run.last_ok, run.last_summary, run.runs) == (True, "fine again", 2)


# --- the commands ------------------------------------------------------------------------------


def test_health_on_a_fresh_deployment_lists_every_job_as_never_run_and_passes(app, runner):
    result = runner.invoke(args=["scheduler", "health"])

    assert result.exit_code == 0, result.output
    for name in JOBS:
        assert f"{name} (every " in result.output
    assert result.output.count("never run") == len(JOBS)
    assert "outbox: empty; overdue 0" in result.output
    assert result.output.rstrip().endswith("scheduler health: OK")


def test_health_fails_on_mail_overdue_by_more_than_the_threshold(app, ctx, runner):
    queue_mail("stuck", due_at=utcnow() - timedelta(minutes=20))
    queue_mail("fresh")
    db.session.commit()

    strict = runner.invoke(args=["scheduler", "health"])
    lenient = runner.invoke(args=["scheduler", "health", "--overdue-minutes", "30"])

    assert strict.exit_code == 1
    assert "outbox: queued 2; overdue 1" in strict.output
    assert "1 e-mail(s) waiting more than 15 min past their time" in strict.output
    assert lenient.exit_code == 0, lenient.output


def test_health_fails_when_a_job_failed_last_and_shows_why(app, ctx, runner, stripe_unreachable):
    scheduler.run_once(app, ["advance_fast_days", "reconcile_yesterday"])

    result = runner.invoke(args=["scheduler", "health"])

    assert result.exit_code == 1
    assert "advance_fast_days (every 1 min): ok; started 0 s ago" in result.output
    assert "reconcile_yesterday (every 1 d): FAILED" in result.output
    assert "problem: reconcile_yesterday failed last: " in result.output
    assert "scheduler health: 1 problem(s)" in result.output


def test_health_fails_when_a_job_has_not_run_for_its_period_and_more(app, ctx, runner):
    scheduler.run_once(app, ["drain_outbox"])
    db.session.get(JobRun, "drain_outbox").last_started_at = utcnow() - timedelta(minutes=40)
    db.session.commit()

    result = runner.invoke(args=["scheduler", "health"])
    patient = runner.invoke(args=["scheduler", "health", "--late-minutes", "60"])

    assert result.exit_code == 1
    assert "drain_outbox (every 20 s): ok, LATE; started 40 min ago" in result.output
    assert "problem: drain_outbox has not run for 40 min" in result.output
    assert patient.exit_code == 0, patient.output


def test_run_once_runs_the_named_jobs_and_refuses_unknown_ones(app, runner):
    result = runner.invoke(args=["scheduler", "run-once", "advance_fast_days", "drain_outbox"])
    unknown = runner.invoke(args=["scheduler", "run-once", "send_everything"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "advance_fast_days: ok: nothing to move",
        "drain_outbox: ok: nothing due",
    ]
    assert unknown.exit_code == 2 and "no such job: send_everything" in unknown.output
