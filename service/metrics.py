"""Prometheus metrics, each app with its own CollectorRegistry (tests build many apps).

With several worker processes (GAN_WORKERS > 1), `python -m service` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start: prometheus-client then keeps
every value in a memory-mapped file per process, and /metrics, whichever worker answers it,
adds them up (gauges per their multiprocess mode). Gauges are therefore set, never computed at
scrape time by a callback, which that mode cannot aggregate.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def process_rss_bytes(pid: int | str = "self") -> float:
    """Resident memory of a process (this one by default) from /proc; NaN where there is none."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float("nan")


class ServiceMetrics:
    """All the service's metrics; the batcher and the middleware call the observe_* methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gan_requests", "HTTP requests by route, method and status", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "gan_request_latency_seconds", "HTTP request latency", ["route", "method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("gan_queue_depth", "Images waiting in a model's queue (summed over worker processes)", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        self.batch_size = Histogram(
            "gan_batch_size", "Images per generator forward (before padding)", ["model"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.images = Counter("gan_images_generated", "Images generated", ["model"], registry=r)
        self.inference = Histogram(
            "gan_inference_seconds", "Wall time of one batched forward, copy back included", ["model"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_failures = Counter("gan_batch_failures", "Forwards that raised", ["model"], registry=r)
        self.rejected = Counter(
            "gan_rejected_requests", "Requests refused by a full queue (503) or a deadline (504)", ["model", "reason"],
            registry=r,
        )
        self.load_seconds = Gauge("gan_model_load_seconds", "Time to load and warm up a model", ["model"], registry=r,
                                  multiprocess_mode="livemax")
        self.model_loaded = Gauge(
            "gan_model_loaded", "1 when the model serves (in every worker), 0 when it failed to load or broke",
            ["model"], registry=r, multiprocess_mode="livemin",
        )
        self.device_memory = Gauge(
            "gan_device_memory_bytes", "CUDA memory allocated by torch, or resident memory on a CPU: every "
            "worker and its engine processes",
            ["device"], registry=r, multiprocess_mode="livesum",
        )
        self.refusals_held = Counter(
            "gan_refusals_held", "503s held before sending: the connection asked again at once after its last "
            "503 (retry pacing, GAN_REFUSAL_PAUSE_MS)", registry=r,
        )
        self.cancelled = Counter(
            "gan_cancelled", "Requests dropped before their forward because the client went away", ["model"],
            registry=r,
        )
        self.key_images = Counter(
            "gan_key_images", "Images served (status 200) per API key, by key id (8 hex digits of the key's SHA-256)",
            ["key_id"], registry=r,
        )
        self.key_refused = Counter(
            "gan_key_refused", "Requests refused for their key: 401 (key_id none or invalid) and 429 (rate limit)",
            ["key_id", "status"], registry=r,
        )
        self.lone_holds = Counter(
            "gan_engine_lone_holds", "Times an engine ran its lone batches on its shared thread count for a while "
            "because forwards on every core ran slow: other processes busy on the cores (see GAN_OMP_WAIT_POLICY)",
            ["model"], registry=r,
        )
        self.reloads = Counter(
            "gan_model_reloads", "Models changed by POST /admin/reload, per worker: added, replaced, removed, failed",
            ["model", "result"], registry=r,
        )
        self._device: torch.device | None = None
        self._engines_memory: Callable[[], float] | None = None
        self._request_children: dict[tuple[str, str, int], tuple[object, object]] = {}
        self._queue_children: dict[str, object] = {}
        self._batch_children: dict[str, tuple[object, object, object]] = {}  # observe_batch's, per model

    def watch_device(self, device: torch.device, engines_memory: Callable[[], float] | None = None) -> None:
        """Report `device`'s memory from now on; `engines_memory()` adds what this worker's engine
        processes hold (the models live there with GAN_ENGINE=process: this process alone would
        read 0 CUDA bytes and only its own RSS)."""
        self._device = device
        self._engines_memory = engines_memory
        self.refresh()

    def refresh(self) -> None:
        """Set the gauges that are read from the process (memory); called before a scrape and
        periodically, so that every worker's file is current."""
        if self._device is None:
            return
        engines = self._engines_memory() if self._engines_memory is not None else 0.0
        if self._device.type == "cuda":
            own = float(torch.cuda.memory_allocated(self._device)) if torch.cuda.is_initialized() else 0.0
            self.device_memory.labels(device=str(self._device)).set(own + engines)
        else:
            self.device_memory.labels(device="cpu").set(process_rss_bytes() + engines)

    def observe_queue(self, model: str, images: int) -> None:
        child = self._queue_children.get(model)
        if child is None:  # .labels() once per model: this runs at every submit and every batch
            child = self._queue_children[model] = self.queue_depth.labels(model=model)
        child.set(images)  # type: ignore[attr-defined]

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:  # .labels() takes a lock and builds a tuple; once per label set is enough
            children = (self.requests.labels(route=route, method=method, status=str(status)),
                        self.latency.labels(route=route, method=method))
            self._request_children[key] = children
        children[0].inc()  # type: ignore[attr-defined]
        children[1].observe(seconds)  # type: ignore[attr-defined]

    def observe_cancelled(self, model: str, requests: int = 1) -> None:
        self.cancelled.labels(model=model).inc(requests)

    def observe_batch(self, model: str, images: int, seconds: float) -> None:
        children = self._batch_children.get(model)
        if children is None:  # once per model: at one client every request is a batch of its own
            children = self._batch_children[model] = (self.batch_size.labels(model=model),
                                                      self.images.labels(model=model),
                                                      self.inference.labels(model=model))
        children[0].observe(images)  # type: ignore[attr-defined]
        children[1].inc(images)  # type: ignore[attr-defined]
        children[2].observe(seconds)  # type: ignore[attr-defined]

    def observe_lone_holds(self, model: str, holds: int) -> None:
        self.lone_holds.labels(model=model).inc(holds)

    def observe_batch_failure(self, model: str) -> None:
        self.batch_failures.labels(model=model).inc()

    def observe_rejection(self, model: str, reason: str) -> None:
        self.rejected.labels(model=model, reason=reason).inc()

    def observe_refusal_held(self) -> None:
        self.refusals_held.inc()

    def observe_load(self, model: str, seconds: float | None, loaded: bool) -> None:
        if seconds is not None:
            self.load_seconds.labels(model=model).set(seconds)
        self.model_loaded.labels(model=model).set(1.0 if loaded else 0.0)

    def observe_key_images(self, key_id: str, images: int) -> None:
        self.key_images.labels(key_id=key_id).inc(images)

    def observe_key_refused(self, key_id: str, status: int) -> None:
        self.key_refused.labels(key_id=key_id, status=str(status)).inc()

    def observe_reload(self, model: str, result: str) -> None:
        self.reloads.labels(model=model, result=result).inc()

    def observe_removed(self, model: str) -> None:
        """A model taken away by a reload: its gauges go (prometheus-client cannot remove a
        label set in multiprocess mode: there they read 0)."""
        self._queue_children.pop(model, None)  # a model loaded again under this name gets a fresh child
        self._batch_children.pop(model, None)
        if multiprocess_dir() is not None:
            self.queue_depth.labels(model=model).set(0)
            self.model_loaded.labels(model=model).set(0)
            return
        for gauge in (self.queue_depth, self.model_loaded, self.load_seconds):
            gauge.remove(model)

    def render(self) -> bytes:
        self.refresh()
        if os.environ.get(MULTIPROC_ENV):  # several workers: add up every process's files
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


def multiprocess_dir() -> Path | None:
    """The folder every worker of `python -m service` shares (GAN_WORKERS > 1), or None.

    prometheus-client keeps each worker's values there; the rate limiter and reload use it too
    (service/shared.py)."""
    folder = os.environ.get(MULTIPROC_ENV)
    return Path(folder) if folder else None


def forget_dead_workers() -> None:
    """Drop the live gauges of worker processes that no longer exist (a killed worker's queue
    depth would otherwise be added forever); counters keep their totals."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder or not os.path.isdir(folder):
        return
    pids = set()
    for name in os.listdir(folder):
        stem = name.rsplit(".", 1)[0]
        if stem.startswith("gauge_live") and stem.rsplit("_", 1)[-1].isdigit():
            pids.add(int(stem.rsplit("_", 1)[-1]))
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)
        except PermissionError:
            pass
