"""A proxy in front of localstripe that answers 429 or drops connections on command."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

RATE_LIMIT_BODY = json.dumps(
    {
        "error": {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly.",
        }
    }
).encode()


class FlakyStripe:
    """Forwards to localstripe, after failing the next ``fail_next`` requests as told."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_next = 0
        self.failure = "429"  # or "drop"
        self.failures_served = 0
        self.forwarded: list[str] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self):
                with proxy._lock:
                    fail = proxy.fail_next > 0
                    if fail:
                        proxy.fail_next -= 1
                        proxy.failures_served += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if fail and proxy.failure == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fail:
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(RATE_LIMIT_BODY)))
                    self.end_headers()
                    self.wfile.write(RATE_LIMIT_BODY)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower()
                    in ("authorization", "content-type", "stripe-version", "idempotency-key")
                }
                upstream = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=10
                )
                proxy.forwarded.append(f"{self.command} {self.path.split('?')[0]}")
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = _handle
            do_POST = _handle
            do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyStripe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
