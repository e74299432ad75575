"""Serving benchmark: the service with micro-batching against itself without batching, LitServe,
Ray Serve, BentoML, Triton (through PyTriton), a plain FastAPI endpoint and the in-process
ceiling, on the same generator weights and the same prepared forward (bench/work.py).

    python -m bench.serve [--duration 5] [--concurrency 1,8,32,128] [--n 1,16] [--device cpu]
                          [--weights DIR] [--only ours,ours-nobatch,ours-get,litserve,rayserve,bentoml,triton,plain,ceiling]
                          [--json out.json] [--profile 1:32,16:32] [--cells 1:256,64:64]

Ray Serve, BentoML and Triton run from virtual environments of their own, made by
`bash bench/baselines.sh` under .bench-venvs/ (their pinned dependencies stay out of .venv); by
default a baseline whose environment is missing is left out, with a line saying so.

Each server runs as a subprocess on a free loopback port and is driven by wrk (bench/wrk.py;
the default when installed) or a closed-loop httpx load generator (bench/loadgen.py, which shares
the cores it measures) for --duration seconds per cell after --warmup seconds (with wrk, the
window starts once the server's processes are idle: what the warm-up left inside is done); the cells are
every --n with every --concurrency, or the --cells given. A server is started once for all its
cells (LitServe and Triton, which batch whole requests, once per n), and the JSON is rewritten
after every cell, so a run stopped by a time limit keeps what it measured. The
ceiling uses, per cell, the mean batch the service reached there (from its gan_batch_size metric);
where the cell's load could fill a whole batch (--max-batch images) and the service's batches were
smaller, the ceiling at the full batch runs too ("ceiling-full", a column of the ratio table).
--profile N:C records the service with py-spy during those cells and prints where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from bench import ceiling as ceiling_mod
from bench.arith import generator_macs, implied_tflops
from bench.common import (
    IDLE_CORES,
    PYTHON,
    REPO,
    ServerProcess,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    machine_busy_seconds,
    machine_info,
    process_depths,
    process_name,
    resolve_weights,
    stop_servers_on_sigterm,
    wait_tree_idle,
)
from bench.loadgen import LoadReport, generate_body, run_load
from bench.wrk import GENERATE_QUERY, find_wrk, run_wrk
from gancore.fileio import atomic_write_json
from gancore.weights import load_generator
from service.engine import ENGINE_PROCESS_NAME

SERVERS = ("ours", "ours-workers", "ours-nobatch", "ours-get", "litserve", "rayserve", "bentoml", "triton", "plain")
# baseline -> (its environment under .bench-venvs, the module that serves, the readiness path)
VENV_BASELINES = {
    "rayserve": ("ray", "bench.rayserve_app", "/readyz"),
    "bentoml": ("bentoml", "bench.bentoml_app", "/readyz"),
    "triton": ("triton", "bench.triton_app", "/v2/models/generator/ready"),  # not /v2/health/ready: PyTriton loads the model after Triton is up
}
# Triton speaks the KServe v2 protocol: the same label, n and seed as inputs, the PNG as binary output
TRITON_INFER = dict(  # run_wrk's path and body
    path="/v2/models/generator/infer",
    body='{"inputs": [{"name": "label", "shape": [1, 1], "datatype": "INT64", "data": [%(label)d]}, '
    '{"name": "n", "shape": [1, 1], "datatype": "INT64", "data": [%(n)d]}, '
    '{"name": "seed", "shape": [1, 1], "datatype": "INT64", "data": [%(seed)d]}], '
    '"outputs": [{"name": "png", "parameters": {"binary_data": true}}]}',
)
OURS = ("ours", "ours-workers", "ours-nobatch", "ours-get")
# ours-get: the service as shipped, asked with GET /generate?label=..&n=..&seed=.. (an <img src>)
GET_GENERATE = dict(method="GET", body=GENERATE_QUERY)
ALL = (*SERVERS, "ceiling")
LABELS = {
    "ours": "service as shipped (defaults)",
    "ours-workers": "service, GAN_WORKERS=N",
    "ours-nobatch": "service, GAN_MAX_BATCH=1",
    "ours-get": "service as shipped, GET /generate",
    "litserve": "LitServe, its batching (batch_timeout >= 1 ms)",  # main() writes its own
    "rayserve": "Ray Serve, @serve.batch",
    "bentoml": "BentoML, adaptive batching",
    "triton": "Triton (PyTriton), dynamic batching",
    "plain": "plain FastAPI, per request",
    "ceiling": "ceiling: in-process forward + PNG",
    "ceiling-full": "ceiling at the full batch (--max-batch images)",
}
# the service's settings make_server gives itself: an inherited value of these does not reach it
BENCH_SETTINGS = ("GAN_HOST", "GAN_PORT", "GAN_WEIGHTS_DIR", "GAN_DEVICE", "GAN_MAX_BATCH", "GAN_MAX_WAIT_MS",
                  "GAN_LOG_LEVEL", "GAN_REQUEST_TIMEOUT_S", "GAN_QUEUE_SIZE")


def inherited_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The service's settings (GAN_*) its servers inherit from this process's environment
    (bench/gpu.sh's GAN_CUDA_GRAPHS=true), beyond those make_server sets."""
    return {k: v for k, v in sorted(environ.items()) if k.startswith("GAN_") and k not in BENCH_SETTINGS}


