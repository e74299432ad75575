"""Smoke test of the benchmark code (not a timed test): the load generator against the in-process
service with a tiny generator for about a second, the ceiling, the report tables and the MAC count."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import time
from pathlib import Path

import httpx
import pytest
import torch
from asgi_lifespan import LifespanManager

from bench import ceiling, serve, work, wrk
from bench.arith import generator_macs
from bench.common import SHIPPED_ARCH
from bench.loadgen import generate_body, percentile, run_load
from bench.overload import queue_depth, rejections_by_reason, server_latency_buckets
from gancore.labels import FASHION_MNIST_SLUGS
from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_generator
from service.main import create_app
from service.settings import Settings

TINY = dict(latent_dim=8, num_classes=10, embed_dim=4, channels=1, image_size=28, base_width=32)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-weights")
    torch.manual_seed(0)
    save_generator(root / "tiny", ConditionalGenerator(**TINY), "dcgan", TINY, list(FASHION_MNIST_SLUGS), {})
    return root


def test_percentiles_are_nearest_rank_and_ordered() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_load_generator_against_the_service(tiny_weights: Path) -> None:
    settings = Settings(weights_dir=tiny_weights, device="cpu", max_batch=8, max_wait_ms=2, log_level="warning")

    async def drive():
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30):
            await app.state.loading
            transport = httpx.ASGITransport(app=app)
            report = await run_load("http://bench/generate", generate_body(2), 2, concurrency=4, duration_s=1.0,
                                    warmup_s=0.2, transport=transport)
            metrics = app.state.metrics.render().decode()
        return report, metrics

    report, metrics = asyncio.run(drive())
    assert report.requests > 0 and report.errors == {}
    assert report.images == 2 * report.requests
    assert report.p50_ms <= report.p95_ms <= report.p99_ms
    assert report.requests_per_s == pytest.approx(report.requests / 1.0)
    assert "gan_batch_size_count" in metrics  # what serve.py reads for the ceiling's batch size
    # what bench.overload reads from /metrics (warm-up requests included, none refused, none queued)
    buckets = server_latency_buckets(metrics)
    assert buckets[math.inf] >= report.requests and list(buckets.values()) == sorted(buckets.values())
    assert queue_depth(metrics) == 0 and sum(rejections_by_reason(metrics).values()) == 0


def test_ceiling_and_tables(tiny_weights: Path) -> None:
    model, latent_dim = work.load_model(tiny_weights / "tiny", "cpu")
    assert ceiling.requests_per_batch(37.0, 16) == 2 and ceiling.requests_per_batch(3.0, 16) == 1
    report = ceiling.run_ceiling(model, latent_dim, "cpu", n=4, r=2, duration_s=0.3, warmup_s=0.05)
    assert report.requests > 0 and report.images == 4 * report.requests
    assert report.p50_ms <= report.p95_ms <= report.p99_ms
    # the thread count: alternated short windows per candidate, the best median; the windows'
    # outside cores recorded so that disturbed() can mark the row like a server's cell
    before = torch.get_num_threads()
    try:
        chosen = ceiling.choose_threads(model, latent_dim, "cpu", n=4, r=2, candidates=[1, 2], duration_s=0.3)
    finally:
        torch.set_num_threads(before)
    medians = chosen.extra["median_images_per_s_by_threads"]
    assert set(medians) == {"1", "2"} and chosen.extra["windows_per_thread_count"] == 3
    assert medians[str(chosen.extra["torch_threads"])] == max(medians.values())
    assert chosen.requests > 0 and 0.1 <= chosen.seconds < 1.0  # one window of 0.3 / 3 s
    assert "other_cores" in chosen.extra and chosen.extra["ceiling_cores"] > 0
    assert serve.disturbed({**chosen.extra, "other_cores": 1.0})
    rows = [{"server": kind, "n": 4, "c": 8, "errors": {}, "extra": {"mean_batch": 8.0},
             **report.to_dict()} for kind in ("ours", "plain", "ceiling")]
    assert serve.table(rows).count("\n") == 4
    assert "1.00x; 1.00x" in serve.ratios(rows)
    # the ceiling at the full batch gets its own column, after the ceiling at the batch reached
    half = {**rows[2], "server": "ceiling-full", "images_per_s": rows[2]["images_per_s"] * 2}
    header, _, cells = serve.ratios([*rows, half]).splitlines()
    assert header.index("1 / ceiling (") < header.index("1 / ceiling-full (")
    assert cells.endswith("| 0.50x; 1.00x |")
    # A server with no answer inside the window was not measured: no rate of 0, no ratio against it
    silent = {**rows[1], "requests": 0, "images": 0, "requests_per_s": 0.0, "images_per_s": 0.0,
              "p50_ms": math.nan, "p95_ms": math.nan, "p99_ms": math.nan, "seconds": 1.0,
              "extra": {"answers": 0}}
    plain_line = next(line for line in serve.table([rows[0], silent]).splitlines() if line.startswith("| plain FastAPI"))
    assert "no answer in 1.0 s | no answer in 1.0 s | — | — | — |" in plain_line
    assert serve.ratios([rows[0], silent, rows[2]]).splitlines()[2] == "| 4 | 8 | — | 1.00x; 1.00x |"
    # A cell that ran beside something else is marked, and so is every ratio taken with it
    busy = {**rows[1], "extra": {**rows[1]["extra"], "other_cores": 0.54}}
    plain_line = next(line for line in serve.table([rows[0], busy]).splitlines() if line.startswith("| plain FastAPI"))
    assert "(disturbed: 0.54 other cores)" in plain_line
    assert "disturbed" not in serve.table([rows[0]])
    assert serve.ratios([rows[0], busy, rows[2]]).splitlines()[2] == "| 4 | 8 | 1.00x; 1.00x (disturbed) | 1.00x; 1.00x |"


def test_cells_and_server_starts() -> None:
    """--cells gives exactly the cells asked for, in order; a server is started once for all of
    them, except those that batch whole requests (LitServe, Triton): once per n, with that n's cells."""
    cells = serve.parse_cells("1:256, 64:64,1:8")
    assert cells == [(1, 256), (64, 64), (1, 8)]
    assert serve.server_runs("ours", cells) == [(1, cells)]
    assert serve.server_runs("plain", cells) == [(1, cells)]
    assert serve.server_runs("litserve", cells) == [(1, [(1, 256), (1, 8)]), (64, [(64, 64)])]
    for bad in ("1", "1:0", "a:2", "1:2:3", ","):
        with pytest.raises(SystemExit, match="--cells"):
            serve.parse_cells(bad)
    # LitServe's batch_timeout has a 1 ms floor: at 0 its loop spins while idle
    args = argparse.Namespace(max_batch=64, max_wait_ms=0.0, device="cpu")
    argv = serve.make_server("litserve", Path("w"), args, 1, Path("logs"), Path("root")).argv
    assert argv[argv.index("--batch-timeout") + 1] == "0.001"
    assert serve.litserve_wait_ms(5.0) == 5.0


