"""What every benchmark shares: results and their BENCH lines, scale, servers and load.

A benchmark is a function ``(ctx: Context) -> list[Result]`` listed in a ``bench_*.py``
module's ``BENCHMARKS``. Figures that depend on the machine's speed are ratios against a
floor measured in the same run under the same server settings; absolute figures go in
``Result.detail`` for reading, never into pass/fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Result:
    """One benchmark's figure against its goal."""

    name: str
    value: float
    unit: str
    op: str  # "<=" or ">="
    target: float
    detail: str = ""  # absolute figures and what the floor was, for people to read
    extra: dict = field(default_factory=dict)
    # False when a condition beside the figure failed (a 5xx, a mail sent twice, a wrong sum):
    # the result FAILs whatever its value, and ``detail`` says why.
    ok: bool = True

    @property
    def passed(self) -> bool:
        """Whether the figure meets its goal (and every condition beside it held)."""
        meets = self.value <= self.target if self.op == "<=" else self.value >= self.target
        return self.ok and meets

    def line(self) -> str:
        """The machine-readable line: ``BENCH <name> <value> <unit> goal <op> <target> PASS``."""
        verdict = "PASS" if self.passed else "FAIL"
        return f"BENCH {self.name} {_num(self.value)} {self.unit} goal {self.op} {_num(self.target)} {verdict}"

    def as_json(self) -> dict:
        """The result as bench/results.json holds it."""
        return {**asdict(self), "passed": self.passed}


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


@dataclass
class Context:
    """What a benchmark run knows: quick or full, and where it may write."""

    quick: bool
    workdir: Path
    pg_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

    def scale(self, full: int, quick: int) -> int:
        """A size for this run: ``full`` under `make bench`, ``quick`` under `make bench-quick`."""
        return quick if self.quick else full

    def sqlite_url(self, name: str) -> str:
        """A fresh SQLite database file in the run's work directory."""
        return f"sqlite:///{self.workdir / name}.db"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def app_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of an app process for a benchmark: its database, quiet logs."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "bench-" + "x" * 40,
        "FUNDRAISER_ENV": "development",
        **extra,
    }
    return env


@contextlib.contextmanager
def gunicorn(
    app: str, env: dict[str, str], *, workers: int = 2, threads: int = 1, log: Path | None = None
) -> Iterator[str]:
    """Serve ``app`` (a WSGI path like ``wsgi:app``) under gunicorn; yields its base URL."""
    port = free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=out,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def write_results(results: list[Result], path: Path) -> None:
    """Write every result to ``path`` as JSON."""
    path.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")


def load(spec: dict, workdir: Path) -> dict:
    """Run bench.load in its own process with ``spec``; return what it measured."""
    path = workdir / f"load-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run(
        [PYTHON, "-m", "bench.load", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=float(spec.get("max_seconds", 300)) + 120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    """Run a command from the project's root; its output, or RuntimeError with its tail."""
    out = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[2:8])} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        )
    return out.stdout


def bench_data(
    env: dict[str, str], *, gifts: int, groups: int, subscribers: int, slug: str | None = None
) -> str:
    """Migrate the database in ``env`` and load a live day with `bench-data`; the day's slug."""
    flask = [PYTHON, "-m", "flask", "--app", "wsgi"]
    run([*flask, "db", "upgrade"], env)
    load = ["--gifts", str(gifts), "--groups", str(groups), "--subscribers", str(subscribers)]
    printed = run([*flask, "bench-data", *load, *(["--slug", slug] if slug else [])], env)
    return printed.strip().splitlines()[-1].strip()


# Where an SMTP server finds a message's Message-ID in its headers.
MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


class CountingSMTP:
    """An aiosmtpd server in this process keeping (recipient, Message-ID) of each message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.lock = threading.Lock()
        self.received: list[tuple[str, str]] = []
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        headers = envelope.content.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(headers)
        message_id = found.group(1).decode() if found else ""
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append((rcpt.lower(), message_id))
        return "250 OK"

    def count(self) -> int:
        """How many messages arrived."""
        with self.lock:
            return len(self.received)

    def __enter__(self) -> CountingSMTP:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()
