"""Organizers review aid groups (filled in by the aid-groups work)."""

from flask import render_template
from sqlalchemy import select

from ...access import organizer_only
from ...extensions import db
from ...models import AidGroup
from . import bp


@bp.get("/groups")
@organizer_only
def groups():
    """Every aid group, by status."""
    groups = db.session.scalars(select(AidGroup).order_by(AidGroup.status, AidGroup.name)).all()
    return render_template("admin/groups/list.html", groups=groups)
