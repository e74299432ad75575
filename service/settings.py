"""The service's configuration: one typed object, read from GAN_* environment variables.

This is the only module that reads the environment; everything else receives a `Settings`.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity (a container's cpuset), capped by the cgroup's
    CPU quota (a Kubernetes CPU limit), which torch's own default ignores: cgroup v2's cpu.max,
    or v1's cpu.cfs_quota_us / cpu.cfs_period_us (still on some nodes, e.g. Amazon Linux 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return cores if quota is None else min(cores, max(1, math.ceil(quota)))


def _cpu_quota(cgroup: Path) -> float | None:
    """The CPU limit in cores, or None when there is none (or no cgroup file to read)."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us  # -1: no limit
    except (OSError, ValueError):
        return None


MAX_API_KEYS = 1024  # the shared rate-limit file has twice as many slots (service/ratelimit.py)


def parse_api_keys(value: str) -> list[str]:
    """GAN_API_KEYS as a list: a comma list, or the lines of the file named after '@' (blank
    lines and # comments skipped). Raises ValueError, never naming a key, for a missing file, no
    key at all, or a key with spaces or control characters (it could not be sent in a header)."""
    if value.strip().startswith("@"):
        path = Path(value.strip()[1:].strip())
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the key file {path} ({getattr(exc, 'strerror', None) or exc}); "
                             "mount it there or fix the path after '@'") from None
        lines = [line.strip() for line in text.splitlines()]
        keys = [line for line in lines if line and not line.startswith("#")]
        where = f"the key file {path}"
    else:
        keys = [k.strip() for k in value.split(",") if k.strip()]
        where = "the list"
    if not keys:
        raise ValueError(f"no key in {where}; give at least one, or unset GAN_API_KEYS to serve without keys")
    for i, key in enumerate(keys, 1):
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in key):
            raise ValueError(f"key {i} of {where} has a space, a control or a non-ASCII character; "
                             "keys are sent as `Authorization: Bearer <key>`")
    keys = list(dict.fromkeys(keys))  # a repeated key is the same key
    if len(keys) > MAX_API_KEYS:
        raise ValueError(f"{len(keys)} keys in {where}, more than {MAX_API_KEYS}")
    return keys


