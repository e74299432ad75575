"""Paired comparison of servers on a VM whose speed drifts: every server is up at once, and wrk
hits them in turn, one short window each, round after round (the order reversed every other
round). A drift of the machine then reaches all of them within seconds of each other, and the
per-round ratio against a reference server cancels it, where separate runs minutes apart do not
(on the 2-vCPU EPYC the plain FastAPI server's n=1 C=1 cell read 151 req/s at 06:35 and 207-282
at 07:05, BENCHMARKS.md). Idle servers must cost nothing meanwhile: ours parks its engines, plain
FastAPI sits in accept(). LitServe does not: its workers poll, about a core between them while
idle, so each server's idle CPU is measured before the rounds and a warning names any that
burns more than 0.1 core (compare those with bench.serve, one at a time).

    python -m bench.paired [--servers ours,plain] [--variant NAME:ENV=V,ENV=V ...] [--against plain]
                           [--n 1] [--concurrency 1] [--rounds 10] [--window 2] [--json out.json]

`--variant one-worker:GAN_WORKERS=1,GAN_TORCH_THREADS=2` adds the service with those settings
beside the others (any number of times). Prints, per server, the median over rounds of req/s,
p50 and p99; then, per server, the paired ratios against `--against`: the median, the range,
and in how many rounds it was at least 1.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.ceiling import CeilingProcess
from bench.common import (
    IDLE_CORES,
    REPO,
    ServerProcess,
    cpu_seconds,
    machine_info,
    paired_ratios,
    process_tree,
    resolve_weights,
    stop_servers_on_sigterm,
    summary,
    wait_tree_idle,
)
from bench.loadgen import LoadReport
from bench.serve import (
    LABELS,
    SERVERS,
    VENV_BASELINES,
    baseline_python,
    inherited_settings,
    label_service_rows,
    make_server,
    request_for,
)
from bench.wrk import find_wrk, run_wrk


@dataclass
class Contender:
    """One server in the comparison and its report of each round."""

    name: str
    kind: str  # a bench.serve server kind
    env: dict[str, str] = field(default_factory=dict)  # extra settings (variants of ours)
    base_url: str = ""  # once started
    ceiling: CeilingProcess | None = None  # kind "ceiling": timed in its process, not through HTTP
    pid: int = 0  # once started
    idle_cores: float = 0.0  # what its process tree burned while no load ran (measured before the rounds)
    reports: list[LoadReport] = field(default_factory=list)


def parse_variant(text: str) -> Contender:
    """`NAME:ENV=V,ENV=V` -> the service (kind ours) with those environment settings."""
    name, sep, settings = text.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variant {text!r}: write NAME:ENV=VALUE[,ENV=VALUE...]")
    env = {}
    for pair in (p for p in settings.split(",") if p):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise SystemExit(f"--variant {text!r}: {pair!r} is not ENV=VALUE")
        env[key] = value
    return Contender(name, "ours", env)


def run_rounds(contenders: list[Contender], n: int, c: int, rounds: int, window_s: float,
               warmup_s: float = 1.0) -> None:
    """A warm-up window per server, then `rounds` rounds of one window per server each. After
    every window the next waits until that server's processes are idle (wait_tree_idle): wrk
    leaves C requests inside it, which plain FastAPI and LitServe keep computing, in the next
    server's window otherwise."""
    for ct in contenders:
        measure(ct, n, c, warmup_s)
        settle(ct, "its warm-up")
    for r in range(rounds):
        for ct in contenders if r % 2 == 0 else contenders[::-1]:
            report = measure(ct, n, c, window_s)
            busy = settle(ct, f"round {r + 1}")
            if busy is not None:
                report.extra["busy_after_window_cores"] = busy
            ct.reports.append(report)


def settle(ct: Contender, after: str) -> float | None:
    """Wait for this contender's process tree to go idle; its cores when the wait's cap ran out
    (with a line saying so), else None."""
    _, cores = wait_tree_idle(ct.pid)
    if cores < IDLE_CORES:
        return None
    print(f"# {ct.name}: still {cores:.2f} cores busy a few seconds after {after}: "
          "the next window may hold its leftover work", flush=True)
    return round(cores, 2)


def measure(ct: Contender, n: int, c: int, seconds: float) -> LoadReport:
    """One window of this contender: wrk against a server, or the ceiling run in its process."""
    if ct.ceiling is not None:
        return ct.ceiling.window(seconds)
    return run_wrk(ct.base_url, n, c, seconds, **request_of(ct))


def request_of(ct: Contender) -> dict[str, str]:
    """run_wrk's path, body and method for this server (bench.serve.request_for)."""
    return request_for(ct.kind)


def report_rows(contenders: list[Contender], against: str) -> list[dict[str, Any]]:
    ref = next(ct for ct in contenders if ct.name == against)
    rows = []
    for ct in contenders:
        rps = [r.requests_per_s for r in ct.reports]
        row: dict[str, Any] = {
            "server": ct.name, "env": ct.env, "req_per_s": summary(rps),
            "p50_ms": summary([r.p50_ms for r in ct.reports]), "p99_ms": summary([r.p99_ms for r in ct.reports]),
            "errors": sum(r.error_count for r in ct.reports), "idle_cores": ct.idle_cores,
            "rounds": [r.to_dict() for r in ct.reports],
        }
        if ct is not ref:
            ratios = paired_ratios(rps, [r.requests_per_s for r in ref.reports])
            p50 = paired_ratios([r.p50_ms for r in ct.reports], [r.p50_ms for r in ref.reports])
            row["ratio"] = {**summary(ratios), "rounds_at_least_1": sum(x >= 1 for x in ratios), "of": len(ratios)}
            row["p50_ratio"] = summary(p50)
        rows.append(row)
    return rows


