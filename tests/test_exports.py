"""CSV exports of a fast day: contents, headers, streaming, formula guard, privacy, audit."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from fundraiser import exports
from fundraiser.extensions import db
from fundraiser.models import AuditEntry, EntryKind, Pledge, PledgeStatus
from tests.factories import login, make_entry, make_fast_day, make_group, make_pledge, make_user

ORGANIZER = "organizer@example.org"
AT = datetime(2026, 3, 14, 12, 30, 5, 123456, tzinfo=UTC)


@pytest.fixture
def organizer(app):
    """A signed-in organizer's browser."""
    with app.app_context():
        make_user("organizer", email=ORGANIZER)
        db.session.commit()
    browser = app.test_client()
    login(browser, ORGANIZER)
    return browser


def _gift(
    day,
    amount: int,
    *,
    group=None,
    name=None,
    dedication=None,
    refunded: int = 0,
    status=PledgeStatus.SUCCEEDED,
    email=None,
):
    pledge = make_pledge(day, amount_minor=amount, group=group, status=status, email=email)
    pledge.donor_name, pledge.dedication, pledge.succeeded_at = name, dedication, AT
    rows = [(EntryKind.GIFT, amount, f"ch_{pledge.id}")]
    if refunded:
        rows.append((EntryKind.REFUND, -refunded, f"re_{pledge.id}"))
    for kind, value, key in rows:
        make_entry(pledge, kind, value, key)
    db.session.flush()
    return pledge


def _read(response) -> list[dict[str, str]]:
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")  # so spreadsheets read the names as UTF-8
    return list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))


def test_gifts_export_lists_the_gifts_that_went_through_with_their_refunds(app, organizer):
    with app.app_context():
        relief = make_group("Rafah Water Relief")
        day = make_fast_day(groups=[relief, make_group()], slug="spring-fast")
        pooled = _gift(
            day, 2500, name="Amal", dedication="For my grandmother", email="amal@example.org"
        )
        designated = _gift(day, 1000, group=relief, refunded=250, email="anon@example.org")
        refunded = _gift(day, 5000, refunded=5000, status=PledgeStatus.REFUNDED)
        make_pledge(day, status=PledgeStatus.FAILED)  # no money moved: not a gift
        make_pledge(day, status=PledgeStatus.PENDING)
        db.session.commit()
        day_id = day.id
        ids = [pooled.id, designated.id, refunded.id]

    response = organizer.get(f"/admin/fast-days/{day_id}/gifts.csv")

    assert response.status_code == 200
    assert response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="spring-fast-gifts.csv"'
    rows = _read(response)
    assert list(rows[0]) == list(exports.GIFT_HEADER)
    assert [int(r["gift_id"]) for r in rows] == ids
    assert rows[0] == {
        "gift_id": str(ids[0]),
        "time_utc": "2026-03-14T12:30:05+00:00",
        "status": "succeeded",
        "amount": "25.00",
        "amount_minor": "2500",
        "refunded": "0.00",
        "refunded_minor": "0",
        "currency": "USD",
        "group": "all",
        "donor_name": "Amal",
        "dedication": "For my grandmother",
    }
    assert (rows[1]["group"], rows[1]["donor_name"], rows[1]["refunded"]) == (
        "Rafah Water Relief",
        "",
        "2.50",
    )
    assert (rows[2]["status"], rows[2]["amount"], rows[2]["refunded_minor"]) == (
        "refunded",
        "50.00",
        "5000",
    )


def test_gifts_export_never_carries_an_email_address(app, organizer):
    with app.app_context():
        day = make_fast_day()
        for i in range(3):
            _gift(day, 1000 + i, name=f"Donor {i}", email=f"private{i}@example.org")
        db.session.commit()
        day_id = day.id

    text = organizer.get(f"/admin/fast-days/{day_id}/gifts.csv").get_data(as_text=True)

    assert "@" not in text and "email" not in text.lower()
    assert text.count("\r\n") == 4  # the header and three gifts


def test_amounts_use_the_currencys_own_digits(app, organizer):
    with app.app_context():
        yen = make_fast_day(currency="JPY")
        _gift(yen, 1500)
        dinar = make_fast_day(currency="KWD")
        _gift(dinar, 12_340)
        db.session.commit()
        yen_id, dinar_id = yen.id, dinar.id

    yen_row = _read(organizer.get(f"/admin/fast-days/{yen_id}/gifts.csv"))[0]
    dinar_row = _read(organizer.get(f"/admin/fast-days/{dinar_id}/gifts.csv"))[0]

    assert (yen_row["amount"], yen_row["amount_minor"], yen_row["currency"]) == (
        "1500",
        "1500",
        "JPY",
    )
    assert (dinar_row["amount"], dinar_row["amount_minor"], dinar_row["currency"]) == (
        "12.340",
        "12340",
        "KWD",
    )


