"""How the OpenMP wait policy changes a lone forward: one process per setting (libgomp reads
OMP_WAIT_POLICY and GOMP_SPINCOUNT once, at start-up), each running the generator's forward at
batch n with a pause between forwards, as between one client's requests. The processes take
turns in rounds, the order reversed every other round, and each round's median is divided by
the reference setting's in the same round, so a VM's drift cancels (as in bench.paired).

    python -m bench.omp_wait [--weights DIR] [--n 1] [--gap-ms 0.5] [--rounds 8] [--forwards 150]
                             [--threads 2] [--settings spin,passive,default,spin10000]

A setting is one of GAN_OMP_WAIT_POLICY's: `spin` (what the service's engines use by default:
OMP_WAIT_POLICY=ACTIVE with a bounded GOMP_SPINCOUNT), `passive` or `active`; or `default`
(libgomp's own: spin a while, then sleep), or `spinN` (GOMP_SPINCOUNT=N, libgomp's policy). Prints each setting's median forward time and its ratio to the first
setting. Run it on a quiet machine: it measures a forward, not a server.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, paired_ratios, summary
from service.engine import omp_environment

DEFAULT_SETTINGS = "spin,passive,default,spin10000"


def environment(setting: str) -> dict[str, str]:
    """The environment variables that make `setting`; ValueError for an unknown name."""
    if setting == "default":
        return {}
    if setting in ("spin", "passive", "active"):
        return omp_environment(setting)
    if setting.startswith("spin") and setting[4:].isdigit():
        return {"GOMP_SPINCOUNT": setting[4:]}
    raise ValueError(f"unknown setting {setting!r}: spin, passive, active, default or spinN")


def worker(weights: Path, n: int, gap_s: float, forwards: int, threads: int) -> None:
    """The child: warm up, say ready, then for each line on stdin time `forwards` forwards and
    print their median in ms."""
    import torch

    from bench import work

    torch.set_num_threads(threads)
    model, latent_dim = work.load_model(weights, "cpu")
    z, labels = work.request_inputs(3, n, 0, latent_dim)
    for _ in range(20):
        work.forward(model, z, labels, "cpu")
    print("ready", flush=True)
    for _ in sys.stdin:
        times = []
        for _ in range(forwards):
            time.sleep(gap_s)
            started = time.perf_counter()
            work.forward(model, z, labels, "cpu")
            times.append(time.perf_counter() - started)
        print(f"{1000 * statistics.median(times):.4f}", flush=True)


def measure(settings: list[str], weights: Path, n: int, gap_s: float, rounds: int, forwards: int,
            threads: int) -> dict[str, list[float]]:
    """Per setting, its median forward ms in each round."""
    for setting in settings:
        environment(setting)  # fail before starting anything
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    base["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "bench.omp_wait", "--worker", "--weights", str(weights), "--n", str(n),
               "--gap-ms", str(1000 * gap_s), "--forwards", str(forwards), "--threads", str(threads)]
    children: dict[str, subprocess.Popen[str]] = {}
    try:
        for setting in settings:
            child = subprocess.Popen(command, env={**base, **environment(setting)}, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
            children[setting] = child
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the worker for {setting} did not start")
        medians: dict[str, list[float]] = {s: [] for s in settings}
        for r in range(rounds):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                child = children[setting]
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write("go\n")
                child.stdin.flush()
                medians[setting].append(float(child.stdout.readline()))
        return medians
    finally:
        for child in children.values():
            if child.stdin:
                child.stdin.close()
            child.wait(timeout=30)


def table(medians: dict[str, list[float]]) -> str:
    """Markdown: each setting's median ms (over rounds) and its round-by-round ratio to the first."""
    reference = next(iter(medians))
    rows = ["| setting | forward ms, median (range) | against " + reference + ", median (range) |",
            "|---|---|---|"]
    for setting, values in medians.items():
        ms, ratio = summary(values), summary(paired_ratios(values, medians[reference]))
        rows.append(f"| {setting} | {ms['median']:.2f} ({ms['min']:.2f}-{ms['max']:.2f}) | "
                    f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}) |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=REPO / "weights" / "fashion-mnist-cwgangp")
    p.add_argument("--n", type=int, default=1, help="images per forward")
    p.add_argument("--gap-ms", type=float, default=0.5, help="pause before each forward")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--forwards", type=int, default=150, help="forwards per setting and round")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help=f"comma-separated (default {DEFAULT_SETTINGS})")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.weights, args.n, args.gap_ms / 1000, args.forwards, args.threads)
        return
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    try:
        medians = measure(settings, args.weights, args.n, args.gap_ms / 1000, args.rounds, args.forwards,
                          args.threads)
    except ValueError as exc:
        p.exit(2, f"error: {exc}\n")
    print(f"n={args.n}, {args.threads} threads, {args.gap_ms:g} ms between forwards, {args.rounds} rounds "
          f"of {args.forwards} forwards")
    print(table(medians))


if __name__ == "__main__":
    main()
