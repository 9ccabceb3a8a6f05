"""The partner portal under /partner: a group's own figures, and nothing of anyone else's."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from .. import partners
from ..access import partner_only

bp = Blueprint("partner", __name__, url_prefix="/partner")


@bp.get("/")
@partner_only
def index():
    """What each fast day allocated to the partner's own group, per currency."""
    group = current_user.aid_group
    return render_template(
        "partner/index.html", group=group, rows=partners.allocations_for_group(group)
    )
