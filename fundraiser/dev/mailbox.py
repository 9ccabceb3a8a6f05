"""A local SMTP server for development that keeps every message as a .eml file, and a viewer.

The viewer (http://127.0.0.1:8026 under `make run`) lists what arrived, newest first, and
shows each message's headers, plain text and HTML, so a campaign's "07:00 local" can be
watched arriving per subscriber. Development only: it binds to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import html
import itertools
import threading
import time
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from aiosmtpd.controller import Controller


class FolderHandler:
    """Write each received message to ``folder`` and print its subject and file name."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._counter):04d}.eml"
        path = self.folder / name
        path.write_bytes(envelope.original_content or envelope.content)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        print(f"mail: {message['Subject']!s} -> {path}", flush=True)
        return "250 Message accepted for delivery"


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem}}
table{{border-collapse:collapse;width:100%}}td,th{{text-align:start;padding:.35rem .5rem;
border-bottom:1px solid #ddd;vertical-align:top}}pre{{white-space:pre-wrap;background:#f6f6f2;
padding:1rem}}iframe{{width:100%;height:32rem;border:1px solid #ccc}}dt{{font-weight:600}}</style>
</head><body>{body}</body></html>"""


def _read(path: Path) -> EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def _part(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    return part.get_content() if part is not None else ""


def make_viewer(folder: Path) -> type[BaseHTTPRequestHandler]:
    """A request handler that lists and shows the messages in ``folder``."""

    class Viewer(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep make run's terminal for the app
            return

        def _send(self, body: str, content_type: str = "text/html", csp: str = "") -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if csp:
                self.send_header("Content-Security-Policy", csp)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = unquote(self.path.split("?", 1)[0])
            if path == "/":
                return self._send(self._index())
            name = path.removeprefix("/m/").removesuffix("/html")
            file = folder / name
            if not path.startswith("/m/") or "/" in name or not file.is_file():
                self.send_error(404)
                return None
            message = _read(file)
            if path.endswith("/html"):
                # The message's own HTML, sandboxed: no scripts, no requests out.
                return self._send(_part(message, "html"), csp="sandbox; default-src 'none'")
            return self._send(self._message(name, message))

        def _index(self) -> str:
            files = sorted(folder.glob("*.eml"), reverse=True)
            rows = []
            for file in files[:500]:
                message = _read(file)
                rows.append(
                    "<tr><td>{when}</td><td>{to}</td><td><a href='/m/{link}'>{subject}</a></td></tr>".format(
                        when=html.escape(file.name[:15]),
                        to=html.escape(str(message["To"] or "")),
                        link=quote(file.name),
                        subject=html.escape(str(message["Subject"] or "(no subject)")),
                    )
                )
            body = (
                f"<h1>Local mail ({len(files)})</h1><p>Every message the app sent under make run, "
                f"newest first. Files: {html.escape(str(folder))}</p>"
                "<table><tr><th>Received</th><th>To</th><th>Subject</th></tr>"
                + "".join(rows)
                + "</table>"
            )
            return _PAGE.format(title="Local mail", body=body)

        def _message(self, name: str, message: EmailMessage) -> str:
            headers = "".join(
                f"<dt>{html.escape(h)}</dt><dd>{html.escape(str(message[h]))}</dd>"
                for h in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe")
                if message[h]
            )
            html_part = (
                f"<h2>HTML</h2><iframe sandbox src='/m/{quote(name)}/html'></iframe>"
                if _part(message, "html")
                else ""
            )
            body = (
                f"<p><a href='/'>All messages</a></p><h1>{html.escape(str(message['Subject']))}</h1>"
                f"<dl>{headers}</dl><h2>Text</h2><pre>{html.escape(_part(message, 'plain'))}</pre>"
                + html_part
            )
            return _PAGE.format(title=html.escape(str(message["Subject"])), body=body)

    return Viewer


def main(argv: list[str] | None = None) -> None:
    """Serve SMTP on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="instance/mail")
    parser.add_argument("--viewer-port", type=int, default=8026, help="0: no viewer")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    controller = Controller(FolderHandler(folder), hostname="127.0.0.1", port=args.port)
    controller.start()
    if args.viewer_port:
        viewer = ThreadingHTTPServer(("127.0.0.1", args.viewer_port), make_viewer(folder))
        threading.Thread(target=viewer.serve_forever, daemon=True).start()
        print(f"mail: viewer on http://127.0.0.1:{args.viewer_port}/", flush=True)
    print(
        f"mail: SMTP on 127.0.0.1:{args.port}, messages kept in {Path(args.dir).resolve()}",
        flush=True,
    )
    try:
        asyncio.run(asyncio.Event().wait())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
