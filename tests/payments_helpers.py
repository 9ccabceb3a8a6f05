"""Drive a gift through the app's own routes, doing the browser's part against localstripe."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.factories import csrf_from

SECRET_RE = re.compile(r'data-client-secret="([^"]+)"')

CARD_OK = "4242424242424242"
CARD_DECLINED_AT_SETUP = "4000000000000002"
CARD_DECLINED_AT_CHARGE = "4000000000000341"
CARD_NEEDS_AUTH = "4000002500003155"


@dataclass
class GiftAttempt:
    """Where a gift got to: its token and the charge endpoint's answer."""

    token: str
    charge: dict | None
    setup_error: dict | None = None


def start_gift(
    client,
    slug: str,
    *,
    amount: str = "2500",
    other: str = "",
    allocation: str = "all",
    email: str = "donor@example.org",
    name: str = "Amal",
    anonymous: bool = False,
) -> str:
    """Fill in the give form and return the pledge token from the redirect."""
    page = client.get(f"/fast/{slug}/give")
    assert page.status_code == 200
    form = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "amount": amount,
        "other_amount": other,
        "currency": "",
        "allocation": allocation,
        "donor_name": name,
        "email": email,
        "dedication": "",
    }
    currency = re.search(r'<option selected value="([A-Z]{3})"', page.get_data(as_text=True))
    form["currency"] = currency.group(1) if currency else "USD"
    if anonymous:
        form["anonymous"] = "y"
    response = client.post(f"/fast/{slug}/give", data=form)
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return response.headers["Location"].split("/pledge/")[1].split("/")[0]


def pay(client, localstripe, token: str, card: str = CARD_OK) -> GiftAttempt:
    """The card step: open the pay page, confirm the SetupIntent as Stripe.js would, charge."""
    page = client.get(f"/pledge/{token}/pay")
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    secret = SECRET_RE.search(html).group(1)
    setup = localstripe.confirm_card_setup(secret, card)
    if setup.status_code != 200:
        return GiftAttempt(token=token, charge=None, setup_error=setup.json().get("error"))
    charge = client.post(f"/pledge/{token}/charge", headers={"X-CSRFToken": csrf_from_pay(html)})
    return GiftAttempt(token=token, charge=charge.get_json() | {"http": charge.status_code})


def csrf_from_pay(html: str) -> str:
    """The CSRF token the pay page hands its script."""
    return re.search(r'data-csrf-token="([^"]+)"', html).group(1)
