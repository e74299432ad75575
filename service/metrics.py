"""Prometheus metrics, each app with its own CollectorRegistry (tests build many apps)."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _process_rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as fh:
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
        self.queue_depth = Gauge("gan_queue_depth", "Images waiting in a model's queue", ["model"], registry=r)
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
        self.load_seconds = Gauge("gan_model_load_seconds", "Time to load and warm up a model", ["model"], registry=r)
        self.model_loaded = Gauge("gan_model_loaded", "1 when the model serves, 0 when it failed to load", ["model"],
                                  registry=r)
        self.device_memory = Gauge(
            "gan_device_memory_bytes", "CUDA memory allocated by torch, or the process RSS on CPU", ["device"],
            registry=r,
        )

    def watch_device(self, device: torch.device) -> None:
        if device.type == "cuda":
            self.device_memory.labels(device=str(device)).set_function(
                lambda: float(torch.cuda.memory_allocated(device))
            )
        else:
            self.device_memory.labels(device="cpu").set_function(_process_rss_bytes)

    def watch_queue(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model=model).set_function(depth)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def observe_batch(self, model: str, images: int, seconds: float) -> None:
        self.batch_size.labels(model=model).observe(images)
        self.images.labels(model=model).inc(images)
        self.inference.labels(model=model).observe(seconds)

    def observe_batch_failure(self, model: str) -> None:
        self.batch_failures.labels(model=model).inc()

    def observe_rejection(self, model: str, reason: str) -> None:
        self.rejected.labels(model=model, reason=reason).inc()

    def observe_load(self, model: str, seconds: float | None, loaded: bool) -> None:
        if seconds is not None:
            self.load_seconds.labels(model=model).set(seconds)
        self.model_loaded.labels(model=model).set(1.0 if loaded else 0.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
