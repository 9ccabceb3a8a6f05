"""Pages for subscribers: subscribe, confirm, preferences, unsubscribe (RFC 8058), erase.

Everything after subscribing is reached by a signed link from an e-mail; there are no
accounts. A link that is forged, tampered with or stale answers 404 and changes nothing.
Every form posts with a CSRF token except the one-click unsubscribe, which mail providers
POST without cookies (RFC 8058); its signed token is what proves it.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _

from .. import fast_days, subscriptions
from ..access import public
from ..extensions import db, limiter
from ..forms.subscribe import ActionForm, ManageForm, PreferencesForm, SubscribeForm
from ..models import Subscriber, SubscriberStatus
from ..subscriptions import Purpose

bp = Blueprint("subscriptions", __name__, url_prefix="/messages")

ONE_CLICK_BODY = ("List-Unsubscribe", "One-Click")


def _accepted(response) -> bool:
    return response.status_code == 303


def _subscriber_or_404(token: str, purpose: str, **kwargs) -> Subscriber:
    subscriber = subscriptions.from_token(token, purpose, **kwargs)
    if subscriber is None:
        abort(404)
    return subscriber


def _default_timezone() -> str:
    """The zone of the day the visitor came from, else the featured day's, else UTC."""
    slug = request.args.get("day")
    day = fast_days.get_public(slug) if slug else None
    day = day or fast_days.featured()
    zone = day.timezone if day else "UTC"
    return zone if subscriptions.is_timezone(zone) else "UTC"


def _with_choices(template: str, status: int = 200, **context):
    return render_template(
        template,
        timezones=subscriptions.timezone_choices(),
        cities=subscriptions.city_choices(),
        **context,
    ), status


@bp.route("/", methods=["GET", "POST"])
@public
# A shared connection (an office, a mosque) may rightly subscribe many people; beyond this
# it is someone sending confirmations to strangers.
@limiter.limit("30 per hour", methods=["POST"], deduct_when=_accepted)
@limiter.limit("120 per hour", methods=["POST"])
def subscribe():
    """Ask for the fast day's messages; the answer is the same for a known address."""
    form = SubscribeForm()
    if not form.is_submitted():
        form.locale.data = str(get_locale() or current_app.config["BABEL_DEFAULT_LOCALE"])
        form.timezone.data = _default_timezone()
    if form.validate_on_submit():
        subscriptions.subscribe(
            form.email.data,
            locale=form.locale.data,
            timezone=form.timezone.data,
            city=form.found_city,
        )
        db.session.commit()
        return redirect(url_for("subscriptions.requested"), 303)
    return _with_choices(
        "subscriptions/subscribe.html",
        400 if form.is_submitted() else 200,
        form=form,
        # Only a fresh form takes the browser's zone; a corrected one keeps what was typed.
        fill_browser_zone=not form.is_submitted(),
    )


@bp.get("/check-your-inbox")
@public
def requested():
    """After subscribing or asking for a link: look in your inbox (says nothing of the address)."""
    return render_template("subscriptions/requested.html", what=request.args.get("what"))


@bp.route("/manage", methods=["GET", "POST"])
@public
@limiter.limit("30 per hour", methods=["POST"])
def manage():
    """Ask for a link to one's preferences; the answer is the same for an unknown address."""
    form = ManageForm()
    if form.validate_on_submit():
        subscriptions.send_manage_link(form.email.data)
        db.session.commit()
        return redirect(url_for("subscriptions.requested", what="manage"), 303)
    status = 400 if form.is_submitted() else 200
    return render_template("subscriptions/manage.html", form=form), status


@bp.route("/confirm/<token>", methods=["GET", "POST"])
@public
def confirm(token: str):
    """The link in the confirmation e-mail: a button confirms.

    Confirming takes a click, not just opening the link: mail scanners open every link in
    a message, and would otherwise confirm addresses nobody confirmed.
    """
    subscriber = _subscriber_or_404(token, Purpose.CONFIRM, max_age=subscriptions.CONFIRM_MAX_AGE)
    form = ActionForm()
    if subscriber.status == SubscriberStatus.PENDING and form.validate_on_submit():
        subscriptions.confirm(subscriber)
        db.session.commit()
        flash(_("You are subscribed. Here you can change what you get, whenever you like."))
        return redirect(_preferences_path(subscriber), 303)
    if subscriber.status == SubscriberStatus.CONFIRMED:
        return redirect(_preferences_path(subscriber), 303)
    return render_template("subscriptions/confirm.html", subscriber=subscriber, form=form)


