"""Drive the fake Connect server (fundraiser/dev/connect_server.py) over HTTP, as tests do."""

from __future__ import annotations

import requests


class FakeConnect:
    """The fake's address, its controls, and what it holds (to prove nothing paid twice)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.auth = ("sk_test_localstripe", "")

    def _control(self, action: str, **params: object) -> None:
        self.http.post(
            f"{self.url}/_control/{action}", params=params, timeout=10
        ).raise_for_status()

    def reset(self) -> None:
        """Forget every transfer, key, failure and clock change."""
        self._control("reset")

    def fail_next(self, count: int, mode: str = "500") -> None:
        """Make the next ``count`` requests fail: "500", "drop" (act, then no answer) or "insufficient"."""
        self._control("fail", mode=mode, count=count)

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (idempotency keys expire by it)."""
        self._control("advance", seconds=seconds)

    def transfers(self, **filters: str) -> list[dict]:
        """Every transfer the fake holds, newest first (as Stripe lists them)."""
        found: list[dict] = []
        params: dict[str, object] = {"limit": 100, **filters}
        while True:
            page = self.http.get(f"{self.url}/v1/transfers", params=params, timeout=10)
            page.raise_for_status()
            body = page.json()
            found.extend(body["data"])
            if not body["has_more"]:
                return found
            params["starting_after"] = body["data"][-1]["id"]

    def post_transfer(self, data: dict, key: str | None = None) -> requests.Response:
        """POST /v1/transfers directly, form-encoded as Stripe's SDKs send it."""
        headers = {"Idempotency-Key": key} if key else {}
        return self.http.post(f"{self.url}/v1/transfers", data=data, headers=headers, timeout=10)
