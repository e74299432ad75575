"""Closed-loop HTTP load: C clients, each sends its next request when the last one answered.

Requests that finish during the warm-up are dropped; the measured window is [warm-up, warm-up +
duration], counted by completion time. Requests still in flight at the end are awaited but not
counted, so a cell whose latency exceeds its duration measures few requests: the report says how
many.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty): p50 <= p95 <= p99 by construction."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class LoadReport:
    requests: int  # 200 answers completed inside the window
    images: int  # images in those answers
    errors: dict[str, int]  # status code or exception name -> count, inside the window
    seconds: float  # the window
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.nan

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(requests_per_s=self.requests_per_s, images_per_s=self.images_per_s)
        return d


def summarize(latencies_s: list[float], images: int, errors: dict[str, int], seconds: float) -> LoadReport:
    lat = sorted(x * 1000.0 for x in latencies_s)
    return LoadReport(
        requests=len(lat), images=images, errors=dict(errors), seconds=seconds,
        p50_ms=percentile(lat, 50), p95_ms=percentile(lat, 95), p99_ms=percentile(lat, 99),
        mean_ms=sum(lat) / len(lat) if lat else math.nan,
    )


def generate_body(n: int) -> Callable[[int], dict[str, Any]]:
    """The i-th request's body: label cycles through the ten classes, every seed differs."""
    return lambda i: {"label": i % 10, "n": n, "seed": 1_000_003 * i + 7}


async def run_load(
    url: str,
    body: Callable[[int], dict[str, Any]],
    n: int,  # images per request
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    timeout_s: float = 120.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> LoadReport:
    """Drive POST `url` with `concurrency` closed-loop clients; see the module docstring."""
    # One client (one keep-alive connection) per closed-loop client: a shared pool of C connections
    # costs httpcore a scan of every connection per request, which at C=128 made the load generator,
    # not the server, the bottleneck (one core at 100%, the server at 20%).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = itertools.count()
    start = time.perf_counter()
    window_start = start + warmup_s
    window_end = window_start + duration_s

    async def client_loop() -> None:
        async with httpx.AsyncClient(limits=limits, timeout=timeout_s, transport=transport) as client:
            while time.perf_counter() < window_end:
                i = next(counter)
                t0 = time.perf_counter()
                try:
                    resp = await client.post(url, json=body(i))
                    outcome = "ok" if resp.status_code == 200 else str(resp.status_code)
                    if outcome == "ok" and not resp.content.startswith(b"\x89PNG"):
                        outcome = "not-png"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                t1 = time.perf_counter()
                if window_start <= t1 <= window_end:
                    if outcome == "ok":
                        latencies.append(t1 - t0)
                    else:
                        errors[outcome] += 1

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return summarize(latencies, n * len(latencies), errors, duration_s)
