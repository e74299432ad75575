"""Baseline 5, the ceiling: the service's per-request work done in-process with no HTTP and no
queue. Each iteration draws the seeded latents of r requests of n images, runs one forward of
r * n images and encodes r PNG grids, one after another in one thread.

`python -m bench.ceiling --weights DIR --n 1 --requests 64` is the ceiling as a process that
bench.paired times in windows beside the servers: it loads the model once, then for each line
SECONDS on its stdin runs the ceiling that long and answers one JSON line (a LoadReport)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench import work
from bench.common import REPO, machine_busy_seconds
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


def accounted_window(model: object, latent_dim: int, device: str, n: int, r: int, duration_s: float,
                     warmup_s: float) -> LoadReport:
    """run_ceiling, with the cores this process used (`ceiling_cores`) and those busy outside it
    (`other_cores`, what bench.serve.disturbed reads) over the call, warm-up included."""
    own0, busy0, t0 = time.process_time(), machine_busy_seconds(), time.perf_counter()
    report = run_ceiling(model, latent_dim, device, n, r, duration_s, warmup_s)
    wall = time.perf_counter() - t0
    own, busy = time.process_time() - own0, machine_busy_seconds() - busy0
    report.extra.update(ceiling_cores=round(own / wall, 2), other_cores=round((busy - own) / wall, 2))
    return report


def choose_threads(model: object, latent_dim: int, device: str, n: int, r: int, candidates: list[int],
                   duration_s: float, rounds: int = 3) -> LoadReport:
    """The ceiling at its best torch thread count: `rounds` windows of duration_s / rounds per
    candidate, the candidates alternated (the order reversed every other round) so that a drift or
    an outside job reaches them alike; the highest median images/s wins, and its median window is
    the report. Its `other_cores` is the most any window had: the choice rests on all of them."""
    windows: dict[int, list[LoadReport]] = {t: [] for t in candidates}
    for i in range(rounds):
        for threads in candidates if i % 2 == 0 else candidates[::-1]:
            torch.set_num_threads(threads)
            windows[threads].append(accounted_window(model, latent_dim, device, n, r, duration_s / rounds, 0.2))
    medians = {t: statistics.median(w.images_per_s for w in ws) for t, ws in windows.items()}
    best = max(medians, key=lambda t: medians[t])
    report = sorted(windows[best], key=lambda w: w.images_per_s)[(rounds - 1) // 2]
    report.extra.update(
        torch_threads=best, windows_per_thread_count=rounds,
        median_images_per_s_by_threads={str(t): round(m, 1) for t, m in medians.items()},
        other_cores=max(w.extra["other_cores"] for ws in windows.values() for w in ws))
    return report


def load(weights: Path, device: str) -> tuple[object, int]:
    return work.load_model(weights, device)


class CeilingProcess:
    """The ceiling in a process of its own, timed one window at a time (bench.paired): idle, it
    waits on its stdin and costs nothing, like the servers between their windows."""

    def __init__(self, weights: Path, device: str, n: int, requests: int, threads: int, log_path: Path | None = None):
        self.argv = [sys.executable, "-m", "bench.ceiling", "--weights", str(weights), "--device", device,
                     "--n", str(n), "--requests", str(requests), "--threads", str(threads)]
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> CeilingProcess:
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, start_new_session=True)
        try:
            if self._line() != "ready":
                raise RuntimeError(f"the ceiling process did not start; see {self.log_path}")
        except BaseException:  # also a SIGTERM's SystemExit while it loads the model
            self.__exit__()  # no `with` body will run, so nothing else would end it
            raise
        return self

    def window(self, seconds: float) -> LoadReport:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        fields = {f.name for f in dataclasses.fields(LoadReport)}
        return LoadReport(**{k: v for k, v in json.loads(self._line()).items() if k in fields})

    def _line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the ceiling process exited with {self.proc.wait()}; see {self.log_path}")
        return line.strip()

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # its loop ends at end of input
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()


def serve_windows(weights: Path, device: str, n: int, requests: int, threads: int) -> None:
    """CeilingProcess's other end: one JSON report per line SECONDS read from stdin."""
    torch.set_num_threads(threads)
    model, latent_dim = load(weights, device)
    print("ready", flush=True)
    for line in sys.stdin:
        report = run_ceiling(model, latent_dim, device, n, requests, float(line), warmup_s=0.2)
        print(json.dumps(report.to_dict()), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--requests", type=int, default=64, help="requests per forward")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    args = p.parse_args()
    serve_windows(args.weights, args.device, args.n, args.requests, args.threads)


if __name__ == "__main__":
    main()
