"""fundraiser: global fast days for Gaza, with gifts split among Palestinian-led aid groups."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from flask import Flask, g, request

from config import ProductionConfig, config_for

from . import database
from .extensions import babel, csrf, db, limiter, login_manager, migrate


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app: config, extensions, blueprints, error handlers, commands."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder="../templates",
        static_folder="../static",
    )
    config_class = config_for(test_config.get("ENV_NAME") if test_config else None)
    app.config.from_object(config_class)
    if test_config:
        app.config.update(test_config)
    if config_class is ProductionConfig and not app.testing:
        ProductionConfig.check()
    os.makedirs(app.instance_path, exist_ok=True)

    register_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_request_hooks(app)
    register_template_helpers(app)
    register_errorhandlers(app)
    register_cli(app)
    return app


def register_logging(app: Flask) -> None:
    """Log at INFO to stderr, the way gunicorn and systemd expect."""
    if not app.debug and not app.testing:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    # Stripe's SDK logs every API request at INFO: two lines per payment the webhook worker
    # applies, each taking the log handler's lock from the prefetching threads. Its warnings
    # and errors still show.
    logging.getLogger("stripe").setLevel(logging.WARNING)


def register_extensions(app: Flask) -> None:
    """Bind the unbound extensions to this app."""
    # Imported for its flush hook: every ledger row moves its running total, whoever adds it.
    from . import ledger_totals  # noqa: F401

    db.init_app(app)
    migrate.init_app(app, db, directory=str(Path(app.root_path).parent / "migrations"))
    csrf.init_app(app)
    from .i18n import select_locale, select_timezone

    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    limiter.init_app(app)
    register_login(app)
    with app.app_context():
        database.configure_engine(db.engine)


def register_login(app: Flask) -> None:
    """Flask-Login: sessions carry "id:version", checked on every request."""
    from flask import jsonify, redirect, url_for
    from flask_babel import lazy_gettext

    from .auth import load_session_user

    login_manager.init_app(app)
    login_manager.user_loader(load_session_user)
    login_manager.login_message = lazy_gettext("Please sign in to see that page.")

    @login_manager.unauthorized_handler
    def _unauthorized():
        if request.path.startswith("/api/"):
            return jsonify(error="sign in required"), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def register_blueprints(app: Flask) -> None:
    """One blueprint per audience."""
    from .views import (
        admin,
        api,
        auth,
        embed,
        groups,
        health,
        partner,
        public,
        subscriptions,
        webhooks,
    )

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(embed.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(partner.bp)
    app.register_blueprint(groups.bp)
    csrf.exempt(webhooks.bp)  # Stripe signs its requests; it cannot send our CSRF token
    # Stripe's retries are its own back-off, and a fast day's peak must never see a 429. A
    # request filter, not limiter.exempt: it is asked first, before any limit is looked up.
    limiter.request_filter(lambda: request.blueprint == webhooks.bp.name)
    app.register_blueprint(subscriptions.bp)
    # RFC 8058: mail providers POST the one-click unsubscribe with no cookies, so no CSRF
    # token; its signed link is the proof. Every other subscriber form keeps its token.
    csrf.exempt(subscriptions.one_click_unsubscribe)


def register_request_hooks(app: Flask) -> None:
    """Write intent for state-changing requests, and security headers on every response."""
    from . import outbox
    from .access import refuse_undeclared
    from .i18n import remember_language
    from .security import apply_security_headers

    app.before_request(refuse_undeclared)

    @app.before_request
    def _begin_writes() -> None:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            g._write_token = database._write_intent.set(True)

    @app.teardown_request
    def _end_writes(_exc: BaseException | None) -> None:
        token = g.pop("_write_token", None)
        if token is not None:
            database._write_intent.reset(token)

    app.after_request(apply_security_headers)
    app.after_request(remember_language)

    @app.teardown_appcontext
    def _send_queued_mail(_exc: BaseException | None) -> None:
        # What a request (or command) queued and committed leaves as its context ends:
        # a receipt reaches the donor in seconds, at the cost of one SMTP hand-off before
        # the response body is written (one connection attempt at most); the scheduler
        # sends whatever this cannot. Registered after the extensions, so it runs before
        # Flask-SQLAlchemy removes the session.
        outbox.send_committed()


def register_template_helpers(app: Flask) -> None:
    """Money and date formatting available in every template."""
    from .i18n import register_filters

    register_filters(app)


def register_errorhandlers(app: Flask) -> None:
    """Friendly pages for the errors donors can meet."""
    from .views.errors import register

    register(app)


def register_cli(app: Flask) -> None:
    """The flask commands: demo data and development helpers."""
    from .cli import register

    register(app)
