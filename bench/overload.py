"""Overload: drive a real `python -m service` well past saturation for a bounded time.

    python -m bench.overload --duration 30 --clients 128 --queue-size 64 --n 16

Starts the server on a loopback port (tiny random generators unless --weights-dir is given),
runs `--clients` async httpx clients that post /generate back to back without honouring
Retry-After, and prints: accepted / 503 / 504 / other counts, how fast 503s come back (p50/p99),
accepted latency against the deadline (GAN_REQUEST_TIMEOUT_S), the queue depth seen, the server's
RSS before, at peak and after, and whether it is healthy afterwards. `run_overload` returns the
same figures as a dict (tests/reliability/test_overload.py runs a short version).

    python -m bench.overload --storm     # a retry storm with wrk (run_storm)
    python -m bench.overload --mixed     # single images beside clients of 256-image grids (run_mixed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bench.common import free_port, pss_mb
from bench.loadgen import LoadReport

ROOT = Path(__file__).resolve().parents[1]
MODEL = "overload-gray"


def write_tiny_model(root: Path, base_width: int = 32) -> Path:
    """A randomly initialised 28x28 conditional generator (ten Fashion-MNIST classes)."""
    import torch

    from gancore.labels import FASHION_MNIST_SLUGS
    from gancore.networks.dcgan import ConditionalGenerator
    from gancore.weights import save_generator

    torch.manual_seed(0)
    args = dict(latent_dim=64, num_classes=10, embed_dim=16, channels=1, image_size=28, base_width=base_width)
    save_generator(root / MODEL, ConditionalGenerator(**args), "dcgan", args, list(FASHION_MNIST_SLUGS), {})
    return root


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def start_server(weights_dir: Path, log: Path, ready_timeout_s: float = 60, **env: Any) -> Iterator[Server]:
    """`python -m service` with GAN_* settings from `env` (e.g. queue_size=64); waits for /readyz.

    The default model is the tiny one when `weights_dir` holds it (write_tiny_model), else the
    service's own default, unless `env` names one (default_model=...).

    On exit the server gets SIGTERM (and SIGKILL after 30 s if it is still there).
    """
    port = free_port()
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "GAN_HOST": "127.0.0.1", "GAN_PORT": str(port),
               "GAN_WEIGHTS_DIR": str(weights_dir), "GAN_DEVICE": "cpu",
               "GAN_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    if (weights_dir / MODEL).is_dir():  # the tiny model when it is there; else the service's own default
        environ["GAN_DEFAULT_MODEL"] = MODEL
    environ.update({f"GAN_{k.upper()}": str(v) for k, v in env.items()})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=environ, stdout=out, stderr=out)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"python -m service exited with {proc.returncode}:\n{server.log_text()}")
            try:
                if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready after {ready_timeout_s} s:\n{server.log_text()}")
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def samples(metrics_text: str, family_name: str) -> Iterator[Sample]:
    """The samples of one metric family in /metrics' text (prometheus-client's own parser: label
    order and escaping are its business, not a regular expression's)."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == family_name:
            yield from family.samples


def server_latency_buckets(metrics_text: str) -> dict[float, float]:
    """Cumulative counts of POST /generate's server-side latency histogram: upper bound -> count."""
    return {float(s.labels["le"]): s.value for s in samples(metrics_text, "gan_request_latency_seconds")
            if s.name.endswith("_bucket") and s.labels.get("method") == "POST" and s.labels.get("route") == "/generate"}


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """The smallest histogram bound holding at least a share q of the observations."""
    total = buckets.get(float("inf"), 0.0)
    return min((le for le, v in buckets.items() if total and v >= q * total), default=float("nan"))


def queue_depth(metrics_text: str) -> float:
    """Images queued, summed over the models (each already summed over the workers); NaN if none reported."""
    values = [s.value for s in samples(metrics_text, "gan_queue_depth")]
    return sum(values) if values else float("nan")


