"""Public pages about aid groups: applying to be listed."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_babel import get_locale

from .. import partners
from ..access import public
from ..extensions import db, limiter
from ..forms.aid_group import ApplicationForm

bp = Blueprint("groups", __name__, url_prefix="/groups")


def _was_accepted(response) -> bool:
    return response.status_code == 303


@bp.route("/apply", methods=["GET", "POST"])
@public
# Ten applications an hour from one address is far beyond a real coalition's pace; typos
# and corrections count separately, so a person fixing the form is not locked out.
@limiter.limit("10 per hour", methods=["POST"], deduct_when=_was_accepted)
@limiter.limit("60 per hour", methods=["POST"])
def apply():
    """The application form for groups that want to be listed."""
    form = ApplicationForm()
    if form.validate_on_submit():
        partners.submit_application(
            partners.Application(
                name=form.name.data,
                country=form.country.data,
                description=form.description.data,
                contact_name=form.contact_name.data,
                contact_email=form.contact_email.data,
                website=form.website.data or None,
                funds_method=partners.FundsMethod(form.funds_method.data),
                funds_details=form.funds_details.data or "",
                locale=str(get_locale() or "en"),
            )
        )
        db.session.commit()
        return redirect(url_for("groups.applied"), 303)
    status = 400 if form.is_submitted() else 200
    return render_template("groups/apply.html", form=form), status


@bp.get("/apply/thanks")
@public
def applied():
    """The thank-you page after applying; it shows nothing of what was sent."""
    return render_template("groups/applied.html")
