"""Flask commands: `flask --app wsgi demo-data`."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import demo
from .database import writing
from .extensions import db
from .models import Role


def register(app: Flask) -> None:
    """Attach the commands to the app."""
    app.cli.add_command(users)
    app.cli.add_command(fast_days_commands)
    app.cli.add_command(ledger_commands)
    app.cli.add_command(disbursements_commands)
    app.cli.add_command(outbox_commands)
    app.cli.add_command(campaigns_commands)
    app.cli.add_command(scheduler_commands)
    app.cli.add_command(pledges_commands)
    app.cli.add_command(bench_data_command)
    app.cli.add_command(webhooks_commands)

    @app.cli.command("demo-data")
    @click.option("--force", is_flag=True, help="Load even if the database already has fast days.")
    def demo_data(force: bool) -> None:
        """Load demo fast days, groups, gifts and logins into an empty database."""
        if app.config["ENV_NAME"] == "production":
            raise click.ClickException("demo data is for development only")
        with writing():
            if not force and not demo.is_empty():
                click.echo("demo data: the database already has fast days; nothing loaded")
                return
            demo.load()
            db.session.commit()
        click.echo("demo data: loaded three fast days, six groups and two logins")


@click.command("bench-data")
@click.option("--gifts", type=click.IntRange(min=0), required=True, help="Succeeded gifts.")
@click.option("--groups", type=click.IntRange(min=1), required=True, help="Aid groups funded.")
@click.option("--subscribers", type=click.IntRange(min=0), default=0, help="Confirmed subscribers.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same data.")
@click.option("--slug", default="bench-day", show_default=True, help="The fast day's slug.")
@with_appcontext
def bench_data_command(gifts: int, groups: int, subscribers: int, seed: int, slug: str) -> None:
    """Load a live fast day with many gifts, their ledger rows and subscribers, in bulk.

    Prints the day's slug on stdout; the progress bar and a summary go to stderr.
    """
    import sys
    import time

    from . import bench_data

    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("bench data is for development only")
    started = time.perf_counter()
    with click.progressbar(
        length=gifts + subscribers, label="bench-data", file=sys.stderr, show_pos=True
    ) as bar:
        try:
            report = bench_data.load(
                gifts=gifts,
                groups=groups,
                subscribers=subscribers,
                seed=seed,
                slug=slug,
                progress=bar.update,
            )
        except bench_data.BenchDataError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(
        f"bench-data: {report.gifts} gifts ({report.refunds} refunded), {report.ledger_rows} "
        f"ledger rows, {report.groups} groups, {report.subscribers} subscribers "
        f"in {time.perf_counter() - started:.1f} s",
        err=True,
    )
    click.echo(report.slug)


users = AppGroup("users", help="Manage organizer and partner accounts.")


@users.command("create-organizer")
@click.argument("email")
def create_organizer(email: str) -> None:
    """Create an organizer account; the password is asked for, never taken as an argument."""
    from . import audit, auth

    password = click.prompt(
        "Password (at least 12 characters)", hide_input=True, confirmation_prompt=True
    )
    problem = auth.password_problem(password)
    if problem:
        raise click.ClickException(problem)
    with writing():
        try:
            user = auth.create_user(email, Role.ORGANIZER, password=password)
        except auth.AccountError as exc:
            raise click.ClickException(str(exc)) from None
        audit.record(
            "user.create",
            target=user,
            actor=user,
            after={"email": user.email, "role": "organizer", "via": "command line"},
        )
        db.session.commit()
    click.echo(f"organizer {user.email} created; sign in at /login")


# --- fast days ---------------------------------------------------------------------------

fast_days_commands = AppGroup("fast-days", help="Run fast days from the command line.")


@fast_days_commands.command("advance")
def advance_fast_days() -> None:
    """Open the fast days whose day has begun and close the ones whose day has ended."""
    from . import fast_days
    from .models import utcnow

    with writing():
        changes = fast_days.advance_statuses(utcnow())
        db.session.commit()
        for change in changes:
            click.echo(f"{change.day.slug}: {change.before} -> {change.after}")
    if not changes:
        click.echo("fast days: nothing to move")


# --- the scheduler -----------------------------------------------------------------------------


@click.group("scheduler", cls=AppGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def scheduler_commands(ctx: click.Context) -> None:
    """Run the scheduler process in the foreground (exactly one per deployment).

    It opens and closes fast days, queues due campaign messages, sends the outbox, charges
    due pledges, sends pledge reminders and reconciles with Stripe nightly (03:00 UTC).
    SIGTERM or Ctrl-C stops it. SCHEDULER_TICK_SECONDS makes every periodic job run that often.
    """
    if ctx.invoked_subcommand is None:
        from . import scheduler

        scheduler.run(current_app._get_current_object())


@scheduler_commands.command("health")
@click.option(
    "--overdue-minutes",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Queued mail this many minutes past its time counts as stuck.",
)
@click.option(
    "--late-minutes",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="A job that has not started for its period plus this many minutes is late.",
)
def scheduler_health(overdue_minutes: int, late_minutes: int) -> None:
    """Show each job's last run and the outbox backlog; exit 1 if something needs a person.

    Exits 1 when a job's last run failed (nightly reconciliation fails on any difference with
    Stripe), a job that has run before is late (no scheduler is running), or e-mail waits more
    than --overdue-minutes past its time (nothing is sending it); else 0. Jobs that never ran
    (a fresh deployment) are listed, not counted as problems.
    """
    from . import scheduler

    report = scheduler.health(
        current_app._get_current_object(),
        late_after=timedelta(minutes=late_minutes),
        overdue_after=timedelta(minutes=overdue_minutes),
    )
    for line in scheduler.health_lines(report):
        click.echo(line)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"problem: {problem}", err=True)
        click.echo(f"scheduler health: {len(report.problems)} problem(s)", err=True)
        raise SystemExit(1)
    click.echo("scheduler health: OK")


@scheduler_commands.command("run-once")
@click.argument("jobs", nargs=-1)
def scheduler_run_once(jobs: tuple[str, ...]) -> None:
    """Run the named jobs (every job by default) once, now, and exit; 1 if any failed."""
    from . import scheduler

    try:
        outcomes = scheduler.run_once(current_app._get_current_object(), list(jobs) or None)
    except KeyError as exc:
        raise click.BadParameter(f"no such job: {exc.args[0]}", param_hint="JOBS") from None
    for name, outcome in outcomes.items():
        click.echo(f"{name}: {'ok' if outcome.ok else 'FAILED'}: {outcome.summary}")
    if not all(outcome.ok for outcome in outcomes.values()):
        raise SystemExit(1)


# --- campaign messages -------------------------------------------------------------------------

campaigns_commands = AppGroup("campaigns", help="Day-of campaign messages.")


@campaigns_commands.command("send-due")
def campaigns_send_due() -> None:
    """One pass by hand: queue every copy whose time has come, then send what is due."""
    from sqlalchemy import func, select

    from . import campaigns, outbox
    from .models import OutboxMessage, OutboxState, utcnow

    queued = campaigns.enqueue_due(utcnow())
    click.echo(f"campaigns: queued {queued} new cop{'y' if queued == 1 else 'ies'}")
    due = db.session.scalar(
        select(func.count(OutboxMessage.id)).where(
            OutboxMessage.state == OutboxState.QUEUED, OutboxMessage.next_attempt_at <= utcnow()
        )
    )
    db.session.commit()
    total = outbox.DrainReport()
    batch = current_app.config["MAIL_BATCH_SIZE"]
    with click.progressbar(length=due or 0, label="sending", show_pos=True) as bar:
        while True:
            report = outbox.drain(batch_size=batch, limit=batch)
            for name, value in vars(report).items():
                mine = getattr(total, name)
                setattr(total, name, (mine or value) if isinstance(mine, bool) else mine + value)
            bar.update(report.handled)
            if report.handled == 0 or report.relay_down:
                break
    click.echo(f"outbox: {total}")
    if total.relay_down:
        raise SystemExit(1)


# --- Stripe's webhook events ----------------------------------------------------------------

webhooks_commands = AppGroup("webhooks", help="Apply the Stripe events the webhook stored.")


@webhooks_commands.command("apply")
@click.option("--failed", is_flag=True, help="First put events kept as failed back in the queue.")
def webhooks_apply(failed: bool) -> None:
    """One pass by hand: apply every stored event that is due (the scheduler does this too)."""
    from .payments import webhooks

    if failed:
        click.echo(f"webhooks: {webhooks.requeue_failed()} failed event(s) queued again")
    report = webhooks.apply_pending()
    click.echo(f"webhooks: {report}; waiting now: {webhooks.backlog()}")
    if report.failed or report.retrying:
        raise SystemExit(1)


@webhooks_commands.command("work")
@click.option("--poll", type=float, default=0.5, show_default=True, help="Seconds between polls.")
def webhooks_work(poll: float) -> None:
    """Apply stored events as they come, until SIGTERM or Ctrl-C (a worker beside the scheduler)."""
    import signal
    import threading

    from .payments import webhooks

    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    while not stopping.is_set():
        try:
            report = webhooks.apply_pending(limit=webhooks.BATCH_SIZE)
        except Exception:  # the database went away: log, and try again at the next poll
            db.session.rollback()
            current_app.logger.exception("webhooks: a pass failed")
            report = webhooks.ApplyReport()
        if not report.handled:
            stopping.wait(poll)


# --- the ledger ------------------------------------------------------------------------------

ledger_commands = AppGroup("ledger", help="Check the ledger and reconcile it with Stripe.")


@ledger_commands.command("check")
def ledger_check() -> None:
    """Verify the ledger's invariants; exit 1 and list every violation if any fails."""
    from . import ledger_checks

    violations = ledger_checks.check_invariants()
    for violation in violations:
        click.echo(str(violation))
    if violations:
        click.echo(f"ledger check: {len(violations)} violation(s)", err=True)
        raise SystemExit(1)
    rows, days, disbursements = ledger_checks.counts()
    click.echo(
        f"ledger check: OK ({rows} rows over {days} fast day(s), {disbursements} disbursement(s))"
    )