async def _drive(base: str, pid: int, duration_s: float, clients: int, n: int) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {"200": [], "503": [], "504": [], "other": []}
    retry_after: list[int] = []
    peak = {"pss_mb": pss_mb(pid), "queue": 0.0}
    stop_at = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one_client(i: int) -> None:
            seed = i * 1_000_000
            while time.monotonic() < stop_at:
                seed += 1
                started = time.perf_counter()
                try:
                    r = await client.post("/generate", json={"label": seed % 10, "n": n, "seed": seed})
                    key = str(r.status_code) if r.status_code in (200, 503, 504) else "other"
                    if r.status_code == 503:
                        retry_after.append(int(r.headers.get("retry-after", "0")))
                except httpx.TransportError:
                    key = "other"
                latencies[key].append(time.perf_counter() - started)

        async def sample() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as side:  # its own connection
                while time.monotonic() < stop_at:
                    peak["pss_mb"] = max(peak["pss_mb"], pss_mb(pid))
                    try:
                        peak["queue"] = max(peak["queue"], queue_depth((await side.get("/metrics")).text))
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.25)

        await asyncio.gather(sample(), *(one_client(i) for i in range(clients)))
    return {"latencies": latencies, "retry_after": retry_after, "peak": peak}


def run_overload(weights_dir: Path, log: Path, *, duration_s: float, clients: int, n: int, queue_size: int,
                 max_batch: int, max_wait_ms: float, timeout_s: float, workers: int = 0) -> dict[str, Any]:
    """Start a server, overload it for duration_s, and return the figures (see the module doc).

    Each worker process holds its own queue of up to queue_size images, and gan_queue_depth sums
    them, so the peak it reports is bounded by workers x queue_size (workers 0: the service's own
    default or GAN_WORKERS from the environment; 2 on a CPU with two or more cores)."""
    settings = dict(queue_size=queue_size, max_batch=max_batch, max_wait_ms=max_wait_ms,
                    request_timeout_s=timeout_s, max_n=max(n, 1))
    if workers:  # else GAN_WORKERS from the environment, or the service's default
        settings["workers"] = workers
    with start_server(weights_dir, log, **settings) as server:
        pid = server.proc.pid
        httpx.post(f"{server.base}/generate", json={"label": 0, "n": n}, timeout=30)  # first-request costs
        memory_before = pss_mb(pid)
        buckets_before = server_latency_buckets(httpx.get(f"{server.base}/metrics", timeout=10).text)
        started = time.monotonic()
        driven = asyncio.run(_drive(server.base, pid, duration_s, clients, n))
        wall = time.monotonic() - started
        time.sleep(1.0)  # let in-flight work finish and the allocator settle
        memory_after = pss_mb(pid)
        after = httpx.get(f"{server.base}/readyz", timeout=10)
        probe = httpx.post(f"{server.base}/generate", json={"label": 3, "n": n, "seed": 1}, timeout=30)
        metrics_after = httpx.get(f"{server.base}/metrics", timeout=10).text
        depth_after = queue_depth(metrics_after)
    buckets = {le: v - buckets_before.get(le, 0.0) for le, v in server_latency_buckets(metrics_after).items()}
    total = buckets.get(float("inf"), 0.0) or float("nan")
    # The deadline covers queue wait and forward; the first bucket at or above it, as a share of all.
    le_deadline = min((le for le in buckets if le >= timeout_s), default=float("inf"))
    lat = driven["latencies"]
    accepted = lat["200"]
    return {
        "settings": {**settings, "clients": clients, "n": n, "duration_s": duration_s},
        "wall_s": round(wall, 2),
        "counts": {k: len(v) for k, v in lat.items()},
        "accepted_images_per_s": round(len(accepted) * n / wall, 1),
        "rejected_503_ms": {"p50": round(1000 * percentile(lat["503"], 50), 1),
                            "p99": round(1000 * percentile(lat["503"], 99), 1),
                            "max": round(1000 * max(lat["503"], default=float("nan")), 1)},
        "retry_after_s": {"min": min(driven["retry_after"], default=None),
                          "max": max(driven["retry_after"], default=None)},
        "accepted_ms": {"p50": round(1000 * percentile(accepted, 50), 1),
                        "p99": round(1000 * percentile(accepted, 99), 1),
                        "max": round(1000 * max(accepted, default=float("nan")), 1),
                        "deadline": round(1000 * timeout_s, 1)},
        "server_side": {"requests": total, "bucket_s": le_deadline,
                        "p50_le_s": bucket_quantile(buckets, 0.5), "p99_le_s": bucket_quantile(buckets, 0.99),
                        "share_within": round(buckets.get(le_deadline, float("nan")) / total, 4)},
        "peak_queue_images": driven["peak"]["queue"],
        "pss_mb": {"before": round(memory_before, 1), "peak": round(driven["peak"]["pss_mb"], 1),
                   "after": round(memory_after, 1)},
        "after": {"readyz": after.status_code, "generate": probe.status_code, "queue_images": depth_after},
    }


