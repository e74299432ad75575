"""Render threads (GAN_RENDER_THREADS): the answers per second of one engine process, driven
directly (no HTTP, no front) with its pipeline kept full, as the batcher keeps it, for each
number of render threads, in alternating rounds.

    python -m bench.render [--device cuda] [--threads 0,1,2,4] [--cases n64,n16,n1]
                           [--rounds 3] [--window 2] [--stand-in-ms 0.3] [--weights DIR] [--json out.json]

Cases: `n64` batches of one 64-image grid, `n16` of four 16-image grids, `n1` of 64 one-image
PNGs; every batch is 64 images. On a GPU the forward is the real one. On a CPU it takes most of
the engine's time and hides the renders, so `--stand-in-ms` replaces every forward after the
first of each batch size by a sleep of that long that returns the first one's images
(bench/standin.py: what a GPU's forward looks like from the CPU, a wait without the interpreter
lock). The renders, the pipe and the engine's threads are the service's own.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from bench import standin
from bench.common import machine_info, resolve_weights, summary
from service import engine as engine_module
from service.engine import EngineClient
from service.inference import RunnerOptions
from service.rendering import RenderSpec

BATCH = 64
CASES = {"n64": (64, 8), "n16": (16, 4), "n1": (1, 1)}  # images per request, grid width


def _stand_in_engine_main(*args: Any, **kwargs: Any) -> None:
    """The engine process's entry with the stand-in forward installed (spawn imports this module)."""
    standin.install()
    engine_module._engine_main(*args, **kwargs)


def start_engine(weights: Path, device: str, render_threads: int, stand_in_s: float) -> EngineClient:
    engine = EngineClient(weights, weights.name, torch.device(device), RunnerOptions(),
                          threads=max(1, torch.get_num_threads()), render_threads=render_threads)
    real_main = engine_module._engine_main
    if stand_in_s > 0:  # the spawned child reads both when it starts; this process keeps neither
        os.environ[standin.ENV] = repr(stand_in_s)
        engine_module._engine_main = _stand_in_engine_main  # type: ignore[assignment]
    try:
        engine.start([1, 2, 4, 8, 16, 32, BATCH]).result()
    finally:
        engine_module._engine_main = real_main
        os.environ.pop(standin.ENV, None)
    return engine


def answers_per_second(engine: EngineClient, case: str, seconds: float) -> float:
    """Images answered per second, with `pipeline_depth` batches in flight."""
    per_request, nrow = CASES[case]
    z = torch.randn(BATCH, engine.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(BATCH) % 10 if engine.conditional else None
    renders: list[tuple[int, Any]] = [(per_request, RenderSpec("png", nrow, 2, 1))] * (BATCH // per_request)
    pending: collections.deque[Any] = collections.deque()
    answered = 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        while len(pending) < engine.pipeline_depth:
            pending.append(engine.submit(z, labels, labels, None, renders))
        results, _, _ = pending.popleft().result()
        assert all(ok for ok, _ in results), results
        answered += BATCH
    while pending:
        pending.popleft().result()
    return answered / (time.perf_counter() - started)


def measure(weights: Path, device: str, threads: list[int], cases: list[str], rounds: int, window: float,
            stand_in_s: float) -> dict[str, dict[int, list[float]]]:
    """{case: {render threads: images/s per round}}, every engine up at once and taken in turn,
    the order reversed every other round."""
    engines = {t: start_engine(weights, device, t, stand_in_s) for t in threads}
    results: dict[str, dict[int, list[float]]] = {c: {t: [] for t in threads} for c in cases}
    try:
        for r in range(rounds):
            order = threads if r % 2 == 0 else threads[::-1]
            for case in cases:
                for t in order:
                    answers_per_second(engines[t], case, min(0.5, window / 2))  # warm this engine's caches
                    results[case][t].append(answers_per_second(engines[t], case, window))
    finally:
        for e in engines.values():
            e.close()
    return results


def table(results: dict[str, dict[int, list[float]]]) -> str:
    lines = ["| case | render threads | images/s median (min-max) | / none, paired median |", "|---|---:|---:|---:|"]
    for case, by_threads in results.items():
        base = by_threads.get(0) or next(iter(by_threads.values()))
        for t, values in by_threads.items():
            s = summary(values)
            ratio = summary([a / b for a, b in zip(values, base, strict=True) if b > 0])
            lines.append(f"| {case} | {t} | {s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f}) | "
                         f"{ratio['median']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="0,1,2,4", help="render thread counts to compare (0: none)")
    parser.add_argument("--cases", default="n64,n16,n1", help=f"of {','.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=2.0, help="measured seconds per engine per case per round")
    parser.add_argument("--stand-in-ms", type=float, default=None,
                        help="forward replaced by a sleep of this long (default: 0.3 on a CPU, 0 = real on a GPU)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None)
    a = parser.parse_args()
    threads = [int(t) for t in a.threads.split(",")]
    cases = a.cases.split(",")
    if unknown := [c for c in cases if c not in CASES]:
        parser.error(f"--cases: unknown {', '.join(unknown)}; of {', '.join(CASES)}")
    stand_in_ms = a.stand_in_ms if a.stand_in_ms is not None else (0.3 if a.device == "cpu" else 0.0)
    weights = resolve_weights(a.weights)
    info = machine_info(a.device)
    print(f"# machine: {json.dumps(info)}")
    print(f"# weights: {weights}; forward: {f'stand-in, {stand_in_ms:g} ms' if stand_in_ms else 'real'}")
    results = measure(weights, a.device, threads, cases, a.rounds, a.window, stand_in_ms / 1000)
    print(table(results))
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "weights": str(weights), "stand_in_ms": stand_in_ms,
                                            "results": results}, indent=1))


if __name__ == "__main__":
    main()
