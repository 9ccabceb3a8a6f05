"""The scheduler process: `flask --app wsgi scheduler`, and the one place its jobs are declared.

APScheduler 3.x runs here, in its own process, never inside a web worker: nothing in
``create_app`` or ``wsgi`` starts it. Its job store is in memory, because the jobs are code,
not data; what they act on is data. Every job only claims and processes due rows in the
database (fast days past their start, campaign messages past their send time, outbox rows
past their due time, pledges past their charge time), so

- a restart loses nothing: the jobs run once at start and pick up whatever fell due while
  the process was down (each run is given the time it runs at, never the time it was meant to);
- a second scheduler process, by accident or during a deploy, does nothing twice: what is
  enqueued has a unique key and what is sent or charged is claimed row by row (``FOR UPDATE
  SKIP LOCKED`` on PostgreSQL, a conditional ``UPDATE`` on SQLite).

APScheduler's defaults would be wrong here: ``misfire_grace_time`` is one second, so a job
whose wake-up is late (a busy machine, a suspended VM) is silently skipped. Every job is
declared with ``misfire_grace_time=None`` (run however late), ``coalesce=True`` (a backlog of
missed runs is one run) and ``max_instances=1`` (a long drain is not joined by a second one
in the same process).

Each job runs in its own app context, catches and logs its own exceptions (a failing job
never stops the process), logs one line of what it did, and records its last run in
``JobRun`` for ``flask --app wsgi scheduler health``.
"""

from __future__ import annotations

import faulthandler
import importlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from types import ModuleType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask, current_app
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .database import writing
from .extensions import db
from .models import JobRun, OutboxMessage, OutboxState, utcnow

log = logging.getLogger(__name__)

# Health: a job is late when it has not started for its period plus this long.
LATE_AFTER = timedelta(minutes=15)
# Health: queued mail this far past its time means nothing is sending it.
OVERDUE_AFTER = timedelta(minutes=15)

# Stripe's events wait at most this long for a worker, and a busy run drains for at most this.
WEBHOOK_POLL_SECONDS = 0.5
WEBHOOK_DRAIN_SECONDS = 60.0

# Set when the process is asked to stop: long jobs finish their current chunk and return.
_stopping = threading.Event()
_reported_unavailable: set[str] = set()


@dataclass(frozen=True)
class Outcome:
    """What one run of a job did: one line for the log and the JobRun row."""

    summary: str
    ok: bool = True
    idle: bool = False  # nothing was due: logged at DEBUG, so a quiet day is a quiet log
    alert: bool = False  # something a person should look at: logged at WARNING


JobFunction = Callable[[datetime], Outcome]


# --- the jobs --------------------------------------------------------------------------------
# Each takes the moment it runs at, commits its own units of work, and returns an Outcome.


def advance_fast_days(now: datetime) -> Outcome:
    """Open the fast days whose local day has begun and close the ones that have ended."""
    from . import fast_days

    with writing():
        changes = fast_days.advance_statuses(now)
        db.session.commit()
        moves = [f"{c.day.slug} {c.before} -> {c.after}" for c in changes]
    if not moves:
        return Outcome("nothing to move", idle=True)
    return Outcome("; ".join(moves))


def enqueue_campaign_messages(now: datetime) -> Outcome:
    """Queue, in the outbox, the campaign messages whose send time has come."""
    enqueue_due = _optional("campaigns", "enqueue_due")
    if enqueue_due is None:
        return _not_available("campaigns.enqueue_due")
    # It takes the write lock and commits per chunk itself; the commit here is a no-op unless
    # it left something behind.
    queued = enqueue_due(now)
    db.session.commit()
    return Outcome(f"queued {queued} message(s)", idle=not queued)


def drain_outbox(now: datetime) -> Outcome:
    """Send every due outbox row over SMTP (the outbox claims, retries and expires them)."""
    from . import outbox

    # One batch (one SMTP connection) per call, so a stopping process finishes within a batch.
    batch = current_app.config["MAIL_BATCH_SIZE"]
    total = outbox.DrainReport()
    while not _stopping.is_set():
        report = outbox.drain(batch_size=batch, limit=batch, now=now)
        for f in fields(total):
            mine, theirs = getattr(total, f.name), getattr(report, f.name)
            setattr(total, f.name, (mine or theirs) if isinstance(mine, bool) else mine + theirs)
        if report.handled < batch or total.relay_down:
            break
    trouble = total.missed or total.failed or total.bounced or total.reconnects
    summary = str(total)
    if total.missed:
        summary += " (missed: past their expiry, not sent)"
    return Outcome(
        summary,
        ok=not total.relay_down,
        idle=total.handled == 0 and not trouble and not total.relay_down,
        alert=bool(trouble),
    )


