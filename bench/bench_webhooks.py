"""Stripe's webhooks under load: how fast signed events are taken in, and applied end to end.

For each database (a SQLite file, then a PostgreSQL database of its own), `bench-data` loads
a live fast day; then ``EVENTS`` more pledges wait for their payment, each with a succeeded
PaymentIntent in localstripe, and one signed ``payment_intent.succeeded`` event per pledge
is posted to ``/stripe/webhook`` by ``CONCURRENCY`` clients at once (bench/load.py, in its own
process) under gunicorn. The webhook only verifies and stores each event. Then scheduler
processes (`flask --app wsgi scheduler`, as production runs them; how many: ``SCHEDULERS``)
start on that backlog and apply it: they read each PaymentIntent back from localstripe,
record the gift and its ledger rows, and queue the receipt, which their drain_outbox job
hands to a local SMTP server. The two phases run one after the other so that the ingest is
measured as its floor is, alone on the server; the peak mix (bench_peak) runs them at once.
So one run gives both figures:

* ``webhook_ingest_ratio_<db>``: those events answered per second, over the floor's requests
  per second. Floor: ``bench.floor_apps:webhook_app()``, a bare Flask endpoint that commits
  the event's id as one row in the same database, same gunicorn settings, same bodies; run
  once before the webhook and once after (the machine's speed drifts), the faster counting.
* ``webhook_apply_rate_<db>``: events whose effect is in the database at the end (the pledge
  succeeded and its GIFT row exists under the charge id), per second from the schedulers'
  start (their boot included) to the last event applied (the latest ``processed_at``). Any
  5xx, or an event not applied within ``APPLY_WAIT`` seconds, fails the result whatever the
  rate.

localstripe stands in for Stripe, and two of its habits would measure localstripe rather than
the app, so the benchmark serves it from this module (``python -m bench.bench_webhooks
stripe``): the PaymentIntents are created in its own process before it listens (20,000 over
HTTP would take minutes), and its lists (it reads a charge's refunds by scanning every object
it holds, several times per PaymentIntent it returns) use a per-type index. Stripe's own
answer time does not grow with the number of objects in the account.

`python -m bench.bench_webhooks stripe --help` runs that localstripe by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.core import (
    PYTHON,
    ROOT,
    Context,
    CountingSMTP,
    Result,
    app_env,
    bench_data,
    free_port,
    gunicorn,
    load,
    wait_for_port,
)

EVENTS_FULL = 20_000
EVENTS_QUICK = 1_000
FLOOR_REQUESTS_FULL = 5_000  # the floor is fast: fewer requests give a steady rate
FLOOR_REQUESTS_QUICK = 1_000
BACKGROUND_GIFTS_FULL = 20_000  # gifts already in the day, so the tables are not empty
BACKGROUND_GIFTS_QUICK = 2_000
GROUPS = 10
WORKERS = 2
THREADS = 4  # the webhook waits on localstripe and SMTP: threads keep the cores busy meanwhile
CONCURRENCY = 16
# Scheduler processes applying the events during the run, per database: one on SQLite (one
# writer at a time), two on PostgreSQL (they claim disjoint batches with SKIP LOCKED, and
# each transaction adds to a running-total slot of its own, see ledger_totals).
SCHEDULERS = {"sqlite": 1, "pg": 2}
# After the last answer, how long the schedulers get to apply what is left (at the goal's
# rate the queue a full run can leave behind takes well under a minute).
APPLY_WAIT_FULL = 180
APPLY_WAIT_QUICK = 60
# A run stops after this long even if events are left (at the goal's 150 events/s, 20,000
# take 133 s). Stripe's signatures are refused after 300 s (the SDK's tolerance, which the app
# keeps): every event is signed just before the run, which ends well within that.
MAX_SECONDS_FULL = 150
MAX_SECONDS_QUICK = 12
WEBHOOK_SECRET = "whsec_bench_webhooks"  # a throwaway secret for a local run
AMOUNTS = (1000, 2500, 2500, 5000, 10000)
LOCALES = ("en", "en", "ar", "fr", "es", "pt")
APPLY_GOAL = 150.0
INGEST_GOAL = 0.5


# --- localstripe, seeded in bulk and indexed ----------------------------------------------


def _index_localstripe_lists(resources: Any) -> None:
    """List objects of one type from an index instead of scanning the whole store."""
    by_type: dict[str, dict[str, Any]] = {}
    store_cls = resources.Store

    def setitem(self: Any, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    def delitem(self: Any, key: str) -> None:
        dict.__delitem__(self, key)
        by_type.get(key.split(":", 1)[0], {}).pop(key, None)

    def clear(self: Any) -> None:
        dict.clear(self)
        by_type.clear()

    def list_all(cls: Any, url: str, limit: Any = None, starting_after: Any = None, **kwargs: Any):
        # The same checks and result as StripeObject._api_list_all, without the scan.
        if kwargs:
            raise resources.UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        listed = resources.List(url, limit=limit, starting_after=starting_after)
        listed._list = list(by_type.get(cls.object, {}).values())
        return listed

    store_cls.__setitem__, store_cls.__delitem__, store_cls.clear = setitem, delitem, clear
    store_cls.dump_to_disk = lambda self: None  # nothing on disk: /tmp is shared
    resources.StripeObject._api_list_all = classmethod(list_all)


def _seed_intents(resources: Any, first_pledge: int, count: int, slug: str) -> list[dict[str, Any]]:
    """One confirmed, succeeded PaymentIntent per pledge id; returns each as events carry it.

    localstripe would announce every object it creates as an event, scheduled on an event loop
    that does not run yet; the benchmark signs its own events, so none are made here.
    """
    schedule, on_success = resources.schedule_webhook, resources.PaymentIntent._on_success
    resources.schedule_webhook = lambda event: None
    resources.PaymentIntent._on_success = lambda self: None
    made_event = resources.Event
    resources.Event = lambda *args, **kwargs: None
    try:
        intents = []
        for n in range(count):
            method = resources.PaymentMethod._api_create(
                type="card",
                card={
                    "number": "4242424242424242",
                    "exp_month": "12",
                    "exp_year": "2034",
                    "cvc": "123",
                },
            )
            intent = resources.PaymentIntent._api_create(
                amount=AMOUNTS[n % len(AMOUNTS)],
                currency="usd",
                payment_method=method.id,
                payment_method_types=["card"],
                confirm=True,
                metadata={"pledge_id": str(first_pledge + n), "fast_day": slug},
            )
            if intent.status != "succeeded":
                raise RuntimeError(f"localstripe left {intent.id} {intent.status}")
            shown = intent._export()
            # As Stripe sends it on the app's API version: the charge as an id, and no
            # ``charges`` list (localstripe still adds the one Stripe dropped in 2022).
            shown["latest_charge"] = shown["latest_charge"]["id"]
            shown.pop("charges", None)
            intents.append(shown)
        return intents
    finally:
        resources.schedule_webhook, resources.PaymentIntent._on_success = schedule, on_success
        resources.Event = made_event


def serve_stripe(argv: list[str] | None = None) -> None:
    """Seed localstripe with succeeded PaymentIntents, write them to --out, then serve."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_webhooks stripe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-pledge", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--slug", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from aiohttp import web
    from localstripe import resources, server

    _index_localstripe_lists(resources)
    intents = _seed_intents(resources, args.first_pledge, args.count, args.slug)
    partial = args.out.with_suffix(".tmp")
    partial.write_text(json.dumps(intents))
    partial.replace(args.out)
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


