"""W4 and W5: only events Stripe signed for this app's mode are acted on; the rest write nothing.

Each test has a real gift in localstripe whose PaymentIntent has succeeded and a real
``payment_intent.succeeded`` event for it. Delivered with a good signature that event writes
an event row, a ledger row and moves the pledge to succeeded (the positive controls show
it), so "nothing written" below is a check that could fail.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import string
import time
from collections import Counter

import pytest
from sqlalchemy import select

from fundraiser import create_app, outbox
from fundraiser.extensions import db
from fundraiser.models import EventOutcome, PledgeStatus, StripeEvent
from fundraiser.models.stripe_event import EventState
from fundraiser.payments import stripe_gateway as gateway
from fundraiser.payments import webhooks
from tests.conftest import WEBHOOK_SECRET, free_port
from tests.factories import make_fast_day
from tests.stripe_events import apply_queued, make_event, post_event, sign, signed
from tests.webhook_helpers import (
    intent_event,
    ledger_rows,
    make_gift,
    pledge_rows,
    stripe_get,
    written_state,
)

WRONG_SECRET = "whsec_not_the_apps_secret"


@pytest.fixture
def gift(app, client, localstripe):
    """A pledge whose card was charged in localstripe; no webhook has told the app yet."""
    with app.app_context():
        slug = make_fast_day().slug
        db.session.commit()
    gift = make_gift(app, client, localstripe, slug, amount="2500")
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.PROCESSING
    return gift


@pytest.fixture
def event(localstripe, gift):
    """The real payment_intent.succeeded event for the gift."""
    return intent_event(localstripe, "payment_intent.succeeded", gift.intent_ids[-1])


def _post_raw(client, body: str | bytes, headers: dict[str, str]):
    """Deliver, then apply what was stored, as the scheduler would."""
    response = client.post("/stripe/webhook", data=body, headers=headers)
    apply_queued(client.application)
    return response


def _assert_applied(app, gift) -> None:
    """The positive control: the gift is recorded once and the pledge succeeded."""
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.SUCCEEDED
    assert ledger_rows(app) == [("gift", 2500, "USD", gift.charge_id, gift.pledge_id)]
    with app.app_context():
        assert db.session.scalar(select(StripeEvent.outcome)) == EventOutcome.APPLIED


# --- W4: signatures ------------------------------------------------------------------------


def _bad_deliveries(event: dict) -> dict[str, tuple[bytes, dict[str, str]]]:
    body = json.dumps(event)
    good = sign(body)
    one_char = body.replace('"payment_intent.succeeded"', '"payment_intent.succeedes"', 1)
    assert len(one_char) == len(body) and one_char != body
    bad_utf8 = body.encode()[:-1] + b"\xff"  # the last byte ("}") replaced by a non-UTF-8 byte
    old = sign(body, timestamp=int(time.time()) - 301)
    return {
        "no header": (body.encode(), {}),
        "empty header": (body.encode(), {"Stripe-Signature": ""}),
        "wrong secret": (body.encode(), {"Stripe-Signature": sign(body, WRONG_SECRET)}),
        "one byte of the body changed": (one_char.encode(), {"Stripe-Signature": good}),
        "one byte changed to invalid UTF-8": (bad_utf8, {"Stripe-Signature": good}),
        "301 s old": (body.encode(), {"Stripe-Signature": old}),
        "garbage header": (body.encode(), {"Stripe-Signature": "garbage;;==,t=,v1="}),
        # hmac.compare_digest raises TypeError on non-ASCII text: that must be a 400, not a 500.
        "non-ASCII letter in the signature": (
            body.encode(),
            {"Stripe-Signature": good[:-1] + "é"},
        ),
        "signature of another scheme": (
            body.encode(),
            {"Stripe-Signature": good.replace("v1=", "v0=")},
        ),
    }


BAD_CASES = list(_bad_deliveries(make_event("payment_intent.succeeded", {})))


@pytest.mark.parametrize("case", BAD_CASES)
def test_badly_signed_event_is_refused_and_writes_nothing(app, client, gift, event, case):
    before = written_state(app)
    body, headers = _bad_deliveries(event)[case]

    response = _post_raw(client, body, headers | {"Content-Type": "application/json"})

    assert response.status_code == 400, case
    assert written_state(app) == before
    # The same event, properly signed, is acted on: nothing above was refused by accident.
    assert post_event(client, event).status_code == 200
    _assert_applied(app, gift)


@pytest.mark.parametrize("order", ["old first", "new first"])
def test_two_v1_signatures_one_with_the_right_secret_are_accepted(app, client, gift, event, order):
    """Secret rotation: while Stripe rolls the secret it signs with both, in one header."""
    body = json.dumps(event)
    timestamp = int(time.time())
    with_old = sign(body, WRONG_SECRET, timestamp).split(",")[1]
    with_new = sign(body, WEBHOOK_SECRET, timestamp).split(",")[1]
    pair = [with_old, with_new] if order == "old first" else [with_new, with_old]
    header = ",".join([f"t={timestamp}", *pair])

    response = _post_raw(client, body, {"Stripe-Signature": header})

    assert response.status_code == 200, response.get_json()
    _assert_applied(app, gift)


def test_two_v1_signatures_both_wrong_are_refused(app, client, gift, event):
    body = json.dumps(event)
    timestamp = int(time.time())
    wrong = [sign(body, f"{WRONG_SECRET}{i}", timestamp).split(",")[1] for i in range(2)]
    before = written_state(app)

    response = _post_raw(client, body, {"Stripe-Signature": ",".join([f"t={timestamp}", *wrong])})

    assert response.status_code == 400
    assert written_state(app) == before


def test_signature_inside_the_300_s_tolerance_is_accepted(app, client, gift, event):
    body, headers = signed(event, timestamp=int(time.time()) - 290)
    assert _post_raw(client, body, headers).status_code == 200
    _assert_applied(app, gift)


# --- W4: 10,000 fuzzed headers -------------------------------------------------------------

FUZZ_COUNT = 10_000
# Printable ASCII, a tab and a few Latin-1 letters: what an HTTP header value can carry.
ALPHABET = string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "")
ALPHABET = ALPHABET.replace("\x0c", "") + "\téÿ"
HEX = "0123456789abcdef"


def _hmac(secret: str, timestamp_text: str, body: str) -> str:
    return hmac.new(
        secret.encode(), f"{timestamp_text}.{body}".encode(), hashlib.sha256
    ).hexdigest()


def _really_signed(header: str, body: str, now: float) -> bool:
    """Whether a header, read as Stripe documents it, carries the true signature.

    Some mutations keep a header valid (a second ``v1=``, an empty item, ``t=+123`` or
    ``t=1_7…`` which Python's int() reads as the same number); those are not forgeries,
    so the fuzzer throws them away rather than expect them to be refused.
    """
    items = [item.split("=", 2) for item in header.split(",")]
    stamps = [item[1] for item in items if item[0] == "t" and len(item) > 1]
    try:
        timestamp = int(stamps[0])
    except (IndexError, ValueError):
        return False
    if timestamp < now - 300:
        return False
    expected = _hmac(WEBHOOK_SECRET, str(timestamp), body)
    return any(item[0] == "v1" and len(item) > 1 and item[1] == expected for item in items)


def _mutate(rng: random.Random, header: str) -> str:
    """One random edit of a real header."""
    how = rng.randrange(9)
    i = rng.randrange(len(header) + 1)
    if how == 0:  # replace one character
        i = min(i, len(header) - 1)
        return header[:i] + rng.choice(ALPHABET) + header[i + 1 :]
    if how == 1:  # insert one character
        return header[:i] + rng.choice(ALPHABET) + header[i:]
    if how == 2:  # delete a span
        return header[:i] + header[i + rng.randint(1, 8) :]
    if how == 3:  # truncate
        return header[:i]
    if how == 4:  # flip one hex digit of the signature
        head, sig = header.split("v1=")
        j = rng.randrange(len(sig))
        return f"{head}v1={sig[:j]}{rng.choice(HEX.replace(sig[j], ''))}{sig[j + 1 :]}"
    if how == 5:  # move the timestamp, keep the signature
        t, rest = header.split(",", 1)
        return f"t={int(t[2:]) + rng.choice([-1, 1]) * rng.randint(1, 10**6)},{rest}"
    if how == 6:  # change case
        return "".join(c.swapcase() if rng.random() < 0.2 else c for c in header)
    if how == 7:  # shuffle or duplicate the items
        items = header.split(",")
        items += rng.sample(items, rng.randint(0, len(items)))
        rng.shuffle(items)
        return ",".join(items)
    # pad with whitespace or separators around the items
    pad = rng.choice([" ", "\t", ";", ",", "=", "  "])
    return pad.join(header.split(","))


def _random_header(rng: random.Random, body: str, timestamp: int) -> str:
    """A header made up from nothing, or signed with something other than the app's secret."""
    how = rng.randrange(6)
    if how == 0:  # random printable noise
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200)))
    if how == 1:  # well-formed, random signature
        return f"t={timestamp},v1={''.join(rng.choice(HEX) for _ in range(64))}"
    if how == 2:  # well-formed, signed with a random secret
        return sign(body, f"whsec_{rng.getrandbits(64):x}", timestamp)
    if how == 3:  # signed for another body (another event) with the right secret
        return sign(body.replace("evt_", f"evt_{rng.randrange(10**6)}", 1), timestamp=timestamp)
    if how == 4:  # many items, random keys
        keys = ["t", "v1", "v0", "", "T", "V1", "v2", "t "]
        return ",".join(
            f"{rng.choice(keys)}={rng.getrandbits(rng.choice([8, 32, 256])):x}"
            for _ in range(rng.randint(1, 12))
        )
    # an enormous header
    return f"t={timestamp}," + ",".join(
        f"v1={rng.getrandbits(256):064x}" for _ in range(rng.randint(50, 400))
    )


