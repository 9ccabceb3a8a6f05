"""Load from a separate process: `python -m bench.load SPEC.json` prints what it measured.

The spec names the requests (one URL for all, or a list of method/url/headers/body, each sent
once), the concurrency, and a bound on count and time. Every request goes to 127.0.0.1.
Output is one JSON object: count, statuses, elapsed seconds, requests per second and the
latency percentiles in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import aiohttp


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    requests: list[dict[str, Any]] = spec.get("requests") or [
        {"method": "GET", "url": spec["url"]}
    ] * int(spec["count"])
    limit = float(spec.get("max_seconds", 300))
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    started = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty() and time.perf_counter() - started < limit:
            request = queue.get_nowait()
            sent = time.perf_counter()
            try:
                async with session.request(
                    request.get("method", "GET"),
                    request["url"],
                    data=request.get("body"),
                    headers=request.get("headers"),
                ) as response:
                    await response.read()
                    status = str(response.status)
            except aiohttp.ClientError as exc:
                status = type(exc).__name__
            latencies.append((time.perf_counter() - sent) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(int(spec.get("concurrency", 8)))))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0.0

    return {
        "count": len(latencies),
        "statuses": statuses,
        "elapsed": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(latencies) if latencies else 0.0,
    }


def main() -> None:
    """Read the spec file named on the command line; print the measurement as JSON."""
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    print(json.dumps(asyncio.run(_run(spec))))


if __name__ == "__main__":
    main()
