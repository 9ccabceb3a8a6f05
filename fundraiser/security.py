"""Security headers on every response, with Stripe's origins only on the payment step."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, g
from flask.wrappers import Response


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def stripe_origins() -> dict[str, list[str]]:
    """The CSP sources Stripe.js needs, derived from STRIPE_JS_URL.

    Real Stripe.js loads from js.stripe.com, calls api.stripe.com and frames
    js.stripe.com and hooks.stripe.com (3-D Secure); localstripe serves everything
    from its own origin.
    """
    js_origin = _origin(current_app.config["STRIPE_JS_URL"])
    if js_origin == "https://js.stripe.com":
        return {
            "script-src": [js_origin],
            "connect-src": ["https://api.stripe.com"],
            "frame-src": [js_origin, "https://hooks.stripe.com"],
        }
    return {"script-src": [js_origin], "connect-src": [js_origin], "frame-src": [js_origin]}


def allow_stripe_js() -> None:
    """Let this response's page load Stripe.js (the payment step only)."""
    g.allow_stripe_js = True


def allow_framing() -> None:
    """Let other sites frame this response (the embeddable counter, which sets its own CSP)."""
    g.allow_framing = True


def content_security_policy() -> str:
    """The CSP for this response: only our own origin, plus Stripe on the payment step."""
    directives: dict[str, list[str]] = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "frame-src": ["'none'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    if g.get("allow_stripe_js"):
        for name, sources in stripe_origins().items():
            directives[name] = [s for s in directives[name] if s != "'none'"] + sources
    return "; ".join(f"{name} {' '.join(dict.fromkeys(srcs))}" for name, srcs in directives.items())


def apply_security_headers(response: Response) -> Response:
    """Add CSP, HSTS (outside development), nosniff, referrer and framing rules."""
    response.headers.setdefault("Content-Security-Policy", content_security_policy())
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    if not g.get("allow_framing"):
        response.headers["X-Frame-Options"] = "DENY"
    if current_app.config["ENV_NAME"] == "production":
        response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response
