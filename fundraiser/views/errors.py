"""Error pages donors may meet: friendly HTML, or JSON for the API."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/stripe/")) or request.is_json


def register(app: Flask) -> None:
    """Attach handlers for 400, 404, 405, 429, 500 and CSRF failures."""

    def render(code: int, title: str, message: str):
        if _wants_json():
            return jsonify(error=message), code
        return render_template("errors/error.html", code=code, title=title, message=message), code

    from flask_babel import gettext as _

    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError):
        return render(
            400, _("This form has expired"), _("Please go back, reload the page and try again.")
        )

    @app.errorhandler(400)
    def bad_request(error):
        return render(400, _("Something was wrong with that request"), _("Please try again."))

    @app.errorhandler(404)
    def not_found(error):
        return render(404, _("Page not found"), _("We could not find that page."))

    @app.errorhandler(405)
    def method_not_allowed(error):
        return render(405, _("Not allowed"), _("That action is not possible here."))

    @app.errorhandler(429)
    def too_many_requests(error):
        return render(429, _("Too many attempts"), _("Please wait a minute before trying again."))

    @app.errorhandler(500)
    def server_error(error):
        return render(500, _("Something went wrong"), _("Please try again in a few minutes."))
