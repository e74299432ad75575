"""What both benchmarks share: the machine's description, the weights folder, free ports and
server subprocesses that are started, waited for and stopped the same way."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from service.metrics import process_rss_bytes

REPO = Path(__file__).resolve().parent.parent
SHIPPED_WEIGHTS = REPO / "weights" / "fashion-mnist-cwgangp"
RANDOM_WEIGHTS = REPO / "runs" / "bench-weights" / "bench-random-cwgangp"

# The shipped generator's size: ~1.06M parameters, 52.2M multiply-accumulates per 28x28 image
# (52,208,128: test_shipped_architecture_arithmetic).
SHIPPED_ARCH = dict(latent_dim=20, num_classes=10, embed_dim=10, channels=1, image_size=28, base_width=256)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, object]:
    """What a figure needs beside it: cores, CPU, GPU, versions, date and the load at start."""
    info: dict[str, object] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def make_random_weights(folder: Path = RANDOM_WEIGHTS, seed: int = 0) -> Path:
    """A generator of the shipped architecture with random weights (speed does not depend on
    the values), written with the same export code as a trained one."""
    from gancore.labels import FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS
    from gancore.networks.dcgan import ConditionalGenerator
    from gancore.weights import WEIGHTS_FILE, save_generator

    if (folder / WEIGHTS_FILE).is_file():
        return folder
    torch.manual_seed(seed)
    gen = ConditionalGenerator(**SHIPPED_ARCH)
    aliases = dict(zip(FASHION_MNIST_OFFICIAL, FASHION_MNIST_SLUGS, strict=True))
    save_generator(folder, gen, "dcgan", dict(SHIPPED_ARCH), list(FASHION_MNIST_SLUGS), aliases,
                   extra={"note": "random weights for benchmarks"})
    return folder


def resolve_weights(arg: str | None) -> Path:
    """--weights DIR, else the shipped generator when present, else random weights of its size."""
    if arg:
        path = Path(arg)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--weights {arg}: no config.json there; pass a generator folder "
                             "(config.json + generator.safetensors)")
        return path.resolve()
    if (SHIPPED_WEIGHTS / "config.json").is_file():
        return SHIPPED_WEIGHTS
    return make_random_weights().resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_ticks() -> tuple[int, int]:
    """(all cores' ticks since boot, of which idle and iowait) from /proc/stat's first line. The
    first 8 fields: guest time is already inside user time, so it is not added again."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields), fields[3] + fields[4]


def cpu_busy_fraction(interval_s: float = 1.0) -> float:
    """The share of all cores' time spent outside idle and iowait over interval_s (Linux /proc/stat)."""
    total0, idle0 = _cpu_ticks()
    time.sleep(interval_s)
    total1, idle1 = _cpu_ticks()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def process_depths(pid: int) -> dict[int, int]:
    """pid and all its descendants (Linux /proc), each with its depth below pid: the service's
    supervisor 0, its workers 1, their fork servers 2 and engine processes 3 (one worker runs
    in the supervisor's process: one level less)."""
    depths, order, i = {pid: 0}, [pid], 0
    while i < len(order):
        parent = order[i]
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the thread or process is gone
                continue
            for child in children:
                if child not in depths:
                    depths[child] = depths[parent] + 1
                    order.append(child)
        i += 1
    return depths


def running(pid: int) -> bool:
    """Whether pid is a live process (a zombie, which only waits to be reaped, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait up to timeout_s for the processes to end; the ones still running then."""
    deadline = time.monotonic() + timeout_s
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if running(p)]


def stop_processes(pids: list[int], grace_s: float) -> None:
    """Wait up to grace_s for the processes to end, then SIGKILL the ones still running."""
    for pid in wait_gone(pids, grace_s):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(pids, 2.0)  # SIGKILL is not instant: let them go before the next window


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (Linux /proc): a server's supervisor, workers and engines."""
    return list(process_depths(pid))


def rss_mb(pid: int) -> float:
    """Resident set size in MiB of a process and its descendants (Linux /proc), so that a server
    with several worker processes is measured whole."""
    total = sum(rss for rss in map(process_rss_bytes, process_tree(pid)) if not math.isnan(rss))  # gone: NaN
    return total / 2**20 if total else float("nan")


