"""`make run`'s demo data: three fast days, invented groups, one application, two logins."""

from __future__ import annotations

from sqlalchemy import func, select

from fundraiser import auth, ledger
from fundraiser.extensions import db
from fundraiser.models import AidGroup, AidGroupStatus, FastDay, FastDayStatus


def test_demo_data_loads_once_with_everything_the_readme_promises(app, runner):
    first = runner.invoke(args=["demo-data"])
    assert first.exit_code == 0 and "loaded" in first.output
    second = runner.invoke(args=["demo-data"])
    assert "nothing loaded" in second.output
    with app.app_context():
        statuses = sorted(db.session.scalars(select(FastDay.status)))
        assert statuses == sorted(
            [FastDayStatus.CLOSED, FastDayStatus.LIVE, FastDayStatus.SCHEDULED]
        )
        past = db.session.scalar(select(FastDay).where(FastDay.status == FastDayStatus.CLOSED))
        assert ledger.day_totals(past).donors >= 200
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(AidGroup)
                .where(AidGroup.status == AidGroupStatus.APPROVED)
            )
            >= 5
        )
        assert (
            db.session.scalar(
                select(func.count())
                .select_from(AidGroup)
                .where(AidGroup.status == AidGroupStatus.APPLIED)
            )
            == 1
        )
        assert auth.authenticate("organizer@example.org", "fastday-organizer").role == "organizer"
        partner = auth.authenticate("partner@example.org", "fastday-partner")
        assert partner.aid_group is not None
