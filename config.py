"""Settings, read from the environment: Config for development, TestConfig, ProductionConfig."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
INSTANCE_DIR = BASE_DIR / "instance"

DEFAULT_SECRET = "dev-not-secret"  # noqa: S105 - production refuses to start with it


def _bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", f"sqlite:///{INSTANCE_DIR / 'fundraiser.db'}")
    # Hosting platforms hand out postgres:// URLs; SQLAlchemy wants the driver named.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgres://")
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


class Config:
    """Development defaults: SQLite in instance/, localstripe, a local SMTP server."""

    ENV_NAME = "development"
    SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET)
    SQLALCHEMY_DATABASE_URI = _database_url()
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}

    # Public URL of the site, used in e-mails (links must work outside a request).
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000")

    # Stripe. In development these point at localstripe; its keys only need the sk_/pk_ prefix.
    STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "sk_test_localstripe")
    STRIPE_PUBLISHABLE_KEY = os.environ.get("STRIPE_PUBLISHABLE_KEY", "pk_test_localstripe")
    STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_localstripe_dev")
    STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "http://127.0.0.1:8420")
    STRIPE_JS_URL = os.environ.get("STRIPE_JS_URL", "http://127.0.0.1:8420/js.stripe.com/v3/")
    # Connect transfers (disbursements). Unset: the same address as STRIPE_API_BASE, which is
    # api.stripe.com in production; `make run` and the tests point it at a local fake, since
    # localstripe has no transfers.
    STRIPE_CONNECT_API_BASE = os.environ.get("STRIPE_CONNECT_API_BASE", "")
    STRIPE_TIMEOUT_SECONDS = float(os.environ.get("STRIPE_TIMEOUT_SECONDS", "20"))
    # How often the gateway retries a 429 or a network error before giving up.
    STRIPE_MAX_RETRIES = int(os.environ.get("STRIPE_MAX_RETRIES", "4"))
    STRIPE_RETRY_BASE_SECONDS = float(os.environ.get("STRIPE_RETRY_BASE_SECONDS", "0.5"))

    # Mail. Receipts leave through this relay after the database commit.
    MAIL_SERVER = os.environ.get("MAIL_SERVER", "127.0.0.1")
    MAIL_PORT = int(os.environ.get("MAIL_PORT", "8025"))
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_USE_TLS = _bool("MAIL_USE_TLS")  # STARTTLS on MAIL_PORT
    MAIL_USE_SSL = _bool("MAIL_USE_SSL")  # implicit TLS, usually port 465
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER", "Fast for Gaza <gifts@example.org>")
    MAIL_TIMEOUT_SECONDS = float(os.environ.get("MAIL_TIMEOUT_SECONDS", "10"))
    # The outbox: messages per SMTP connection, retries of a 4xx answer (doubling from the base
    # delay), and whether a request sends what it queued as soon as it has committed.
    MAIL_BATCH_SIZE = int(os.environ.get("MAIL_BATCH_SIZE", "100"))
    MAIL_MAX_ATTEMPTS = int(os.environ.get("MAIL_MAX_ATTEMPTS", "8"))
    MAIL_RETRY_BASE_SECONDS = float(os.environ.get("MAIL_RETRY_BASE_SECONDS", "60"))
    MAIL_SEND_ON_COMMIT = _bool("MAIL_SEND_ON_COMMIT", True)
    # A sender's claim on a message older than this means the sender died: the message is
    # queued again (and may go twice, with the same Message-ID). Live senders refresh theirs.
    MAIL_STALE_CLAIM_SECONDS = float(os.environ.get("MAIL_STALE_CLAIM_SECONDS", "600"))
    MAIL_MESSAGE_ID_DOMAIN = os.environ.get("MAIL_MESSAGE_ID_DOMAIN", "fundraiser.local")
    # A campaign message this long past its send time is marked missed instead of sent.
    CAMPAIGN_EXPIRY_HOURS = float(os.environ.get("CAMPAIGN_EXPIRY_HOURS", "6"))

    # Pledges charged on the fast day: at this local time in the donor's zone, no faster
    # than this many Stripe requests a second, and a failed charge retried once this later.
    PLEDGE_CHARGE_LOCAL_TIME = os.environ.get("PLEDGE_CHARGE_LOCAL_TIME", "08:00")
    STRIPE_MAX_REQUESTS_PER_SECOND = float(os.environ.get("STRIPE_MAX_REQUESTS_PER_SECOND", "20"))
    PLEDGE_RETRY_AFTER_HOURS = float(os.environ.get("PLEDGE_RETRY_AFTER_HOURS", "4"))

    # Languages offered; the catalogs live in translations/.
    LANGUAGES = ["en", "ar", "fr", "es", "pt"]
    # How long the language a person chose is remembered (a cookie holding only its code).
    LANGUAGE_COOKIE_DAYS = 365
    # Which sites may frame the live counter at /embed/<slug> (a CSP frame-ancestors list).
    EMBED_FRAME_ANCESTORS = os.environ.get("EMBED_FRAME_ANCESTORS", "*")
    BABEL_DEFAULT_LOCALE = "en"
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "translations")

    # The largest single gift accepted, in major units of any currency.
    MAX_GIFT_MAJOR_UNITS = int(os.environ.get("MAX_GIFT_MAJOR_UNITS", "1000000"))

    # Login attempts are counted here; use redis://… whenever more than one process serves.
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_KEY_PREFIX = os.environ.get("RATELIMIT_KEY_PREFIX", "fundraiser")
    RATELIMIT_HEADERS_ENABLED = True
    # How long an invitation link to set a password stays valid.
    INVITATION_MAX_AGE_SECONDS = int(
        os.environ.get("INVITATION_MAX_AGE_SECONDS", str(7 * 24 * 3600))
    )
    PERMANENT_SESSION_LIFETIME = int(os.environ.get("SESSION_LIFETIME_SECONDS", str(12 * 3600)))

    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session; donors fill forms slowly
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", False)
    TEMPLATES_AUTO_RELOAD = True


class TestConfig(Config):
    """The test suite's settings; the fixtures override the service addresses."""

    ENV_NAME = "test"
    TESTING = True
    SECRET_KEY = "test-secret"  # noqa: S105
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", "sqlite://")
    STRIPE_WEBHOOK_SECRET = "whsec_test_secret"  # noqa: S105
    STRIPE_RETRY_BASE_SECONDS = 0.01
    STRIPE_TIMEOUT_SECONDS = 10
    MAIL_PORT = 0  # fixtures set a real port; 0 makes a forgotten one fail loudly
    MAIL_RETRY_BASE_SECONDS = 0.05


class ProductionConfig(Config):
    """Production: real Stripe and an SMTP relay; refuses to start on development defaults."""

    ENV_NAME = "production"
    STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com")
    STRIPE_JS_URL = os.environ.get("STRIPE_JS_URL", "https://js.stripe.com/v3/")
    SESSION_COOKIE_SECURE = True
    TEMPLATES_AUTO_RELOAD = False

    @classmethod
    def check(cls) -> None:
        """Refuse to run production with a default secret or development Stripe keys."""
        problems = []
        if cls.SECRET_KEY == DEFAULT_SECRET or len(cls.SECRET_KEY) < 32:
            problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
        if "localstripe" in cls.STRIPE_SECRET_KEY or "localstripe" in cls.STRIPE_WEBHOOK_SECRET:
            problems.append(
                "STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET must be real Stripe values"
            )
        if problems:
            raise RuntimeError("Refusing to start: " + "; ".join(problems))


CONFIGS = {"development": Config, "test": TestConfig, "production": ProductionConfig}


def config_for(name: str | None) -> type[Config]:
    """Pick the config class named by FUNDRAISER_ENV (development by default)."""
    return CONFIGS[(name or os.environ.get("FUNDRAISER_ENV") or "development").lower()]
