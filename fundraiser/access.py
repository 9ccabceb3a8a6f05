"""Who may use each route. Every view declares a rule; a route without one is refused.

Rules are attached to the view function (``view.access_rule``) so a test can walk
``app.url_map`` and fail on any route that forgot to say who may use it (X2).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, redirect, request, url_for
from flask_login import current_user

from .models import Role

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC = "public"  # anyone, signed in or not
STRIPE = "stripe-signature"  # no login: the request proves itself with Stripe's signature
SIGNED_IN = "signed-in"  # any active account
ORGANIZER = "organizer"
PARTNER = "partner"

ANONYMOUS_RULES = frozenset({PUBLIC, STRIPE})

# Flask's own static route cannot carry an attribute; it serves files only.
BUILTIN_PUBLIC_ENDPOINTS = frozenset({"static"})


def _mark(view: F, rule: str) -> F:
    view.access_rule = rule  # type: ignore[attr-defined]
    return view


def public(view: F) -> F:
    """Anyone may use this route."""
    return _mark(view, PUBLIC)


def stripe_signed(view: F) -> F:
    """No login; the view itself verifies Stripe's signature."""
    return _mark(view, STRIPE)


def _require(rule: str, allowed: Callable[[Any], bool]) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if not allowed(current_user):
                abort(403)
            return view(*args, **kwargs)

        return _mark(wrapper, rule)  # type: ignore[return-value]

    return decorator


signed_in = _require(SIGNED_IN, lambda user: True)
organizer_only = _require(ORGANIZER, lambda user: user.role == Role.ORGANIZER)
partner_only = _require(PARTNER, lambda user: user.role == Role.PARTNER and user.aid_group_id)


def rule_for(endpoint: str) -> str | None:
    """The access rule declared by the view behind ``endpoint``, or None."""
    if endpoint in BUILTIN_PUBLIC_ENDPOINTS:
        return PUBLIC
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "access_rule", None)


def refuse_undeclared() -> None:
    """Deny by default: a route whose view declares no rule answers 403."""
    if request.endpoint is None:
        return  # 404 and 405 are answered by Flask itself
    if rule_for(request.endpoint) is None:
        current_app.logger.error("route %s declares no access rule; refused", request.endpoint)
        abort(403)


def safe_next(target: str | None, default: str) -> str:
    """A same-site path to go to after login, or ``default``: never a redirect off the app."""
    if not target:
        return default
    target = target.strip()
    # Browsers treat a backslash like a slash, so "/\\evil.com" is "//evil.com".
    normalized = target.replace("\\", "/")
    parts = urlsplit(normalized)
    if (
        not normalized.startswith("/")
        or normalized.startswith("//")
        or parts.scheme
        or parts.netloc
        or any(ord(ch) < 32 or ch.isspace() for ch in target)
    ):
        return default
    return normalized