def apply_webhook_events(now: datetime) -> Outcome:
    """Apply the Stripe events the webhook stored, batch by batch, while any is due.

    It runs every ``WEBHOOK_POLL_SECONDS`` and keeps going while events arrive, up to
    ``WEBHOOK_DRAIN_SECONDS`` a run (so its JobRun row stays fresh). Several scheduler
    processes may run it at once: each batch is claimed by one of them only.
    """
    from .payments import webhooks

    deadline = time.monotonic() + WEBHOOK_DRAIN_SECONDS
    total = webhooks.apply_pending(
        keep_going=lambda: not _stopping.is_set() and time.monotonic() < deadline
    )
    trouble = total.retrying or total.failed
    return Outcome(str(total), idle=not total.handled, alert=bool(trouble))


def charge_due_pledges(now: datetime) -> Outcome:
    """Charge the pledges whose time on the fast day has come (off-session, once each)."""
    charge_due = _optional("pledge_charges", "charge_due")
    if charge_due is None:
        return _not_available("pledge_charges.charge_due")
    # It claims, charges and commits pledge by pledge itself (Stripe is called between).
    report = charge_due(now)
    db.session.commit()
    errors = getattr(report, "errors", 0)
    failed = getattr(report, "failed", 0)
    return Outcome(
        str(report), ok=not errors, idle=_is_nothing(report), alert=bool(errors or failed)
    )


def send_pledge_reminders(now: datetime) -> Outcome:
    """Remind donors of pledges to be charged soon (each reminder queued once, by key)."""
    send_reminders = _optional("pledge_charges", "send_reminders")
    if send_reminders is None:
        return _not_available("pledge_charges.send_reminders")
    sent = send_reminders(now)  # commits itself
    db.session.commit()
    return Outcome(f"{sent} reminder(s) queued", idle=_is_nothing(sent))


def reconcile_yesterday(now: datetime) -> Outcome:
    """Compare yesterday's (UTC) Stripe balance transactions with the ledger; log each difference.

    Read-only. Differences make the run not OK, so the health check shows them until the
    next clean night; Stripe being unreachable does too, and the process carries on.
    """
    from . import reconciliation
    from .payments.stripe_gateway import PaymentError

    day = now.astimezone(UTC).date() - timedelta(days=1)
    start = datetime.combine(day, clock_time.min, tzinfo=UTC)
    try:
        report = reconciliation.reconcile(start, start + timedelta(days=1))
    except PaymentError as exc:
        return Outcome(f"{day}: Stripe could not be read: {exc}", ok=False)
    for difference in report.differences:
        log.warning("reconciliation %s: %s", day, difference)
    summary = (
        f"{day}: {len(report.differences)} difference(s); {report.transactions} Stripe "
        f"transaction(s), {report.entries} ledger row(s), {report.ignored} not booked"
    )
    return Outcome(summary, ok=report.clean, alert=not report.clean)


