"""The console's front door."""

from flask import redirect, url_for

from ...access import organizer_only
from . import bp


@bp.get("/")
@organizer_only
def index():
    """Organizers land on the list of fast days."""
    return redirect(url_for("admin.fast_days"))