def fuzzed_headers(rng: random.Random, body: str, count: int) -> tuple[list[str], list[str]]:
    """``count`` headers that do not carry the app's signature for ``body``, and the
    edits made on the way that still do (kept apart, to check they verify)."""
    forged: list[str] = []
    still_signed: list[str] = []
    while len(forged) < count:
        timestamp = int(time.time()) - rng.randrange(0, 200)
        if rng.random() < 0.7:
            header = _mutate(rng, sign(body, timestamp=timestamp))
        else:
            header = _random_header(rng, body, timestamp)
        (still_signed if _really_signed(header, body, time.time()) else forged).append(header)
    return forged, still_signed


def test_ten_thousand_fuzzed_signature_headers_are_all_refused_and_write_nothing(
    app, client, gift, event
):
    body = json.dumps(event)
    rng = random.Random(20240605)
    forged, still_signed = fuzzed_headers(rng, body, FUZZ_COUNT)
    # The edits that kept the true signature (a repeated item, t=+123 …) are few, and the
    # app's verifier agrees with the reading above on every one of them.
    assert len(still_signed) < FUZZ_COUNT // 4
    for header in still_signed:
        assert gateway.verify_event(body.encode(), header, WEBHOOK_SECRET)["id"] == event["id"]
    before = written_state(app)

    stripe_client = app.test_client(use_cookies=False)  # Stripe sends no cookies
    answers = Counter()
    for header in forged:
        response = _post_raw(stripe_client, body, {"Stripe-Signature": header})
        answers[response.status_code] += 1
    assert answers == Counter({400: FUZZ_COUNT})
    assert written_state(app) == before

    # The unmutated header for the same body is accepted, once.
    assert _post_raw(client, body, {"Stripe-Signature": sign(body)}).status_code == 200
    _assert_applied(app, gift)


