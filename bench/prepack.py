"""The forward with packed convolution weights (GAN_PREPACK) against eager, in one process.

Two `Runner`s of the same weights, one with `prepack` on and one off, timed in turns (the median
of each round's median call), with whether their uint8 images are equal:

    python -m bench.prepack [--weights DIR] [--threads 1,2] [--sizes 1,2,4,8,16,32,64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench.common import resolve_weights
from gancore.weights import load_generator
from service.inference import Runner, RunnerOptions


def median_ms(fn: Callable[[], Any], calls: int) -> float:
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(weights: Path, threads: list[int], sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    """One row per (threads, batch size): eager and packed ms, and whether the pixels are equal."""
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        runners = {packed: Runner(load_generator(weights, device="cpu"), torch.device("cpu"),
                                  RunnerOptions(prepack=packed)) for packed in (False, True)}
        if not runners[True].prepacked:
            raise SystemExit("the packed runner fell back to eager (see the log); nothing to compare")
        for runner in runners.values():
            runner.warmup(sizes)
        eager_runner = runners[False]
        for b in sizes:
            z = torch.randn(b, eager_runner.latent_dim)
            labels = torch.randint(0, int(eager_runner.config["num_classes"]), (b,)) if eager_runner.conditional else None
            rows_in = (z, labels, labels, torch.zeros(b))
            same = torch.equal(*(r.forward(*rows_in) for r in runners.values()))
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for packed, runner in runners.items():
                    times[packed].append(median_ms(partial(runner.forward, *rows_in), max(10, 400 // b)))
            rows.append({"threads": n_threads, "batch": b, "eager_ms": statistics.median(times[False]),
                         "packed_ms": statistics.median(times[True]), "same_pixels": same})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| threads | batch | eager ms | packed ms | packed / eager | same pixels |",
             "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['threads']} | {r['batch']} | {r['eager_ms']:.2f} | {r['packed_ms']:.2f} | "
              f"{r['packed_ms'] / r['eager_ms']:.2f}x | {r['same_pixels']} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="generator folder; default: the shipped one")
    p.add_argument("--threads", default="1,2", help="torch intra-op threads")
    p.add_argument("--sizes", default="1,2,4,8,16,32,64", help="batch sizes")
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    weights = resolve_weights(a.weights)
    print(f"# {weights}; torch {torch.__version__}")
    print(table(measure(weights, [int(t) for t in a.threads.split(",")], [int(s) for s in a.sizes.split(",")],
                        a.rounds)))


if __name__ == "__main__":
    main()
