"""The live counter coalition members put on their own sites, in an iframe."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template
from flask.wrappers import Response

from .. import fast_days, ledger
from ..access import public
from ..security import allow_framing

bp = Blueprint("embed", __name__, url_prefix="/embed")


@bp.after_request
def _frameable(response: Response) -> Response:
    # Only this page may be framed, by the sites EMBED_FRAME_ANCESTORS names (any, by default:
    # about 2,000 member sites). It has no form, no third-party script and nothing personal, so framing it
    # cannot be turned into clickjacking a donor. Members may cache it for a minute.
    ancestors = current_app.config["EMBED_FRAME_ANCESTORS"]
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; "
        f"form-action 'none'; frame-ancestors {ancestors}"
    )
    if response.status_code == 200:
        response.headers["Cache-Control"] = "public, max-age=60"
        response.headers["Vary"] = "Accept-Language"
    return response


@bp.get("/<slug>")
@public
def counter(slug: str):
    """Raised so far, the goal, donors and a link to give; it reloads itself every minute."""
    day = fast_days.get_public(slug)
    if day is None:
        abort(404)
    allow_framing()
    ledgers = ledger.day_ledger(day)
    return render_template(
        "embed/counter.html",
        day=day,
        totals=ledgers[0].totals,
        others=[part.totals for part in ledgers[1:]],
    )
