"""Organizers schedule and run fast days (filled in by the fast-days work)."""

from flask import render_template
from sqlalchemy import select

from ...access import organizer_only
from ...extensions import db
from ...models import FastDay
from . import bp


@bp.get("/fast-days")
@organizer_only
def fast_days():
    """Every fast day, newest first."""
    days = db.session.scalars(select(FastDay).order_by(FastDay.local_date.desc())).all()
    return render_template("admin/fast_days/list.html", days=days)