@contextlib.contextmanager
def seeded_localstripe(
    workdir: Path, first_pledge: int, count: int, slug: str
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A localstripe holding ``count`` succeeded PaymentIntents: its URL, and the intents."""
    port = free_port()
    out = workdir / f"intents-{port}.json"
    log = open(workdir / f"localstripe-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "bench.bench_webhooks",
            "stripe",
            "--port",
            str(port),
            "--first-pledge",
            str(first_pledge),
            "--count",
            str(count),
            "--slug",
            slug,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_port(port, timeout=300)
        yield f"http://127.0.0.1:{port}", json.loads(out.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# --- databases ------------------------------------------------------------------------------


@contextlib.contextmanager
def _pg_database(ctx: Context) -> Iterator[str]:
    """A PostgreSQL database of this run's own, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"bench_webhooks_{os.getpid()}"
    admin = create_engine(ctx.pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield ctx.pg_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _prepare(url: str, gifts: int) -> str:
    """Schema and `bench-data`'s live day in the database at ``url``; the day's slug."""
    return bench_data(app_env(url), gifts=gifts, groups=GROUPS, subscribers=0)


def _next_pledge_id(url: str, slug: str) -> tuple[int, int]:
    """The id the next pledge may take, and the id of the day called ``slug``."""
    from sqlalchemy import create_engine, func, select

    from fundraiser.models import FastDay, Pledge

    engine = create_engine(url)
    with engine.connect() as conn:
        last = conn.scalar(select(func.max(Pledge.id))) or 0
        day_id = conn.scalar(select(FastDay.id).where(FastDay.slug == slug))
    engine.dispose()
    return last + 1, day_id


def _insert_pledges(url: str, day_id: int, intents: list[dict[str, Any]]) -> None:
    """One pledge per PaymentIntent, as a donor's "give now" leaves it: processing."""
    from sqlalchemy import create_engine, insert, text

    from fundraiser.models import Pledge, PledgeStatus

    now = datetime.now(UTC)
    rows = [
        {
            "id": int(intent["metadata"]["pledge_id"]),
            "token": secrets.token_urlsafe(24),
            "fast_day_id": day_id,
            "aid_group_id": None,
            "amount_minor": intent["amount"],
            "currency": intent["currency"].upper(),
            "donor_name": None,
            "email": f"webhook-donor-{n}@bench.invalid",
            "dedication": None,
            "wants_messages": False,
            "locale": LOCALES[n % len(LOCALES)],
            "status": PledgeStatus.PROCESSING,
            "stripe_payment_intent_id": intent["id"],
            "created_at": now,
            "updated_at": now,
            "charge_on_day": False,
            "charge_attempts": 0,
        }
        for n, intent in enumerate(intents)
    ]
    engine = create_engine(url)
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(Pledge.__table__), rows[start : start + 5000])
        if conn.dialect.name == "postgresql":
            # Explicit ids leave the sequence behind; the app's own inserts must not collide.
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('pledge', 'id'), max(id)) FROM pledge")
            )
    engine.dispose()