def measure_idle_cores(contenders: list[Contender], seconds: float = 2.0) -> list[str]:
    """Each server's CPU (cores, its whole process tree) while none is loaded; a warning for each
    that burns more than 0.1 core. Paired rounds assume idle servers cost nothing: one that polls
    while idle (LitServe's workers took about a core between them) takes its cores from the other
    servers' windows, which biases every ratio against those others."""
    trees = {ct.name: process_tree(ct.pid) for ct in contenders}
    before = {name: cpu_seconds(pids) for name, pids in trees.items()}
    time.sleep(seconds)
    warnings = []
    for ct in contenders:
        ct.idle_cores = (cpu_seconds(trees[ct.name]) - before[ct.name]) / seconds
        if ct.idle_cores > 0.1:
            warnings.append(f"{ct.name} burns {ct.idle_cores:.2f} cores while idle: it takes them from the "
                            "others' windows, so ratios against it favour it; compare it with bench.serve instead")
    return warnings


def markdown(rows: list[dict[str, Any]], against: str) -> str:
    lines = [f"| server | req/s median (min-max) | p50 ms median | p99 ms median | errors | req/s / {against}: "
             "median (min-max), rounds >= 1 | p50 / its p50: median |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        q, ratio = row["req_per_s"], row.get("ratio")
        paired = "—" if ratio is None else (f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}), "
                                            f"{ratio['rounds_at_least_1']} of {ratio['of']}")
        p50 = "—" if ratio is None else f"{row['p50_ratio']['median']:.2f}x"
        lines.append(f"| {row['server']} | {q['median']:.1f} ({q['min']:.1f}-{q['max']:.1f}) | "
                     f"{row['p50_ms']['median']:.2f} | {row['p99_ms']['median']:.2f} | {row['errors']} | "
                     f"{paired} | {p50} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="ours,plain",
                   help=f"bench.serve kinds, of {','.join(SERVERS)}, or ceiling: the in-process forward + PNG "
                        "at the full batch (--max-batch images), in a process of its own")
    p.add_argument("--variant", action="append", default=[], help="NAME:ENV=V,ENV=V: the service with these settings")
    p.add_argument("--against", default="plain", help="the reference server of the paired ratios")
    p.add_argument("--n", type=int, default=1, help="images per request")
    p.add_argument("--concurrency", type=int, default=1, help="wrk connections")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--window", type=float, default=2.0, help="seconds per server per round (whole seconds)")
    p.add_argument("--weights", default=None, help="generator folder; default: the shipped one")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="GAN_MAX_WAIT_MS; LitServe's batch_timeout, at least 1 ms (bench.serve.litserve_wait_ms)")
    p.add_argument("--workers", type=int, default=1, help="GAN_WORKERS of ours-workers")
    p.add_argument("--json", default=None, help="write every round here")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="server logs")
    args = p.parse_args()
    stop_servers_on_sigterm()
    label_service_rows(inherited_settings(os.environ))
    if find_wrk() is None:
        raise SystemExit("bench.paired needs wrk: apt-get install wrk")
    contenders = [Contender(k.strip(), k.strip()) for k in args.servers.split(",") if k.strip()]
    contenders += [parse_variant(v) for v in args.variant]
    names = [ct.name for ct in contenders]
    unknown = [ct.kind for ct in contenders if ct.kind not in (*SERVERS, "ceiling")]
    if unknown:
        raise SystemExit(f"--servers: unknown {unknown}; choose from {','.join(SERVERS)},ceiling")
    if len(set(names)) != len(names) or args.against not in names:
        raise SystemExit(f"--against {args.against!r} must name one of the servers ({', '.join(names)}), "
                         "and names must differ")
    for ct in contenders:
        if ct.kind in VENV_BASELINES and not baseline_python(ct.kind).is_file():
            raise SystemExit(f"{ct.kind}: no environment; make it with `bash bench/baselines.sh`")
    weights = resolve_weights(args.weights)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_root = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    (weights_root / weights.name).symlink_to(weights, target_is_directory=True)
    info = machine_info(args.device)
    print(f"# machine: {json.dumps(info)}\n# weights: {weights}", flush=True)
    with ExitStack() as stack:
        for ct in contenders:
            if ct.kind == "ceiling":  # the full batch, on every core torch uses by default
                requests = max(1, args.max_batch // args.n)
                ct.ceiling = stack.enter_context(CeilingProcess(
                    weights, args.device, args.n, requests, torch.get_num_threads(),
                    log_path=out_dir / f"paired-{ct.name}-n{args.n}.log"))
                ct.pid = ct.ceiling.pid
                print(f"# {ct.name} (in-process forward + PNG, {requests * args.n} images a forward, "
                      f"{torch.get_num_threads()} threads) ready", flush=True)
                continue
            server: ServerProcess = make_server(ct.kind, weights, args, args.n, out_dir, weights_root)
            server.name = ct.name
            server.log_path = out_dir / f"paired-{ct.name}-n{args.n}.log"
            server.env.update(ct.env)
            stack.enter_context(server)
            ct.base_url, ct.pid = server.base_url, server.pid
            print(f"# {ct.name} ({LABELS.get(ct.kind, ct.kind)}{', ' + str(ct.env) if ct.env else ''}) "
                  f"ready on {server.base_url}", flush=True)
        time.sleep(2.0)
        for warning in measure_idle_cores(contenders):
            print(f"# WARNING: {warning}", flush=True)
        run_rounds(contenders, args.n, args.concurrency, args.rounds, args.window)
    rows = report_rows(contenders, args.against)
    print(f"\n## n={args.n}, C={args.concurrency}: {args.rounds} rounds of {args.window:g} s per server\n")
    print(markdown(rows, args.against))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
