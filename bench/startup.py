"""The service's start-up price per batch grid: seconds from `python -m service` to `/readyz` 200,
and the resident memory of its process tree (supervisor, workers, engines) at that moment.
Every warmed-up batch size costs start-up time and, on a CPU, memory (oneDNN keeps buffers per
shape), so this is what `GAN_BATCH_GRID` and `GAN_MAX_BATCH` are weighed against. The grids
are started in turn, round after round (the order reversed every other round), so that a drift
of the VM's speed reaches each of them.

    python -m bench.startup [--grids powers,fine,every] [--max-batch 64] [--rounds 2]
                            [--weights-dir weights] [--env GAN_WORKERS=2 ...] [--json out.json]

`--weights-dir` is served whole (every model in it), as the shipped service is. Resident memory
sums each process's RSS (bench.common.rss_mb), so pages the workers share count once per process;
memory (PSS, bench.common.pss_mb) splits each shared page among its sharers: what the tree holds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    REPO,
    ServerProcess,
    free_port,
    machine_info,
    process_tree,
    pss_mb,
    rss_mb,
    stop_servers_on_sigterm,
)

GRIDS = ("auto", "powers", "fine", "every")


def start_once(grid: str, max_batch: int, weights_dir: Path, env: dict[str, str], log_path: Path,
               timeout_s: float) -> dict[str, Any]:
    """Start the service with this grid, time it to ready, read its memory, stop it."""
    port = free_port()
    server = ServerProcess(f"ours-{grid}", [PYTHON, "-m", "service"], port, "/readyz", env={
        **env, "GAN_HOST": "127.0.0.1", "GAN_PORT": str(port), "GAN_WEIGHTS_DIR": str(weights_dir),
        "GAN_BATCH_GRID": grid, "GAN_MAX_BATCH": str(max_batch), "GAN_LOG_LEVEL": "warning",
    }, log_path=log_path)
    server.settle_max_s = 0.0  # ready is the end of the measurement: no wait for a quiet machine
    started = time.monotonic()
    server.start(timeout_s)
    try:
        ready_s = time.monotonic() - started
        return {"grid": grid, "max_batch": max_batch, "ready_s": ready_s, "resident_mib": rss_mb(server.pid),
                "pss_mib": pss_mb(server.pid), "processes": len(process_tree(server.pid))}
    finally:
        server.stop()


def rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (grid, max batch), in first-seen order: rounds, median and range of the ready time, the
    median resident memory."""
    keys = list(dict.fromkeys((r["grid"], r["max_batch"]) for r in results))
    table = []
    for grid, max_batch in keys:
        mine = [r for r in results if (r["grid"], r["max_batch"]) == (grid, max_batch)]
        ready = [r["ready_s"] for r in mine]
        table.append({"grid": grid, "max_batch": max_batch, "rounds": len(mine),
                      "ready_s": statistics.median(ready), "ready_min_s": min(ready), "ready_max_s": max(ready),
                      "resident_mib": statistics.median(r["resident_mib"] for r in mine),
                      "pss_mib": statistics.median(r.get("pss_mib", math.nan) for r in mine)})
    return table


def markdown(table: list[dict[str, Any]]) -> str:
    lines = ["| grid | GAN_MAX_BATCH | rounds | ready after, median (range) | resident at ready (RSS sum) | "
             "memory at ready (PSS) |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in table:
        lines.append(f"| `{row['grid']}` | {row['max_batch']} | {row['rounds']} | {row['ready_s']:.1f} s "
                     f"({row['ready_min_s']:.1f}-{row['ready_max_s']:.1f}) | {row['resident_mib']:,.0f} MiB | "
                     f"{row['pss_mib']:,.0f} MiB |")
    return "\n".join(lines)


def parse_env(items: list[str]) -> dict[str, str]:
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("GAN_"):
            raise SystemExit(f"--env {item!r}: expected GAN_NAME=VALUE")
        env[name] = value
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", default="powers,fine,every", help=f"GAN_BATCH_GRID values, of {','.join(GRIDS)}")
    p.add_argument("--max-batch", default="64", help="GAN_MAX_BATCH values, comma-separated")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--weights-dir", default=str(REPO / "weights"), help="served whole, as the shipped service is")
    p.add_argument("--env", action="append", default=[], help="GAN_NAME=VALUE for every start (any number)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="a start that takes longer fails the run")
    p.add_argument("--json", default=None, help="write every start here")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="server logs")
    args = p.parse_args()
    stop_servers_on_sigterm()
    grids = [g.strip().lower() for g in args.grids.split(",") if g.strip()]
    if not grids or any(g not in GRIDS for g in grids):
        raise SystemExit(f"--grids {args.grids!r}: choose from {','.join(GRIDS)}")
    try:
        max_batches = [int(b) for b in args.max_batch.split(",") if b.strip()]
    except ValueError:
        raise SystemExit(f"--max-batch {args.max_batch!r}: expected whole numbers, comma-separated") from None
    if not max_batches or args.rounds < 1:
        raise SystemExit("--max-batch needs a value and --rounds at least 1")
    weights_dir = Path(args.weights_dir)
    if not weights_dir.is_dir():
        raise SystemExit(f"--weights-dir {weights_dir}: not a folder")
    env = parse_env(args.env)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"# machine: {json.dumps(machine_info('cpu'))}\n# weights: {weights_dir}; env: {env}", flush=True)
    cases = [(g, b) for b in max_batches for g in grids]
    results = []
    for round_no in range(args.rounds):
        for grid, max_batch in cases if round_no % 2 == 0 else cases[::-1]:
            result = start_once(grid, max_batch, weights_dir, env, out_dir / f"startup-{grid}-{max_batch}.log",
                                args.timeout_s)
            results.append({"round": round_no, **result})
            print(f"round {round_no}: {grid} max {max_batch}: ready after {result['ready_s']:.1f} s, "
                  f"{result['resident_mib']:,.0f} MiB RSS sum, {result['pss_mib']:,.0f} MiB PSS, in {result['processes']} processes", flush=True)
    print()
    print(markdown(rows(results)))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "starts": results}, indent=2))


if __name__ == "__main__":
    main()