class Settings(BaseSettings):
    """Every knob of the service; each field `x` is read from the environment variable `GAN_X`
    (`python -m service --x` sets that variable; service/__main__.py). The docstring under each
    field is its `--help` text."""

    model_config = SettingsConfigDict(env_prefix="GAN_", extra="ignore", frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """uvicorn bind address (python -m service)"""
    port: int = Field(default=8000, ge=0, le=65535)
    """uvicorn port"""
    weights_dir: Path = Path("weights")
    """one sub-folder per model (config.json + safetensors)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available"""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """float16 needs cuda; bfloat16 needs cuda with bf16 or a CPU with native bf16 (AVX512-BF16, AMX)"""
    tf32: bool = False
    """let float32 matmuls and convolutions use TF32 on CUDA (faster, ~10-bit mantissa)"""
    channels_last: bool = True
    """NHWC weights and activations: faster convolutions, same pixels within 1 level"""
    cuda_graphs: bool = False
    """capture one CUDA graph per padded batch size at warm-up (CUDA only)"""
    compile: bool = False
    """torch.compile the forward per padded batch size (slow start-up)"""
    prepack: bool = True
    """float32 on a CPU: each convolution's weight packed once into oneDNN's blocked layout, the ReLU after it
    fused in (service/prepack.py): an n=1 forward 3.9 -> 2.9 ms on one thread of the Ice Lake Xeon, the same
    pixels; kept only where, at start-up, its images match the eager model's and its forward is at most
    25% slower. Off: eager convolutions
    """
    engine: Literal["process", "thread"] = "process"
    """where a model's forwards and PNG renders run: "process" (a child process per model, so they never wait
    for the event loop's interpreter lock) or "thread" (in this process)
    """
    http_nice: int = Field(default=10, ge=0, le=19)
    """with GAN_PIN_CPUS in force, the nice value added to the event loop's thread once the models are loaded:
    under overload the pinned engines then get the CPU first, HTTP what is left
    """
    pin_cpus: bool = True
    """one worker with engine processes on the CPU: the event loop's thread keeps the first core it may use and
    the engines get the others, so a storm of requests cannot take the forwards' cores (the kernel otherwise
    puts a client or the event loop beside them)
    """
    workers: int = Field(default=0, ge=0, le=64)
    """processes serving the one port, each with its own batcher and copy of every model. 0 (auto): python -m
    service picks 2 on a CPU with 2 or more cores (measured: up to 2x the images/s of one on 2 cores,
    BENCHMARKS.md) and on a GPU one per two cores, 2 to 4 (auto_workers); an app built in-process is one
    """
    torch_threads: int = Field(default=0, ge=0, le=512)
    """torch intra-op threads per worker; 0: (cores - workers) // workers, at least 1"""
    adaptive_threads: bool = True
    """with several workers on a CPU and GAN_TORCH_THREADS auto: a batch that starts while no other engine is
    busy runs on every core's thread instead of its worker's share (a lone n=1 forward: 1.7 ms on one thread
    of 2 cores, 1.2 ms on two; service.shared.BusyBoard)
    """
    render_threads: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = "auto"
    """threads of each engine process that encode large answers (PNG, WebP, JSON) beside its next forward; 0:
    none, every answer is rendered after its forward on the engine's one thread. auto: none on a CPU, where
    the forward has every core, and on a GPU min(4, the worker's share of the cores - 1), because there a
    forward takes a fraction of a millisecond and one thread's PNG encoding caps the engine (BENCHMARKS.md,
    "Render threads")
    """
    omp_wait_policy: Literal["spin", "passive", "active", "inherit"] = "spin"
    """How the engine processes' OpenMP threads wait between parallel regions. "spin" (CPU engines with a lone
    and a shared thread count, i.e. several workers, the default on a CPU): OMP_WAIT_POLICY=ACTIVE with
    GOMP_SPINCOUNT=100000 (4.6 ms on the EPYC below), so that a lone request's forward finds its second
    thread awake: n=1 at one client 1.0-1.4x plain FastAPI's req/s on the 2-vCPU AVX-512 EPYC against
    0.7-0.9x with "passive"; while other processes keep the cores busy, the engine's guard
    (engine.LoneThreadsGuard) drops lone batches to the shared thread count, since a spinning team then
    collapses (0.15-0.25x) (BENCHMARKS.md). Other engines (fixed GAN_TORCH_THREADS, one worker, a GPU) wait
    passively under "spin". "passive": threads sleep between regions (the safer choice on a host shared with
    other busy processes: 0.80-0.98x plain there, against 0.65-0.82x with "spin"); "active": libgomp's spin
    with no bound; "inherit": whatever the environment says (libgomp's default: spin, then sleep).
    """
    exit_on_device_error: bool = True
    """a CUDA error (device-side assert, illegal address) fails /healthz and /readyz and ends the process
    gracefully so that its supervisor (docker, kubelet, the worker manager) restarts it
    """
    failed_batches_limit: int = Field(default=8, ge=0, le=1_000_000)
    """batches of one model failing in a row, with no success between, after which the model counts as broken
    like a device error (503, /healthz and /readyz down, a restart): a CUDA context survives an
    out-of-memory, so a leak or a neighbour holding the GPU's memory would otherwise answer 500 to every
    batch with /healthz green. 0: never (each failed batch fails alone)
    """
    max_batch: int = Field(default=64, ge=1, le=4096)
    """images per generator forward"""
    batch_grid: Literal["auto", "powers", "fine", "every"] = "auto"
    """the batch sizes warmed up at start; every batch is padded to the next one (padding rows are computed and
    thrown away). "powers": powers of two up to max_batch (few shapes: one CUDA graph or torch.compile
    each); "fine": every size to 16, then eight steps per doubling (18, 20, ..., 32, 36, ..., 64), so a
    batch pads by at most 1/8; "every": every size (no padding, more warm-up and memory). auto: powers on
    CUDA and with GAN_COMPILE, fine on a CPU, where padding costs its whole compute (at n=1, 64 clients,
    batches of 17-32 padded to 32; fine served 1.22x the images of powers in paired rounds, BENCHMARKS.md
    "Padding: powers of two against a finer grid"); each size costs start-up time and some memory (oneDNN's
    per shape)
    """
    slice_ms: float = Field(default=50.0, ge=0, le=60_000, allow_inf_nan=False)
    """while requests of one batch or less keep coming beside larger ones and a full batch takes 20 ms or more
    (a CPU), the larger ones' rows run in forwards of their own of at most this long (the largest warmed size
    that fits, at least a quarter of max_batch), so that a small request waits for a short forward, not a
    full batch; 0: whole batches (BENCHMARKS.md, "Single images beside grids: large requests in slices")
    """
    max_wait_ms: float = Field(default=0.0, ge=0, le=600_000, allow_inf_nan=False)
    """how long the oldest request may wait for a batch to fill; 0: take what is queued when the forward thread
    is free (requests arriving during a forward still batch together)
    """
    max_n: int = Field(default=256, ge=1)
    """images per /generate request"""
    max_steps: int = Field(default=32, ge=2)
    """frames per /interpolate request"""
    max_scale: int = Field(default=8, ge=1, le=64)
    """nearest-neighbour upscaling factor"""
    queue_size: int = Field(default=4096, ge=1)
    """images waiting per model before 503; a request of one batch or less counts only the small
    requests queued (they take turns with the larger ones' batches), so at most twice this in all
    """
    request_timeout_s: float = Field(default=10.0, gt=0, le=3600, allow_inf_nan=False)
    """each request's deadline: a longer expected wait is refused at once (503 + Retry-After), and work that
    would end after it is dropped before its forward (504)"""
    refusal_pause_ms: float = Field(default=100.0, ge=0, le=10_000, allow_inf_nan=False)
    """retry pacing (service/pacing.py): a connection that asks again within refusal_eager_ms of its last 503
    (overloaded) and is refused again gets that 503 this much later, so that clients ignoring Retry-After
    cannot spend the cores on refusals; 0 turns pacing off
    """
    refusal_eager_ms: float = Field(default=30.0, ge=0, le=10_000, allow_inf_nan=False)
    """retry pacing: a request within this long of its connection's last 503 (overloaded) is eager, and an
    eager one refused again is held refusal_pause_ms (doubling in a row, up to refusal_max_pause_ms)
    """
    refusal_max_pause_ms: float = Field(default=1_000.0, ge=0, le=60_000, allow_inf_nan=False)
    """each further eager refusal in a row on that connection is held twice as long, up to this (kept well
    under request_timeout_s, so that the queue has not drained when they come back)
    """
    max_body_bytes: int = Field(default=1_048_576, ge=64)
    """larger request bodies get 413; 1 MiB holds 256 latents of 128 numbers as JSON (at most 25 bytes a
    number: 820 KB)
    """
    body_timeout_s: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    """the whole request body must arrive within this long of the request's start, or the answer is 408 and the
    connection closes (a client sending its body a byte a second would otherwise hold its request forever)
    """
    max_pixels: int = Field(default=16_777_216, ge=1)
    """output pixels per response (after scale)"""
    default_model: str = "fashion-mnist-cwgangp"
    """the model a request that names none gets; falls back to the first loaded model"""
    cors_origins: str = ""
    """comma-separated origins; empty disables CORS"""
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """the service's and uvicorn's log level"""
    access_log: bool = False
    """uvicorn's access log, one INFO line per request; off by default: at 1,000 requests a second it was 3.7%
    of a worker's CPU and as many lines, and /metrics and the error lines (with request ids) already say
    what happened
    """
    opentelemetry: bool = False
    """FastAPI's native OpenTelemetry (spans, metrics and logs through the global providers, as
    `opentelemetry-instrument` configures them). Off by default: each request otherwise looks the three
    providers up (9.3 us a request here, against 0.2 us off), and /metrics covers the service
    """
    api_keys: SecretStr | None = None
    """API keys: a comma list, or "@/path/to/file" (one key per line; blank lines and # comments ignored). When
    set, /generate, /interpolate and /models need `Authorization: Bearer <key>`. Unset: no keys, nothing
    checked. Secret fields never show in a repr or a log.
    """
    rate_limit_images_per_s: float = Field(default=0.0, ge=0, le=1_000_000, allow_inf_nan=False)
    """images per second per API key (n of /generate, steps of /interpolate), a token bucket whose burst is one
    second's worth, shared by the workers; 0: no limit. Needs GAN_API_KEYS.
    """
    metrics_token: SecretStr | None = None
    """when set, GET /metrics needs `Authorization: Bearer <token>`"""
    admin_token: SecretStr | None = None
    """when set, POST /admin/reload exists and needs it as Bearer"""

    @field_validator("api_keys")
    @classmethod
    def _keys_readable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_keys(value.get_secret_value())  # a missing file or no key stops start-up
        return value

    @field_validator("metrics_token", "admin_token")
    @classmethod
    def _token_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token or any(c.isspace() or not c.isprintable() for c in token):
            raise ValueError("the token is empty or has spaces or control characters; set a printable "
                             "token, or unset the variable")
        return SecretStr(token)

    @field_validator("host", "weights_dir", "default_model", mode="before")
    @classmethod
    def _not_empty(cls, value: object) -> object:
        # an empty GAN_HOST would listen on every interface, an empty GAN_WEIGHTS_DIR be the working folder
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty; set a value, or unset the variable for the default")
        return value

    @field_validator("rate_limit_images_per_s")
    @classmethod
    def _limit_needs_keys(cls, value: float, info: ValidationInfo) -> float:
        if value and "api_keys" in info.data and info.data["api_keys"] is None:
            raise ValueError("a rate limit is per API key; set GAN_API_KEYS too, or unset the limit")
        if 0 < value < 1:
            raise ValueError("below 1 image/s a burst of one second's worth holds no whole image; "
                             "use 0 (no limit) or at least 1")
        return value

    @field_validator("log_level", "device", "dtype", "batch_grid", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _half_needs_cuda(self) -> Settings:
        if self.dtype == "float16" and self.device == "cpu":
            raise ValueError(
                "GAN_DTYPE=float16 needs a CUDA device; use GAN_DTYPE=float32 on CPU "
                "(or bfloat16 on a CPU with native bf16)"
            )
        return self

    def api_key_list(self) -> list[str]:
        """The API keys (empty without GAN_API_KEYS); a key file is read again on each call."""
        return [] if self.api_keys is None else parse_api_keys(self.api_keys.get_secret_value())

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def worker_processes(self) -> int:
        """Processes serving the port: GAN_WORKERS, or 1 while it is still auto (0), which only
        python -m service resolves (it needs the device)."""
        return self.workers or 1

    def auto_workers(self, device_type: str) -> int:
        """What GAN_WORKERS=0 means on this device: 1 on a single core. On a CPU 2 (the forward is
        the work, and two workers measured best on 2 cores). On a GPU one per two cores, 2 to 4:
        there the forward is nearly free and each worker's event loop and engine spend about a
        core each on HTTP and encoding. With a stand-in for the GPU's forward on 2 cores, 2
        workers answered 1.34x the n=1 requests of one at 256 clients (BENCHMARKS.md). Each
        worker costs a CUDA context per model (its engine processes) and a copy of the models."""
        cores = available_cores()
        if cores < 2:
            return 1
        if device_type == "cpu":
            return 2
        return min(4, max(2, cores // 2))

    def render_threads_for(self, device_type: str) -> int:
        """Render threads per engine process: GAN_RENDER_THREADS, or what auto means on this
        device: none on a CPU (answers rendered after each forward, on its thread), and on a GPU
        one per core of this worker's share less one for the forwards, at most 4."""
        if self.render_threads != "auto":
            return self.render_threads
        if device_type == "cpu":
            return 0
        return max(1, min(4, available_cores() // self.worker_processes - 1))

    def threads_per_worker(self) -> int:
        """torch intra-op threads for one worker: the cores given to us, less one per worker for
        its event loop (HTTP, JSON, PNG hand-off), shared among the workers. An OpenMP forward
        with as many threads as cores stalls at every barrier whenever the event loop takes a
        core (measured on 2 cores: 1 thread serves 1.4x the requests of 2, BENCHMARKS.md)."""
        if self.torch_threads:
            return self.torch_threads
        workers = self.worker_processes
        return max(1, (available_cores() - workers) // workers)

    def cpu_split(self) -> tuple[set[int], set[int]] | None:
        """(cores for the event loop, cores for the engines) when GAN_PIN_CPUS applies: one
        worker, engine processes on the CPU, at least two cores. Otherwise None."""
        on_cpu = self.device == "cpu" or (self.device == "auto" and not _cuda_available())
        if not (self.pin_cpus and self.worker_processes == 1 and self.engine == "process" and on_cpu):
            return None
        try:
            cores = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return None
        if len(cores) < 2:
            return None
        return {cores[0]}, set(cores[1:])

    def batch_sizes(self, device_type: str) -> list[int]:
        """The batch sizes warmed up at start on this device (which of them are also timed:
        service.inference.timed_sizes), ascending, the last one max_batch; every batch runs padded
        to the next of them, so warm-up covers every shape a request can produce (GAN_BATCH_GRID)."""
        grid = self.batch_grid
        if grid == "auto":
            grid = "powers" if device_type == "cuda" or self.compile else "fine"
        if grid == "every":
            return list(range(1, self.max_batch + 1))
        sizes, b = [], 1
        while b < self.max_batch:
            sizes.append(b)
            # fine: a step of 1/8 of the power of two at or below b (1 up to 16), so that a batch
            # pads by at most an eighth, with eight sizes per doubling to warm up
            b = 2 * b if grid == "powers" else b + max(1, (1 << (b.bit_length() - 1)) // 8)
        sizes.append(self.max_batch)
        return sizes


def _cuda_available() -> bool:
    """Whether GAN_DEVICE=auto means a GPU here (python -m service resolves auto before the
    settings reach a worker; an app made with create_app directly may still hold it)."""
    import torch

    return torch.cuda.is_available()


# GAN_* variables that are not settings but that the project sets for its own reasons; a grep of
# docker/, k8s/, bench/, tests/, service/ and the docs (2026-12-03) found none, so only the settings pass
OTHER_VARIABLES: frozenset[str] = frozenset()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line per GAN_* variable that names no setting, with the closest setting: a misspelled
    GAN_API_KEY would otherwise be ignored and leave the service open. The caller frames them
    (python -m service: `error: ` and exit 2; create_app: a warning)."""
    prefix = Settings.model_config["env_prefix"]  # GAN_
    known = [prefix + name.upper() for name in Settings.model_fields]
    lines = []
    for name in sorted(environ):
        upper = name.upper()  # pydantic-settings reads the names case-insensitively
        if upper.startswith(prefix) and upper not in known and upper not in OTHER_VARIABLES:
            close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else "; unset it (docs/service.md lists the settings)"
            lines.append(f"{name}: not a setting{hint}")
    return lines
