"""The live dashboard of a fast day, gifts, refunds and exports (filled in by the dashboard work)."""

from . import bp  # noqa: F401