def label_service_rows(settings: dict[str, str]) -> None:
    """Name inherited settings in the service's row labels: with any, "as shipped (defaults)" is
    no longer true of its rows."""
    def named(skip: str = "") -> str:
        return ", ".join(f"{k}={v}" for k, v in settings.items() if k != skip)

    if not settings:
        return
    LABELS["ours"] = f"service, {named()}"
    LABELS["ours-get"] = f"service, {named()}, GET /generate"
    LABELS["ours-nobatch"] = f"service, GAN_MAX_BATCH=1, {named()}"
    if named("GAN_WORKERS"):  # ours-workers sets its own
        LABELS["ours-workers"] = f"{LABELS['ours-workers']}, {named('GAN_WORKERS')}"


# LitServe's batch_timeout is at least this (--max-wait-ms 0 gives the service no wait): at 0 its
# batching loop polls its queue without pause, 0.69 of a core while idle (0.06 at 5 ms, 0.03 at
# 1 ms), cores taken from its own forwards on a shared CPU. 1 ms stops the spin and adds the least wait
LITSERVE_MIN_WAIT_MS = 1.0


def litserve_wait_ms(max_wait_ms: float) -> float:
    """LitServe's batch_timeout in ms for the service's --max-wait-ms: the same, at least LITSERVE_MIN_WAIT_MS."""
    return max(max_wait_ms, LITSERVE_MIN_WAIT_MS)


# the ratio table's columns, in order: the ceiling at the full batch is run beside the ceiling at
# the batch the service reached, where the load could fill a whole batch (#14 words its n=1 C=64
# target against it)
RATIO_COLUMNS = (*ALL, "ceiling-full")
_METRIC = re.compile(r'^(gan_batch_size_(?:sum|count))\{[^}]*\}\s+([0-9.eE+-]+)$', re.M)


def batch_counters(base_url: str) -> tuple[float, float]:
    """(sum, count) of the service's gan_batch_size histogram, all models together."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    values: Counter[str] = Counter()
    for name, value in _METRIC.findall(text):
        values[name] += float(value)
    return values["gan_batch_size_sum"], values["gan_batch_size_count"]


def baseline_python(kind: str) -> Path:
    """The interpreter of a baseline's own environment (bench/baselines.sh makes it)."""
    return REPO / ".bench-venvs" / VENV_BASELINES[kind][0] / "bin" / "python"


