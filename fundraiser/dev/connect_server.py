"""A small fake of Stripe's Connect transfers API, for development and tests.

localstripe has no transfers, so disbursements by Stripe Connect are tested against this
server. It honours the Stripe rules the app relies on:

- ``POST /v1/transfers`` (form-encoded, like Stripe) needs ``amount``, ``currency`` and a
  ``destination`` that looks like ``acct_…``; it answers a ``tr_…`` transfer object.
- ``GET /v1/transfers/<id>``, and ``GET /v1/transfers`` newest first with
  ``transfer_group``, ``destination``, ``limit``, ``starting_after`` and ``has_more``.
- Idempotency keys: the same key with the same parameters replays the first answer (with
  ``Idempotent-Replayed: true``), whatever it was, even an error from the endpoint; the same
  key with other parameters is a 400 ``idempotency_error``; keys expire 24 hours after
  first use (a replay does not renew them).
- Requests need a secret key (``Authorization: Bearer sk_…``, or basic auth as Stripe takes).

Every well-formed ``acct_`` id is taken to be a connected account that exists.

Controls, for tests (not part of Stripe):

- ``POST /_control/advance?seconds=N``: move the server's clock forward (keys expire by it).
- ``POST /_control/fail?mode=M&count=N``: the next N ``/v1`` requests fail as M:
  ``500`` (answered before the endpoint runs, as a front end's error would be, so nothing
  is saved under the key and a retry is safe); ``drop`` (the request is carried out, then
  the connection is closed without an answer: the client cannot know it worked);
  ``insufficient`` (the endpoint refuses with ``balance_insufficient``, saved under the key
  as Stripe saves it).
- ``POST /_control/reset``: forget every transfer, key, failure and clock change.
- ``GET /_control/state``: counts, for tests that prove nothing was paid twice.

Run it with ``python -m fundraiser.dev.connect_server --port 8421``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

KEY_LIFETIME_SECONDS = 24 * 3600
ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{4,}$")
_ALPHABET = string.ascii_letters + string.digits
_NOT_SAVED = {"parameter_missing", "parameter_invalid_integer", "parameter_invalid"}


def _object_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def _error(status: int, type_: str, message: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": type_, "message": message, **extra}}


@dataclass
class _Saved:
    """What an idempotency key's first request asked and was answered."""

    params: list[tuple[str, str]]
    created: float
    status: int
    body: dict[str, Any]


class ConnectState:
    """Transfers, idempotency keys, pending failures and the clock, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.transfers: list[dict[str, Any]] = []  # oldest first
        self.keys: dict[str, _Saved] = {}
        self.offset = 0.0
        self.fail_mode = ""
        self.fail_count = 0
        self.requests = 0
        self.creates = 0  # POSTs that carried out a transfer (not replays)

    def now(self) -> float:
        """The server's clock: real time, plus however far a test advanced it."""
        return time.time() + self.offset

    def take_failure(self) -> str:
        """The failure the next request must suffer, if one is pending."""
        if self.fail_count <= 0:
            return ""
        self.fail_count -= 1
        return self.fail_mode

    def expire_keys(self) -> None:
        """Drop keys older than 24 hours, as Stripe prunes them."""
        cutoff = self.now() - KEY_LIFETIME_SECONDS
        for key in [k for k, saved in self.keys.items() if saved.created < cutoff]:
            del self.keys[key]


