"""The read path under a million gifts: the totals API, the partner dashboard, the give page,
and the split itself.

Every benchmark here reads the same SQLite databases, loaded once per run by
`flask --app wsgi bench-data` (one LIVE day, ``GROUPS`` groups) and kept in the run's work
directory by size: a small one (``SMALL_GIFTS`` gifts) and a big one (a million, or
``QUICK_GIFTS`` under --quick). Servers are gunicorn with ``WORKERS`` sync workers for both
sizes and for the floor, so only the data differs.

`python -m bench.bench_reads partner|split` are the helpers the benchmarks run inside an app
process of their own (a partner account to sign in with; the in-process split).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import requests

from bench.core import PYTHON, ROOT, Context, Result, app_env, bench_data, gunicorn, load, run

GROUPS = 100
SMALL_GIFTS = 1_000
FULL_GIFTS = 1_000_000
QUICK_GIFTS = 100_000
SUBSCRIBERS = 100  # the read path never looks at them; bench-data wants some
WORKERS = 2
PARTNER_EMAIL = "partner@bench.invalid"
PARTNER_PASSWORD = "bench partner password"  # a throwaway benchmark account
CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@dataclass(frozen=True)
class Dataset:
    """One loaded database: its URL, the fast day's slug and how many gifts it holds."""

    url: str
    slug: str
    gifts: int

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of an app process (or gunicorn) that reads this database."""
        return app_env(self.url, **extra)


_loaded: dict[Path, Dataset] = {}


def dataset(ctx: Context, gifts: int) -> Dataset:
    """The database with ``gifts`` gifts across GROUPS groups, loaded once per run."""
    path = ctx.workdir / f"reads-{gifts}.db"
    if path in _loaded:
        return _loaded[path]
    url = f"sqlite:///{path}"
    env = app_env(url)
    started = time.monotonic()
    slug = bench_data(env, gifts=gifts, groups=GROUPS, subscribers=SUBSCRIBERS)
    print(f"   loaded {gifts:,} gifts in {time.monotonic() - started:.0f} s", flush=True)
    run([PYTHON, "-m", "bench.bench_reads", "partner", slug], env)
    _loaded[path] = Dataset(url=url, slug=slug, gifts=gifts)
    return _loaded[path]


def _big(ctx: Context) -> Dataset:
    return dataset(ctx, ctx.scale(FULL_GIFTS, QUICK_GIFTS))


def _small(ctx: Context) -> Dataset:
    return dataset(ctx, SMALL_GIFTS)


def _partner_cookie(base: str) -> str:
    """Sign in through the login form (with its CSRF token); the session cookie's header."""
    with requests.Session() as session:
        page = session.get(f"{base}/login", timeout=60)
        match = CSRF_RE.search(page.text)
        if match is None:
            raise RuntimeError("no CSRF token on the login page")
        answer = session.post(
            f"{base}/login",
            data={
                "csrf_token": match.group(1),
                "email": PARTNER_EMAIL,
                "password": PARTNER_PASSWORD,
            },
            allow_redirects=False,
            timeout=60,
        )
        if answer.status_code != 302 or "session" not in session.cookies:
            raise RuntimeError(f"partner sign-in failed: {answer.status_code}")
        return f"session={session.cookies['session']}"


def _median_ms(
    ctx: Context, url: str, headers: dict[str, str], count: int, seconds: float
) -> float:
    """Median latency (ms) of ``count`` requests sent one at a time (bounded by ``seconds``)."""
    spec = {
        "requests": [{"method": "GET", "url": url, "headers": headers}] * count,
        "concurrency": 1,
        "max_seconds": seconds,
    }
    got = load(spec, ctx.workdir)
    if set(got["statuses"]) != {"200"}:
        raise RuntimeError(f"{url} answered {got['statuses']}")
    return got["p50_ms"]


def _growth(ctx: Context, name: str, path: str, signed_in: bool) -> list[Result]:
    """Median latency of ``path`` on the big database over the same on the small one.

    Both servers run at once with the same settings; batches alternate between them so that
    the noise of a shared machine falls on both sides alike.
    """
    small, big = _small(ctx), _big(ctx)
    # Batches are bounded by time: at a million gifts a request takes seconds today.
    count, seconds, rounds = 20, ctx.scale(12, 4), 2
    medians: dict[str, list[float]] = {"small": [], "big": []}
    with contextlib.ExitStack() as stack:
        bases = {
            "small": stack.enter_context(gunicorn("wsgi:app", small.env(), workers=WORKERS)),
            "big": stack.enter_context(gunicorn("wsgi:app", big.env(), workers=WORKERS)),
        }
        targets = {}
        for size, data in (("small", small), ("big", big)):
            headers = {"Cookie": _partner_cookie(bases[size])} if signed_in else {}
            url = bases[size] + path.format(slug=data.slug)
            # The load generator follows redirects: a lost sign-in would time the login page.
            first = requests.get(url, headers=headers, allow_redirects=False, timeout=300)
            if first.status_code != 200:
                raise RuntimeError(f"{url} answered {first.status_code}, not the page itself")
            _median_ms(ctx, url, headers, WORKERS, seconds)  # warm up
            targets[size] = (url, headers)
        for _round in range(rounds):
            for size, (url, headers) in targets.items():
                medians[size].append(_median_ms(ctx, url, headers, count, seconds))
    small_ms, big_ms = statistics.median(medians["small"]), statistics.median(medians["big"])
    return [
        Result(
            name,
            big_ms / small_ms,
            "x",
            "<=",
            1.5,
            f"median {big_ms:.1f} ms at {big.gifts:,} gifts, {small_ms:.1f} ms at"
            f" {small.gifts:,}; {GROUPS} groups, gunicorn {WORKERS} workers, SQLite",
            {"small_ms": small_ms, "big_ms": big_ms, "gifts": big.gifts, "rounds": medians},
        )
    ]