# --- W5: live mode and test mode -----------------------------------------------------------


@pytest.fixture
def live_app(app):
    """A second app on the same database that runs on live keys."""
    live = create_app(
        {
            "ENV_NAME": "test",
            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
            "STRIPE_SECRET_KEY": "sk_live_x",
            "STRIPE_API_BASE": app.config["STRIPE_API_BASE"],
            "MAIL_SERVER": app.config["MAIL_SERVER"],
            "MAIL_PORT": app.config["MAIL_PORT"],
        }
    )
    live.instance_path = app.instance_path
    yield live
    with live.app_context():
        db.session.remove()
        db.engine.dispose()


def test_test_mode_event_sent_to_a_live_app_is_refused_and_writes_nothing(
    app, live_app, gift, event
):
    live_client = live_app.test_client()
    before = written_state(app)

    response = post_event(live_client, event)  # livemode: false, as localstripe makes it

    assert response.status_code == 400
    assert response.get_json() == {"error": "livemode mismatch"}
    assert written_state(app) == before
    # The live app does act on a live event: the refusal above is about the mode alone.
    assert post_event(live_client, event | {"livemode": True}).status_code == 200
    _assert_applied(app, gift)


def test_live_mode_event_sent_to_a_test_app_is_refused_and_writes_nothing(app, client, gift, event):
    before = written_state(app)

    response = post_event(client, event | {"livemode": True})

    assert response.status_code == 400
    assert written_state(app) == before
    assert post_event(client, event).status_code == 200
    _assert_applied(app, gift)


def test_mode_is_checked_before_the_event_id_is_looked_up(app, client, gift, event):
    """A live twin of an event already handled is still refused, not taken for a duplicate."""
    assert post_event(client, event).status_code == 200
    before = written_state(app)

    response = post_event(client, event | {"livemode": True})

    assert response.status_code == 400
    assert written_state(app) == before


# --- what is stored, and when Stripe is asked to retry ---------------------------------------


def test_unknown_event_type_answers_2xx_and_is_recorded_once(app, client, localstripe, gift):
    customer = stripe_get(localstripe, "customers", gift.customer_id)
    event = make_event("customer.created", customer)
    before = written_state(app)

    first = post_event(client, event)
    second = post_event(client, event)

    assert (first.status_code, second.status_code) == (200, 200)
    assert first.get_json() == {"received": True, "duplicate": False}
    assert second.get_json() == {"received": True, "duplicate": True}
    after = written_state(app)
    assert after["events"] == [(event["id"], "customer.created", "ignored")]
    assert (after["ledger"], after["pledges"]) == (before["ledger"], before["pledges"])


