"""Run localstripe with its store kept in a file of our choosing, or not at all.

localstripe pickles its whole store to /tmp/localstripe.pickle after every POST, which is
shared by every instance on the machine and grows slower with every object. Development
keeps it beside the database (so Stripe's state survives restarts with the data that
refers to it); tests keep nothing.
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Parse --port and --store, patch localstripe's persistence, and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--store", help="file to keep the store in; none keeps nothing")
    args = parser.parse_args(argv)

    from localstripe import resources, server

    store_path = Path(args.store) if args.store else None

    def load(self: resources.Store) -> None:
        if store_path and store_path.exists():
            try:
                with store_path.open("rb") as f:
                    self.update(pickle.load(f))  # noqa: S301 - our own file, written below
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
                print(f"localstripe: could not read {store_path}; starting empty", file=sys.stderr)

    def dump(self: resources.Store) -> None:
        if store_path:
            tmp = store_path.with_suffix(".tmp")
            with tmp.open("wb") as f:
                pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(store_path)

    resources.Store.try_load_from_disk = load
    # make run's refund relay asks for refunds every two seconds; those lines would bury
    # every request worth reading in the terminal.
    logging.getLogger("aiohttp.access").addFilter(
        lambda record: "GET /v1/refunds" not in record.getMessage()
    )
    resources.Store.dump_to_disk = dump
    sys.argv = [sys.argv[0], "--port", str(args.port)]
    server.start()


if __name__ == "__main__":
    main()
