"""Factories per noun: small, explicit builders for test data."""

from __future__ import annotations

import itertools
import re
import secrets
from datetime import date, timedelta

from fundraiser.extensions import db
from fundraiser.models import (
    AidGroup,
    AidGroupStatus,
    Disbursement,
    DisbursementMethod,
    DisbursementStatus,
    FastDay,
    FastDayGroup,
    FastDayStatus,
    LedgerEntry,
    Pledge,
    PledgeStatus,
    utcnow,
)

_seq = itertools.count(1)


def make_group(name: str | None = None, country: str = "PS") -> AidGroup:
    """An approved aid group."""
    n = next(_seq)
    group = AidGroup(
        slug=f"group-{n}",
        name=name or f"Test Group {n}",
        country=country,
        description="Delivers direct aid.",
        status=AidGroupStatus.APPROVED,
    )
    db.session.add(group)
    db.session.flush()
    return group


def make_fast_day(
    *,
    groups: list[AidGroup] | None = None,
    weights: list[int] | None = None,
    currency: str = "USD",
    status: FastDayStatus = FastDayStatus.LIVE,
    goal_minor: int = 1_000_000,
    suggested: list[int] | None = None,
    when: date | None = None,
    slug: str | None = None,
) -> FastDay:
    """A fast day funding ``groups`` (three new ones by default) with ``weights``."""
    n = next(_seq)
    groups = groups if groups is not None else [make_group() for _ in range(3)]
    weights = weights or [1] * len(groups)
    day = FastDay(
        slug=slug or f"fast-{n}",
        title=f"Test Fast {n}",
        local_date=when or date.today(),
        timezone="UTC",
        currency=currency,
        goal_minor=goal_minor,
        suggested_amounts=suggested if suggested is not None else [1000, 2500, 5000],
        status=status,
    )
    for position, (group, weight) in enumerate(zip(groups, weights, strict=True)):
        day.split_rows.append(FastDayGroup(aid_group=group, weight=weight, position=position))
    db.session.add(day)
    db.session.flush()
    return day


def make_pledge(
    day: FastDay,
    *,
    amount_minor: int = 2500,
    group: AidGroup | None = None,
    email: str | None = None,
    status: PledgeStatus = PledgeStatus.PENDING,
) -> Pledge:
    """A pledge for ``day`` in its currency."""
    pledge = Pledge(
        token=secrets.token_urlsafe(24),
        fast_day=day,
        aid_group=group,
        amount_minor=amount_minor,
        currency=day.currency,
        email=email or f"donor{next(_seq)}@example.org",
        status=status,
        locale="en",
    )
    db.session.add(pledge)
    db.session.flush()
    return pledge


def make_entry(
    pledge: Pledge, kind, amount_minor: int, stripe_object_id: str, currency: str | None = None
) -> LedgerEntry:
    """A ledger row for ``pledge`` as the ledger would write it (pooled rows carry the split version)."""
    entry = LedgerEntry(
        fast_day_id=pledge.fast_day_id,
        pledge_id=pledge.id,
        aid_group_id=pledge.aid_group_id,
        kind=kind,
        amount_minor=amount_minor,
        currency=currency or pledge.currency,
        stripe_object_id=stripe_object_id,
        split_version=None if pledge.aid_group_id else pledge.fast_day.split_version,
    )
    db.session.add(entry)
    return entry


def make_disbursement(
    day: FastDay,
    group: AidGroup,
    amount_minor: int,
    *,
    currency: str | None = None,
    method: DisbursementMethod = DisbursementMethod.BANK_TRANSFER,
    paid_on: date | None = None,
    reference: str = "",
    note: str = "",
) -> Disbursement:
    """A CONFIRMED disbursement to ``group`` from ``day``, with its ledger row."""
    from fundraiser import ledger

    disbursement = Disbursement(
        fast_day=day,
        aid_group=group,
        amount_minor=amount_minor,
        currency=(currency or day.currency).upper(),
        method=method,
        paid_on=paid_on or date.today(),
        reference=reference or f"REF-{next(_seq)}",
        note=note,
        status=DisbursementStatus.CONFIRMED,
        confirmed_at=utcnow(),
    )
    db.session.add(disbursement)
    db.session.flush()
    ledger.record_disbursement(disbursement)
    return disbursement


def past_date(days: int = 30) -> date:
    """A date ``days`` ago."""
    return date.today() - timedelta(days=days)


CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def csrf_from(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = CSRF_RE.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


PASSWORD = "correct horse battery staple"


def make_user(
    role: str = "organizer",
    *,
    email: str | None = None,
    group: AidGroup | None = None,
    password: str = PASSWORD,
):
    """An active account with a known password (a partner needs ``group``)."""
    from fundraiser import auth
    from fundraiser.models import Role

    return auth.create_user(
        email or f"user{next(_seq)}@example.org",
        Role(role),
        password=password,
        aid_group_id=group.id if group else None,
    )


def login(client, email: str, password: str = PASSWORD, next_url: str | None = None):
    """Sign in through the real login form; returns the response."""
    page = client.get("/login")
    query = f"?next={next_url}" if next_url else ""
    return client.post(
        f"/login{query}",
        data={
            "csrf_token": csrf_from(page.get_data(as_text=True)),
            "email": email,
            "password": password,
        },
    )


def post_form(client, url: str, data: dict | None = None, *, form_page: str | None = None):
    """POST to ``url`` with a valid CSRF token taken from ``form_page`` (default: ``url``)."""
    page = client.get(form_page or url)
    token = csrf_from(page.get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **(data or {})})
