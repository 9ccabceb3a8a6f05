"""The peak hour (L1 in ../shared/RELIABILITY.md), a worker's memory, and two instances.

Everything runs on PostgreSQL, in databases of this run's own, cloned from one template
(migrated, loaded by `flask --app wsgi bench-data`, plus the gifts the webhooks confirm) so
both mixes start from the same rows, with gunicorn as README's production section runs it
(``WORKERS`` sync workers). During one mix, at once:

- donors, each a browser of their own (cookies, CSRF), browse ``/``, the fast day's page and
  its give page (a third of them come in at each: links in the campaign lead straight to the
  day and its give page), reading each for a few seconds (``Sizes.think``). ``GIVE_SHARE`` of
  those on the give page give: they fill in the form (``Sizes.form``) and post it, open the
  card step (which creates the Stripe Customer and SetupIntent), type the card, which is
  confirmed at localstripe as Stripe.js does, and charge it (which creates the
  PaymentIntent). Then the next person takes their place.
- signed Stripe webhooks at ``WEBHOOKS_PER_SECOND`` for gifts already charged in localstripe:
  ``payment_intent.succeeded`` and ``charge.succeeded`` for each (Stripe sends both), a tenth
  delivered twice, each applied by reading the PaymentIntent back from localstripe and
  sending the donor's receipt. They go out on time whatever the answers, with at most
  ``WEBHOOKS_IN_FLIGHT`` waiting: an app that cannot keep up makes the sender fall behind.
- a campaign message to every subscriber, due at once, sent by a real scheduler process
  (`flask --app wsgi scheduler`, SCHEDULER_TICK_SECONDS=1) to an aiosmtpd server in this
  process that keeps the recipient and Message-ID of everything it receives.

The load comes from two processes of its own (`python -m bench.bench_peak donors|webhooks
SPEC`), at 127.0.0.1; the donors' requests to the app are timed, the card confirmation (the
browser talking to Stripe) is not. The run waits ``SEND_WAIT_SECONDS`` after the donors stop
for mail still on its way; what is still queued then is reported, and the checks cover what
went out. CPU time of the web workers, schedulers, localstripe and PostgreSQL is
read from /proc and shown beside the figures: on a machine shared with other work, it says
what the mix costs where the latencies cannot.

A mix is correct when no request answered 5xx (or anything else it should not), every
webhook answered was applied once (one GIFT row per gift, the gift succeeded, one event row
per event), every give that reached the card step has its pledge and every charge its
PaymentIntent, the ledger's invariants hold, nobody got a message twice (by address or by
Message-ID), nothing sent failed to arrive, and no log holds a traceback. It is clean when,
besides, the load was taken: every webhook was sent on time. A result whose mix was not as it must be FAILs whatever its figure (``Result.ok``), and says why.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

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
    wait_for_port,
)

WORKERS = 4  # per instance, as README's production section runs it
THREADS = int(os.environ.get("BENCH_PEAK_THREADS", "1"))  # per worker; 1 is a sync worker
WEBHOOKS_PER_SECOND = 50
# Deliveries waiting for an answer at once: a second's worth. An app that keeps up has a few
# in flight; one that cannot makes the sender fall behind instead of queueing without end.
WEBHOOKS_IN_FLIGHT = WEBHOOKS_PER_SECOND
WEBHOOK_GRACE_SECONDS = 5  # after the mix, to send what is left; the rest is left unsent
# After the mix, for mail still on its way. What is still queued then is counted neither as
# sent nor as lost (the send goes on without the donors); the checks cover what went out.
SEND_WAIT_SECONDS = 30
REDELIVERED = 0.1  # share of webhook deliveries that are a second delivery of an event
GIVE_SHARE = 0.5  # of the people who open the give page, how many give
GROUPS = 12
SLUG = "bench-day"
WEBHOOK_SECRET = "whsec_bench_peak"
REDIS_URL = "redis://127.0.0.1:6379/0"
# The gifts the webhooks confirm get ids far above anything bench-data or the donors create,
# so the same localstripe PaymentIntents (whose metadata names them) serve every clone.
WEBHOOK_PLEDGE_BASE = 1_000_000_000
CARD_OK = "4242424242424242"
P95_GOAL_MS = 500
RSS_GOAL_MB = 150

_CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
_AMOUNT_RE = re.compile(r'name="amount" (?:required )?type="radio" value="(\d+)"')
_ALLOCATION_RE = re.compile(r'name="allocation" (?:required )?type="radio" value="([^"]+)"')
_CURRENCY_RE = re.compile(r'<option (selected )?value="([A-Z]{3})"')
_PAY_RE = re.compile(r"/pledge/([^/]+)/pay")
_SECRET_RE = re.compile(r'data-client-secret="([^"]+)"')
_PAY_CSRF_RE = re.compile(r'data-csrf-token="([^"]+)"')


@dataclass(frozen=True)
class Sizes:
    """How big one mix is."""

    donors: int
    seconds: float
    recipients: int
    gifts: int  # already on the day when the mix begins (bench-data)
    think: tuple[float, float] = (2.0, 8.0)  # seconds a person reads a page before clicking on
    form: tuple[float, float] = (5.0, 15.0)  # seconds to fill in the give form, or the card

    @property
    def webhook_deliveries(self) -> int:
        """Deliveries in one mix: the rate for the whole of it."""
        return int(WEBHOOKS_PER_SECOND * self.seconds)

    @property
    def webhook_gifts(self) -> int:
        """Gifts the webhooks confirm: two events each, and a tenth of deliveries repeated."""
        return math.ceil(self.webhook_deliveries * (1 - REDELIVERED) / 2)


def sizes(ctx: Context) -> Sizes:
    """L1's sizes under `make bench`; fewer people, recipients and seconds under --quick."""
    if ctx.quick:
        # Fewer people who click faster, so that a short run still sees gifts to the charge.
        return Sizes(60, 10, recipients=1_000, gifts=2_000, think=(1.0, 3.0), form=(2.0, 5.0))
    return Sizes(donors=200, seconds=45, recipients=10_000, gifts=20_000)


