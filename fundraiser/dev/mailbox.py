"""A local SMTP server for development that keeps every message as a .eml file to read."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import time
from pathlib import Path
from typing import Any

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


def main(argv: list[str] | None = None) -> None:
    """Serve SMTP on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", default="instance/mail")
    args = parser.parse_args(argv)
    controller = Controller(FolderHandler(Path(args.dir)), hostname="127.0.0.1", port=args.port)
    controller.start()
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