def _payment_made_elsewhere(localstripe) -> dict:
    """A PaymentIntent in the same Stripe account that no pledge of ours made."""
    http, url = localstripe.http, localstripe.url
    method = http.post(
        f"{url}/v1/payment_methods",
        data={
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
        },
        timeout=10,
    )
    method.raise_for_status()
    intent = http.post(
        f"{url}/v1/payment_intents",
        data={
            "amount": "700",
            "currency": "usd",
            "payment_method": method.json()["id"],
            "confirm": "true",
            "metadata[source]": "payment link",
        },
        timeout=10,
    )
    intent.raise_for_status()
    assert intent.json()["status"] == "succeeded"
    return stripe_get(localstripe, "payment_intents", intent.json()["id"])


def test_event_for_a_payment_of_no_pledge_answers_2xx_and_is_kept_for_review(
    app, client, localstripe, gift
):
    intent = _payment_made_elsewhere(localstripe)
    events = [
        make_event("payment_intent.succeeded", intent),
        make_event("charge.succeeded", intent["latest_charge"]),
    ]
    before = written_state(app)

    answers = [post_event(client, e) for e in events]

    assert [a.status_code for a in answers] == [200, 200]
    with app.app_context():
        stored = {e.id: e for e in db.session.scalars(select(StripeEvent))}
        assert set(stored) == {e["id"] for e in events}
        for e in events:
            # Unmatched events keep their payload, so an organizer can see what came in.
            assert stored[e["id"]].outcome == EventOutcome.UNMATCHED
            assert stored[e["id"]].payload["data"]["object"]["id"] == e["data"]["object"]["id"]
    after = written_state(app)
    assert (after["ledger"], after["pledges"]) == (before["ledger"], before["pledges"])


def test_same_event_delivered_again_answers_2xx_and_changes_nothing(app, client, gift, event):
    assert post_event(client, event).status_code == 200
    _assert_applied(app, gift)
    after_first = written_state(app)

    for _ in range(3):
        again = post_event(client, event)
        assert again.status_code == 200
        assert again.get_json() == {"received": True, "duplicate": True}
    # Even a redelivery whose payload differs is the same event: the id decides.
    altered = event | {"type": "payment_intent.payment_failed"}
    assert post_event(client, altered).status_code == 200

    assert written_state(app) == after_first


def test_event_that_cannot_be_applied_is_acknowledged_and_applied_later(
    app, client, gift, event, mailbox
):
    """Stripe unreachable while the event is applied: it waits, and nothing else is written."""
    before = written_state(app)
    saved = {k: app.config[k] for k in ("STRIPE_API_BASE", "STRIPE_MAX_RETRIES")}
    # Stripe unreachable while the event is applied: nothing listens on this port.
    app.config.update(STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}", STRIPE_MAX_RETRIES=1)
    try:
        response = post_event(client, event)
    finally:
        app.config.update(saved)

    assert response.status_code == 200  # stored: Stripe need not deliver it again
    after = written_state(app)
    assert (after["ledger"], after["pledges"]) == (before["ledger"], before["pledges"])
    assert mailbox.messages == []
    with app.app_context():
        stored = db.session.get(StripeEvent, event["id"])
        assert (stored.state, stored.outcome, stored.attempts) == (EventState.RECEIVED, None, 1)
        due = stored.next_attempt_at

    # Stripe's own redelivery is a duplicate; the stored event applies once it is due, once.
    assert post_event(client, event).get_json() == {"received": True, "duplicate": True}
    assert pledge_rows(app)[gift.pledge_id][0] == PledgeStatus.PROCESSING
    with app.app_context():
        webhooks.apply_pending(now=due)
        outbox.drain()
    _assert_applied(app, gift)
    assert len(mailbox.wait_for(1)) == 1


def test_pledge_id_in_metadata_paid_by_another_customer_is_not_that_pledge(app, client):
    with app.app_context():
        from tests.factories import make_pledge

        pledge = make_pledge(make_fast_day())
        pledge.stripe_customer_id = "cus_theirs"
        db.session.commit()
        pledge_id = pledge.id
    intent = {
        "id": "pi_elsewhere",
        "object": "payment_intent",
        "customer": "cus_someone_else",
        "metadata": {"pledge_id": str(pledge_id)},
        "status": "succeeded",
    }
    response = post_event(client, make_event("payment_intent.succeeded", intent))
    assert response.status_code == 200
    with app.app_context():
        stored = db.session.scalar(select(StripeEvent))
        assert stored.outcome == EventOutcome.UNMATCHED
        assert db.session.get(type(pledge), pledge_id).status == PledgeStatus.PENDING