def _yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


@ledger_commands.command("reconcile")
@click.option(
    "--from",
    "first",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="First day (UTC), YYYY-MM-DD; yesterday by default.",
)
@click.option(
    "--to",
    "last",
    type=click.DateTime(["%Y-%m-%d"]),
    default=None,
    help="Last day (UTC, included), YYYY-MM-DD; the first day by default.",
)
def ledger_reconcile(first: datetime | None, last: datetime | None) -> None:
    """Compare the ledger with Stripe's balance transactions; exit 1 on any difference."""
    from . import reconciliation
    from .payments.stripe_gateway import PaymentError

    first_day = first.date() if first else _yesterday()
    last_day = last.date() if last else first_day
    if last_day < first_day:
        raise click.BadParameter("--to is before --from", param_hint="--to")
    start = datetime.combine(first_day, time.min, tzinfo=UTC)
    end = datetime.combine(last_day + timedelta(days=1), time.min, tzinfo=UTC)
    try:
        report = reconciliation.reconcile(start, end)
    except PaymentError as exc:
        raise click.ClickException(f"Stripe could not be read: {exc}") from None
    for difference in report.differences:
        click.echo(str(difference))
    summary = (
        f"{first_day} to {last_day}: {report.transactions} Stripe transaction(s), "
        f"{report.entries} ledger row(s), {report.ignored} transaction(s) the ledger does not book"
    )
    if not report.clean:
        click.echo(
            f"ledger reconcile: {len(report.differences)} difference(s), {summary}", err=True
        )
        raise SystemExit(1)
    click.echo(f"ledger reconcile: OK, {summary}")