# --- services ------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What every mix of a run shares: localstripe, its charged gifts, the template database."""

    stripe_url: str
    template: str  # database name
    slug: str
    gifts: list[dict[str, Any]]  # pledge id, email, PaymentIntent (with its charge)
    customer: str
    stripe_pid: int
    seconds: float = 0.0  # how long preparing took
    clones: int = 0


_prepared: dict[Path, Prepared] = {}


def _pg_admin(ctx: Context):
    from sqlalchemy import create_engine

    return create_engine(ctx.pg_url, isolation_level="AUTOCOMMIT")


def _db_url(ctx: Context, name: str) -> str:
    return ctx.pg_url.rsplit("/", 1)[0] + "/" + name


def _drop_database(ctx: Context, name: str) -> None:
    from sqlalchemy import text

    engine = _pg_admin(ctx)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _start_localstripe(ctx: Context) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (ctx.workdir / "peak-localstripe.log").open("ab")
    proc = subprocess.Popen(
        [PYTHON, "-m", "fundraiser.dev.localstripe_server", "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=log,
    )
    log.close()
    wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _charged_gifts(stripe_url: str, count: int) -> tuple[str, list[dict[str, Any]]]:
    """``count`` succeeded PaymentIntents in localstripe, each naming a pledge id of ours."""
    http = requests.Session()
    http.auth = ("sk_test_localstripe", "")
    api = f"{stripe_url}/v1"
    customer = http.post(f"{api}/customers", data={"email": "webhooks@bench.invalid"}, timeout=30)
    customer.raise_for_status()
    customer_id = customer.json()["id"]
    card = {"type": "card", "card[number]": CARD_OK, "card[exp_month]": "12"}
    card |= {"card[exp_year]": "2034", "card[cvc]": "123"}
    method = http.post(f"{api}/payment_methods", data=card, timeout=30)
    method.raise_for_status()
    method_id = method.json()["id"]
    http.post(
        f"{api}/payment_methods/{method_id}/attach", data={"customer": customer_id}, timeout=30
    ).raise_for_status()
    gifts = []
    for n in range(count):
        pledge_id = WEBHOOK_PLEDGE_BASE + n
        amount = (1000, 2500, 5000, 10000)[n % 4]
        intent = http.post(
            f"{api}/payment_intents",
            data={
                "amount": amount,
                "currency": "usd",
                "customer": customer_id,
                "payment_method": method_id,
                "confirm": "true",
                "off_session": "true",
                "metadata[pledge_id]": str(pledge_id),
                "metadata[fast_day]": SLUG,
            },
            timeout=30,
        )
        intent.raise_for_status()
        gifts.append(
            {"pledge_id": pledge_id, "email": f"webhook{n}@bench.invalid", "intent": intent.json()}
        )
    return customer_id, gifts


def prepare(ctx: Context) -> Prepared:
    """localstripe with the webhooks' charged gifts, and the template database; once per run."""
    if ctx.workdir in _prepared:
        return _prepared[ctx.workdir]
    began = time.monotonic()
    size = sizes(ctx)
    stripe, stripe_url = _start_localstripe(ctx)
    template = f"bench_peak_tpl_{os.getpid()}"
    atexit.register(_stop, stripe)
    atexit.register(_drop_database, ctx, template)

    # localstripe answers one call at a time: charge the gifts while the database loads.
    charged: dict[str, Any] = {}

    def charge() -> None:
        try:
            charged["result"] = _charged_gifts(stripe_url, size.webhook_gifts)
        except Exception as exc:  # handed to the main thread below
            charged["error"] = exc

    charging = threading.Thread(target=charge)
    charging.start()
    from sqlalchemy import text

    engine = _pg_admin(ctx)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{template}"'))
    engine.dispose()
    url = _db_url(ctx, template)
    slug = bench_data(
        app_env(url), gifts=size.gifts, groups=GROUPS, subscribers=size.recipients, slug=SLUG
    )
    charging.join()
    if "error" in charged:
        raise charged["error"]
    customer, gifts = charged["result"]
    _insert_charged_pledges(url, slug, customer, gifts)
    prepared = Prepared(
        stripe_url, template, slug, gifts, customer, stripe.pid, time.monotonic() - began
    )
    _prepared[ctx.workdir] = prepared
    print(f"   peak: prepared in {prepared.seconds:.0f} s", flush=True)
    return prepared


def _app(url: str):
    """The app in this process, on one database, for setting up and checking a mix."""
    from fundraiser import create_app

    # The test config keeps this process's logging as it is; only the database matters here.
    return create_app({"ENV_NAME": "test", "SQLALCHEMY_DATABASE_URI": url})


def _insert_charged_pledges(
    url: str, slug: str, customer: str, gifts: list[dict[str, Any]]
) -> None:
    """The pledges of the gifts the webhooks confirm, as the charge step leaves them."""
    from sqlalchemy import insert, select

    from fundraiser.extensions import db
    from fundraiser.models import FastDay, Pledge, PledgeStatus

    app = _app(url)
    with app.app_context():
        day_id = db.session.scalar(select(FastDay.id).where(FastDay.slug == slug))
        rows = [
            {
                "id": gift["pledge_id"],
                "token": f"bench-webhook-{gift['pledge_id']}",
                "fast_day_id": day_id,
                "amount_minor": gift["intent"]["amount"],
                "currency": "USD",
                "donor_name": "Webhook Donor",
                "email": gift["email"],
                "locale": "en",
                "status": PledgeStatus.PROCESSING,
                "stripe_customer_id": customer,
                "stripe_payment_intent_id": gift["intent"]["id"],
            }
            for gift in gifts
        ]
        for start in range(0, len(rows), 1000):
            db.session.execute(insert(Pledge), rows[start : start + 1000])
        db.session.commit()
        db.engine.dispose()


@contextlib.contextmanager
def _clone(ctx: Context, prepared: Prepared) -> Iterator[str]:
    """A fresh database cloned from the template; its URL. Dropped afterwards."""
    from sqlalchemy import text

    prepared.clones += 1
    name = f"bench_peak_{os.getpid()}_{prepared.clones}"
    engine = _pg_admin(ctx)
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{prepared.template}"'))
    engine.dispose()
    try:
        yield _db_url(ctx, name)
    finally:
        _drop_database(ctx, name)


def _schedule_campaign(app, slug: str) -> set[str]:
    """A campaign message due a minute ago, for everyone; the addresses it goes to."""
    from datetime import timedelta

    from sqlalchemy import select

    from fundraiser.campaigns import audience_filter
    from fundraiser.extensions import db
    from fundraiser.models import (
        CampaignMessage,
        CampaignStatus,
        CampaignText,
        FastDay,
        SendKind,
        Subscriber,
        utcnow,
    )

    with app.app_context():
        day = db.session.scalar(select(FastDay).where(FastDay.slug == slug))
        message = CampaignMessage(
            fast_day=day,
            name="The peak hour",
            send_kind=SendKind.UTC_INSTANT,
            send_at=utcnow() - timedelta(minutes=1),
            default_locale="en",
            status=CampaignStatus.SCHEDULED,
            scheduled_at=utcnow(),
        )
        message.texts.append(
            CampaignText(
                locale="en",
                subject="We fast together today",
                body_markdown="Today we fast for Gaza. **Every gift** goes to groups on the ground.",
            )
        )
        db.session.add(message)
        db.session.commit()
        recipients = set(
            db.session.scalars(select(Subscriber.email).where(*audience_filter(message)))
        )
        return {email.lower() for email in recipients}


# --- one mix -------------------------------------------------------------------------------


@dataclass
class Mix:
    """What one peak mix measured and found."""

    donors: dict[str, Any]
    webhooks: dict[str, Any]
    seconds: float  # the donors' run
    send_seconds: float  # from the start until the last message arrived
    rss_mb: list[float]  # each worker's peak
    problems: list[str] = field(default_factory=list)  # faults: 5xx, lost, twice, tracebacks
    slow: list[str] = field(default_factory=list)  # the load was not taken in time
    duplicates: int = 0
    lost: int = 0
    recipients: int = 0
    gifts_confirmed: int = 0
    rate_limit: str = ""
    on_the_way: int = 0  # messages still queued when the run stopped waiting
    load_average: float = 0.0  # the machine's, over the last minute of the mix
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds each part used

    @property
    def correct(self) -> bool:
        """No 5xx, nothing lost, nothing twice (however slow)."""
        return not self.problems

    @property
    def clean(self) -> bool:
        """Correct, and the whole load was taken: every webhook sent on time."""
        return self.correct and not self.slow


def _spawn(ctx: Context, role: str, spec: dict[str, Any]) -> subprocess.Popen[str]:
    path = ctx.workdir / f"peak-{role}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [PYTHON, "-m", "bench.bench_peak", role, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"load process failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _webhook_plan(prepared: Prepared, deliveries: int, instances: int) -> list[dict[str, Any]]:
    """Every delivery of the mix, in order: two events per gift, a tenth sent twice.

    Each delivery names its gift (an index into ``prepared.gifts``) for the checks; the
    sender only reads ``body`` and ``to`` (which instance).
    """
    rng = random.Random(7)
    events = []
    for n, gift in enumerate(prepared.gifts):
        intent = gift["intent"]
        for kind, obj in (
            ("payment_intent.succeeded", intent),
            ("charge.succeeded", intent["latest_charge"]),
        ):
            events.append(
                {
                    "gift": n,
                    "id": f"evt_bench_{n}_{kind.split('.')[0]}",
                    "object": "event",
                    "api_version": "2025-01-27.acacia",
                    "created": int(time.time()),
                    "livemode": False,
                    "type": kind,
                    "data": {"object": obj},
                    "pending_webhooks": 1,
                    "request": {"id": None, "idempotency_key": None},
                }
            )
    firsts = deliveries - int(deliveries * REDELIVERED)
    events = events[: firsts - firsts % 2]
    rng.shuffle(events)
    plan = [
        {"body": json.dumps(e), "to": n % instances, "gift": e.pop("gift"), "event": e["id"]}
        for n, e in enumerate(events)
    ]
    while len(plan) < deliveries:  # a second delivery, later, to another instance if any
        at = rng.randrange(len(plan) // 2, len(plan) + 1)
        again = plan[rng.randrange(0, at)]
        plan.insert(at, again | {"to": (again["to"] + 1) % instances})
    return plan


def _gunicorn_workers(base_url: str) -> list[int]:
    """The pids of the gunicorn workers serving ``base_url`` (children of its master)."""
    bind = base_url.removeprefix("http://").encode()
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"gunicorn" not in argv or bind not in argv:
                continue
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return [pid for pid, parent in parents.items() if parent in parents]


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far (those still running)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _backends(ctx: Context, url: str) -> list[int]:
    """The PostgreSQL server processes connected to the database at ``url``."""
    from sqlalchemy import text

    engine = _pg_admin(ctx)
    with engine.connect() as conn:
        pids = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
            {"name": url.rsplit("/", 1)[1]},
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of a process: the most resident memory it has had, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def _warm_up(urls: list[str], slug: str) -> None:
    """Every worker renders every page once before the clock starts (templates, imports)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = ["/", f"/fast/{slug}", f"/fast/{slug}/give"] * WORKERS * 2

    def get(url: str) -> None:
        requests.get(url, timeout=60).raise_for_status()

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(get, [base + path for base in urls for path in paths]))


def _login_attempts(urls: list[str], attempts: int) -> Counter[str]:
    """Wrong passwords for one account, alternating instances: how each was answered."""
    answers: Counter[str] = Counter()
    for n in range(attempts):
        http = requests.Session()
        base = urls[n % len(urls)]
        page = http.get(f"{base}/login", timeout=30)
        token = _CSRF_RE.search(page.text)
        form = {"email": "nobody@bench.invalid", "password": "not the password"}
        form["csrf_token"] = token.group(1) if token else ""
        answers[str(http.post(f"{base}/login", data=form, timeout=30).status_code)] += 1
    return answers


def mix(ctx: Context, prepared: Prepared, *, instances: int, label: str) -> Mix:
    """Run the peak mix against ``instances`` gunicorn instances (and as many schedulers)."""
    size = sizes(ctx)
    plan = _webhook_plan(prepared, size.webhook_deliveries, instances)
    with _clone(ctx, prepared) as url, CountingSMTP() as smtp:
        app = _app(url)
        recipients = _schedule_campaign(app, prepared.slug)
        env = app_env(
            url,
            STRIPE_API_BASE=prepared.stripe_url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            MAIL_SERVER="127.0.0.1",
            MAIL_PORT=str(smtp.port),
            RATELIMIT_STORAGE_URI=REDIS_URL,
            RATELIMIT_KEY_PREFIX=f"bench-peak-{os.getpid()}-{label}-{time.time_ns()}",
            PYTHONUNBUFFERED="1",
        )
        env.pop("SCHEDULER_TICK_SECONDS", None)
        with contextlib.ExitStack() as stack:
            urls = [
                stack.enter_context(
                    gunicorn(
                        "wsgi:app",
                        env,
                        workers=WORKERS,
                        threads=THREADS,
                        log=ctx.workdir / f"peak-{label}-web{i}.log",
                    )
                )
                for i in range(instances)
            ]
            _warm_up(urls, prepared.slug)
            start_at = time.time() + 2
            common = {"urls": urls, "start_at": start_at, "seconds": size.seconds}
            donors = _spawn(
                ctx,
                "donors",
                common
                | {
                    "donors": size.donors,
                    "slug": prepared.slug,
                    "stripe_url": prepared.stripe_url,
                    "think": size.think,
                    "form": size.form,
                    "give_share": GIVE_SHARE,
                    "seed": 11,
                },
            )
            hooks = _spawn(
                ctx,
                "webhooks",
                common
                | {
                    "plan": plan,
                    "rate": WEBHOOKS_PER_SECOND,
                    "secret": WEBHOOK_SECRET,
                    "in_flight": WEBHOOKS_IN_FLIGHT,
                    "grace": WEBHOOK_GRACE_SECONDS,
                },
            )
            schedulers: list[subprocess.Popen[bytes]] = []

            def processes() -> dict[str, list[int]]:
                return {
                    "web": [pid for base in urls for pid in _gunicorn_workers(base)],
                    "scheduler": [process.pid for process in schedulers],
                    "localstripe": [prepared.stripe_pid],
                    "postgres": _backends(ctx, url),
                }

            cpu_before = {part: _cpu_seconds(pids) for part, pids in processes().items()}
            time.sleep(max(0.0, start_at - time.time()))
            began = time.monotonic()
            for i in range(instances):
                log = (ctx.workdir / f"peak-{label}-scheduler{i}.log").open("ab")
                schedulers.append(
                    subprocess.Popen(
                        [PYTHON, "-m", "flask", "--app", "wsgi", "scheduler"],
                        cwd=ROOT,
                        env={**env, "SCHEDULER_TICK_SECONDS": "1"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
                log.close()
            try:
                donors_out = _collect(donors, size.seconds + 180)
                hooks_out = _collect(hooks, size.seconds + 180)
                mixed = time.monotonic() - began
                answered = {plan[n]["gift"] for n in hooks_out["answered"]}
                expected = len(recipients) + len(answered)
                deadline = time.monotonic() + SEND_WAIT_SECONDS
                while smtp.count() < expected and time.monotonic() < deadline:
                    time.sleep(0.5)
                send_seconds = time.monotonic() - began
                load_average = os.getloadavg()[0]
                cpu = {
                    part: _cpu_seconds(pids) - cpu_before.get(part, 0.0)
                    for part, pids in processes().items()
                }
                time.sleep(2.5)  # two more ticks of every scheduler: nothing more goes out
                rss = [_peak_rss_mb(pid) for base in urls for pid in _gunicorn_workers(base)]
                limited = _login_attempts(urls, 24) if instances > 1 else Counter()
            finally:
                codes = [_stop(process, timeout=60) for process in schedulers]
                for load in (donors, hooks):  # only if something above failed
                    if load.poll() is None:
                        load.kill()
                        load.wait()
        result = Mix(donors_out, hooks_out, mixed, send_seconds, rss, cpu=cpu)
        result.load_average = load_average
        print(
            f"   peak {label}: load {mixed:.0f} s, mail {send_seconds:.0f} s, "
            f"all {time.monotonic() - began:.0f} s after the start",
            flush=True,
        )
        _check(ctx, app, result, smtp, recipients, prepared, plan, label, codes, limited)
        with app.app_context():
            from fundraiser.extensions import db

            db.engine.dispose()
    return result


def _check(
    ctx: Context,
    app,
    result: Mix,
    smtp: CountingSMTP,
    recipients: set[str],
    prepared: Prepared,
    plan: list[dict[str, Any]],
    label: str,
    scheduler_codes: list[int | None],
    limited: Counter[str],
) -> None:
    """Everything a clean mix must show: statuses, gifts, mail, logs."""
    from sqlalchemy import func, select

    from fundraiser.extensions import db
    from fundraiser.ledger_checks import check_invariants
    from fundraiser.models import (
        EntryKind,
        LedgerEntry,
        OutboxMessage,
        Pledge,
        PledgeStatus,
        StripeEvent,
    )

    problems = result.problems
    for who, out in (("donors", result.donors), ("webhooks", result.webhooks)):
        if out["bad"]:
            problems.append(f"{out['bad']} bad answers to the {who} ({out['bad_examples'][:3]})")
        fivexx = sum(n for status, n in out["statuses"].items() if status.startswith("5"))
        if fivexx:
            problems.append(f"{fivexx} 5xx to the {who}")

    # Mail: every recipient of the campaign once, every confirmed gift's donor one receipt.
    received = list(smtp.received)
    by_to = Counter(to for to, _ in received)
    by_id = Counter(mid for _, mid in received)
    hooks = result.webhooks
    gift_ids = sorted({plan[n]["gift"] for n in hooks["answered"]})  # applied, said the app
    tried = {plan[n]["gift"] for n in hooks["attempted"]}  # perhaps applied
    receipts = {prepared.gifts[n]["email"] for n in gift_ids}
    twice = sum(n - 1 for n in by_to.values() if n > 1) + sum(
        n - 1 for mid, n in by_id.items() if n > 1 and mid
    )
    unmailed = (recipients | receipts) - set(by_to)
    strangers = len(set(by_to) - recipients - {prepared.gifts[n]["email"] for n in tried})
    with app.app_context():
        states = dict(
            db.session.execute(select(func.lower(OutboxMessage.to_email), OutboxMessage.state))
            .tuples()
            .all()
        )
    # Not received yet but still queued (or claimed, or not yet queued): slow, not lost.
    on_the_way = {to for to in unmailed if states.get(to) in (None, "queued", "sending")}
    missing = len(unmailed - on_the_way)
    if twice:
        problems.append(f"{twice} message(s) sent twice")
    if missing:
        problems.append(f"{missing} recipient(s) never mailed")
    result.on_the_way = len(on_the_way)
    if strangers:
        problems.append(f"{strangers} unexpected recipient(s)")
    result.recipients = len(recipients)

    # Gifts: every webhook applied once; every give that reached the card step kept.
    pledge_ids = [prepared.gifts[n]["pledge_id"] for n in gift_ids]
    created = result.donors["created"]
    charged = result.donors["charged"]
    with app.app_context():
        succeeded = db.session.scalar(
            select(func.count())
            .select_from(Pledge)
            .where(Pledge.id.in_(pledge_ids), Pledge.status == PledgeStatus.SUCCEEDED)
        )
        gift_rows = Counter(
            db.session.scalars(
                select(LedgerEntry.pledge_id).where(
                    LedgerEntry.pledge_id.in_(pledge_ids), LedgerEntry.kind == EntryKind.GIFT
                )
            )
        )
        events = db.session.scalar(select(func.count()).select_from(StripeEvent))
        kept = dict(
            db.session.execute(
                select(Pledge.token, Pledge.stripe_payment_intent_id).where(
                    Pledge.token.in_(created)
                )
            ).all()
        )
        violations = check_invariants()
    answered_events = {plan[n]["event"] for n in hooks["answered"]}
    attempted_events = {plan[n]["event"] for n in hooks["attempted"]}
    applied_twice = sum(n - 1 for n in gift_rows.values() if n > 1)
    not_applied = len(pledge_ids) - succeeded + len(set(pledge_ids) - set(gift_rows))
    gifts_lost = len(set(created) - set(kept)) + sum(1 for t in charged if not kept.get(t))
    result.gifts_confirmed = succeeded
    if not len(answered_events) <= events <= len(attempted_events):
        problems.append(f"{events} events stored for {len(answered_events)} answered")
    if hooks["unsent"]:
        result.slow.append(
            f"webhooks fell behind: {hooks['unsent']} of {len(plan)} never sent "
            f"(the app took {hooks['rps']:.0f}/s)"
        )
    if applied_twice:
        problems.append(f"{applied_twice} gift(s) recorded twice")
    if not_applied:
        problems.append(f"{not_applied} webhook gift(s) not applied")
    if gifts_lost:
        problems.append(f"{gifts_lost} donor gift(s) lost")
    if violations:
        problems.append(f"ledger check: {violations[:3]}")
    result.duplicates = twice + applied_twice
    result.lost = missing + not_applied + gifts_lost

    # Rate limits across instances: one account's ten attempts a minute in all, not per process.
    if limited:
        let_through = sum(n for status, n in limited.items() if status != "429")
        result.rate_limit = f"{let_through} of {sum(limited.values())} login attempts let through"
        if let_through > 10:
            problems.append(f"rate limit not shared: {result.rate_limit}")

    # Processes: every scheduler stopped cleanly on SIGTERM; no traceback in any log.
    if any(code != 0 for code in scheduler_codes):
        problems.append(f"scheduler exit codes {scheduler_codes}")
    for log in sorted(ctx.workdir.glob(f"peak-{label}-*.log")):
        if "Traceback" in log.read_text(errors="replace"):
            problems.append(f"a traceback in {log.name}")


# --- the benchmarks ------------------------------------------------------------------------


def _describe(m: Mix, size: Sizes) -> str:
    kinds = ", ".join(
        f"{kind} {v['p95_ms']:.0f}" for kind, v in sorted(m.donors["by_kind"].items())
    )
    state = "clean" if m.clean else "NOT CLEAN: " + "; ".join(m.problems + m.slow)
    parts = ", ".join(f"{part} {seconds:.0f} s" for part, seconds in m.cpu.items())
    cores = sum(m.cpu.values()) / max(m.send_seconds, 1e-9)
    served = max(m.donors["count"] + m.webhooks["count"], 1)
    per_request = (m.cpu.get("web", 0) + m.cpu.get("postgres", 0)) * 1000 / served
    per_mail = m.cpu.get("scheduler", 0) * 1000 / max(m.recipients, 1)
    return (
        f"{size.donors} donors for {m.seconds:.0f} s: {m.donors['count']} requests "
        f"({m.donors['rps']:.0f}/s), p50 {m.donors['p50_ms']:.0f} ms, p95 by page [{kinds}]; "
        f"{len(m.donors['created'])} gifts started, {len(m.donors['charged'])} charged; "
        f"webhooks {m.webhooks['count']} at {m.webhooks['rps']:.0f}/s (p95 "
        f"{m.webhooks['p95_ms']:.0f} ms), {m.gifts_confirmed} gifts confirmed; "
        f"{m.recipients - m.on_the_way} of {m.recipients} recipients mailed "
        f"{m.send_seconds:.0f} s after the start; machine load average {m.load_average:.1f} "
        f"(2 cores); CPU over those "
        f"{m.send_seconds:.0f} s: {cores:.2f} cores ({parts}), {per_request:.0f} ms of CPU per "
        f"request (web and PostgreSQL), {per_mail:.0f} ms per message sent; {state}"
    )


def peak_mix(ctx: Context) -> list[Result]:
    """L1: p95 of the donors' requests during the peak mix (≤ 500 ms), and the workers' memory.

    No floor: the goal is a latency people feel, not a ratio. The mix must also be clean (no
    5xx, no mail twice, nothing lost). worker_rss_mb is the largest VmHWM of the four workers
    at the end of the mix (≤ 150 MB).
    """
    size = sizes(ctx)
    prepared = prepare(ctx)
    m = mix(ctx, prepared, instances=1, label="one")
    detail = _describe(m, size) + f"; prepared in {prepared.seconds:.0f} s"
    return [
        Result(
            "peak_mix_p95_ms",
            round(m.donors["p95_ms"], 1),
            "ms",
            "<=",
            P95_GOAL_MS,
            detail,
            extra={
                "donors": {k: v for k, v in m.donors.items() if k not in ("created", "charged")}
            },
            ok=m.clean,
        ),
        Result(
            "worker_rss_mb",
            round(max(m.rss_mb), 1),
            "MB",
            "<=",
            RSS_GOAL_MB,
            f"peak RSS (VmHWM) of the {len(m.rss_mb)} workers: "
            + ", ".join(f"{r:.0f}" for r in sorted(m.rss_mb))
            + " MB",
        ),
    ]


def two_instances(ctx: Context) -> list[Result]:
    """The same mix against two gunicorn instances sharing PostgreSQL and Redis, two schedulers.

    Donors' requests alternate between the instances (a load balancer without sticky
    sessions) and a webhook's second delivery goes to the other instance. Value: mail sent
    twice plus gifts or mail lost (≤ 0); a login limit not shared through Redis, any 5xx or a
    traceback makes it FAIL too. How fast the load was taken is L1's business, not this one's:
    mail still on its way when the run stops waiting is reported, not counted as lost.
    """
    size = sizes(ctx)
    prepared = prepare(ctx)
    m = mix(ctx, prepared, instances=2, label="two")
    detail = f"{m.duplicates} twice, {m.lost} lost; {m.rate_limit}; " + _describe(m, size)
    return [
        Result(
            "two_instances",
            m.duplicates + m.lost,
            "faults",
            "<=",
            0,
            detail,
            ok=m.correct,
        )
    ]


BENCHMARKS = [peak_mix, two_instances]


# --- the load processes --------------------------------------------------------------------


class _Record:
    """Latencies and answers of one load process."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, float]] = []
        self.statuses: Counter[str] = Counter()
        self.bad = 0
        self.bad_examples: list[str] = []

    def add(self, kind: str, ms: float, status: str, good: bool) -> None:
        """One answer: its kind of request, latency, status, and whether it was the right one."""
        self.samples.append((kind, ms))
        self.statuses[status] += 1
        if not good:
            self.bad += 1
            if len(self.bad_examples) < 10:
                self.bad_examples.append(f"{kind} {status}")

    def summary(self, elapsed: float) -> dict[str, Any]:
        """Counts, rates and percentiles, in all and by kind of request."""
        by_kind: dict[str, list[float]] = {}
        for kind, ms in self.samples:
            by_kind.setdefault(kind, []).append(ms)
        every = sorted(ms for _, ms in self.samples)
        return {
            "count": len(every),
            "elapsed": elapsed,
            "rps": len(every) / elapsed if elapsed else 0.0,
            "p50_ms": _pct(every, 0.50),
            "p95_ms": _pct(every, 0.95),
            "p99_ms": _pct(every, 0.99),
            "max_ms": every[-1] if every else 0.0,
            "by_kind": {
                kind: {
                    "count": len(v),
                    "p50_ms": _pct(sorted(v), 0.5),
                    "p95_ms": _pct(sorted(v), 0.95),
                }
                for kind, v in by_kind.items()
            },
            "statuses": dict(self.statuses),
            "bad": self.bad,
            "bad_examples": self.bad_examples,
        }


def _pct(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


class _Donor:
    """One person at a time in a browser of their own: browse, perhaps give, then leave."""

    def __init__(self, number: int, spec: dict[str, Any], record: _Record, stop: float) -> None:
        self.number = number
        self.spec = spec
        self.record = record
        self.stop = stop
        self.turn = number
        self.rng = random.Random(spec["seed"] * 100_003 + number)
        self.created: list[str] = []
        self.charged: list[str] = []

    async def think(self, what: str = "think") -> bool:
        """Read the page (or fill in a form); False if the mix is over before the next click."""
        delay = self.rng.uniform(*self.spec[what])
        left = self.stop - time.monotonic()
        await asyncio.sleep(max(0.0, min(delay, left)))
        return delay < left

    async def hit(
        self, http, kind: str, method: str, path: str, expect: int, **kwargs: Any
    ) -> tuple[int, str, Any] | None:
        """One request to the app, timed; the next instance in turn serves it."""
        import aiohttp

        urls = self.spec["urls"]
        self.turn += 1
        sent = time.perf_counter()
        try:
            async with http.request(
                method, urls[self.turn % len(urls)] + path, allow_redirects=False, **kwargs
            ) as response:
                text = await response.text()
                status, headers = response.status, response.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.record.add(kind, (time.perf_counter() - sent) * 1000, type(exc).__name__, False)
            return None
        self.record.add(kind, (time.perf_counter() - sent) * 1000, str(status), status == expect)
        return (status, text, headers) if status == expect else None

    async def run(self) -> None:
        """People one after another until the mix is over, each in a fresh browser."""
        import aiohttp

        await asyncio.sleep(self.rng.uniform(0, self.spec["think"][1]))  # people arrive spread out
        timeout = aiohttp.ClientTimeout(total=60)
        while time.monotonic() < self.stop:
            jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, as for a host name
            async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
                await self.visit(http)
            await self.think()

    async def visit(self, http) -> None:
        """The front page, the fast day's page, its give page, and some of the time a gift.

        A third of the people come in at each page: the campaign's links and shared links lead
        to the day's page and its give page as often as people type the site's address.
        """
        slug = self.spec["slug"]
        entry = self.rng.randrange(3)
        if entry < 1 and (
            not await self.hit(http, "index", "GET", "/", 200) or not await self.think()
        ):
            return
        if entry < 2 and (
            not await self.hit(http, "day", "GET", f"/fast/{slug}", 200) or not await self.think()
        ):
            return
        page = await self.hit(http, "give", "GET", f"/fast/{slug}/give", 200)
        if page and self.rng.random() < self.spec["give_share"] and await self.think("form"):
            await self.give(http, page[1])

    async def give(self, http, html: str) -> None:
        """Fill in the give form, then the card step: the pay page, Stripe.js, the charge."""
        import aiohttp

        slug = self.spec["slug"]
        amounts = _AMOUNT_RE.findall(html)
        groups = _ALLOCATION_RE.findall(html)
        currencies = sorted(_CURRENCY_RE.findall(html), reverse=True)  # the selected one first
        form = {
            "csrf_token": _CSRF_RE.search(html).group(1),
            "amount": self.rng.choice(amounts),
            "other_amount": "",
            "currency": currencies[0][1] if currencies else "USD",
            "allocation": "all" if self.rng.random() < 0.85 else self.rng.choice(groups),
            "donor_name": f"Donor {self.number}",
            "email": f"donor{self.number}.{self.rng.randrange(10**9)}@example.org",
            "dedication": "",
        }
        posted = await self.hit(http, "give_post", "POST", f"/fast/{slug}/give", 303, data=form)
        if not posted:
            return
        token = _PAY_RE.search(posted[2].get("Location", "")).group(1)
        self.created.append(token)
        page = await self.hit(http, "pay", "GET", f"/pledge/{token}/pay", 200)
        if not page:
            return
        secret = _SECRET_RE.search(page[1]).group(1)
        csrf = _PAY_CSRF_RE.search(page[1]).group(1)
        if not await self.think("form"):  # typing the card
            return
        # What Stripe.js does with the card element: confirm the SetupIntent at Stripe.
        setup = secret.split("_secret_")[0]
        card = {"type": "card", "card": {"number": CARD_OK, "exp_month": "12"}}
        card["card"] |= {"exp_year": "2034", "cvc": "123"}
        try:
            async with http.post(
                f"{self.spec['stripe_url']}/v1/setup_intents/{setup}/confirm",
                json={
                    "key": "pk_test_localstripe",
                    "client_secret": secret,
                    "payment_method_data": card,
                },
            ) as response:
                await response.read()
                confirmed = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            confirmed = False
        if not confirmed:
            self.record.bad += 1
            self.record.bad_examples.append("stripe.js confirm failed")
            return
        answer = await self.hit(
            http, "charge", "POST", f"/pledge/{token}/charge", 200, headers={"X-CSRFToken": csrf}
        )
        if answer and json.loads(answer[1]).get("status") in ("processing", "succeeded"):
            self.charged.append(token)


async def _donors(spec: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
    record = _Record()
    started = time.monotonic()
    stop = started + spec["seconds"]
    people = [_Donor(n, spec, record, stop) for n in range(spec["donors"])]
    await asyncio.gather(*(person.run() for person in people))
    summary = record.summary(time.monotonic() - started)
    summary["created"] = [t for p in people for t in p.created]
    summary["charged"] = [t for p in people for t in p.charged]
    return summary


async def _webhooks(spec: dict[str, Any]) -> dict[str, Any]:
    """Deliver the plan at ``rate`` a second, as Stripe does: on time whatever the answers.

    At most ``in_flight`` deliveries wait for an answer at once; beyond that the sender falls
    behind, and what it has not sent ``grace`` seconds after the mix ends is left unsent (the
    figure the checks report as the rate the app could not take).
    """
    import aiohttp
    import stripe

    await asyncio.sleep(max(0.0, spec["start_at"] - time.time()))
    record = _Record()
    urls = spec["urls"]
    started = time.monotonic()
    give_up = started + spec["seconds"] + spec["grace"]
    slots = asyncio.Semaphore(spec["in_flight"])
    attempted: list[int] = []
    answered: list[int] = []

    async def deliver(http, n: int, delivery: dict[str, Any]) -> None:
        body = delivery["body"]
        signature = stripe.WebhookSignature.generate_signature_header(body, spec["secret"])
        headers = {"Stripe-Signature": signature, "Content-Type": "application/json"}
        sent = time.perf_counter()
        try:
            async with http.post(
                f"{urls[delivery['to']]}/stripe/webhook", data=body, headers=headers
            ) as response:
                await response.read()
                status = str(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        finally:
            slots.release()
        record.add("webhook", (time.perf_counter() - sent) * 1000, status, status == "200")
        if status == "200":
            answered.append(n)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:
        tasks = []
        for n, delivery in enumerate(spec["plan"]):
            wait = started + n / spec["rate"] - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await slots.acquire()
            if time.monotonic() > give_up:
                slots.release()
                break
            attempted.append(n)
            tasks.append(asyncio.create_task(deliver(http, n, delivery)))
        await asyncio.gather(*tasks)
    summary = record.summary(time.monotonic() - started)
    summary["attempted"] = attempted
    summary["answered"] = answered
    summary["unsent"] = len(spec["plan"]) - len(attempted)
    # The rate the app took: deliveries answered within the mix (and its grace), per second.
    summary["rps"] = len(answered) / max(summary["elapsed"], 1e-9)
    return summary


def main() -> None:
    """`python -m bench.bench_peak donors|webhooks SPEC.json`: one load process; JSON on stdout."""
    role, path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(path).read_text())
    runner = {"donors": _donors, "webhooks": _webhooks}[role]
    print(json.dumps(asyncio.run(runner(spec))))


if __name__ == "__main__":
    main()