# A probe refusal slower than this (the storm's target for a refusal's p99) is listed with its reason.
SLOW_REFUSAL_S = 0.1


def _probe(base: str, stop: threading.Event, n: int, interval_s: float,
           slow: list[dict[str, Any]] | None = None, first: dict[str, Any] | None = None) -> dict[str, list[float]]:
    """One sequential client beside the storm: what a well-behaved client sees (latency by status).
    Each refusal slower than SLOW_REFUSAL_S is appended to `slow` with its message, its
    Retry-After, its request id and when it was sent (seconds into the probing): a refusal at
    admission ("queue full", "expected wait ...") and a request shed after admission ("the queue
    drains slower ...") call for different fixes. `first` gets the status and milliseconds of the
    probe's first request, the one that opens its connection: started with the storm, it meets
    the storm's connections opening all at once, and it was the slowest refusal of every storm
    measured on 2026-12-02 (BENCHMARKS.md)."""
    seen: dict[str, list[float]] = {}
    began = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        seed = 0
        while not stop.is_set():
            seed += 1
            started = time.perf_counter()
            try:
                response = client.post("/generate", json={"label": seed % 10, "n": n, "seed": seed})
                status = str(response.status_code)
            except httpx.TransportError:
                response, status = None, "error"
            seconds = time.perf_counter() - started
            seen.setdefault(status, []).append(seconds)
            if first is not None and seed == 1:
                first.update(status=status, ms=round(1000 * seconds, 1))
            if slow is not None and response is not None and status == "503" and seconds > SLOW_REFUSAL_S:
                slow.append({"ms": round(1000 * seconds, 1), "sent_at_s": round(started - began, 2), "request_no": seed,
                             "message": _message(response), "retry_after": response.headers.get("retry-after"),
                             "request_id": response.headers.get("x-request-id")})
            stop.wait(interval_s)
    return seen


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", ""))
    except ValueError:
        return response.text[:200]


def rejections_by_reason(metrics_text: str) -> dict[str, float]:
    """gan_rejected_requests_total summed over models, by reason (queue_full, shed, ...)."""
    totals: dict[str, float] = {}
    for sample in samples(metrics_text, "gan_rejected_requests"):
        if sample.name.endswith("_total"):
            reason = sample.labels.get("reason", "")
            totals[reason] = totals.get(reason, 0.0) + sample.value
    return totals


