"""`/healthz`: what a load balancer asks each web process before sending it donors."""

from __future__ import annotations

from fundraiser import create_app


def test_healthz_answers_ok_while_the_database_answers(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "ok\n"
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_answers_503_when_the_database_is_unreachable(caplog):
    # A real PostgreSQL URL on a port where nothing listens: the driver's own failure.
    app = create_app(
        {
            "ENV_NAME": "test",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:9/nowhere",
            "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": {"connect_timeout": 2}},
        }
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_data(as_text=True) == "database unavailable\n"
    assert "healthz: the database does not answer" in caplog.text
    assert "nowhere" not in caplog.text  # no connection string (it may hold a password)
