"""Security headers on every kind of response, and Stripe.js only on the payment step."""

from __future__ import annotations

import pytest

from fundraiser.extensions import db
from tests.factories import make_fast_day
from tests.payments_helpers import start_gift


@pytest.fixture
def slug(app):
    with app.app_context():
        day = make_fast_day()
        db.session.commit()
        return day.slug


def _csp(response) -> dict[str, str]:
    parts = [p.strip() for p in response.headers["Content-Security-Policy"].split(";")]
    return {p.split(" ", 1)[0]: p.split(" ", 1)[1] for p in parts}


@pytest.mark.parametrize("path", ["/", "/api/v1/fast-days", "/no-such-page", "/static/css/app.css"])
def test_every_response_carries_the_security_headers(client, slug, path):
    response = client.get(path)
    response.close()  # static files stream from an open file
    csp = _csp(response)
    assert csp["object-src"] == "'none'"
    assert csp["base-uri"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_only_the_payment_step_may_load_stripe_js(app, client, localstripe, slug):
    token = start_gift(client, slug)
    give_csp = _csp(client.get(f"/fast/{slug}/give"))
    pay = client.get(f"/pledge/{token}/pay")
    pay_csp = _csp(pay)
    assert localstripe.url not in give_csp["script-src"]
    assert pay_csp["script-src"] == f"'self' {localstripe.url}"
    assert localstripe.url in pay_csp["connect-src"]
    assert pay.headers["Cache-Control"] == "no-store"
    assert f'src="{localstripe.url}/js.stripe.com/v3/"' in pay.get_data(as_text=True)


def test_no_page_loads_anything_from_another_site(client, slug):
    for path in ["/", f"/fast/{slug}", f"/fast/{slug}/give"]:
        html = client.get(path).get_data(as_text=True)
        assert "https://" not in html.replace("https://js.stripe.com", "")
        assert 'src="//' not in html and 'href="//' not in html


def test_hsts_in_production_only():
    from fundraiser import create_app

    app = create_app(
        {"ENV_NAME": "production", "SQLALCHEMY_DATABASE_URI": "sqlite://", "TESTING": True}
    )
    response = app.test_client().get("/static/css/app.css")
    response.close()
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