def totals_api_growth(ctx: Context) -> list[Result]:
    """Median latency of /api/v1/fast-days/<slug>/totals at a million gifts over at 1,000.

    Floor: the same endpoint on the same server settings with 1,000 gifts; the goal (≤ 1.5)
    says the cost must not grow with the number of gifts.
    """
    return _growth(ctx, "totals_api_growth", "/api/v1/fast-days/{slug}/totals", False)


def partner_dashboard_growth(ctx: Context) -> list[Result]:
    """Median latency of /partner/ (signed in as one of 100 groups' partner), 1M over 1,000 gifts.

    Floor: the same dashboard for the same group on the same server settings with 1,000 gifts.
    """
    return _growth(ctx, "partner_dashboard_growth", "/partner/", True)


def _rps(ctx: Context, url: str, count: int, seconds: float) -> tuple[int, float]:
    got = load({"url": url, "count": count, "concurrency": 8, "max_seconds": seconds}, ctx.workdir)
    if set(got["statuses"]) != {"200"}:
        raise RuntimeError(f"{url} answered {got['statuses']}")
    return got["count"], got["elapsed"]


def give_page_ratio(ctx: Context) -> list[Result]:
    """Requests per second of the million-gift day's give page over a floor's.

    Floor: a bare Flask app (bench.floor_apps.page_app) rendering one template of the same
    number of bytes, no database, under the same gunicorn settings. Two rounds alternate
    between the app and the floor; each side's rate is its requests over its seconds.
    """
    big = _big(ctx)
    count, seconds = ctx.scale(3000, 1000), ctx.scale(10, 3)
    path = f"/fast/{big.slug}/give"
    totals = {"app": [0, 0.0], "floor": [0, 0.0]}
    with gunicorn("wsgi:app", big.env(), workers=WORKERS) as base:
        page = requests.get(base + path, timeout=60)
        page.raise_for_status()
        size = len(page.content)
        floor_env = big.env(FLOOR_PAGE_BYTES=str(size))
        with gunicorn("bench.floor_apps:page_app()", floor_env, workers=WORKERS) as floor:
            shown = requests.get(floor + "/page", timeout=60)
            if len(shown.content) != size:
                raise RuntimeError(f"floor page is {len(shown.content)} bytes, not {size}")
            urls = {"app": base + path, "floor": floor + "/page"}
            for url in urls.values():
                _rps(ctx, url, WORKERS * 20, seconds)  # warm up
            for _round in range(2):
                for side, url in urls.items():
                    done, elapsed = _rps(ctx, url, count, seconds)
                    totals[side][0] += done
                    totals[side][1] += elapsed
    app_rps, floor_rps = (totals[s][0] / totals[s][1] for s in ("app", "floor"))
    return [
        Result(
            "give_page_ratio",
            app_rps / floor_rps,
            "x",
            ">=",
            0.6,
            f"{app_rps:.0f} req/s for the give page ({big.gifts:,} gifts, {size:,} bytes),"
            f" floor {floor_rps:.0f} req/s (bare Flask, same-size template);"
            f" gunicorn {WORKERS} workers, 8 clients",
            {"app_rps": app_rps, "floor_rps": floor_rps, "bytes": size},
        )
    ]


def split_1m_ms(ctx: Context) -> list[Result]:
    """Milliseconds to compute every group's allocation (ledger.day_ledger) for the big day.

    In-process, in an app process of its own, on a freshly loaded day (median of several);
    it must also be exact: the shares add up to the pool and each group's designated money
    to its own rows, per currency, or the benchmark fails.
    """
    big = _big(ctx)
    repeats = ctx.scale(3, 5)
    out = run([PYTHON, "-m", "bench.bench_reads", "split", big.slug, str(repeats)], big.env())
    got = json.loads(out.strip().splitlines()[-1])
    exact = "exact" if not got["problems"] else "NOT EXACT: " + "; ".join(got["problems"][:5])
    return [
        Result(
            "split_1m_ms",
            got["median_ms"],
            "ms",
            "<=",
            200,
            f"{big.gifts:,} gifts, {got['rows']:,} ledger rows, {GROUPS} groups, {exact};"
            f" read from the running totals (ledger_total), checked against the rows summed"
            f" apart; timed apart: the grouped totals {got['sums_ms']:.1f} ms, the donor count"
            f" {got['donors_ms']:.1f} ms (SQLite)",
            got,
            ok=not got["problems"],  # a wrong split fails, however fast
        )
    ]