def pss_mb(pid: int) -> float:
    """Proportional set size in MiB of a process and its descendants (Linux /proc): each page
    shared among them counts once in all (split between its sharers), so the sum is what the tree
    holds. Unlike an RSS sum, it does not grow when an engine forked from its fork server starts
    touching library pages the server has resident already (RSS sums, bench.overload's leak check
    before, read 280 MiB of such growth). A process without smaps_rollup counts its RSS."""
    total = 0.0
    for child in process_tree(pid):
        try:
            text = Path(f"/proc/{child}/smaps_rollup").read_text()
            total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration, ValueError):
            rss = process_rss_bytes(child)
            total += 0.0 if math.isnan(rss) else rss
    return total / 2**20 if total else float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (Linux /proc; gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished, waited-for children (wrk runs, for one)."""
    times = os.times()
    return times.children_user + times.children_system


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent outside idle and iowait since boot (Linux /proc/stat)."""
    total, idle = _cpu_ticks()
    return (total - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(busy_below: float = 0.1, max_s: float = 30.0) -> float:
    """Seconds waited until the machine is quiet again (busy < busy_below over a second), at most
    max_s. A server that says it is ready may still be starting helpers (Ray's agents and
    dashboard import for seconds after Serve is up); measuring then charges their start-up to its
    first cell. Without /proc/stat there is nothing to wait on."""
    if not Path("/proc/stat").is_file():
        return 0.0
    start = time.monotonic()
    while time.monotonic() - start < max_s and cpu_busy_fraction() >= busy_below:
        pass
    return time.monotonic() - start


# A server's process tree below this many cores is idle (ours parks its engines; LitServe at a
# 1 ms batch_timeout polls at about 0.06 of a core)
IDLE_CORES = 0.1


def wait_tree_idle(pid: int, below_cores: float = IDLE_CORES, window_s: float = 0.2,
                   max_s: float = 3.0) -> tuple[float, float]:
    """Wait until pid's process tree uses less than below_cores over window_s, at most about max_s;
    (seconds waited, the tree's cores over the last window: at least below_cores when max_s ran out).
    wrk exits with its C requests still inside the server: a server that does not drop them when
    their client goes (plain FastAPI's thread pool, LitServe) keeps computing them, and without
    this wait they would land in the next window, its own or another server's."""
    start = time.monotonic()
    while True:
        tree = process_tree(pid)
        before = cpu_seconds(tree)
        time.sleep(window_s)
        cores = (cpu_seconds(tree) - before) / window_s
        waited = time.monotonic() - start
        if cores < below_cores or waited >= max_s:
            return waited, cores


def stop_servers_on_sigterm() -> None:
    """Make SIGTERM end this process through SystemExit, so that the `with` blocks of its
    ServerProcess and CeilingProcess objects stop their servers. Those run in process groups of
    their own, out of reach of the signal that a time limit (`timeout` in bench/gpu.sh) sends to
    this one's group; Python's default ending would leave them running, holding cores and GPU
    memory through the steps after."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class ServerProcess:
    """A server in a subprocess of its own (own process group), ready once `ready_path` says 200."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, env: dict[str, str] | None = None,
                 log_path: Path | None = None):
        self.name = name
        self.argv = argv
        self.port = port
        self.ready_path = ready_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self.settle_seconds = 0.0  # waited after readiness for the machine to be quiet (wait_for_quiet)
        self.settle_max_s = 20.0  # at most this long

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 180.0) -> ServerProcess:
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during start-up; "
                                   f"see {self.log_path or 'its output (pass a log path)'}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2.0).status_code == 200:
                    self.settle_seconds = wait_for_quiet(max_s=self.settle_max_s)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} not ready on {self.base_url}{self.ready_path} after {timeout_s:g} s")

    def stop(self, helpers_grace_s: float = 3.0) -> None:
        """SIGTERM to the server's process group (LitServe has worker processes), then SIGKILL; then
        wait for every process of its tree, which can outlive the server: LitServe's inference
        workers, orphaned, kept spinning a core for about 8 s, in the window of whichever server
        was measured next. What is left after helpers_grace_s is killed."""
        if self.proc is not None and self.proc.poll() is None:
            helpers = process_tree(self.proc.pid)[1:]
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            stop_processes(helpers, helpers_grace_s)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()  # type: ignore[union-attr]

    def __enter__(self) -> ServerProcess:
        # A `with` block's __exit__ runs only once __enter__ has returned: a SIGTERM (SystemExit, see
        # stop_servers_on_sigterm) or Ctrl-C while the server starts, which can take minutes (model
        # load, CUDA graphs), would leave it running in its own process group. Stop it here.
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


PYTHON = sys.executable


def paired_ratios(ours: list[float], reference: list[float]) -> list[float]:
    """Round by round: ours / reference (rounds where the reference measured nothing are left out),
    so that a VM's drift, which moves both alike within a round, cancels."""
    return [a / b for a, b in zip(ours, reference, strict=True) if b > 0]


def summary(values: list[float]) -> dict[str, float]:
    """Median and range; empty when there is nothing to summarise."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


def process_name(pid: int) -> str:
    """A process's name as ps shows it (/proc/<pid>/comm), "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
