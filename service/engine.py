"""A model's forwards and renders (PNG, WebP, JSON) in a child process of their own (GAN_ENGINE=process).

Why a process: the event loop and the forward share one interpreter lock in a thread. Under load
the event loop holds it nearly all the time (HTTP parsing, JSON, responses), and the forward
thread then waits for it at every Python step of the forward and at every PNG it encodes (PIL
releases and retakes the lock around each one): measured on 2 cores under a retry storm, the
forward thread ran only 60% of the time and at 40% of its speed. In a process of its own the
forward never waits for the HTTP side. This is LitServe's and Triton's layout too: the HTTP
front and the inference worker are separate processes.

The parent keeps the batching, admission and deadlines (service/batcher.py); each batch is one
round trip over a pipe: latents and labels in (numpy arrays, a few KB), each request's render
spec (service/rendering.py, as JSON), and one result per request out (its body: PNG, WebP or
JSON bytes; or uint8 pixels). `EngineClient` has the same `start` / `submit` / `close`
surface as `Runner`, so the batcher does not know which one it drives.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from gancore.weights import ModelLoadError
from service.inference import Render, Runner, RunnerOptions, is_device_error, tf32_state
from service.metrics import process_rss_bytes
from service.rendering import RenderSpec
from service.shared import BusyBoard

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0  # load + warm-up (compile or CUDA graphs make it long)
# how long closing waits for the process to end after "stop" (it has answered everything by then)
# before killing it; part of the shutdown budget that the pod's grace period must cover
STOP_TIMEOUT_S = 10.0


class EngineDied(RuntimeError):
    """The engine process exited (killed, crashed or a device error): the model is out of service."""


# ---------------------------------------------------------------- the wire format
# Messages are bytes: a 4-byte header length, a JSON header, then raw array and PNG bytes. No
# pickle crosses the pipe, so the service still unpickles nothing.

DTYPE_NAMES = {torch.float32: "float32", torch.int64: "int64", torch.uint8: "uint8"}
NUMPY = {"float32": np.float32, "int64": np.int64, "uint8": np.uint8}


def _pack(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    header["sizes"] = [len(b) for b in blobs]
    head = json.dumps(header).encode()
    return len(head).to_bytes(4, "little") + head + b"".join(blobs)


def _unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    size = int.from_bytes(data[:4], "little")
    header = json.loads(data[4 : 4 + size])
    blobs, offset = [], 4 + size
    for n in header["sizes"]:
        blobs.append(data[offset : offset + n])
        offset += n
    return header, blobs


def _tensor_meta(t: torch.Tensor | None, blobs: list[bytes]) -> dict[str, Any] | None:
    if t is None:
        return None
    blobs.append(t.contiguous().numpy().tobytes())
    return {"shape": list(t.shape), "dtype": DTYPE_NAMES[t.dtype]}


def _tensor(meta: dict[str, Any] | None, blobs: Iterator[bytes]) -> torch.Tensor | None:
    if meta is None:
        return None
    array = np.frombuffer(next(blobs), dtype=NUMPY[meta["dtype"]]).reshape(meta["shape"])
    return torch.from_numpy(array.copy())


def _render_spec(render: Render | None) -> dict[str, Any] | None:
    if render is None:
        return None
    if not isinstance(render, RenderSpec):
        raise TypeError(f"an engine process renders a RenderSpec or raw pixels, not {render!r}")
    # Field by field, not dataclasses.asdict: asdict deep-copies every value and cost about 10%
    # of a worker's CPU per request at n=1 (cProfile, in-process drive of the front).
    return {"format": render.format, "nrow": render.nrow, "padding": render.padding, "scale": render.scale,
            "meta": render.meta}


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_ENVIRONMENT_LOCK = threading.RLock()  # engines of several models start from threads of their own (re-entered: forkserver_failed)

# GOMP_SPINCOUNT of the "spin" policy: how long an engine's OpenMP threads spin after a parallel
# region before they sleep. 100,000 spins took 4.6 ms on the AVX-512 EPYC (2.2 ms for 50,000),
# long enough to bridge the gap between one client's forwards, so that every forward of a lone
# request finds its second thread awake (BENCHMARKS.md, "n=1, C=1: a bounded spin").
SPIN_COUNT = 100_000


def omp_environment(policy: str) -> dict[str, str]:
    """The OpenMP variables an engine process starts with under GAN_OMP_WAIT_POLICY `policy`
    (libgomp reads them once, when torch loads it); {} for "inherit"."""
    if policy == "inherit":
        return {}
    if policy == "spin":
        return {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    return {"OMP_WAIT_POLICY": policy.upper()}


@contextmanager
def omp_wait_policy_for_children(policy: str) -> Iterator[None]:
    """The OpenMP variables of GAN_OMP_WAIT_POLICY set in this process's environment while a child
    is spawned inside the block (it inherits the environment, and its libgomp reads it when torch
    loads), then restored: this process's own OpenMP read its environment long ago, and its other
    children (a test's subprocesses) get what they would have. "inherit" changes nothing."""
    wanted = omp_environment(policy)
    with _ENVIRONMENT_LOCK:
        given = {name: os.environ.get(name) for name in wanted}
        for name, value in wanted.items():
            if given[name] is not None and given[name] != value:
                log.warning("%s=%s in the environment is replaced by %s for the engine processes of "
                            "GAN_OMP_WAIT_POLICY=%s (set GAN_OMP_WAIT_POLICY=inherit to keep it)",
                            name, given[name], value, policy)
            os.environ[name] = value
        try:
            yield
        finally:
            for name, before in given.items():
                if before is None:
                    del os.environ[name]
                else:
                    os.environ[name] = before


# The OpenMP environment this process's fork server started with (engine_context), once started;
# _FORKSERVER_BROKEN once it could not start (forkserver_failed): no environment matches it
_forkserver_openmp: frozenset[tuple[str, str]] | None = None
_FORKSERVER_BROKEN: frozenset[tuple[str, str]] = frozenset({("", "the fork server could not start")})


ENGINE_PROCESS_NAME = "gan-engine"  # what ps and top show for an engine process (its comm)


def _name_this_process(name: str) -> None:
    """Set this process's name as ps, top and /proc/<pid>/comm show it (Linux; elsewhere
    nothing): an engine forked from the fork server would otherwise look like the server."""
    try:
        with open("/proc/self/comm", "w") as fh:
            fh.write(name[:15])
    except OSError:
        pass


def engine_runs(pid: int) -> bool:
    """Whether `pid` is an engine process that has not exited, from /proc (Linux; elsewhere False):
    its name is ENGINE_PROCESS_NAME, and it is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return False
    name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
    return name == ENGINE_PROCESS_NAME[:15] and rest[:1] not in ("Z", "X")


def engine_openmp(policy: str) -> frozenset[tuple[str, str]]:
    """The OpenMP variables an engine of wait policy `policy` would start with now: the
    environment's, with the policy's applied over them."""
    given = {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "GOMP_", "KMP_"))}
    return frozenset({**given, **omp_environment(policy)}.items())


def forkserver_failed(exc: BaseException) -> None:
    """The fork server could not start: every later engine of this process is spawned (about
    1.5 s more of CPU each), and the operator is told why once."""
    global _forkserver_openmp
    with _ENVIRONMENT_LOCK:
        if _forkserver_openmp == _FORKSERVER_BROKEN:
            return
        _forkserver_openmp = _FORKSERVER_BROKEN
    log.warning("cannot start the engines' fork server (%s): engines start as fresh processes instead, "
                "about 1.5 s more of CPU each; give the service a writable TMPDIR (the fork server's "
                "socket lives there)", exc)


def engine_context(policy: str) -> Any:
    """How an engine process starts: forked from this process's fork server, which imported torch
    and this module once, instead of a fresh interpreter importing them again (about 1.5 s of CPU
    per engine; the shipped service's start-up has six engines: ready about 22% sooner,
    BENCHMARKS.md). Never a plain fork: a worker has threads and maybe a CUDA context, the fork
    server neither (importing torch initialises no CUDA).

    The fork server's OpenMP read its variables once, when torch loaded there, so it serves the
    engines that would start with the same ones (a service's engines all do); any other engine
    (tests start several kinds) is spawned and reads its own."""
    global _forkserver_openmp
    wanted = engine_openmp(policy)
    with _ENVIRONMENT_LOCK:
        if _forkserver_openmp is None:
            _forkserver_openmp = wanted
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["service.engine"])
            return ctx
        return mp.get_context("forkserver" if wanted == _forkserver_openmp else "spawn")


class LoneThreadsGuard:
    """Whether a lone batch may run on every core's thread: only while such forwards keep pace.

    With the "spin" wait policy an engine's OpenMP threads stay awake between one client's
    forwards, which made n=1 at one client 1.0-1.4x plain FastAPI's req/s on the 2-vCPU AVX-512
    EPYC where sleeping threads gave 0.7-0.9x: every parallel region of a forward otherwise starts
    by waking the second thread. But a spinning team pays only on cores nobody else wants. With
    another process busy on them (a training run, a neighbour's container; a `nice 19` one too,
    since the kernel's autogroups share the cores between sessions) the two threads get the cores
    in turns, each spins at every barrier until the other is scheduled again, and a 2.4 ms forward
    took 40 ms (0.15-0.25x plain FastAPI's req/s, BENCHMARKS.md).

    So the engine times its forwards. STRIKES lone forwards in a row that each take more than
    FACTOR times the best forward of their size on the shared thread count (one thread on two
    cores; the warm-up's timings to start with) send the next batches to the shared count for a
    hold that doubles at every repeat, from HOLD_S up to MAX_HOLD_S. GOOD_RUN lone forwards at
    their pace in a row end the doubling. A lone forward slowed by the VM's jitter alone (p99 is
    2-3x p50 there) does not count; the collapse above is 10-17x."""

    FACTOR = 4.0
    STRIKES = 4
    HOLD_S = 0.25
    MAX_HOLD_S = 30.0
    GOOD_RUN = 64

    def __init__(self, shared_seconds: dict[int, float]):
        self.best = dict(shared_seconds)  # padded batch size -> best forward seconds on the shared threads
        self.until = 0.0  # no lone batch on every core before this time (time.monotonic)
        self.hold = self.HOLD_S  # the next hold's length
        self.strikes = 0  # slow lone forwards in a row
        self.good = 0  # lone forwards at their pace in a row
        self.holds = 0  # holds so far

    def allows(self, now: float) -> bool:
        return now >= self.until

    def observe(self, size: int, seconds: float, spread: bool, now: float) -> None:
        """A forward of `size` rows took `seconds`: on every core's thread when `spread`, else on
        the shared count, which then sets the pace (its best) that spread ones are held to."""
        best = self.best.get(size)
        if not spread:
            self.best[size] = seconds if best is None else min(best, seconds)
            return
        if best is None or seconds <= self.FACTOR * best:
            self.strikes = 0
            self.good += 1
            if self.good >= self.GOOD_RUN:
                self.hold = self.HOLD_S
            return
        self.good = 0
        self.strikes += 1
        if self.strikes >= self.STRIKES:
            self.strikes = 0
            self.holds += 1
            self.until = now + self.hold
            self.hold = min(2 * self.hold, self.MAX_HOLD_S)


# ---------------------------------------------------------------- the child process


def _engine_main(conn: Connection, folder: str, device: str, options: RunnerOptions, threads: int,
                 batch_sizes: list[int], cpus: set[int] | None, board_path: str | None = None,
                 threads_alone: int = 0, render_threads: int = 0) -> None:
    """The child: load, warm up, then answer batches until told to stop or the pipe closes.

    With a busy board (several workers on a CPU), a batch that starts while no other engine is
    busy runs on `threads_alone` threads, else on `threads` (see service.shared.BusyBoard).
    With `render_threads`, renders run beside the next forward (see _Replies)."""
    from gancore.weights import load_generator

    # Ctrl-C reaches the whole process group: the worker that owns this engine drains and then
    # stops it (or its pipe closes), so the engine itself ignores SIGINT instead of dying in
    # recv() with a traceback per engine that reads like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _name_this_process(ENGINE_PROCESS_NAME)
    if cpus:
        os.sched_setaffinity(0, cpus)
    torch.set_num_threads(threads)
    try:
        runner = Runner(load_generator(folder, device="cpu", verify=True), torch.device(device), options)
        seconds = runner.warmup(batch_sizes)
    except Exception as exc:  # reported to the parent, which records the model as not loaded
        conn.send_bytes(_pack({"type": "error", "error": str(exc) if isinstance(exc, ModelLoadError)
                               else _error_text(exc), "load_error": True}, []))
        return
    info = {"config": runner.config, "latent_dim": runner.latent_dim, "conditional": runner.conditional,
            "can_mix_labels": runner.can_mix_labels, "tf32": tf32_state(), "prepacked": runner.prepacked}
    conn.send_bytes(_pack({"type": "ready", "info": info, "seconds": {str(k): v for k, v in seconds.items()}}, []))
    board = BusyBoard(Path(board_path)) if board_path and threads_alone > threads else None
    guard = LoneThreadsGuard(seconds)
    current = threads
    replies = _Replies(conn, runner, render_threads)
    try:
        while True:
            try:
                header, blobs = _unpack(conn.recv_bytes())
            except (EOFError, OSError):
                return
            if header["type"] == "stop":
                return
            parts = iter(blobs)
            z_or_none, labels, labels_to, mix = (_tensor(meta, parts) for meta in header["arrays"])
            z = cast(torch.Tensor, z_or_none)  # every batch has latents
            if board is not None:  # every core only when no engine is busy and no event loop is under a storm
                lone = board.start() == 0 and header.get("calm", True) and guard.allows(time.monotonic())
                wanted = threads_alone if lone else threads
                if wanted != current:  # resizing OpenMP's pool only when the answer changes
                    torch.set_num_threads(wanted)
                    current = wanted
            started = time.perf_counter()
            try:
                renders: list[tuple[int, Render | None]] = [
                    (n, None if spec is None else RenderSpec(**spec)) for n, spec in header["renders"]]
                images = runner.forward(z, labels, labels_to, mix)
                if board is not None:
                    guard.observe(int(z.shape[0]), time.perf_counter() - started, current > threads, time.monotonic())
            except Exception as exc:
                device_error = is_device_error(exc)
                replies.error({"type": "error", "error": _error_text(exc), "device": device_error})
                if device_error:  # this process's CUDA context cannot be trusted any more
                    return
                continue
            finally:
                if board is not None:
                    board.stop()
            replies.holds = guard.holds
            replies.batch(images, z, renders, started, spread=current > threads)
    finally:
        replies.close()


# A batch goes to the render threads when its renders average at least this many pixels: a large
# grid is mostly zlib's time, which runs without the interpreter lock, while a small one is mostly
# Python, which threads only fight over (64 one-image PNGs a batch, on the 2-vCPU EPYC with a
# stand-in forward: 1, 2 and 3 render threads 0.96x, 0.88x and 0.80x the answers of none).
# 32,768: a 64-image Fashion-MNIST grid (50,176) or a 16-image CIFAR-10 one (49,152) goes, a
# 16-image Fashion-MNIST grid (12,544) stays on the main thread.
RENDER_THREAD_MIN_PIXELS = 32_768


class _Replies:
    """The child's answers, sent in the order its batches came.

    Without render threads (the default on a CPU, where the forward already has every core) a
    batch is rendered on the main thread after its forward and answered at once. With them (the
    default on a GPU, where a forward takes a fraction of a millisecond and encoding PNGs is most
    of an engine's work), the main thread hands a batch of large renders to the pool and starts
    the next forward, and a sender thread answers the batches in order as their renders end.
    Small renders stay on the main thread (RENDER_THREAD_MIN_PIXELS); their answers go out at
    once when nothing is ahead of them, else through the sender, in their place."""

    def __init__(self, conn: Connection, runner: Runner, render_threads: int):
        self.holds = 0  # the engine's LoneThreadsGuard holds so far, sent with every answer
        self._conn = conn
        self._runner = runner
        self._pool = (concurrent.futures.ThreadPoolExecutor(render_threads, thread_name_prefix="render")
                      if render_threads > 0 else None)
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards the two fields below, and direct sends from the main thread
        self._queued = 0  # answers handed to the sender and not yet sent
        self._last_end = 0.0  # perf_counter() at which the last answered batch's renders ended
        self._sender: threading.Thread | None = None
        if self._pool is not None:
            self._sender = threading.Thread(target=self._send_in_order, name="engine-send", daemon=True)
            self._sender.start()

    def error(self, header: dict[str, Any]) -> None:
        """A failed batch's answer, in its place in the order."""
        self._answer(("error", header))

    def batch(self, images: torch.Tensor, z: torch.Tensor, renders: list[tuple[int, Render | None]],
              started: float, spread: bool) -> None:
        """Render a batch whose forward began at `started` (perf_counter) and answer it."""
        if self._pool is not None and self._large(renders):
            with self._lock:
                self._queued += 1
            self._queue.put(("batch", self._pool.submit(self._render, images, z, renders), started, spread))
            return
        results, ended = self._render(images, z, renders)
        self._answer(("done", results, started, ended, spread))

    def _large(self, renders: list[tuple[int, Render | None]]) -> bool:
        pixels = self._runner.channels * self._runner.image_size ** 2
        sizes = [n * pixels * r.scale ** 2 for n, r in renders if isinstance(r, RenderSpec)]
        return bool(sizes) and sum(sizes) / len(sizes) >= RENDER_THREAD_MIN_PIXELS

    def _render(self, images: torch.Tensor, z: torch.Tensor,
                renders: list[tuple[int, Render | None]]) -> tuple[list[tuple[bool, Any]], float]:
        return self._runner.render(images, z, renders), time.perf_counter()

    def _answer(self, entry: tuple[Any, ...]) -> None:
        """Send now when no answer is ahead of this one, else queue it behind them."""
        with self._lock:
            if not self._queued:  # the sender is idle and only this thread adds work: no interleaving
                self._send(entry)
                return
            self._queued += 1
        self._queue.put(entry)

    def _send_in_order(self) -> None:
        while (entry := self._queue.get()) is not None:
            try:
                if entry[0] == "batch":
                    _, future, started, spread = entry
                    try:
                        results, ended = future.result()
                        entry = ("done", results, started, ended, spread)
                    except Exception as exc:  # the renders of one request never raise; this is the rest
                        entry = ("error", {"type": "error", "error": _error_text(exc), "device": False})
                self._send(entry)
            except (OSError, ValueError):  # the pipe closed: the parent is gone, nobody to answer
                return
            finally:
                with self._lock:
                    self._queued -= 1

    def _send(self, entry: tuple[Any, ...]) -> None:
        if entry[0] == "error":
            self._conn.send_bytes(_pack(entry[1], []))
            return
        _, results, started, ended, spread = entry
        # The batch's share of the engine's time (what the parent's admission adds up per batch):
        # from its start, or the previous batch's end if later, to its own end. Without render
        # threads this is the batch's forward and renders; with them, the time it added.
        ended = max(ended, self._last_end)
        seconds = ended - max(started, self._last_end)
        self._last_end = ended
        out_blobs: list[bytes] = []
        described = []
        for ok, value in results:
            if not ok:
                described.append({"ok": False, "error": _error_text(value)})
                out_blobs.append(b"")
            elif isinstance(value, torch.Tensor):
                described.append({"ok": True, "array": _tensor_meta(value, out_blobs)})
            else:
                described.append({"ok": True})
                out_blobs.append(value)
        # on a GPU, what this process holds there (the parent's /metrics cannot read another
        # process's CUDA allocations); a C call, once a batch
        cuda_bytes = torch.cuda.memory_allocated(self._runner.device) if self._runner.device.type == "cuda" else None
        self._conn.send_bytes(_pack({"type": "ok", "seconds": seconds, "spread": spread, "results": described,
                                     "cuda_bytes": cuda_bytes, "holds": self.holds}, out_blobs))

    def close(self) -> None:
        """Answer every batch already taken, then stop the threads."""
        if self._sender is not None:
            self._queue.put(None)
            self._sender.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


class EngineClient:
    """The parent's handle on one engine process; offers the batcher the same start / submit /
    close as a Runner. Batches are pipelined: submit sends at once, and one reader thread hands
    results back in order, so the engine starts the next batch the moment it finishes one."""

    def __init__(self, folder: Path, name: str, device: torch.device, options: RunnerOptions, threads: int,
                 cpus: set[int] | None = None, board: Path | None = None, threads_alone: int = 0,
                 omp_wait_policy: str = "passive", render_threads: int = 0):
        self.folder = folder
        self.cpus = cpus  # the cores the process is pinned to (None: any)
        self.board = board  # the workers' busy board (service.shared.BusyBoard), or None
        self.threads_alone = threads_alone  # threads for a batch while no other engine is busy
        self.omp_wait_policy = omp_wait_policy  # GAN_OMP_WAIT_POLICY: spin, passive, active or inherit
        self.render_threads = render_threads  # GAN_RENDER_THREADS, resolved: 0 renders after each forward
        # batches the batcher may have sent and not yet seen answered: one in its forward and one
        # waiting (so the next forward starts at once), or one rendering in each render thread
        self.pipeline_depth = max(2, render_threads + 1)
        self.name = name
        self.device = device
        self.options = options
        self.dtype = options.dtype
        self.threads = threads
        self.config: dict[str, Any] = {}
        self.latent_dim = 0
        self.conditional = False
        self.can_mix_labels = False
        self.tf32: tuple[bool, ...] = ()  # once started
        self.prepacked = False  # whether the engine's Runner packed its convolutions (GAN_PREPACK), once started
        self.start_method = ""  # "forkserver" or "spawn", once started (engine_context)
        self.channels = 0
        self.image_size = 0
        self._conn: Connection | None = None
        self._process: mp.process.BaseProcess | None = None
        self.cuda_bytes = 0.0  # CUDA memory the process reported with its last answer (0 on a CPU)
        self.lone_holds = 0  # its LoneThreadsGuard's holds so far, as of its last answer
        self._send_lock = threading.Lock()
        self._join_lock = threading.Lock()  # _join
        self._pending: deque[concurrent.futures.Future[Any]] = deque()  # sent, not yet answered
        self._dead: EngineDied | None = None
        self._reader: threading.Thread | None = None
        self._exit_expected = False  # close() asked it to stop, or it reported the device error it exits for
        # called from the reader thread when the process exits unasked (killed, crashed), so that the
        # model leaves service at once rather than at its next batch (the batcher sets it)
        self.on_exit: Callable[[EngineDied], None] | None = None

    def wait_policy(self) -> str:
        """GAN_OMP_WAIT_POLICY as this engine applies it: "spin" only where a LoneThreadsGuard
        can take the spin's team apart when the cores are contended (a CPU engine with a busy
        board, so with a lone and a shared thread count); elsewhere "passive": an engine with a
        fixed team has nothing to fall back to, and a GPU engine's forwards run no OpenMP
        regions worth keeping a core awake for."""
        if self.omp_wait_policy == "spin" and (self.board is None or self.device.type != "cpu"):
            return "passive"
        return self.omp_wait_policy

    def start(self, batch_sizes: list[int]) -> concurrent.futures.Future[dict[int, float]]:
        """Start the process, which loads the weights (SHA-checked) and warms up every batch size
        on its serving thread; the future gives seconds per padded size once it is ready."""
        future: concurrent.futures.Future[dict[int, float]] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self._start(batch_sizes))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=run, name=f"engine-start-{self.name}", daemon=True).start()
        return future

    def _start(self, batch_sizes: list[int]) -> dict[int, float]:
        ctx = engine_context(self.wait_policy())
        parent, child = mp.Pipe()
        args = (child, str(self.folder), str(self.device), self.options, self.threads, batch_sizes, self.cpus,
                None if self.board is None else str(self.board), self.threads_alone, self.render_threads)

        def launch(ctx: Any) -> Any:
            process = ctx.Process(target=_engine_main, name=f"engine-{self.name}", daemon=True, args=args)
            process.start()
            return process

        with omp_wait_policy_for_children(self.wait_policy()):
            # spawned, or the fork server started (its first engine): exec'd here, with the environment of now
            try:
                self._process = launch(ctx)
            except OSError as exc:  # the fork server could not start (no writable temporary folder for its socket)
                if ctx.get_start_method() != "forkserver":
                    raise
                forkserver_failed(exc)
                ctx = mp.get_context("spawn")
                self._process = launch(ctx)
        self.start_method = ctx.get_start_method()
        child.close()
        self._conn = parent
        if not parent.poll(START_TIMEOUT_S):
            self.close()
            raise EngineDied(f"engine for {self.folder} not ready after {START_TIMEOUT_S:g} s")
        try:
            header, _ = _unpack(parent.recv_bytes())
        except (EOFError, OSError):
            self.close()
            raise EngineDied(f"the engine for {self.folder} exited during start-up "
                             f"(code {self._process.exitcode if self._process else None})") from None
        if header["type"] == "error":
            self.close()
            raise ModelLoadError(header["error"]) if header.get("load_error") else RuntimeError(header["error"])
        info, seconds = header["info"], {int(k): v for k, v in header["seconds"].items()}
        self.config = info["config"]
        self.latent_dim = int(info["latent_dim"])
        self.conditional = bool(info["conditional"])
        self.can_mix_labels = bool(info["can_mix_labels"])
        self.tf32 = tuple(bool(v) for v in info["tf32"])  # (matmul, cuDNN) in the engine's process, as its Runner set them
        self.prepacked = bool(info["prepacked"])
        self.channels = int(self.config["channels"])
        self.image_size = int(self.config["image_size"])
        self.name = self.config.get("name", self.name)
        self._reader = threading.Thread(target=self._read, name=f"engine-read-{self.name}", daemon=True)
        self._reader.start()
        return seconds

    def _read(self) -> None:
        """Results come back in the order the batches were sent."""
        conn = self._conn
        assert conn is not None
        while True:
            try:
                header, blobs = _unpack(conn.recv_bytes())
            except (EOFError, OSError):
                self._join(timeout=5)
                code = self._process.exitcode if self._process is not None else None
                died = EngineDied(f"the engine process of model {self.name!r} exited (code {code})")
                self._die(died)
                if not self._exit_expected and self.on_exit is not None:
                    self.on_exit(died)
                return
            future = self._pending.popleft()
            if header["type"] == "error":  # a device error ends the engine: the model is out of service
                if header.get("device"):
                    self._exit_expected = True  # that batch's failure breaks the model, naming the error
                future.set_exception(EngineDied(header["error"]) if header.get("device")
                                     else RuntimeError(header["error"]))
                continue
            if header.get("cuda_bytes") is not None:
                self.cuda_bytes = float(header["cuda_bytes"])
            self.lone_holds = int(header.get("holds", self.lone_holds))
            parts = iter(blobs)
            results: list[tuple[bool, Any]] = []
            for r in header["results"]:
                blob = next(parts)
                if not r["ok"]:
                    results.append((False, RuntimeError(r["error"])))
                elif r.get("array"):
                    results.append((True, _tensor(r["array"], iter([blob]))))
                else:
                    results.append((True, blob))
            future.set_result((results, header["seconds"], header.get("spread", False)))

    def _join(self, timeout: float) -> None:
        """Wait for the process to exit, one thread at a time: a process forked from the fork server
        reports its exit status once, through a pipe, and of two threads joining it at once the
        one that reads second finds the pipe empty and records exit code 255 over the real one
        (CPython's popen_forkserver; 89 of 200 exits in a loop of two joining threads)."""
        if self._process is not None:
            with self._join_lock:
                self._process.join(timeout=timeout)

    def _stop_orphan(self, deadline: float) -> None:
        """With its fork server gone (killed), multiprocessing says a forked engine has exited
        whether it has or not (it reads the exit status from the server): ask /proc instead, give
        the engine until `deadline` to stop as asked, then kill it."""
        pid = self._process.pid if self._process is not None else None
        if pid is None or self.start_method != "forkserver":
            return
        while engine_runs(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if engine_runs(pid):
            log.warning("the engine process of model %r (pid %d) did not stop; killing it", self.name, pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _die(self, exc: EngineDied) -> None:
        with self._send_lock:
            self._dead = exc
            while self._pending:
                self._pending.popleft().set_exception(exc)

    def memory_bytes(self) -> float:
        """What the engine process holds on its device: CUDA bytes as of its last answer on a GPU,
        its resident memory on a CPU (0 once it has exited)."""
        if self.device.type == "cuda":
            return self.cuda_bytes
        process = self._process
        if process is None or process.pid is None or self._dead is not None:
            return 0.0
        # read from /proc, not through is_alive(): a forked engine's exit status comes through its
        # fork server, and with that server gone (killed) is_alive() says exited while the engine serves
        rss = process_rss_bytes(process.pid)
        return 0.0 if math.isnan(rss) else rss

    def submit(
        self, z: torch.Tensor, labels: torch.Tensor | None, labels_to: torch.Tensor | None,
        mix: torch.Tensor | None, renders: list[tuple[int, Render | None]], calm: bool = True,
    ) -> concurrent.futures.Future[tuple[list[tuple[bool, Any]], float, bool]]:
        """Send one batch; the future gives (one result per request, the engine's seconds, whether
        it ran spread over more than its worker's share of the cores).
        `calm`: the batcher refused nothing lately, so its event loop leaves the cores alone."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._send_lock:
            if self._dead is not None or self._conn is None:
                future.set_exception(self._dead or EngineDied(f"the engine of model {self.name!r} is not running"))
                return future
            blobs: list[bytes] = []
            header = {"type": "batch", "calm": calm,
                      "arrays": [_tensor_meta(t, blobs) for t in (z, labels, labels_to, mix)],
                      "renders": [[n, _render_spec(render)] for n, render in renders]}
            self._pending.append(future)
            try:
                self._conn.send_bytes(_pack(header, blobs))
            except (OSError, ConnectionError):
                pass  # the reader sees the pipe close and fails every pending batch
        return future

    def close(self) -> None:
        """Ask the process to stop after what it was sent, then make sure it has."""
        self._exit_expected = True
        with self._send_lock:
            if self._conn is not None and self._dead is None:
                try:
                    self._conn.send_bytes(_pack({"type": "stop"}, []))
                except (OSError, ConnectionError):
                    pass
        if self._process is not None:
            self._join(timeout=STOP_TIMEOUT_S)
            with self._join_lock:
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join()
            self._stop_orphan(time.monotonic() + STOP_TIMEOUT_S)
        if self._reader is not None:
            self._reader.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