def run_storm(weights_dir: Path, log: Path, *, duration_s: float = 15.0, clients: int = 200, n: int = 256,
              single_s: float = 6.0, probe_interval_s: float = 0.05, default_model: str = MODEL,
              single_after_s: float | None = None, **settings: Any) -> dict[str, Any]:
    """A retry storm, measured with wrk: first one client alone (the capacity), then `clients`
    wrk connections posting n images back to back without honouring Retry-After, while a
    sequential probe client measures how fast it is answered; then one client alone again
    (`single_after_s`, default `single_s`; 0 skips it). Same server, same run.

    The goodput ratio is taken against the mean of the two lone-client windows: on a VM whose
    speed drifts by a third within minutes, one window before the storm made the ratio's
    denominator swing (594-977 img/s over 17 runs, BENCHMARKS.md) while the storm's accepted
    images held steady. The window after also shows that a lone client gets its speed back."""
    from bench.wrk import run_wrk

    settings = {"max_n": max(n, 256), **settings}
    with start_server(weights_dir, log, default_model=default_model, **settings) as server:
        httpx.post(f"{server.base}/generate", json={"label": 0, "n": n}, timeout=60)  # first-request costs
        single = run_wrk(server.base, n, 1, single_s)
        probe: dict[str, list[float]] = {}
        slow: list[dict[str, Any]] = []
        first: dict[str, Any] = {}

        def probing(stop: threading.Event) -> None:
            probe.update(_probe(server.base, stop, n, probe_interval_s, slow, first))

        storm = _wrk_beside(server.base, n, clients, duration_s, probing)
        time.sleep(1.0)
        after = httpx.get(f"{server.base}/readyz", timeout=10).status_code
        refused = rejections_by_reason(httpx.get(f"{server.base}/metrics", timeout=10).text)
        after_s = single_s if single_after_s is None else single_after_s
        single_after = run_wrk(server.base, n, 1, after_s) if after_s > 0 else None
    statuses = _wrk_statuses(storm)
    rejections = sorted(probe.get("503", []))
    lone = [single.images_per_s] + ([single_after.images_per_s] if single_after is not None else [])
    capacity = sum(lone) / len(lone)
    return {
        "settings": {**settings, "clients": clients, "n": n, "duration_s": duration_s,
                     "probe_interval_ms": 1000 * probe_interval_s},
        "single_client": {"images_per_s": round(capacity, 1), "p50_ms": round(single.p50_ms, 1),
                          "before_images_per_s": round(single.images_per_s, 1),
                          "after_images_per_s": None if single_after is None else round(single_after.images_per_s, 1),
                          "after_p50_ms": None if single_after is None else round(single_after.p50_ms, 1)},
        "storm": {"answers": storm.extra.get("answers"), "statuses": statuses,
                  "accepted_images_per_s": round(storm.images_per_s, 1),
                  "goodput_ratio": round(storm.images_per_s / capacity, 3) if capacity else float("nan"),
                  "goodput_ratio_range": [round(storm.images_per_s / c, 3) if c else float("nan")
                                          for c in (max(lone), min(lone))],
                  # wrk's latency covers every answer, the fast 503s among them: not the accepted ones'
                  "all_answers_p50_ms": round(storm.p50_ms, 1), "all_answers_p99_ms": round(storm.p99_ms, 1)},
        "probe": {"statuses": {k: len(v) for k, v in probe.items()},
                  "rejection_ms": {"p50": round(1000 * percentile(rejections, 50), 1),
                                   "p99": round(1000 * percentile(rejections, 99), 1),
                                   "max": round(1000 * max(rejections, default=float("nan")), 1)},
                  "first_request": first, "slow_refusals": slow},
        "server_rejections": {reason: int(count) for reason, count in sorted(refused.items())},
        "after": {"readyz": after},
    }


def _wrk_beside(base: str, n: int, clients: int, duration_s: float,
                probing: Callable[[threading.Event], None]) -> LoadReport:
    """wrk's `clients` connections posting n images for duration_s, while `probing(stop)` runs on
    a thread of its own until they end (it returns once `stop` is set)."""
    from bench.wrk import run_wrk

    stop = threading.Event()
    thread = threading.Thread(target=probing, args=(stop,))
    thread.start()
    try:
        return run_wrk(base, n, clients, duration_s)
    finally:
        stop.set()
        thread.join()


def _wrk_statuses(report: LoadReport) -> dict[str, int]:
    """A wrk run's answers by status: its requests counted as 200, its errors by code ("503")."""
    return {"200": report.requests, **{k.removeprefix("http_"): v for k, v in report.errors.items()}}


