"""Public pages about aid groups: applying to be listed (filled in by the aid-groups work)."""

from flask import Blueprint

bp = Blueprint("groups", __name__, url_prefix="/groups")