def _nested(params: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as Stripe reads them: ``metadata[a]=b`` becomes ``{"metadata": {"a": "b"}}``."""
    out: dict[str, Any] = {}
    for name, value in params:
        match = re.fullmatch(r"(\w+)\[(\w*)\]", name)
        if match:
            out.setdefault(match.group(1), {})[match.group(2)] = value
        else:
            out[name] = value
    return out


def create_transfer(
    state: ConnectState, params: dict[str, Any], failure: str
) -> tuple[int, dict[str, Any]]:
    """Carry out POST /v1/transfers (the state lock is held)."""
    for name in ("amount", "currency", "destination"):
        if not params.get(name):
            return _error(
                400,
                "invalid_request_error",
                f"Missing required param: {name}.",
                code="parameter_missing",
                param=name,
            )
    amount = str(params["amount"])
    if not amount.isdigit() or int(amount) <= 0:
        return _error(
            400,
            "invalid_request_error",
            "Invalid positive integer",
            code="parameter_invalid_integer",
            param="amount",
        )
    currency = str(params["currency"]).lower()
    if not re.fullmatch(r"[a-z]{3}", currency):
        return _error(
            400,
            "invalid_request_error",
            f"Invalid currency: {currency}.",
            code="parameter_invalid",
            param="currency",
        )
    destination = str(params["destination"])
    if not ACCOUNT_RE.match(destination):
        return _error(
            400,
            "invalid_request_error",
            f"No such destination: '{destination}'",
            code="resource_missing",
            param="destination",
        )
    if failure == "insufficient":
        return _error(
            400,
            "invalid_request_error",
            "You have insufficient available funds in your Stripe account. Try adding funds "
            "directly to your available balance by creating Charges using the "
            "4000000000000077 test card.",
            code="balance_insufficient",
        )
    metadata = params.get("metadata") if isinstance(params.get("metadata"), dict) else {}
    transfer = {
        "id": _object_id("tr_"),
        "object": "transfer",
        "amount": int(amount),
        "amount_reversed": 0,
        "balance_transaction": _object_id("txn_"),
        "created": int(state.now()),
        "currency": currency,
        "description": params.get("description"),
        "destination": destination,
        "destination_payment": _object_id("py_"),
        "livemode": False,
        "metadata": metadata,
        "reversals": {"object": "list", "data": [], "has_more": False, "total_count": 0},
        "reversed": False,
        "source_transaction": None,
        "source_type": "card",
        "transfer_group": params.get("transfer_group"),
    }
    state.transfers.append(transfer)
    state.creates += 1
    return 200, transfer


def list_transfers(state: ConnectState, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """GET /v1/transfers: newest first, filtered, one page."""
    try:
        limit = max(1, min(100, int(query.get("limit") or 10)))
    except ValueError:
        return _error(400, "invalid_request_error", "Invalid integer", param="limit")
    found = [
        t
        for t in reversed(state.transfers)
        if ("transfer_group" not in query or t["transfer_group"] == query["transfer_group"])
        and ("destination" not in query or t["destination"] == query["destination"])
    ]
    after = query.get("starting_after")
    if after:
        ids = [t["id"] for t in found]
        if after not in ids:
            return _error(
                400,
                "invalid_request_error",
                f"No such transfer: '{after}'",
                code="resource_missing",
                param="starting_after",
            )
        found = found[ids.index(after) + 1 :]
    return 200, {
        "object": "list",
        "url": "/v1/transfers",
        "data": found[:limit],
        "has_more": len(found) > limit,
    }


class ConnectServer:
    """The fake, served by a threaded HTTP server (in a thread, or as its own process)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = ConnectState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: tests and make run
                pass

            def _send(self, status: int, body: dict[str, Any], replayed: bool = False) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", _object_id("req_"))
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(2)

            def _body(self) -> list[tuple[str, str]]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                return parse_qsl(raw, keep_blank_values=True)

            def _authorized(self) -> bool:
                # Stripe takes the secret key as a bearer token or as basic auth's user name.
                auth = self.headers.get("Authorization") or ""
                scheme, _, value = auth.partition(" ")
                if scheme.lower() == "basic":
                    try:
                        value = base64.b64decode(value).decode().partition(":")[0]
                    except (ValueError, UnicodeDecodeError):
                        return False
                elif scheme.lower() != "bearer":
                    return False
                return value.startswith(("sk_", "rk_"))

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                if url.path == "/_control/state":
                    with state.lock:
                        body = {
                            "transfers": len(state.transfers),
                            "creates": state.creates,
                            "requests": state.requests,
                            "keys": len(state.keys),
                            "now": state.now(),
                        }
                    self._send(200, body)
                    return
                if not url.path.startswith("/v1/"):
                    self._send(*_error(404, "invalid_request_error", "Unrecognized request URL"))
                    return
                with state.lock:
                    state.requests += 1
                    failure = state.take_failure()
                    if failure == "500":
                        result = _error(500, "api_error", "Something went wrong on Stripe's end.")
                    elif not self._authorized():
                        result = _error(401, "invalid_request_error", "Invalid API Key provided")
                    elif url.path == "/v1/transfers":
                        result = list_transfers(state, query)
                    elif url.path.startswith("/v1/transfers/"):
                        transfer_id = url.path.rsplit("/", 1)[1]
                        match = [t for t in state.transfers if t["id"] == transfer_id]
                        result = (
                            (200, match[0])
                            if match
                            else _error(
                                404,
                                "invalid_request_error",
                                f"No such transfer: '{transfer_id}'",
                                code="resource_missing",
                                param="id",
                            )
                        )
                    else:
                        result = _error(404, "invalid_request_error", "Unrecognized request URL")
                if failure == "drop":
                    self._drop()
                    return
                self._send(*result)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                params = self._body()
                if url.path.startswith("/_control/"):
                    self._control(url.path, dict(parse_qsl(url.query)) | dict(params))
                    return
                replayed = False
                with state.lock:
                    state.requests += 1
                    failure = state.take_failure()
                    if failure == "500":
                        # Before the endpoint runs: nothing is saved under the key.
                        self._send(*_error(500, "api_error", "Something went wrong."))
                        return
                    if not self._authorized():
                        self._send(*_error(401, "invalid_request_error", "Invalid API Key"))
                        return
                    if url.path != "/v1/transfers":
                        self._send(*_error(404, "invalid_request_error", "Unrecognized URL"))
                        return
                    key = self.headers.get("Idempotency-Key")
                    state.expire_keys()
                    saved = state.keys.get(key) if key else None
                    compared = sorted(params)
                    if saved is not None and saved.params != compared:
                        result = _error(
                            400,
                            "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other than "
                            f"'{key}' if you meant to execute a different request.",
                        )
                    elif saved is not None:
                        result, replayed = (saved.status, saved.body), True
                    else:
                        # The lock is held while the transfer is made, so a twin request
                        # waits and is then replayed (Stripe would answer it 409 meanwhile).
                        result = create_transfer(state, _nested(params), failure)
                        status, body = result
                        code = body.get("error", {}).get("code")
                        # Parameter errors are not saved (no endpoint ran); the rest are.
                        if key and code not in _NOT_SAVED:
                            state.keys[key] = _Saved(compared, state.now(), status, body)
                if failure == "drop":
                    self._drop()
                    return
                self._send(*result, replayed=replayed)

            def _control(self, path: str, args: dict[str, str]) -> None:
                with state.lock:
                    if path == "/_control/advance":
                        state.offset += float(args.get("seconds") or 0)
                    elif path == "/_control/fail":
                        mode = args.get("mode") or "500"
                        if mode not in ("500", "drop", "insufficient"):
                            self._send(400, {"error": f"unknown mode {mode!r}"})
                            return
                        state.fail_mode, state.fail_count = mode, int(args.get("count") or 1)
                    elif path == "/_control/reset":
                        state.reset()
                    else:
                        self._send(404, {"error": "unknown control"})
                        return
                self._send(200, {"ok": True})

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> ConnectServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def main() -> None:
    """Run the fake as its own process (``make run`` starts it beside localstripe)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8421)
    args = parser.parse_args()
    server = ConnectServer(args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