def _preferences_path(subscriber: Subscriber) -> str:
    return url_for(
        "subscriptions.preferences",
        token=subscriptions.token_for(subscriber, Purpose.PREFERENCES),
    )


@bp.get("/unsubscribe/<token>")
@public
def unsubscribe(token: str):
    """The unsubscribe link opened in a browser: a button, and nothing changed yet."""
    subscriber = _subscriber_or_404(token, Purpose.UNSUBSCRIBE)
    return render_template(
        "subscriptions/unsubscribe.html",
        subscriber=subscriber,
        form=ActionForm(),
        preferences=_preferences_path(subscriber),
    )


@bp.post("/unsubscribe/<token>")
@public
def one_click_unsubscribe(token: str):
    """RFC 8058 one-click: the mail provider POSTs with no cookies; answers 200, no redirect."""
    if request.form.get(ONE_CLICK_BODY[0]) != ONE_CLICK_BODY[1]:
        abort(400)
    subscriber = _subscriber_or_404(token, Purpose.UNSUBSCRIBE)
    subscriptions.unsubscribe(subscriber)
    db.session.commit()
    return render_template("subscriptions/unsubscribed.html", preferences=None), 200


@bp.post("/unsubscribe/<token>/confirm")
@public
def unsubscribe_by_button(token: str):
    """The button on the unsubscribe page (a normal form with its CSRF token)."""
    subscriber = _subscriber_or_404(token, Purpose.UNSUBSCRIBE)
    if not ActionForm().validate_on_submit():
        abort(400)
    subscriptions.unsubscribe(subscriber)
    db.session.commit()
    return redirect(url_for("subscriptions.unsubscribe", token=token), 303)


@bp.route("/preferences/<token>", methods=["GET", "POST"])
@public
def preferences(token: str):
    """Language, time zone, city and which messages; saved with the form's CSRF token."""
    subscriber = _subscriber_or_404(token, Purpose.PREFERENCES)
    form = PreferencesForm(obj=subscriber)
    if form.validate_on_submit():
        subscriptions.update_preferences(
            subscriber,
            subscriptions.Preferences(
                locale=form.locale.data,
                timezone=form.timezone.data,
                city=form.found_city,
                wants_day_messages=form.wants_day_messages.data,
                wants_reminders=form.wants_reminders.data,
            ),
        )
        db.session.commit()
        flash(_("Your choices are saved."))
        return redirect(url_for("subscriptions.preferences", token=token), 303)
    return _with_choices(
        "subscriptions/preferences.html",
        400 if form.is_submitted() else 200,
        form=form,
        subscriber=subscriber,
        token=token,
        action_form=ActionForm(),
        unsubscribe_token=subscriptions.token_for(subscriber, Purpose.UNSUBSCRIBE),
        erase_token=subscriptions.token_for(subscriber, Purpose.ERASE),
        fill_browser_zone=False,
    )


@bp.post("/preferences/<token>/resubscribe")
@public
def resubscribe(token: str):
    """Subscribe again from the preferences page: the signed link proves the address."""
    subscriber = _subscriber_or_404(token, Purpose.PREFERENCES)
    if not ActionForm().validate_on_submit():
        abort(400)
    subscriptions.resubscribe(subscriber)
    db.session.commit()
    flash(_("You are subscribed again."))
    return redirect(url_for("subscriptions.preferences", token=token), 303)


@bp.route("/erase/<token>", methods=["GET", "POST"])
@public
def erase(token: str):
    """Erase my data: a page that asks, then the subscriber is deleted."""
    subscriber = _subscriber_or_404(token, Purpose.ERASE)
    form = ActionForm()
    if form.validate_on_submit():
        subscriptions.erase(subscriber)
        db.session.commit()
        return redirect(url_for("subscriptions.erased"), 303)
    return render_template(
        "subscriptions/erase.html",
        form=form,
        preferences=_preferences_path(subscriber),
    ), (400 if form.is_submitted() else 200)


@bp.get("/erased")
@public
def erased():
    """After erasing: nothing of the person is kept."""
    return render_template("subscriptions/erased.html")