def make_server(kind: str, weights: Path, args: argparse.Namespace, n: int, log_dir: Path,
                weights_root: Path) -> ServerProcess:
    port = free_port()
    log = log_dir / f"{kind}-n{n}.log"
    if kind in OURS:
        env = {
            "GAN_HOST": "127.0.0.1", "GAN_PORT": str(port), "GAN_WEIGHTS_DIR": str(weights_root),
            "GAN_DEVICE": args.device, "GAN_MAX_BATCH": str(1 if kind == "ours-nobatch" else args.max_batch),
            "GAN_MAX_WAIT_MS": str(args.max_wait_ms), "GAN_LOG_LEVEL": "warning",
            "GAN_REQUEST_TIMEOUT_S": "120", "GAN_QUEUE_SIZE": "100000",
        }
        if kind == "ours-workers":  # the others run with the service's default (auto)
            env["GAN_WORKERS"] = str(args.workers)
        return ServerProcess(kind, [PYTHON, "-m", "service"], port, "/readyz", env, log)
    if kind == "litserve":
        max_requests = max(1, args.max_batch // n)  # the same images per forward as the service
        argv = [PYTHON, "-m", "bench.litserve_app", "--weights", str(weights), "--port", str(port),
                "--device", args.device, "--max-batch-size", str(max_requests),
                "--batch-timeout", str(litserve_wait_ms(args.max_wait_ms) / 1000.0)]
        return ServerProcess(kind, argv, port, "/health", None, log)
    if kind in VENV_BASELINES:
        _, module, ready = VENV_BASELINES[kind]
        argv = [str(baseline_python(kind)), "-m", module, "--weights", str(weights), "--port", str(port),
                "--device", args.device, "--batch-timeout", str(args.max_wait_ms / 1000.0)]
        # Ray Serve and BentoML batch by images like the service; Triton batches whole requests, as LitServe
        argv += ["--max-batch-size", str(max(1, args.max_batch // n))] if kind == "triton" else \
            ["--max-batch", str(args.max_batch)]
        return ServerProcess(kind, argv, port, ready, None, log)
    argv = [PYTHON, "-m", "bench.plain_app", "--weights", str(weights), "--port", str(port), "--device", args.device]
    return ServerProcess(kind, argv, port, "/readyz", None, log)


def cpu_split(report: LoadReport, server_s: float, client_s: float, busy_s: float,
              engine_s: float | None = None) -> dict[str, float]:
    """Where the cores went in a measured window: the server's processes (supervisor, workers,
    engines), the load generator (wrk), and everything else that was not idle, in cores; and the
    server's CPU milliseconds per served request. Per-request CPU compares servers on how much
    work they add around the same forward; the cores say whether the machine was saturated.
    For the service, `engine_s` (its engine processes: forwards and renders) splits the server's
    CPU into the engines' and the front's (supervisor and workers: HTTP, JSON, admission, pipes)."""
    seconds, requests = report.seconds or math.nan, report.requests or math.nan
    split = {"server_cores": round(server_s / seconds, 2), "client_cores": round(client_s / seconds, 2),
             "other_cores": round((busy_s - server_s - client_s) / seconds, 2),
             "server_cpu_ms_per_request": round(1000 * server_s / requests, 3)}
    if engine_s is not None:
        split["engine_cores"] = round(engine_s / seconds, 2)
        split["front_cpu_ms_per_request"] = round(1000 * (server_s - engine_s) / requests, 3)
    return split


def request_for(kind: str) -> dict[str, str]:
    """run_wrk's path, body and method for a server kind: Triton speaks KServe v2, ours-get asks
    with GET, the others post to /generate."""
    return TRITON_INFER if kind == "triton" else GET_GENERATE if kind == "ours-get" else {}


async def measure(server: ServerProcess, n: int, c: int, args: argparse.Namespace) -> LoadReport:
    """One cell; for the service also the mean images per forward inside the window. With wrk,
    the window starts once the server's process tree is idle after the warm-up (wait_tree_idle)."""
    scrape = server.name in OURS
    marks: list[tuple[float, float]] = []

    async def scraper() -> None:
        await asyncio.sleep(args.warmup)
        marks.append(await asyncio.to_thread(batch_counters, server.base_url))

    task = None
    if args.client == "wrk":  # warm-up, then the measured window, both with wrk
        request = request_for(server.name)
        await asyncio.to_thread(run_wrk, server.base_url, n, c, args.warmup, **request)
        # the warm-up's last C requests may still be computing: let them finish outside the window
        settle_s, busy = await asyncio.to_thread(wait_tree_idle, server.pid)
        if scrape:
            marks.append(await asyncio.to_thread(batch_counters, server.base_url))
        depths = process_depths(server.pid)  # after the warm-up: workers and engines are all up
        tree = list(depths)
        engines = None
        if server.name in OURS:
            # the service names its engine processes (not their own children, such as
            # torch.compile's workers, nor the fork servers they come from)
            engines = [p for p in depths if process_name(p) == ENGINE_PROCESS_NAME]
        cpu0, wrk0, busy0 = cpu_seconds(tree), children_cpu_seconds(), machine_busy_seconds()
        engine0 = cpu_seconds(engines) if engines is not None else 0.0
        report = await asyncio.to_thread(run_wrk, server.base_url, n, c, args.duration, **request)
        engine_s = cpu_seconds(engines) - engine0 if engines is not None else None
        report.extra.update(cpu_split(report, cpu_seconds(tree) - cpu0, children_cpu_seconds() - wrk0,
                                      machine_busy_seconds() - busy0, engine_s))
        report.extra["settle_after_warmup_s"] = round(settle_s, 2)
        if busy >= IDLE_CORES:  # waited the whole cap: leftover work may have reached the window
            report.extra["busy_after_warmup_cores"] = round(busy, 2)
    else:
        if server.name == "triton":
            raise SystemExit("triton needs --client wrk (the httpx client posts only the service's body)")
        task = asyncio.create_task(scraper()) if scrape else None  # run_load warms up inside, without a wait
        report = await run_load(server.base_url + "/generate", generate_body(n), n, c, args.duration, args.warmup)
    if scrape:
        if task is not None:
            await task
        total, count = batch_counters(server.base_url)
        d_sum, d_count = total - marks[0][0], count - marks[0][1]
        report.extra["mean_batch"] = d_sum / d_count if d_count else math.nan
    return report


def start_profile(server: ServerProcess, n: int, c: int, args: argparse.Namespace, out_dir: Path):
    path = out_dir / f"pyspy-{server.name}-n{n}-c{c}.txt"
    # py-spy is installed beside this interpreter (a venv's bin/), which may not be on PATH
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.warmup + args.duration)),
           "--rate", "100", "--format", "raw", "--threads", "--nonblocking", "--subprocesses", "-o", str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), path


_PROCESS_FRAME = re.compile(r'process (\d+):"[^"]*";')


def summarize_profile(path: Path, seconds: float, rate: int = 100, top: int = 14) -> str:
    """Inclusive share of wall time per function, summed over the server's processes (the
    supervisor, its workers and their engine processes) and threads: two busy threads -> 200%."""
    if not path.is_file():
        return f"(no profile at {path})"
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        # with --subprocesses each stack starts with its process chain (quoted command lines, which may
        # hold ';'); the innermost names the thread's owner
        procs = _PROCESS_FRAME.findall(stack)
        frames = _PROCESS_FRAME.sub("", stack).split(";")
        k = int(count)
        owner = f"pid {procs[-1]} " if len(procs) > 1 else ""
        threads[owner + frames[0]] += k
        for name in {re.sub(r" \(.*?([^/]+\.py):\d+\)", r" (\1)", f) for f in frames[1:]}:
            inclusive[name] += k
    wall = seconds * rate
    lines = ["threads (share of wall time): " + ", ".join(f"{t} {v / wall:.0%}" for t, v in threads.most_common(4))]
    for f, v in inclusive.most_common(top):
        lines.append(f"  {v / wall:6.1%}  {f}")
    return "\n".join(lines)


def fmt(x: float, digits: int = 1) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def unanswered(extra: dict[str, Any]) -> bool:
    """True when the load generator got no answer at all inside the window (a report's `extra`):
    no rate was measured."""
    return extra.get("answers") == 0


# A cell whose window had more than this much of a core busy outside the server and wrk was
# measured beside something else (a benchmark's leftovers, another job): its figure and every
# ratio with it are marked, so they are not read as the server's own (the 2026-12-02 01:39 grid
# began 10 s after another benchmark and its C=1 cells had 0.54 and 0.37 "other" cores).
DISTURBED_CORES = 0.25


def disturbed(extra: dict[str, Any]) -> bool:
    """True when the cell's window had more than DISTURBED_CORES busy outside server and client."""
    return extra.get("other_cores", 0.0) > DISTURBED_CORES


def _mark(r: dict[str, Any]) -> str:
    return f" (disturbed: {r['extra']['other_cores']:.2f} other cores)" if disturbed(r["extra"]) else ""


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| server | n | C | req/s | img/s | p50 ms | p95 ms | p99 ms | errors | images/forward |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    out = [head]
    for r in rows:
        batch = r["extra"].get("mean_batch", r["extra"].get("batch_images", math.nan))
        errs = ", ".join(f"{k}:{v}" for k, v in r["errors"].items()) or "0"
        if unanswered(r["extra"]):  # a rate of 0 would read as measured; the window was shorter than one answer
            req_s = img_s = f"no answer in {r['seconds']:.1f} s"
        else:
            req_s, img_s = fmt(r["requests_per_s"]), fmt(r["images_per_s"])
        out.append(f"| {LABELS[r['server']]}{_mark(r)} | {r['n']} | {r['c']} | {req_s} | "
                   f"{img_s} | {fmt(r['p50_ms'])} | {fmt(r['p95_ms'])} | {fmt(r['p99_ms'])} | "
                   f"{errs} | {fmt(batch)} |")
    return "\n".join(out)


def cpu_table(rows: list[dict[str, Any]]) -> str:
    out = ["| server | n | C | server cores | of them engines | wrk cores | other cores | server CPU ms per request "
           "| of it the front's |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r["extra"]
        if "server_cores" in e:
            out.append(f"| {LABELS[r['server']]} | {r['n']} | {r['c']} | {fmt(e['server_cores'], 2)} | "
                       f"{fmt(e.get('engine_cores', math.nan), 2)} | "
                       f"{fmt(e['client_cores'], 2)} | {fmt(e['other_cores'], 2)} | "
                       f"{fmt(e['server_cpu_ms_per_request'], 3)} | "
                       f"{fmt(e.get('front_cpu_ms_per_request', math.nan), 3)} |")
    return "\n".join(out)


def ratios(rows: list[dict[str, Any]]) -> str:
    """Images/s of the service (1) divided by each alternative's, per cell; p99 ratio beside it."""
    by = {(r["server"], r["n"], r["c"]): r for r in rows}
    others = [k for k in RATIO_COLUMNS if k != "ours" and any(r["server"] == k for r in rows)]
    head = "| n | C | " + " | ".join(f"1 / {o} (img/s; p99)" for o in others) + " |"
    out = [head, "|---|---:|" + "---:|" * len(others)]
    for (kind, n, c), mine in by.items():
        if kind != "ours":
            continue
        cells = []
        for o in others:
            other = by.get((o, n, c))
            # an unanswered cell has images_per_s 0, so `not other["images_per_s"]` covers the other side
            if other is None or not other["images_per_s"] or unanswered(mine["extra"]):
                cells.append("—")
                continue
            cells.append(f"{mine['images_per_s'] / other['images_per_s']:.2f}x; "
                         f"{mine['p99_ms'] / other['p99_ms']:.2f}x"
                         f"{' (disturbed)' if disturbed(mine['extra']) or disturbed(other['extra']) else ''}")
        out.append(f"| {n} | {c} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# Servers whose start-up settings depend on the images per request (they batch whole requests:
# 64 // n of them per forward, the same images as the service's batch): one start per n. The
# others serve every cell from one start, which on a GPU host, where a start costs CUDA
# contexts and graph captures in every worker, is most of the grid's time.
BATCH_BY_REQUESTS = ("litserve", "triton")


def parse_cells(text: str) -> list[tuple[int, int]]:
    """"1:256,64:64" -> [(1, 256), (64, 64)]: (images per request, clients)."""
    cells = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        n, sep, c = part.partition(":")
        if not (sep and n.isdigit() and c.isdigit() and int(n) > 0 and int(c) > 0):
            raise SystemExit(f"--cells: {part!r} is not N:C with two positive integers (e.g. 1:256,64:64)")
        cells.append((int(n), int(c)))
    if not cells:
        raise SystemExit("--cells: give at least one N:C")
    return cells


def server_runs(kind: str, cells: list[tuple[int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """The starts of server `kind` for these cells: (the n it is started for, its cells in order).
    One start for all cells, unless the server's batching is set per n (BATCH_BY_REQUESTS)."""
    if kind not in BATCH_BY_REQUESTS:
        return [(cells[0][0], cells)]
    ns = list(dict.fromkeys(n for n, _ in cells))
    return [(n, [cell for cell in cells if cell[0] == n]) for n in ns]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell")
    p.add_argument("--concurrency", default="1,8,32,128")
    p.add_argument("--n", default="1,16", help="images per request")
    p.add_argument("--cells", default="",
                   help="N:C,N:C: only these cells (n images per request, C clients) instead of every n x C")
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="generator folder; default: the shipped one, else random")
    p.add_argument("--only", default=None,
                   help=f"subset of {','.join(ALL)} (default: all but ours-nobatch and ours-get, and without the "
                        "Ray Serve, BentoML and Triton baselines whose environment bench/baselines.sh has not made)")
    p.add_argument("--client", choices=("wrk", "httpx"), default="wrk" if find_wrk() else "httpx",
                   help="load generator: wrk (C, default when installed) or the Python httpx one, which "
                        "shares the cores it measures")
    p.add_argument("--workers", type=int, default=1, help="GAN_WORKERS of ours-workers (ours runs the default)")
    p.add_argument("--ceiling-threads", default="1,2",
                   help="torch threads to try for the ceiling, each in 3 windows of --duration / 3, alternated; "
                        "the best median is reported (default 1,2)")
    p.add_argument("--max-batch", type=int, default=64, help="GAN_MAX_BATCH of (1); LitServe gets 64 // n requests")
    p.add_argument("--max-wait-ms", type=float, default=0.0,
                   help=f"GAN_MAX_WAIT_MS of (1); LitServe's batch_timeout, at least {LITSERVE_MIN_WAIT_MS:g} ms "
                        "(at 0 its loop spins a core's share while idle)")
    p.add_argument("--settle-s", type=float, default=20.0,
                   help="after a server is ready, wait up to this long for the CPU to go quiet (its "
                        "helpers may still be starting) before its first cell; 0: do not wait")
    p.add_argument("--json", default=None, help="write every cell and the machine here")
    p.add_argument("--profile", default="", help="cells N:C to record the service (1) with py-spy")
    p.add_argument("--out", default=str(REPO / "runs" / "bench"), help="server logs and profiles")
    args = p.parse_args()
    stop_servers_on_sigterm()
    LABELS["ours-workers"] = f"service, GAN_WORKERS={args.workers}"
    label_service_rows(inherited_settings(os.environ))
    LABELS["litserve"] = f"LitServe, its batching (batch_timeout {litserve_wait_ms(args.max_wait_ms):g} ms)"

    cells = parse_cells(args.cells) if args.cells else [
        (n, c) for n in (int(x) for x in args.n.split(",")) for c in (int(x) for x in args.concurrency.split(","))]
    if args.only is None:
        missing = [k for k in VENV_BASELINES if not baseline_python(k).is_file()]
        if missing:
            print(f"# left out (no environment; `bash bench/baselines.sh`): {', '.join(missing)}", flush=True)
        args.only = ",".join(k for k in ALL if k not in ("ours-nobatch", "ours-get") and k not in missing)
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    for kind in (k for k in only if k in VENV_BASELINES and not baseline_python(k).is_file()):
        raise SystemExit(f"--only {kind}: no {baseline_python(kind)}; make it with `bash bench/baselines.sh "
                         f"{VENV_BASELINES[kind][0]}`")
    unknown = set(only) - set(ALL)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {','.join(ALL)}")
    if "ceiling" in only and "ours" not in only:
        raise SystemExit("--only ceiling needs ours too: the ceiling runs at the batch size the service reached")
    profile_cells = {tuple(int(v) for v in cell.split(":")) for cell in args.profile.split(",") if cell}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = resolve_weights(args.weights)
    info = machine_info(args.device)
    print(f"# machine: {json.dumps(info)}\n# weights: {weights}", flush=True)

    # The service reads a folder of model folders: give it one holding only this generator.
    weights_root = Path(tempfile.mkdtemp(prefix="bench-weights-"))
    (weights_root / weights.name).symlink_to(weights, target_is_directory=True)

    rows: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}

    def save() -> None:  # after every cell, so that a run stopped by a time limit keeps what it measured
        if args.json:
            atomic_write_json(Path(args.json), {"machine": info, "weights": str(weights), "macs_per_image": macs,
                                                "args": vars(args), "service_env": inherited_settings(os.environ),
                                                "labels": LABELS, "rows": rows, "profiles": profiles})

    macs: float | None = None  # counted once the servers are done (with the ceiling's model)
    for kind in (k for k in SERVERS if k in only):
        for n_key, group in server_runs(kind, cells):
            server = make_server(kind, weights, args, n_key, out_dir, weights_root)
            server.settle_max_s = args.settle_s
            with server:
                if server.settle_seconds >= 1.0:
                    print(f"# {kind}: waited {server.settle_seconds:.0f} s after readiness for the CPU to "
                          "go quiet", flush=True)
                for n, c in group:
                    spy = None
                    if kind == "ours" and (n, c) in profile_cells:
                        spy = start_profile(server, n, c, args, out_dir)
                    report = asyncio.run(measure(server, n, c, args))
                    if spy is not None:
                        spy[0].wait(timeout=60)
                        profiles[f"{kind} n={n} C={c}"] = summarize_profile(spy[1], args.warmup + args.duration)
                    rows.append({"server": kind, "n": n, "c": c, **report.to_dict()})
                    save()
                    busy_after = "busy_after_warmup_cores" in report.extra  # wait_tree_idle's cap ran out
                    print(f"{kind:13s} n={n:3d} C={c:4d}  {report.requests_per_s:8.1f} req/s "
                          f"{report.images_per_s:8.1f} img/s  p50 {report.p50_ms:7.1f}  p99 {report.p99_ms:7.1f} ms"
                          f"  errors {report.errors or 0}  {report.extra or ''}"
                          f"{'  NO ANSWER inside the window: not measured' if unanswered(report.extra) else ''}"
                          f"{'  DISTURBED: something else used the cores' if disturbed(report.extra) else ''}"
                          f"{'  NOT IDLE after the warm-up: leftover work may be in the window' if busy_after else ''}",
                          flush=True)
            time.sleep(1.0)  # let the port and the CPU settle between servers

    model, latent_dim = ceiling_mod.load(weights, args.device)
    # counted on the unprepared architecture: hooks see nn.Conv2d / nn.ConvTranspose2d, which the
    # served forward has replaced with packed ones (GAN_PREPACK); preparing changes no MAC count
    macs = generator_macs(load_generator(weights, device="cpu").model.eval(), latent_dim)
    if "ceiling" in only:
        ceiling_threads = list(dict.fromkeys(int(t) for t in args.ceiling_threads.split(",")))  # "1,$(nproc)" on 1 core
        for n, c in cells:
            ours = next(r for r in rows if r["server"] == "ours" and r["n"] == n and r["c"] == c)
            mean_batch = ours["extra"].get("mean_batch", math.nan)
            r = ceiling_mod.requests_per_batch(n if math.isnan(mean_batch) else mean_batch, n)
            full = max(1, args.max_batch // n)  # requests in a full batch
            kinds = [("ceiling", r)] + ([("ceiling-full", full)] if r < full <= c else [])
            for kind, requests in kinds:
                # the ceiling is the best the cores can do in-process: each thread count in
                # alternated short windows, the best median
                report = ceiling_mod.choose_threads(model, latent_dim, args.device, n, requests, ceiling_threads,
                                                    args.duration)
                rows.append({"server": kind, "n": n, "c": c, **report.to_dict()})
                save()
                print(f"{kind:13s} n={n:3d} C={c:4d}  {report.requests_per_s:8.1f} req/s "
                      f"{report.images_per_s:8.1f} img/s  batch {requests * n}  threads {report.extra['torch_threads']} "
                      f"(median img/s by threads {report.extra['median_images_per_s_by_threads']})"
                      f"{'  DISTURBED: something else used the cores' if disturbed(report.extra) else ''}",
                      flush=True)

    print("\n## Results\n")
    print(table(rows))
    if any(disturbed(r["extra"]) for r in rows):
        print(f"\nCells marked disturbed had more than {DISTURBED_CORES} of a core busy outside the server and wrk "
              "(the ceiling's: outside this process, in any of its windows) during their window: something else "
              "ran. Measure them again on a quiet machine.")
    if "ours" in only and len(only) > 1:
        print("\n## Ratios: service with micro-batching (1) against each (images/s; p99 latency)\n")
        print(ratios(rows))
    if any("server_cores" in r["extra"] for r in rows):
        print("\n## Where the cores went (measured window; other: whatever else was not idle)\n")
        print(cpu_table(rows))
    best = max((r for r in rows if r["server"] == "ours"), key=lambda r: r["images_per_s"], default=None)
    print(f"\n## Arithmetic\n\ngenerator: {macs / 1e6:.1f} M MACs per image ({2 * macs / 1e6:.1f} MFLOP)")
    if best is not None:
        print(f"service at its best cell (n={best['n']}, C={best['c']}): {best['images_per_s']:.0f} img/s "
              f"= {implied_tflops(macs, best['images_per_s']) * 1000:.2f} GFLOP/s of forward arithmetic")
    for name, text in profiles.items():
        print(f"\n## py-spy: {name}\n\n```\n{text}\n```")
    save()


if __name__ == "__main__":
    main()