def test_the_service_rows_name_the_settings_they_inherit(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/gpu.sh runs bench.serve with GAN_CUDA_GRAPHS=true, which every service it starts
    inherits: its rows are then no longer "as shipped (defaults)" and say what they ran with;
    the settings make_server gives itself are not named."""
    monkeypatch.setattr(serve, "LABELS", dict(serve.LABELS))
    assert serve.inherited_settings({"PATH": "/bin", "GAN_MAX_BATCH": "8"}) == {}
    serve.label_service_rows({})
    assert serve.LABELS["ours"] == "service as shipped (defaults)"
    env = {"GAN_MAX_BATCH": "8", "GAN_CUDA_GRAPHS": "true", "GAN_WORKERS": "3", "HOME": "/root"}
    serve.label_service_rows(serve.inherited_settings(env))
    assert serve.LABELS["ours"] == "service, GAN_CUDA_GRAPHS=true, GAN_WORKERS=3"
    assert serve.LABELS["ours-get"] == "service, GAN_CUDA_GRAPHS=true, GAN_WORKERS=3, GET /generate"
    assert serve.LABELS["ours-workers"] == "service, GAN_WORKERS=N, GAN_CUDA_GRAPHS=true"


def test_shipped_architecture_arithmetic() -> None:
    # 7x7x256 -> 14x14x128 -> 28x28x64 transposed convolutions dominate: ~52M MACs per image.
    gen = ConditionalGenerator(**SHIPPED_ARCH).eval()
    assert generator_macs(gen, SHIPPED_ARCH["latent_dim"]) == 52_208_128


@pytest.mark.parametrize("template", [wrk.GENERATE_BODY, serve.TRITON_INFER["body"],
                                      '{"seed": %(seed)d, "note": "100%% %(n)d", "label": %(label)d}'])
def test_lua_body_formats_the_same_body_as_python(template: str) -> None:
    """wrk's script builds each body with Lua's string.format: the literal and arguments made for it
    must give what Python's % gives with the same values, whatever order the template uses."""
    lua_format, lua_args = wrk.lua_body(template)
    counter, n = 1234, 16
    values = {"counter % 10": counter % 10, "n": n, "counter": counter}
    args = iter(values[a.strip()] for a in lua_args.split(","))
    text = json.loads(lua_format)  # the Lua literal is a JSON string literal too
    made = re.sub(r"%%|%d", lambda m: "%" if m.group() == "%%" else str(next(args)), text)
    assert made == template % {"label": counter % 10, "n": n, "seed": counter}
    assert json.loads(made) is not None


def test_cpu_busy_fraction_is_a_share_and_a_quiet_wait_is_bounded() -> None:
    from bench.common import cpu_busy_fraction, wait_for_quiet

    busy = cpu_busy_fraction(0.2)
    assert 0.0 <= busy <= 1.0
    # busy_below above 1 is always met at once; below 0 never is, so the wait stops at max_s
    assert wait_for_quiet(busy_below=1.01, max_s=5) < 1.5
    assert 0.9 < wait_for_quiet(busy_below=-1, max_s=1) < 3.5


def test_cpu_accounting_counts_a_process_tree_and_splits_a_window() -> None:
    """A parent whose child burns about 0.3 s of CPU: the tree holds the child, and the tree's CPU
    seconds grow by about what it burned (whole-tree accounting is what a multi-worker server needs)."""
    import subprocess
    import sys
    import time

    from bench.common import cpu_seconds, machine_busy_seconds, process_depths, process_tree
    from bench.loadgen import LoadReport

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; "
                               f"subprocess.run([sys.executable, '-c', {burn!r}])"])
    try:
        tree: list[int] = []
        for _ in range(100):  # until the child exists
            tree = process_tree(parent.pid)
            if len(tree) == 2:
                break
            time.sleep(0.05)
        assert len(tree) == 2 and tree[0] == parent.pid
        assert process_depths(parent.pid) == {parent.pid: 0, tree[1]: 1}
        busy_before = machine_busy_seconds()
        seen = 0.0  # the tree's CPU seconds, sampled while it runs (a finished process leaves /proc)
        while parent.poll() is None:
            seen = max(seen, cpu_seconds(tree))
            time.sleep(0.01)
    finally:
        parent.kill()
    assert 0.2 <= seen < 5.0, seen
    assert machine_busy_seconds() - busy_before >= 0.2  # the machine saw the burn too
    assert cpu_seconds([]) == 0.0
    report = LoadReport(requests=100, images=100, seconds=2.0, errors={}, p50_ms=1, p95_ms=1, p99_ms=1, mean_ms=1)
    split = serve.cpu_split(report, server_s=1.0, client_s=0.2, busy_s=1.5)
    assert split == {"server_cores": 0.5, "client_cores": 0.1, "other_cores": 0.15, "server_cpu_ms_per_request": 10.0}
    # the service's engines apart: what is left is the front's CPU per request
    split = serve.cpu_split(report, server_s=1.0, client_s=0.2, busy_s=1.5, engine_s=0.6)
    assert split["engine_cores"] == 0.3 and split["front_cpu_ms_per_request"] == 4.0
    rows = [{"server": "ours", "n": 1, "c": 8, "extra": split}, {"server": "plain", "n": 1, "c": 8,
                                                                  "extra": serve.cpu_split(report, 1.0, 0.2, 1.5)}]
    ours_row, plain_row = serve.cpu_table(rows).splitlines()[2:]
    assert ours_row.endswith("| 0.30 | 0.10 | 0.15 | 10.000 | 4.000 |") and plain_row.endswith("| 10.000 | — |")