def _optional(module: str, name: str) -> Callable[..., Any] | None:
    """A function of a module that may not exist yet in this release; None if it does not."""
    try:
        found: ModuleType = importlib.import_module(f"{__package__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.{module}":
            raise  # the module exists but is broken: that is a failure, not an absence
        return None
    return getattr(found, name, None)


def _not_available(what: str) -> Outcome:
    if what not in _reported_unavailable:
        _reported_unavailable.add(what)
        log.info("scheduler: %s is not available in this release; the job does nothing", what)
    return Outcome(f"not available: {what}", idle=True)


def _is_nothing(result: Any) -> bool:
    if isinstance(result, int):
        return result == 0
    handled = getattr(result, "handled", None)
    if isinstance(handled, int):
        return handled == 0
    return str(result) in ("", "nothing due")


# --- running one job -------------------------------------------------------------------------


def run_job(app: Flask, name: str, function: JobFunction, now: datetime | None = None) -> Outcome:
    """Run one job in an app context, record it in JobRun, and never raise."""
    clock = time.monotonic()
    try:
        with app.app_context():
            started = utcnow()
            _record_start(name, started)
            try:
                outcome = function(now or started)
            except Exception as exc:
                db.session.rollback()
                log.exception("job %s failed", name)
                outcome = Outcome(f"failed: {type(exc).__name__}: {exc}"[:500], ok=False)
            _record_finish(name, utcnow(), outcome)
    except Exception as exc:  # the database itself is unreachable: log, and try next time
        log.exception("job %s could not run", name)
        return Outcome(f"could not run: {type(exc).__name__}", ok=False)
    elapsed = time.monotonic() - clock
    level = logging.DEBUG if outcome.idle else logging.INFO
    if outcome.alert or not outcome.ok:
        level = logging.WARNING
    log.log(level, "job %s: %s (%.1f s)", name, outcome.summary, elapsed)
    return outcome


def _record_start(name: str, started: datetime) -> None:
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(JobRun).values(
        job=name, last_started_at=started, last_ok=True, last_summary="", runs=1
    )
    with writing():
        db.session.execute(
            statement.on_conflict_do_update(
                index_elements=["job"],
                set_={"last_started_at": started, "runs": JobRun.__table__.c.runs + 1},
            )
        )
        db.session.commit()


def _record_finish(name: str, finished: datetime, outcome: Outcome) -> None:
    with writing():
        db.session.execute(
            update(JobRun)
            .where(JobRun.job == name)
            .values(
                last_finished_at=finished, last_ok=outcome.ok, last_summary=outcome.summary[:2000]
            )
        )
        db.session.commit()


# --- the schedule ------------------------------------------------------------------------------


def tick_seconds(app: Flask) -> float | None:
    """SCHEDULER_TICK_SECONDS, if set: every periodic job then runs this often (tests, demos)."""
    value = app.config.get("SCHEDULER_TICK_SECONDS") or os.environ.get("SCHEDULER_TICK_SECONDS")
    return float(value) if value else None


def register_jobs(scheduler: BaseScheduler, app: Flask) -> None:
    """Declare every job of the scheduler process: the one place they are listed."""
    tick = tick_seconds(app)

    def every(seconds: float) -> IntervalTrigger:
        return IntervalTrigger(seconds=tick or seconds, timezone=UTC)

    def add(function: JobFunction, trigger: BaseTrigger, *, at_start: bool = True) -> None:
        name = function.__name__
        options: dict[str, Any] = {}
        if at_start:
            # Catch up at once on whatever fell due while no scheduler was running.
            options["next_run_time"] = datetime.now(UTC)
        scheduler.add_job(
            run_job,
            trigger,
            args=(app, name, function),
            id=name,
            name=name,
            coalesce=True,  # runs missed while busy or suspended collapse into one
            max_instances=1,  # never two runs of one job at once in this process
            misfire_grace_time=None,  # a late wake-up still runs, however late
            replace_existing=True,
            **options,
        )

    add(advance_fast_days, every(60))
    add(enqueue_campaign_messages, every(60))
    # Its own short poll whatever the tick: Stripe's events are applied within a second.
    poll = min(tick or WEBHOOK_POLL_SECONDS, WEBHOOK_POLL_SECONDS)
    add(apply_webhook_events, IntervalTrigger(seconds=poll, timezone=UTC))
    add(drain_outbox, every(20))
    add(charge_due_pledges, every(60))
    add(send_pledge_reminders, every(3600))
    # Not at start: a restart should not read a day of Stripe's history again.
    add(reconcile_yesterday, CronTrigger(hour=3, minute=0, timezone=UTC), at_start=False)


def build_scheduler(app: Flask) -> BlockingScheduler:
    """The process's scheduler: in-memory jobs, UTC, one thread per job so none waits on another."""
    # APScheduler logs every addition and run at INFO; our own one line per run says more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # It also warns whenever a run is skipped because the previous one is still going (a long
    # drain): by design here, since max_instances=1. A job stuck for good shows as late in
    # `scheduler health`.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    scheduler = BlockingScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=8)},
        timezone=UTC,
    )
    register_jobs(scheduler, app)
    return scheduler


def job_functions(app: Flask) -> dict[str, JobFunction]:
    """Every registered job's function, by name (for `scheduler run-once` and the tests)."""
    return {job.id: job.args[2] for job in build_scheduler(app).get_jobs()}


def run_once(app: Flask, names: list[str] | None = None) -> dict[str, Outcome]:
    """Run the named jobs (all, in declaration order, by default) once, now."""
    functions = job_functions(app)
    unknown = sorted(set(names or ()) - set(functions))
    if unknown:
        raise KeyError(", ".join(unknown))
    return {
        name: run_job(app, name, function)
        for name, function in functions.items()
        if not names or name in names
    }


