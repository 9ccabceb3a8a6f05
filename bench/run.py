"""`python -m bench.run [--quick] [--only NAME ...]`: run the benchmarks, print the table and
the BENCH lines, and write bench/results.json."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import shutil
import tempfile
import time
import traceback
from pathlib import Path

import bench
from bench.core import Context, Result, write_results

RESULTS = Path(__file__).resolve().parent / "results.json"


def _benchmarks() -> list:
    found = []
    for module in sorted(m.name for m in pkgutil.iter_modules(bench.__path__)):
        if module.startswith("bench_"):
            found.extend(importlib.import_module(f"bench.{module}").BENCHMARKS)
    return found


def main() -> None:
    """Run every benchmark (or the ones named) and report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for CI")
    parser.add_argument("--only", nargs="*", default=[], help="benchmark function names")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (servers' logs) afterwards"
    )
    args = parser.parse_args()
    results: list[Result] = []
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="fundraiser-bench-"))
    ctx = Context(quick=args.quick, workdir=workdir)
    try:
        for function in _benchmarks():
            if args.only and function.__name__ not in args.only:
                continue
            start = time.monotonic()
            print(f"== {function.__name__}", flush=True)
            try:
                results.extend(function(ctx))
            except Exception:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                results.append(Result(function.__name__, 0, "error", ">=", 1, "raised"))
            print(f"   ({time.monotonic() - start:.0f} s)", flush=True)
    finally:
        # The logs the details point to are kept whenever something failed.
        if args.keep or not all(r.passed for r in results):
            print(f"   (servers' logs kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{'benchmark':<26} {'value':>12} {'unit':<10} {'goal':<12} result  detail")
    for r in results:
        goal = f"{r.op} {r.target:g}"
        verdict = "PASS" if r.passed else "FAIL"
        print(f"{r.name:<26} {r.value:>12.3f} {r.unit:<10} {goal:<12} {verdict:<7} {r.detail}")
    print(f"\n({time.monotonic() - began:.0f} s in all)\n")
    for r in results:
        print(r.line())
    write_results(results, RESULTS)


if __name__ == "__main__":
    main()