BENCHMARKS = [totals_api_growth, partner_dashboard_growth, give_page_ratio, split_1m_ms]


# --- Run inside an app process: `python -m bench.bench_reads partner|split ...` -------------


def _make_partner(slug: str) -> None:
    """A partner account for the first group the day funds."""
    from fundraiser import auth, fast_days
    from fundraiser.extensions import db
    from fundraiser.models import Role
    from wsgi import app

    with app.app_context():
        day = fast_days.get_public(slug)
        group = day.allocations[0].aid_group
        auth.create_user(
            PARTNER_EMAIL, Role.PARTNER, password=PARTNER_PASSWORD, aid_group_id=group.id
        )
        db.session.commit()


def _split_problems(
    parts, raw: dict[tuple[str, int | None], int], weights: dict[int, int]
) -> list[str]:
    """Where the computed split disagrees with the ledger rows summed on their own."""
    problems = []
    for part in parts:
        currency = part.currency
        pooled = raw.get((currency, None), 0)
        shares = sum(a.pool_share_minor for a in part.allocations)
        if shares != pooled:
            problems.append(f"{currency}: shares add up to {shares}, the pool is {pooled}")
        if part.pool.net_minor != pooled:
            problems.append(f"{currency}: the pool says {part.pool.net_minor}, rows {pooled}")
        everything = sum(v for (c, _g), v in raw.items() if c == currency)
        allocated = sum(a.allocated_minor for a in part.allocations)
        if allocated != everything or part.totals.net_minor != everything:
            problems.append(
                f"{currency}: allocated {allocated}, net {part.totals.net_minor}, rows {everything}"
            )
        total_weight = sum(weights.values())
        for a in part.allocations:
            own = raw.get((currency, a.aid_group_id), 0)
            if a.designated_minor != own:
                problems.append(f"{currency} {a.slug}: designated {a.designated_minor}, rows {own}")
            # Largest remainder: every share is its exact quota rounded down or up.
            quota = Fraction(pooled * weights.get(a.aid_group_id, 0), total_weight)
            if not (quota - 1 < a.pool_share_minor < quota + 1):
                problems.append(
                    f"{currency} {a.slug}: share {a.pool_share_minor}, quota {float(quota):.2f}"
                )
    return problems


def _measure_split(slug: str, repeats: int) -> dict:
    """Time ledger.day_ledger on a freshly loaded day; check it against the rows."""
    from sqlalchemy import func, select

    from fundraiser import fast_days, ledger
    from fundraiser.extensions import db
    from fundraiser.models import EntryKind, LedgerEntry
    from wsgi import app

    with app.app_context():
        times = []
        for _ in range(repeats + 1):  # the first warms SQLite's page cache
            db.session.rollback()
            db.session.expunge_all()
            day = fast_days.get_public(slug)
            started = time.perf_counter()
            parts = ledger.day_ledger(day)
            times.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        ledger._kind_sums(day, day.currency)
        sums_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        ledger.day_totals(day)  # its own grouped sum again, plus the donor count
        donors_ms = (time.perf_counter() - started) * 1000 - sums_ms
        if len({link.version for link in day.split_rows}) != 1:
            raise RuntimeError("the exactness check assumes one split version")
        rows = db.session.execute(
            select(
                LedgerEntry.currency,
                LedgerEntry.aid_group_id,
                func.sum(LedgerEntry.amount_minor),
                func.count(),
            )
            .where(LedgerEntry.fast_day_id == day.id, LedgerEntry.kind != EntryKind.DISBURSEMENT)
            .group_by(LedgerEntry.currency, LedgerEntry.aid_group_id)
        ).all()
        raw = {(c, g): int(total) for c, g, total, _n in rows}
        weights = {link.aid_group_id: link.weight for link in day.allocations}
        by_kind: dict[str, int] = defaultdict(int)
        for kind, n in db.session.execute(
            select(LedgerEntry.kind, func.count())
            .where(LedgerEntry.fast_day_id == day.id)
            .group_by(LedgerEntry.kind)
        ):
            by_kind[str(kind)] = int(n)
        return {
            "median_ms": statistics.median(times[1:]),
            "times_ms": times,
            "sums_ms": sums_ms,
            "donors_ms": max(0.0, donors_ms),
            "rows": sum(n for *_rest, n in rows),
            "rows_by_kind": by_kind,
            "currencies": [p.currency for p in parts],
            "problems": _split_problems(parts, raw, weights),
        }


def main() -> None:
    """`partner SLUG` or `split SLUG REPEATS`, with DATABASE_URL set."""
    os.chdir(ROOT)
    command, slug, *rest = sys.argv[1:]
    if command == "partner":
        _make_partner(slug)
    elif command == "split":
        print(json.dumps(_measure_split(slug, int(rest[0]))))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