def run(app: Flask) -> None:
    """Run the scheduler in the foreground until SIGTERM or Ctrl-C."""
    scheduler = build_scheduler(app)

    requested = False

    def shut_down() -> None:
        log.info("scheduler: stopping; running jobs finish their current batch")
        _stopping.set()
        for _ in range(100):  # a signal that came just before start(): wait for it to run
            if scheduler.state != STATE_STOPPED:
                break
            time.sleep(0.05)
        scheduler.shutdown(wait=False)

    def stop(_signum: int, _frame: Any) -> None:
        # Ctrl-C under `make run` reaches us twice (SIGINT to the terminal's process group,
        # then SIGTERM from the stack): the second changes nothing. SIGKILL stops at once.
        nonlocal requested
        if requested:
            return
        requested = True
        # From now on a second signal is ignored at the OS level too: Python restores the
        # default (fatal) SIGTERM while it finalizes, and a late one would kill the exit.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # The handler runs in the main thread wherever it was interrupted, possibly holding
        # the lock of the scheduler's own wake-up Event or of the log's stream: setting that
        # Event or logging from here can deadlock (a scheduler that never stopped, seen once
        # in CI). Another thread does it as soon as the main thread lets go.
        threading.Thread(target=shut_down, name="scheduler-stop", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a stuck job is waiting on.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    jobs = ", ".join(job.id for job in scheduler.get_jobs())
    log.info("scheduler: started (pid %d) with %s", os.getpid(), jobs)
    scheduler.start()  # blocks until stop()
    log.info("scheduler: stopped")


# --- health ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobHealth:
    """One job's last run, and whether it needs a person's attention."""

    name: str
    period: timedelta
    run: JobRun | None
    late: bool

    @property
    def failed(self) -> bool:
        """The job's last run did not succeed."""
        return (
            self.run is not None and self.run.last_finished_at is not None and not self.run.last_ok
        )


@dataclass
class Health:
    """The scheduler's health: each job's last run and the outbox backlog."""

    now: datetime
    jobs: list[JobHealth]
    backlog: dict[str, int]
    overdue: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing failed last, nothing is late, no mail is stuck."""
        return not self.problems


def _period(trigger: BaseTrigger, now: datetime) -> timedelta:
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    return second - first


def health(
    app: Flask,
    now: datetime | None = None,
    *,
    late_after: timedelta = LATE_AFTER,
    overdue_after: timedelta = OVERDUE_AFTER,
) -> Health:
    """Each job's last run and the outbox backlog, with what needs attention."""
    from . import outbox
    from .models.stripe_event import EventState
    from .payments import webhooks

    now = now or utcnow()
    runs = {row.job: row for row in db.session.scalars(select(JobRun))}
    jobs = []
    for job in build_scheduler(app).get_jobs():
        period = _period(job.trigger, now)
        row = runs.get(job.id)
        late = row is not None and (
            row.last_started_at is None or now - row.last_started_at > period + late_after
        )
        jobs.append(JobHealth(job.id, period, row, late))
    overdue = db.session.scalar(
        select(func.count())
        .select_from(OutboxMessage)
        .where(
            or_(
                (OutboxMessage.state == OutboxState.QUEUED)
                & (OutboxMessage.next_attempt_at < now - overdue_after),
                (OutboxMessage.state == OutboxState.SENDING)
                & (OutboxMessage.claimed_at < now - overdue_after),
            )
        )
    )
    report = Health(now=now, jobs=jobs, backlog=outbox.backlog(), overdue=int(overdue or 0))
    for job in jobs:
        if job.failed:
            report.problems.append(f"{job.name} failed last: {job.run.last_summary}")
        if job.late:
            report.problems.append(
                f"{job.name} has not run for {_ago(job.run.last_started_at, now)}"
            )
    failed_events = webhooks.backlog().get(str(EventState.FAILED), 0)
    if failed_events:
        report.problems.append(
            f"{failed_events} Stripe event(s) failed to apply and wait for review"
        )
    if report.overdue:
        report.problems.append(
            f"{report.overdue} e-mail(s) waiting more than {_ago(now - overdue_after, now)} "
            "past their time"
        )
    return report


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(int((now - moment).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def health_lines(report: Health) -> list[str]:
    """The health report as the command prints it."""
    lines = []
    for job in report.jobs:
        row = job.run
        every = _ago(report.now - job.period, report.now)
        if row is None:
            lines.append(f"{job.name} (every {every}): never run")
            continue
        running = row.last_finished_at is None or row.last_finished_at < row.last_started_at
        state = "running" if running else ("ok" if row.last_ok else "FAILED")
        if job.late:
            state += ", LATE"
        lines.append(
            f"{job.name} (every {every}): {state}; started {_ago(row.last_started_at, report.now)}"
            f" ago, finished {_ago(row.last_finished_at, report.now)} ago, {row.runs} run(s): "
            f"{row.last_summary or '-'}"
        )
    backlog = ", ".join(f"{state} {count}" for state, count in sorted(report.backlog.items()))
    lines.append(f"outbox: {backlog or 'empty'}; overdue {report.overdue}")
    return lines
