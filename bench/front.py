"""The front's own cost: the service's ASGI stack driven in this process, without HTTP, by
`--concurrency` callers posting `POST /generate` back to back; prints the CPU this process spent
per request (event loop and engine reader threads; the engine processes are apart, as in a
worker). A yardstick for changes to the request path that the wall clock of a shared VM cannot
show, since it counts no socket, no HTTP parsing and no load generator.

    python -m bench.front [--weights DIR] [--model NAME] [--concurrency 32] [--seconds 6] [--n 1]
                          [--profile]

`--profile` adds cProfile's top functions of the event loop's thread (its timings include
waits for the interpreter lock that the reader threads hold, so read them as where, not how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO
from service.main import create_app, freeze_start_up_objects
from service.settings import Settings


@dataclass
class FrontReport:
    requests: int
    seconds: float
    cpu_seconds: float
    statuses: dict[int, int]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / max(1, self.requests)


def _scope(path: str, body: bytes, client: int) -> dict[str, object]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 10_000 + client), "server": ("127.0.0.1", 8000)}


def _exchange(body: bytes, stays: asyncio.Event) -> tuple[Any, Any, list[dict[str, Any]]]:
    """One request's receive and send, and the list that send fills."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await stays.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    return receive, send, answer


async def drive(settings: Settings, body: bytes, concurrency: int, seconds: float, warmup_s: float = 1.5,
                profile: cProfile.Profile | None = None) -> FrontReport:
    """Start the app (its lifespan: models loaded and warm), drive it for warmup_s and then for
    `seconds`, measured; each caller sends one request after another, like a keep-alive client."""
    app = create_app(settings)
    stack = app.build_middleware_stack()
    statuses: dict[int, int] = {}
    count = 0

    async def caller(i: int, until: float) -> None:
        nonlocal count
        stays = asyncio.Event()  # the client never leaves: receive() after the body waits
        while time.perf_counter() < until:
            receive, send, answer = _exchange(body, stays)
            await stack(_scope("/generate", body, i), receive, send)
            status = int(answer[0]["status"])  # type: ignore[call-overload]
            statuses[status] = statuses.get(status, 0) + 1
            count += 1

    async with app.router.lifespan_context(app):
        await app.state.loading
        freeze_start_up_objects()  # as python -m service does once its models are loaded
        await asyncio.gather(*(caller(i, time.perf_counter() + warmup_s) for i in range(concurrency)))
        count, statuses = 0, {}
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        await asyncio.gather(*(caller(i, wall0 + seconds) for i in range(concurrency)))
        if profile is not None:
            profile.disable()
        cpu1, wall1 = time.process_time(), time.perf_counter()
    return FrontReport(count, wall1 - wall0, cpu1 - cpu0, statuses)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=REPO / "weights", help="weights folder (default: the shipped ones)")
    p.add_argument("--model", default="fashion-mnist-cwgangp", help="the model the requests go to")
    p.add_argument("--concurrency", type=int, default=32, help="callers, each sending back to back")
    p.add_argument("--seconds", type=float, default=6.0, help="measured seconds (after 1.5 s of warm-up)")
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--profile", action="store_true", help="also print cProfile's top functions")
    args = p.parse_args()
    try:
        import uvloop  # what uvicorn[standard] runs the service on

        uvloop.install()
    except ImportError:
        pass
    settings = Settings(weights_dir=args.weights, device="cpu", default_model=args.model, log_level="warning")
    body = json.dumps({"label": 1, "n": args.n, "model": args.model}).encode()
    profile = cProfile.Profile() if args.profile else None
    report = asyncio.run(drive(settings, body, args.concurrency, args.seconds, profile=profile))
    print(f"{args.model} n={args.n} concurrency {args.concurrency}: {report.requests_per_s:,.0f} req/s, "
          f"{report.cpu_ms_per_request:.3f} ms of this process's CPU per request, statuses {report.statuses}")
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())


if __name__ == "__main__":
    main()