def _applied(url: str, first_pledge: int) -> dict[str, Any]:
    """What the events left: pledges succeeded with their GIFT row, events applied, and when."""
    from sqlalchemy import and_, create_engine, exists, func, select

    from fundraiser.models import EntryKind, LedgerEntry, Pledge, PledgeStatus, StripeEvent
    from fundraiser.models.stripe_event import EventState

    ours = Pledge.id >= first_pledge
    gift_row = exists().where(
        and_(
            LedgerEntry.pledge_id == Pledge.id,
            LedgerEntry.kind == EntryKind.GIFT,
            LedgerEntry.stripe_object_id == Pledge.stripe_charge_id,
            LedgerEntry.amount_minor == Pledge.amount_minor,
        )
    )
    engine = create_engine(url)
    with engine.connect() as conn:
        counts = {
            "succeeded_with_gift": conn.scalar(
                select(func.count(Pledge.id)).where(
                    ours, Pledge.status == PledgeStatus.SUCCEEDED, gift_row
                )
            ),
            "succeeded": conn.scalar(
                select(func.count(Pledge.id)).where(ours, Pledge.status == PledgeStatus.SUCCEEDED)
            ),
            "events_applied": conn.scalar(
                select(func.count())
                .select_from(StripeEvent)
                .where(StripeEvent.outcome == "applied")
            ),
            "events_waiting": conn.scalar(
                select(func.count())
                .select_from(StripeEvent)
                .where(StripeEvent.state == EventState.RECEIVED)
            ),
            "events_failed": conn.scalar(
                select(func.count())
                .select_from(StripeEvent)
                .where(StripeEvent.state == EventState.FAILED)
            ),
            "last_processed": conn.scalar(select(func.max(StripeEvent.processed_at))),
        }
    engine.dispose()
    return counts


# --- the benchmark --------------------------------------------------------------------------


