"""Baseline 5, the ceiling: the service's per-request work done in-process with no HTTP and no
queue. Each iteration draws the seeded latents of r requests of n images, runs one forward of
r * n images and encodes r PNG grids, one after another in one thread."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench import work
from bench.loadgen import LoadReport, summarize


def requests_per_batch(mean_batch_images: float, n: int) -> int:
    """The batch the service reached, in whole requests of n images (at least one)."""
    return max(1, round(mean_batch_images / n))


def run_ceiling(model: object, latent_dim: int, device: str, n: int, r: int, duration_s: float,
                warmup_s: float = 0.5) -> LoadReport:
    """Latency in the report is one iteration's time: when every request of the batch is done."""

    def one(i: int) -> None:
        inputs = [work.request_inputs((i + j) % 10, n, 1_000_003 * (i + j) + 7, latent_dim) for j in range(r)]
        z = torch.cat([x for x, _ in inputs])
        labels = torch.cat([y for _, y in inputs])
        images = work.forward(model, z, labels, device)  # synchronises: images are on the CPU
        for j in range(r):
            work.png(images[j * n : (j + 1) * n])

    i = 0
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        one(i)
        i += 1
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s:
        t0 = time.perf_counter()
        one(i)
        times.append(time.perf_counter() - t0)
        i += 1
    elapsed = time.perf_counter() - start
    report = summarize(times, images=len(times) * r * n, errors={}, seconds=elapsed)
    report.requests = len(times) * r  # requests completed, each batch answers r of them
    report.extra = {"requests_per_batch": r, "batch_images": r * n}
    return report


def load(weights: Path, device: str) -> tuple[object, int]:
    return work.load_model(weights, device)