def run_mixed(weights_dir: Path, log: Path, *, duration_s: float = 12.0, clients: int = 4, n: int = 256,
              probe_n: int = 1, default_model: str = MODEL, **settings: Any) -> dict[str, Any]:
    """Small requests beside large ones: `clients` wrk connections post n images back to back
    (a client's grids, several batches each) while one sequential client posts probe_n images;
    then the same client alone. Prints what the small client waits, and what the large ones get.
    With one worker (the default here) every request meets the same queue; with several, which
    worker a connection lands on decides whom it waits behind."""
    settings = {"max_n": max(n, 256), "workers": 1, **settings}
    with start_server(weights_dir, log, default_model=default_model, **settings) as server:
        httpx.post(f"{server.base}/generate", json={"label": 0, "n": n}, timeout=60)  # first-request costs
        stop = threading.Event()
        alone: dict[str, list[float]] = {}
        timer = threading.Timer(3.0, stop.set)
        timer.start()
        alone.update(_probe(server.base, stop, probe_n, 0.0))
        beside: dict[str, list[float]] = {}

        def probing(stop: threading.Event) -> None:
            time.sleep(1.0)  # once the large requests queue
            beside.update(_probe(server.base, stop, probe_n, 0.0))

        large = _wrk_beside(server.base, n, clients, duration_s, probing)

    def latency(seen: dict[str, list[float]]) -> dict[str, Any]:
        ok = sorted(seen.get("200", []))
        return {"statuses": {k: len(v) for k, v in seen.items()},
                **{f"p{q}_ms": round(1000 * percentile(ok, q), 1) for q in (50, 99)},
                "max_ms": round(1000 * max(ok, default=float("nan")), 1)}

    return {
        "settings": {**settings, "clients": clients, "n": n, "probe_n": probe_n, "duration_s": duration_s},
        "small_alone": latency(alone),
        "small_beside_large": latency(beside),
        "large": {"statuses": _wrk_statuses(large),
                  "req_per_s": round(large.requests / duration_s, 2), "images_per_s": round(large.images_per_s, 1),
                  "p50_ms": round(large.p50_ms, 1), "p99_ms": round(large.p99_ms, 1)},
    }


# --duration, --clients and --n when not given, per mode: the overload (a tiny model, short
# deadline), the retry storm (#14's case) and small requests beside large ones
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "overload": {"duration": 30.0, "clients": 128, "n": 16},
    "storm": {"duration": 15.0, "clients": 200, "n": 256},
    "mixed": {"duration": 12.0, "clients": 4, "n": 256},
}