def _signed_requests(url: str, intents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One signed payment_intent.succeeded delivery per PaymentIntent, signed now."""
    import stripe

    now = int(time.time())
    requests = []
    for intent in intents:
        body = json.dumps(
            {
                "id": f"evt_{secrets.token_hex(12)}",
                "object": "event",
                "api_version": "2025-01-27.acacia",
                "created": now,
                "livemode": False,
                "type": "payment_intent.succeeded",
                "data": {"object": intent},
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
            }
        )
        signature = stripe.WebhookSignature.generate_signature_header(
            body, WEBHOOK_SECRET, timestamp=now
        )
        requests.append(
            {
                "method": "POST",
                "url": f"{url}/stripe/webhook",
                "headers": {"Stripe-Signature": signature, "Content-Type": "application/json"},
                "body": body,
            }
        )
    return requests


def _warm_up(ctx: Context, base: str) -> None:
    """Let every worker import its app before the clock starts (any answer will do)."""
    load(
        {"url": f"{base}/bench-warm-up", "count": 8 * WORKERS * THREADS, "concurrency": 8},
        ctx.workdir,
    )


@contextlib.contextmanager
def schedulers(ctx: Context, env: dict[str, str], count: int, db_name: str) -> Iterator[None]:
    """``count`` scheduler processes (`flask --app wsgi scheduler`), stopped on the way out."""
    processes = []
    for n in range(count):
        log = open(ctx.workdir / f"scheduler-{db_name}-{n}.log", "ab")  # noqa: SIM115
        processes.append(
            subprocess.Popen(
                [PYTHON, "-m", "flask", "--app", "wsgi", "scheduler"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
    try:
        yield
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_applied(url: str, first_pledge: int, patience: float) -> dict[str, Any]:
    """What the events left, once none waits any more (or ``patience`` seconds have passed).

    The wait asks only how many events wait, on one connection (an index read): the whole
    count, which scans the tables, would take CPU from the appliers it measures.
    """
    from sqlalchemy import create_engine, func, select

    from fundraiser.models import StripeEvent
    from fundraiser.models.stripe_event import EventState

    waiting = select(func.count()).select_from(StripeEvent)
    waiting = waiting.where(StripeEvent.state == EventState.RECEIVED)
    deadline = time.monotonic() + patience
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            while conn.scalar(waiting) and time.monotonic() < deadline:
                conn.rollback()  # each read sees what was committed since
                time.sleep(0.5)
    finally:
        engine.dispose()
    # Counted after the queue was seen empty, so the last batch's gifts are in the count.
    return _applied(url, first_pledge)


def _ok(statuses: dict[str, int]) -> int:
    return sum(n for status, n in statuses.items() if status.startswith("2"))


def _measure(ctx: Context, db_name: str, url: str) -> list[Result]:
    """Both figures for the database at ``url``: the floor's runs around the webhook's."""
    events = ctx.scale(EVENTS_FULL, EVENTS_QUICK)
    floor_count = min(events, ctx.scale(FLOOR_REQUESTS_FULL, FLOOR_REQUESTS_QUICK))
    seconds = ctx.scale(MAX_SECONDS_FULL, MAX_SECONDS_QUICK)
    started = time.monotonic()
    slug = _prepare(url, ctx.scale(BACKGROUND_GIFTS_FULL, BACKGROUND_GIFTS_QUICK))
    first_pledge, day_id = _next_pledge_id(url, slug)
    with (
        seeded_localstripe(ctx.workdir, first_pledge, events, slug) as (stripe_url, intents),
        CountingSMTP() as smtp,
    ):
        _insert_pledges(url, day_id, intents)
        print(
            f"   {db_name}: {events:,} pledges ready in {time.monotonic() - started:.0f} s",
            flush=True,
        )

        from bench.floor_apps import create_webhook_floor_table

        create_webhook_floor_table(url)

        def floor_run() -> dict[str, Any]:
            with gunicorn(
                "bench.floor_apps:webhook_app()", app_env(url), workers=WORKERS, threads=THREADS
            ) as base:
                _warm_up(ctx, base)
                deliveries = _signed_requests(base, intents[:floor_count])
                return load(
                    {"requests": deliveries, "concurrency": CONCURRENCY, "max_seconds": seconds},
                    ctx.workdir,
                )

        floors = [floor_run()]

        env = app_env(
            url,
            STRIPE_API_BASE=stripe_url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(smtp.port),
        )
        log = ctx.workdir / f"webhooks-{db_name}.log"
        # Ingest: the webhook alone on the server, as the floor was (no applier competing
        # for the cores or, on SQLite, the write lock; the peak mix runs them together).
        with gunicorn("wsgi:app", env, workers=WORKERS, threads=THREADS, log=log) as base:
            _warm_up(ctx, base)
            deliveries = _signed_requests(base, intents)
            run = load(
                {"requests": deliveries, "concurrency": CONCURRENCY, "max_seconds": seconds},
                ctx.workdir,
            )
        # The floor again, after: this machine's speed drifts by a quarter within minutes.
        # The faster of the two runs is the floor, so drift can never flatter the webhook.
        floors.append(floor_run())
        # Apply: the schedulers start on the stored backlog and work through all of it; the
        # clock runs from their start (boot included) to the last event applied.
        apply_start = datetime.now(UTC)
        with schedulers(ctx, env, SCHEDULERS[db_name], db_name):
            counts = _wait_until_applied(
                url, first_pledge, ctx.scale(APPLY_WAIT_FULL, APPLY_WAIT_QUICK)
            )
        mailed = smtp.count()

    answered = _ok(run["statuses"])
    floor_rates = [_ok(floor["statuses"]) / floor["elapsed"] for floor in floors]
    floor_rps = max(floor_rates)
    app_rps = answered / run["elapsed"]
    applied = counts["succeeded_with_gift"]
    last = counts.pop("last_processed")
    apply_seconds = max((last - apply_start).total_seconds(), 0.001) if last else float("inf")
    server_errors = sum(n for status, n in run["statuses"].items() if status.startswith("5"))
    problems = []
    if answered != run["count"]:
        problems.append(f"answers {run['statuses']}" + (f" (see {log})" if server_errors else ""))
    if applied != answered:
        problems.append(f"{answered - applied:,} events answered 200 but not applied")
    if counts["events_failed"]:
        problems.append(f"{counts['events_failed']:,} events failed to apply (see {log})")
    for floor in floors:
        if set(floor["statuses"]) != {"200"}:
            problems.append(f"the floor answered {floor['statuses']}")
    trouble = ("; " + "; ".join(problems)) if problems else ""
    bounded = f" (stopped at {seconds} s)" if run["count"] < events else ""
    settings = (
        f"gunicorn {WORKERS} workers x {THREADS} threads, {CONCURRENCY} clients; then"
        f" {SCHEDULERS[db_name]} scheduler(s) applying; {db_name}"
    )
    return [
        Result(
            f"webhook_ingest_ratio_{db_name}",
            app_rps / floor_rps,
            "x",
            ">=",
            INGEST_GOAL,
            f"webhook {app_rps:.1f} req/s (p50 {run['p50_ms']:.0f} ms, p95 {run['p95_ms']:.0f} ms)"
            f" vs floor {floor_rps:.0f} req/s (a one-row insert; the faster of a run before"
            f" and one after: {', '.join(f'{rate:.0f}' for rate in floor_rates)});"
            f" {settings}{trouble}",
            {"app": run, "floors": floors},
            ok=not server_errors,
        ),
        Result(
            f"webhook_apply_rate_{db_name}",
            applied / apply_seconds,
            "events/s",
            ">=",
            APPLY_GOAL,
            f"{applied:,} of {run['count']:,} events stored applied {apply_seconds:.1f} s after"
            f" the appliers started (posting had taken {run['elapsed']:.1f} s{bounded}),"
            f" {mailed:,} receipts mailed by then; {settings}{trouble}",
            {
                "counts": counts,
                "receipts_mailed": mailed,
                "events": events,
                "sent": run["count"],
                "apply_seconds": apply_seconds,
            },
            ok=not problems,
        ),
    ]


def webhooks_sqlite(ctx: Context) -> list[Result]:
    """Signed payment_intent.succeeded events for distinct pledges, on SQLite.

    ``webhook_ingest_ratio_sqlite``: the webhook's answers per second over the floor's (a bare
    Flask endpoint committing one row to the same SQLite file, same gunicorn settings), ≥ 0.5.
    ``webhook_apply_rate_sqlite``: events applied end to end by the scheduler (PaymentIntent
    read from localstripe, pledge succeeded, GIFT row written, receipt queued) per second from
    the first post to the last applied, ≥ 150.
    """
    return _measure(ctx, "sqlite", ctx.sqlite_url("webhooks"))


def webhooks_pg(ctx: Context) -> list[Result]:
    """The same as ``webhooks_sqlite`` on a PostgreSQL database of its own."""
    with _pg_database(ctx) as url:
        return _measure(ctx, "pg", url)


BENCHMARKS = [webhooks_sqlite, webhooks_pg]


if __name__ == "__main__":
    if sys.argv[1:2] != ["stripe"]:
        sys.exit("usage: python -m bench.bench_webhooks stripe --help")
    serve_stripe(sys.argv[2:])