# --- disbursements -------------------------------------------------------------------------

disbursements_commands = AppGroup("disbursements", help="Pay aid groups.")


@disbursements_commands.command("retry-pending")
def retry_pending_disbursements() -> None:
    """Retry every pending Stripe Connect transfer; never pays twice (see disbursements.py)."""
    from . import disbursements

    with writing():
        done = disbursements.retry_pending(commit=db.session.commit)
        for d in done:
            line = f"disbursement {d.id}: {d.status}"
            if d.stripe_transfer_id:
                line += f" ({d.stripe_transfer_id})"
            elif d.failure_message:
                line += f" ({d.failure_message})"
            click.echo(line)
    if not done:
        click.echo("disbursements: nothing pending")


# --- the outbox ------------------------------------------------------------------------------

outbox_commands = AppGroup("outbox", help="The e-mail outbox.")


@outbox_commands.command("drain")
def outbox_drain() -> None:
    """Send every message that is due now, then exit (what the scheduler's job does)."""
    from . import outbox

    report = outbox.drain()
    click.echo(f"outbox: {report}")
    if report.relay_down:
        raise SystemExit(1)


pledges_commands = AppGroup("pledges", help="Pledges charged on the fast day.")


@pledges_commands.command("charge-due")
@click.option(
    "--now",
    "now",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"]),
    help="Charge what is due at this UTC instant instead of now (for a rehearsal).",
)
def pledges_charge_due(now: datetime | None) -> None:
    """Charge, once, every pledge whose time has come (what the scheduler does each minute)."""
    from . import pledge_charges

    moment = now.replace(tzinfo=UTC) if now is not None else None
    report = pledge_charges.charge_due(moment)
    click.echo(f"pledges charge-due: {report}")