def test_stopping_a_server_ends_the_helpers_that_outlive_it(tmp_path: Path) -> None:
    """A server whose helper process ignores SIGTERM (as LitServe's workers took seconds to end,
    spinning a core in the next server's window): after stop() the helper is gone too."""
    import sys
    import time

    from bench.common import ServerProcess, free_port, process_tree, running

    helper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    server = ("import http.server, subprocess, sys\n"
              f"subprocess.Popen([sys.executable, '-c', {helper!r}])\n"
              "http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),"
              " bind='127.0.0.1')\n")
    port = free_port()
    proc = ServerProcess("helpers", [sys.executable, "-c", server, str(port)], port, "/", log_path=tmp_path / "log")
    proc.settle_max_s = 0.0
    proc.start(timeout_s=30)
    try:
        for _ in range(100):  # until the helper exists
            tree = process_tree(proc.pid)
            if len(tree) == 2:
                break
            time.sleep(0.05)
        assert len(tree) == 2 and running(tree[1])
    finally:
        started = time.monotonic()
        proc.stop(helpers_grace_s=0.5)
    assert not running(tree[0]) and not running(tree[1])
    assert time.monotonic() - started < 10


def test_a_sigterm_while_a_server_starts_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (a step's time limit) becomes SystemExit (stop_servers_on_sigterm); raised while
    `with server:` waits for readiness, before __exit__ is armed, it must still stop the server."""
    import sys

    from bench import common

    def terminated(*args: object, **kwargs: object) -> None:
        raise SystemExit(143)  # what the SIGTERM handler raises, here inside the readiness wait

    monkeypatch.setattr(common.httpx, "get", terminated)
    server = common.ServerProcess("slow", [sys.executable, "-c", "import time; time.sleep(60)"],
                                  common.free_port(), "/readyz")
    with pytest.raises(SystemExit), server:
        pass
    assert server.proc is not None and not common.running(server.proc.pid)


def test_profile_summary_reads_subprocess_stacks(tmp_path: Path) -> None:
    """py-spy --subprocesses prefixes each stack with its process chain, whose quoted command lines
    can hold ';': the summary strips them and names each thread by its process."""
    raw = tmp_path / "p.txt"
    engine = 'process 1:"python -m service";process 2:"python -c from x import y; y()";'
    raw.write_text(engine + "thread (2): MainThread;forward (service/inference.py:10) 50\n"
                   'process 1:"python -m service";thread (1): MainThread;run (uvicorn/server.py:3) 25\n')
    text = serve.summarize_profile(raw, seconds=1.0, rate=100)
    assert "pid 2 thread (2): MainThread 50%" in text and "thread (1): MainThread 25%" in text
    assert "50.0%  forward (inference.py)" in text and "y()" not in text


def test_front_driver_counts_requests_and_cpu(tiny_weights: Path) -> None:
    """bench.front drives the app in-process: every request answered 200, and a CPU figure per request."""
    from bench.front import drive

    settings = Settings(weights_dir=tiny_weights, device="cpu", default_model="tiny", engine="thread")
    body = json.dumps({"label": 1, "n": 1}).encode()
    report = asyncio.run(drive(settings, body, concurrency=4, seconds=0.3, warmup_s=0.1))
    assert report.requests > 0 and report.statuses == {200: report.requests}
    assert report.cpu_seconds > 0 and report.cpu_ms_per_request == 1000 * report.cpu_seconds / report.requests


def test_render_bench_measures_each_thread_count_with_the_stand_in_forward(tiny_weights: Path) -> None:
    """bench.render: every engine answers (no failed render), a rate per round for each render
    thread count and case, and a table with the paired ratio against none."""
    from bench import render

    results = render.measure(tiny_weights / "tiny", "cpu", [0, 1], ["n64", "n1"], rounds=2, window=0.2,
                             stand_in_s=0.0003)
    assert set(results) == {"n64", "n1"}
    assert all(len(v) == 2 and min(v) > 0 for by_threads in results.values() for v in by_threads.values())
    text = render.table(results)
    assert "| n64 | 0 |" in text and "| n1 | 1 |" in text and text.count("x |") == 4
    # the stand-in lived in the engines only
    assert render.standin.ENV not in os.environ and render.engine_module._engine_main.__name__ == "_engine_main"


def test_the_stand_in_forward_waits_and_returns_the_first_forwards_images(tiny_weights: Path) -> None:
    from bench import standin
    from gancore.weights import load_generator
    from service.inference import Runner, RunnerOptions

    runner = Runner(load_generator(tiny_weights / "tiny"), torch.device("cpu"), RunnerOptions())
    z = torch.randn(4, TINY["latent_dim"], generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4)
    real = runner.run(z, labels)
    assert standin.install(0.02)
    assert standin.install(0.02)  # a second install (sitecustomize, then an engine's entry) wraps nothing twice
    try:
        first = runner.run(z, labels)
        started = time.perf_counter()
        later = runner.run(torch.zeros_like(z), labels)  # other latents: the first images all the same
        waited = time.perf_counter() - started
    finally:
        standin.uninstall()
    assert torch.equal(first, real) and torch.equal(later, real) and waited >= 0.02
    assert not torch.equal(runner.run(torch.zeros_like(z), labels), real)  # uninstalled: real forwards again


def test_the_stand_in_reaches_the_baselines_forward_too(tiny_weights: Path) -> None:
    """plain FastAPI, LitServe and the ceiling run bench.work.forward: with the stand-in they wait
    like the service, so a comparison through HTTP is like for like."""
    from bench import standin

    model, latent_dim = work.load_model(tiny_weights / "tiny", "cpu")
    z, labels = work.request_inputs(3, 4, 7, latent_dim)
    real = work.forward(model, z, labels, "cpu")
    assert standin.install(0.02)
    try:
        first = work.forward(model, z, labels, "cpu")
        started = time.perf_counter()
        later = work.forward(model, torch.zeros_like(z), labels, "cpu")
        waited = time.perf_counter() - started
        other_size = work.forward(model, z[:2], labels[:2], "cpu")  # a new batch size: real, once
    finally:
        standin.uninstall()
    assert torch.equal(first, real) and torch.equal(later, real) and waited >= 0.02
    # a real forward: the rows of the first call, up to a grey level of rounding between batch sizes
    assert (other_size.int() - real[:2].int()).abs().max() <= 1
    assert not torch.equal(work.forward(model, torch.zeros_like(z), labels, "cpu"), real)  # uninstalled


def test_paired_ratios_are_taken_round_by_round() -> None:
    from bench import paired
    from bench.loadgen import LoadReport

    def report(rps: float, p50: float) -> LoadReport:
        return LoadReport(requests=int(rps * 2), images=int(rps * 2), errors={}, seconds=2.0, p50_ms=p50,
                          p95_ms=p50, p99_ms=p50 * 2, mean_ms=p50)

    # the machine halves its speed in round 2: both servers drift, the paired ratio does not
    ours = paired.Contender("ours", "ours", reports=[report(90, 4.0), report(45, 8.0), report(99, 3.0)])
    plain = paired.Contender("plain", "plain", reports=[report(100, 3.0), report(50, 6.0), report(90, 4.0)])
    variant = paired.parse_variant("one-worker:GAN_WORKERS=1,GAN_TORCH_THREADS=2")
    assert (variant.kind, variant.env) == ("ours", {"GAN_WORKERS": "1", "GAN_TORCH_THREADS": "2"})
    with pytest.raises(SystemExit):
        paired.parse_variant("no-settings")
    rows = paired.report_rows([ours, plain], against="plain")
    ratio = rows[0]["ratio"]
    assert ratio["median"] == pytest.approx(0.9) and ratio["min"] == pytest.approx(0.9)
    assert ratio["max"] == pytest.approx(1.1) and (ratio["rounds_at_least_1"], ratio["of"]) == (1, 3)
    assert rows[0]["p50_ratio"]["median"] == pytest.approx(4 / 3)
    assert "ratio" not in rows[1]
    table = paired.markdown(rows, "plain")
    assert "| ours | 90.0 (45.0-99.0) |" in table and "0.90x (0.90-1.10), 1 of 3" in table


def test_paired_rounds_name_a_server_that_burns_cpu_while_idle() -> None:
    """A server that polls while idle takes its cores from the others' windows: bench.paired
    measures each one's idle CPU before the rounds and warns about it, naming it."""
    import subprocess
    import sys

    from bench import paired
    from bench.common import IDLE_CORES, wait_tree_idle

    # Each child says when its interpreter has started, so that start-up's own CPU (tens of ms,
    # 0.1 core over the window) falls before the measurement, not in it
    spinner = subprocess.Popen([sys.executable, "-c", "print('up', flush=True)\nwhile True: pass"],
                               stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout is not None and sleeper.stdout is not None
        assert spinner.stdout.readline() == sleeper.stdout.readline() == "up\n"
        busy = paired.Contender("poller", "litserve", pid=spinner.pid)
        quiet = paired.Contender("quiet", "plain", pid=sleeper.pid)
        warnings = paired.measure_idle_cores([busy, quiet], seconds=0.5)
        # between windows the bench waits for a server's tree to go idle: at once for the sleeper,
        # the whole cap for the spinner (whose cores then say it never went idle)
        quiet_wait, quiet_cores = wait_tree_idle(sleeper.pid, max_s=2.0)
        busy_wait, busy_cores = wait_tree_idle(spinner.pid, max_s=0.5)
    finally:
        for child in (spinner, sleeper):
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()
    assert busy.idle_cores > 0.5 and quiet.idle_cores < 0.1
    assert len(warnings) == 1 and warnings[0].startswith("poller burns ")
    assert quiet_wait < 1.0 and quiet_cores < IDLE_CORES
    assert busy_wait >= 0.5 and busy_cores > 0.5


def test_omp_wait_runs_one_process_per_setting(tiny_weights: Path) -> None:
    """bench.omp_wait: each setting's environment is its own process's; one short round of each,
    with the ratio to the first setting; a setting it does not know is refused before anything starts."""
    from bench import omp_wait

    assert omp_wait.environment("passive") == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert omp_wait.environment("spin1000") == {"GOMP_SPINCOUNT": "1000"}
    assert omp_wait.environment("spin") == {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "100000"}
    assert omp_wait.environment("default") == {}
    with pytest.raises(ValueError, match="unknown setting"):
        omp_wait.measure(["default", "spinning"], tiny_weights / "tiny", 1, 0.0, 1, 3, 1)
    medians = omp_wait.measure(["default", "passive"], tiny_weights / "tiny", 1, 0.0, 2, 3, 1)
    assert set(medians) == {"default", "passive"} and all(len(v) == 2 and min(v) > 0 for v in medians.values())
    lines = omp_wait.table(medians).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| default |") and "| 1.00x (1.00-1.00) |" in lines[2]


def test_the_ceiling_process_answers_a_report_per_window_and_idles_between(tiny_weights: Path) -> None:
    """bench.paired times the ceiling like a server: in a process of its own, one window at a
    time, each a LoadReport of whole forwards of `requests` requests; idle, it waits on stdin."""
    from bench import paired
    from bench.common import cpu_seconds

    with ceiling.CeilingProcess(tiny_weights / "tiny", "cpu", n=2, requests=3, threads=1) as proc:
        first = proc.window(0.3)
        contender = paired.Contender("ceiling", "ceiling", ceiling=proc, pid=proc.pid)
        second = paired.measure(contender, n=2, c=64, seconds=0.2)
        before = cpu_seconds([proc.pid])
        time.sleep(0.5)
        idle = cpu_seconds([proc.pid]) - before
    for report, seconds in ((first, 0.3), (second, 0.2)):
        assert report.requests > 0 and report.requests % 3 == 0  # whole forwards of 3 requests
        assert report.images == 2 * report.requests and report.errors == {}
        assert seconds <= report.seconds < seconds + 1.0 and report.p50_ms > 0
    assert idle < 0.05  # seconds of CPU in half a second: it was waiting, not polling
    assert proc.proc is not None and proc.proc.returncode == 0  # ended at the end of its input


def test_startup_bench_times_a_real_start_and_reads_its_memory(tiny_weights: Path, tmp_path: Path) -> None:
    from bench import startup

    result = startup.start_once("fine", 20, tiny_weights, {"GAN_WORKERS": "1"}, tmp_path / "log", timeout_s=120)
    assert result["grid"] == "fine" and result["max_batch"] == 20
    assert 0 < result["ready_s"] < 120
    assert result["processes"] >= 2  # the worker and the tiny model's engine at least, all resident
    assert result["resident_mib"] > 50
    assert 50 < result["pss_mib"] <= result["resident_mib"]  # PSS splits the pages the processes share
    table = startup.rows([{"grid": "fine", "max_batch": 64, "ready_s": s, "resident_mib": m, "pss_mib": m / 3}
                          for s, m in ((14.0, 2300.0), (12.0, 2200.0), (19.0, 2400.0))])
    assert table == [{"grid": "fine", "max_batch": 64, "rounds": 3, "ready_s": 14.0, "ready_min_s": 12.0,
                      "ready_max_s": 19.0, "resident_mib": 2300.0, "pss_mib": pytest.approx(2300.0 / 3)}]
    assert "| `fine` | 64 | 3 | 14.0 s (12.0-19.0) | 2,300 MiB | 767 MiB |" in startup.markdown(table)
    assert startup.parse_env(["GAN_WORKERS=2"]) == {"GAN_WORKERS": "2"}
    with pytest.raises(SystemExit, match="GAN_NAME=VALUE"):
        startup.parse_env(["WORKERS=2"])


@pytest.mark.skipif(wrk.find_wrk() is None, reason="needs wrk (apt-get install wrk; .ci/run installs it)")
def test_wrk_asks_with_post_and_with_get_and_counts_every_answer(tmp_path: Path) -> None:
    """bench.wrk's two ways to ask the service for a grid (bench.serve's ours and ours-get):
    both are answered 200, as many images as answers, nothing else counted."""
    from bench.overload import start_server, write_tiny_model

    weights = write_tiny_model(tmp_path / "weights")
    with start_server(weights, tmp_path / "server.log") as server:
        for request in ({}, serve.request_for("ours-get")):
            report = wrk.run_wrk(server.base, 2, 2, 1.0, **request)
            assert report.requests > 0 and report.images == 2 * report.requests, (request, report)
            assert report.errors == {} and report.extra["answers"] == report.requests, (request, report)
    with pytest.raises(ValueError, match="GET or POST"):
        wrk.run_wrk("http://127.0.0.1:9", 1, 1, 1.0, method="PUT")


def test_prepack_bench_compares_the_two_forwards_on_the_same_rows(tiny_weights: Path) -> None:
    """bench.prepack: a row per thread count and size, both forwards timed, the pixels compared."""
    from bench import prepack

    rows = prepack.measure(tiny_weights / "tiny", [1], [1, 3], rounds=1)
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 3)]
    assert all(r["eager_ms"] > 0 and r["packed_ms"] > 0 and r["same_pixels"] for r in rows)
    assert prepack.table(rows).count("x | True |") == 2
