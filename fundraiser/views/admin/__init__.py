"""The organizer console under /admin: one module per noun, all on this blueprint.

Every view here is decorated with ``organizer_only`` (see fundraiser/access.py).
"""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Imported for their routes, after ``bp`` exists.
from . import (  # noqa: E402, F401
    audit_log,
    campaigns,
    dashboard,
    disbursements,
    fast_days,
    groups,
    home,
    users,
)