@pytest.mark.parametrize(
    "text", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
)
def test_cells_that_a_spreadsheet_would_run_are_defused(text):
    assert exports.safe_cell(text) == "'" + text
    assert exports.safe_cell("Amal " + text) == "Amal " + text  # only the first character
    assert exports.safe_cell(None) == ""


def test_formula_injection_is_defused_in_every_text_column(app, organizer):
    with app.app_context():
        evil_group = make_group("=cmd|' /C calc'!A0")
        day = make_fast_day(groups=[evil_group])
        _gift(day, 1000, group=evil_group, name="@SUM(1+1)*cmd", dedication="+44 in memory")
        db.session.commit()
        day_id = day.id

    gift = _read(organizer.get(f"/admin/fast-days/{day_id}/gifts.csv"))[0]
    allocation = _read(organizer.get(f"/admin/fast-days/{day_id}/allocations.csv"))[0]

    assert gift["group"] == "'=cmd|' /C calc'!A0"
    assert gift["donor_name"] == "'@SUM(1+1)*cmd"
    assert gift["dedication"] == "'+44 in memory"
    assert allocation["group_name"] == "'=cmd|' /C calc'!A0"


def test_allocations_export_has_one_row_per_group_that_adds_up(app, organizer):
    with app.app_context():
        a, b, c = make_group("Alpha"), make_group("Beta"), make_group("Gamma")
        day = make_fast_day(groups=[a, b, c], weights=[1, 1, 1], slug="autumn")
        _gift(day, 1000)  # pooled: 3.34 / 3.33 / 3.33
        _gift(day, 500, group=b)
        db.session.commit()
        day_id = day.id

    response = organizer.get(f"/admin/fast-days/{day_id}/allocations.csv")

    assert response.is_streamed and response.mimetype == "text/csv"
    assert (
        response.headers["Content-Disposition"] == 'attachment; filename="autumn-allocations.csv"'
    )
    rows = _read(response)
    assert list(rows[0]) == list(exports.ALLOCATION_HEADER)
    assert [(r["group_name"], r["designated"], r["pool_share"], r["allocated"]) for r in rows] == [
        ("Alpha", "0.00", "3.34", "3.34"),
        ("Beta", "5.00", "3.33", "8.33"),
        ("Gamma", "0.00", "3.33", "3.33"),
    ]
    assert sum(int(r["allocated_minor"]) for r in rows) == 1500
    assert {r["currency"] for r in rows} == {"USD"}


def test_each_export_is_recorded_in_the_audit_log(app, organizer):
    with app.app_context():
        day = make_fast_day(slug="logged")
        db.session.commit()
        day_id = day.id

    organizer.get(f"/admin/fast-days/{day_id}/gifts.csv").get_data()
    organizer.get(f"/admin/fast-days/{day_id}/allocations.csv").get_data()
    organizer.get(f"/admin/fast-days/{day_id}/gifts.csv").get_data()

    with app.app_context():
        entries = db.session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action.like("fast_day.export%"))
            .order_by(AuditEntry.id)
        ).all()
        assert [(e.action, e.actor_email, e.target_type, e.target_id) for e in entries] == [
            ("fast_day.export_gifts", ORGANIZER, "FastDay", str(day_id)),
            ("fast_day.export_allocations", ORGANIZER, "FastDay", str(day_id)),
            ("fast_day.export_gifts", ORGANIZER, "FastDay", str(day_id)),
        ]
        assert entries[0].after == {"file": "logged-gifts.csv"}


def test_a_large_export_streams_in_batches_of_bounded_size(app, organizer, monkeypatch):
    """5,000 gifts in batches of 1,000: the body arrives in pieces, never as one list."""
    with app.app_context():
        day = make_fast_day()
        db.session.execute(
            insert(Pledge),
            [
                {
                    "token": f"tok-{i}",
                    "fast_day_id": day.id,
                    "amount_minor": 100 + i,
                    "currency": "USD",
                    "email": f"d{i}@example.org",
                    "status": PledgeStatus.SUCCEEDED,
                    "succeeded_at": AT,
                    "locale": "en",
                }
                for i in range(5000)
            ],
        )
        db.session.commit()
        day_id = day.id
    batch_sizes: list[int] = []
    real = exports.gift_batches

    def counting(day_id, batch_size=exports.BATCH_SIZE):
        for batch in real(day_id, batch_size):
            batch_sizes.append(len(batch))
            yield batch

    monkeypatch.setattr(exports, "gift_batches", counting)

    response = organizer.get(f"/admin/fast-days/{day_id}/gifts.csv", buffered=False)
    assert response.is_streamed
    chunks = [chunk for chunk in response.response if chunk]
    response.close()

    assert batch_sizes == [1000] * 5
    assert len(chunks) == 6  # the header, then one chunk per batch
    text = b"".join(chunks).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 5000 and len({r["gift_id"] for r in rows}) == 5000
    assert sum(int(r["amount_minor"]) for r in rows) == sum(100 + i for i in range(5000))