def machine_line() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # each mode has its own defaults for these three (MODE_DEFAULTS): None here means "not given"
    p.add_argument("--duration", type=float, help="seconds of overload (30; --storm 15, --mixed 12)")
    p.add_argument("--clients", type=int, help="concurrent clients, each posting back to back (128; --storm 200, "
                                               "--mixed 4)")
    p.add_argument("--n", type=int, help="images per request (16; --storm and --mixed 256)")
    p.add_argument("--queue-size", type=int, default=64, help="GAN_QUEUE_SIZE (images)")
    p.add_argument("--max-batch", type=int, default=32, help="GAN_MAX_BATCH")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="GAN_MAX_WAIT_MS")
    p.add_argument("--timeout-s", type=float, default=2.0, help="GAN_REQUEST_TIMEOUT_S (the deadline)")
    p.add_argument("--workers", type=int, default=0,
                   help="GAN_WORKERS (0: the service's default); each worker has its own queue")
    p.add_argument("--weights-dir", type=Path, help="serve these models (default: a tiny random generator)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument("--probe-interval-ms", type=float, default=50.0,
                   help="with --storm: the probe client's pause between its requests (0: back to back, "
                        "which retry pacing cannot tell from a storm client: GAN_REFUSAL_PAUSE_MS)")
    p.add_argument("--storm", action="store_true",
                   help="retry storm with wrk instead: --clients (200) connections of --n (256) images for "
                        "--duration (15) s against the service's own defaults (queue, deadline), beside one "
                        "client alone and a sequential probe; --weights-dir defaults to the shipped weights")
    p.add_argument("--device", default="cpu", help="with --mixed: GAN_DEVICE of the service (cpu, cuda)")
    p.add_argument("--mixed", action="store_true",
                   help="small requests beside large ones: --clients (4) wrk connections of --n (256) images "
                        "for --duration (12) s and one sequential client of 1 image, against the shipped "
                        "weights with --workers (1) worker; the small client's latency alone and beside them")
    args = p.parse_args()
    mode = "storm" if args.storm else "mixed" if args.mixed else "overload"
    for name, value in MODE_DEFAULTS[mode].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.storm:
        storm_main(args)
        return
    if args.mixed:
        mixed_main(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights_dir or write_tiny_model(Path(tmp) / "weights")
        figures = run_overload(weights, Path(tmp) / "server.log", duration_s=args.duration, clients=args.clients,
                               n=args.n, queue_size=args.queue_size, max_batch=args.max_batch,
                               max_wait_ms=args.max_wait_ms, timeout_s=args.timeout_s, workers=args.workers)
    figures["machine"] = machine_line()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    c, rej, acc, rss = figures["counts"], figures["rejected_503_ms"], figures["accepted_ms"], figures["pss_mb"]
    print(f"machine: {figures['machine']}")
    print(f"settings: {figures['settings']}")
    print(f"requests in {figures['wall_s']} s: 200 {c['200']}, 503 {c['503']}, 504 {c['504']}, other {c['other']}"
          f" ({figures['accepted_images_per_s']} images/s accepted)")
    print(f"503 answered in: p50 {rej['p50']} ms, p99 {rej['p99']} ms, max {rej['max']} ms; "
          f"Retry-After {figures['retry_after_s']['min']}..{figures['retry_after_s']['max']} s")
    print(f"accepted latency: p50 {acc['p50']} ms, p99 {acc['p99']} ms, max {acc['max']} ms "
          f"(deadline {acc['deadline']} ms)")
    ss = figures["server_side"]
    print(f"server-side (gan_request_latency_seconds): {100 * ss['share_within']:.2f}% of {ss['requests']:.0f} "
          f"requests answered within {ss['bucket_s']} s; p50 <= {ss['p50_le_s']} s, p99 <= {ss['p99_le_s']} s")
    per_worker = f"{args.queue_size} per worker, {args.workers} workers" if args.workers else \
        f"{args.queue_size} per worker, default workers"
    print(f"peak queue: {figures['peak_queue_images']:.0f} images, summed over workers (limit {per_worker})")
    print(f"server memory (PSS): {rss['before']} MiB before, {rss['peak']} MiB peak, {rss['after']} MiB after")
    a = figures["after"]
    print(f"afterwards: /readyz {a['readyz']}, /generate {a['generate']}, queue {a['queue_images']:.0f} images")


def storm_main(args: argparse.Namespace) -> None:
    weights = args.weights_dir or ROOT / "weights"
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_storm(weights, Path(tmp) / "server.log", duration_s=args.duration, clients=args.clients, n=args.n,
                            probe_interval_s=args.probe_interval_ms / 1000,
                            default_model="fashion-mnist-cwgangp" if args.weights_dir is None else MODEL)
    figures["machine"] = machine_line()
    print(json.dumps(figures, indent=2))


def mixed_main(args: argparse.Namespace) -> None:
    weights = args.weights_dir or ROOT / "weights"
    with tempfile.TemporaryDirectory() as tmp:
        figures = run_mixed(weights, Path(tmp) / "server.log", duration_s=args.duration, clients=args.clients, n=args.n,
                            workers=args.workers or 1, device=args.device,
                            default_model="fashion-mnist-cwgangp" if args.weights_dir is None else MODEL)
    figures["machine"] = machine_line()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
