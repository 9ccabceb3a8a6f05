"""make run's mailbox: what the app sends is kept, and the viewer shows it safely."""

from __future__ import annotations

import smtplib
import subprocess
import sys
from email.message import EmailMessage

import requests

from tests.conftest import free_port, wait_for_port, wait_until


def test_viewer_lists_and_shows_each_message_with_its_html_sandboxed(tmp_path):
    smtp_port, viewer_port = free_port(), free_port()
    folder = tmp_path / "mail"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fundraiser.dev.mailbox",
            "--port",
            str(smtp_port),
            "--dir",
            str(folder),
            "--viewer-port",
            str(viewer_port),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(smtp_port)
        wait_for_port(viewer_port)
        message = EmailMessage()
        message["From"] = "gifts@example.org"
        message["To"] = "donor@example.org"
        message["Subject"] = "Suhoor <is> at 04:50"
        message.set_content("Plain words")
        message.add_alternative("<p onclick='x()'>Rich words</p>", subtype="html")
        with smtplib.SMTP("127.0.0.1", smtp_port) as smtp:
            smtp.send_message(message)
        wait_until(lambda: list(folder.glob("*.eml")))

        base = f"http://127.0.0.1:{viewer_port}"
        index = requests.get(base + "/", timeout=5).text
        assert "Suhoor &lt;is&gt; at 04:50" in index  # escaped, never markup
        assert "donor@example.org" in index
        (name,) = [f.name for f in folder.glob("*.eml")]
        page = requests.get(f"{base}/m/{name}", timeout=5).text
        assert "Plain words" in page
        rich = requests.get(f"{base}/m/{name}/html", timeout=5)
        assert "Rich words" in rich.text
        assert rich.headers["Content-Security-Policy"].startswith("sandbox")
        assert requests.get(f"{base}/m/..%2Fsecrets", timeout=5).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
