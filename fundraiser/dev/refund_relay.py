"""Development only: send the charge.refunded webhooks that localstripe never sends.

Real Stripe tells the app about every refund with a signed ``charge.refunded`` event, and
the ledger moves only then. localstripe refunds but sends no such event, so under
`make run` this relay watches localstripe's refunds and delivers, for each new one, the
event Stripe would send, signed with the webhook secret. Each event id is derived from the
refund id, so a repeat after a restart is recorded once and changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time

import requests
import stripe


def _event(charge: dict, refund_id: str) -> dict:
    return {
        "id": f"evt_dev_refund_{refund_id}",
        "object": "event",
        "created": int(time.time()),
        "livemode": False,
        "type": "charge.refunded",
        "data": {"object": charge},
    }


def relay_once(stripe_base: str, webhook_url: str, secret: str, seen: set[str]) -> int:
    """Deliver an event for each refund not seen yet; return how many were delivered."""
    auth = ("sk_test_localstripe", "")
    refunds = (
        requests.get(f"{stripe_base}/v1/refunds", auth=auth, timeout=10).json().get("data", [])
    )
    delivered = 0
    for refund in refunds:
        if refund["id"] in seen or refund.get("status") != "succeeded":
            continue
        charge = requests.get(
            f"{stripe_base}/v1/charges/{refund['charge']}", auth=auth, timeout=10
        ).json()
        body = json.dumps(_event(charge, refund["id"]))
        header = stripe.WebhookSignature.generate_signature_header(body, secret)
        response = requests.post(
            webhook_url,
            data=body,
            timeout=30,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
        if response.status_code < 300:  # otherwise try again next round, as Stripe would
            seen.add(refund["id"])
            delivered += 1
    return delivered


def start(stripe_base: str, webhook_url: str, secret: str, interval: float = 2.0) -> None:
    """Run the relay in a daemon thread for as long as the dev stack runs."""
    seen: set[str] = set()

    def loop() -> None:
        while True:
            # localstripe or the app may be starting or stopping: try again next round.
            with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                relay_once(stripe_base, webhook_url, secret, seen)
            time.sleep(interval)

    threading.Thread(target=loop, name="refund-relay", daemon=True).start()
