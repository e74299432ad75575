"""The service's configuration: one typed object, read from GAN_* environment variables.

This is the only module that reads the environment; everything else receives a `Settings`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def available_cores() -> int:
    """Cores this process may use: its CPU affinity (a container's cpuset), capped by a cgroup v2
    CPU quota (a Kubernetes CPU limit), which torch's own default ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


class Settings(BaseSettings):
    """Every knob of the service; each field `x` is read from the environment variable `GAN_X`."""

    model_config = SettingsConfigDict(env_prefix="GAN_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"  # uvicorn bind address (python -m service)
    port: int = Field(default=8000, ge=0, le=65535)  # uvicorn port
    weights_dir: Path = Path("weights")  # one sub-folder per model (config.json + safetensors)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when available
    # float16 needs cuda; bfloat16 needs cuda with bf16 or a CPU with native bf16 (AVX512-BF16, AMX)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    tf32: bool = False  # let float32 matmuls and convolutions use TF32 on CUDA (faster, ~10-bit mantissa)
    channels_last: bool = True  # NHWC weights and activations: faster convolutions, same pixels within 1 level
    cuda_graphs: bool = False  # capture one CUDA graph per padded batch size at warm-up (CUDA only)
    compile: bool = False  # torch.compile the forward per padded batch size (slow start-up)
    # where a model's forwards and PNG renders run: "process" (a child process per model, so they
    # never wait for the event loop's interpreter lock) or "thread" (in this process)
    engine: Literal["process", "thread"] = "process"
    # with GAN_PIN_CPUS in force, the nice value added to the event loop's thread once the models
    # are loaded: under overload the pinned engines then get the CPU first, HTTP what is left
    http_nice: int = Field(default=10, ge=0, le=19)
    # one worker with engine processes on the CPU: the event loop's thread keeps the first core
    # it may use and the engines get the others, so a storm of requests cannot take the
    # forwards' cores (the kernel otherwise puts a client or the event loop beside them)
    pin_cpus: bool = True
    # processes serving the one port, each with its own batcher and copy of every model
    # 0 (auto): python -m service picks 2 on a CPU with 2 or more cores (measured: up to 2x the
    # images/s of one on 2 cores, BENCHMARKS.md) and 1 on a GPU; an app built in-process is one
    workers: int = Field(default=0, ge=0, le=64)
    # torch intra-op threads per worker; 0: (cores - workers) // workers, at least 1
    torch_threads: int = Field(default=0, ge=0, le=512)
    # a CUDA error (device-side assert, illegal address) fails /healthz and /readyz and ends the
    # process gracefully so that its supervisor (docker, kubelet, the worker manager) restarts it
    exit_on_device_error: bool = True
    max_batch: int = Field(default=64, ge=1, le=4096)  # images per generator forward
    # how long the oldest request may wait for a batch to fill; 0: take what is queued when the
    # forward thread is free (requests arriving during a forward still batch together)
    max_wait_ms: float = Field(default=0.0, ge=0, le=600_000)
    max_n: int = Field(default=256, ge=1)  # images per /generate request
    max_steps: int = Field(default=32, ge=2)  # frames per /interpolate request
    max_scale: int = Field(default=8, ge=1, le=64)  # nearest-neighbour upscaling factor
    queue_size: int = Field(default=4096, ge=1)  # images waiting per model before 503
    request_timeout_s: float = Field(default=10.0, gt=0)  # a request waiting longer gets 504
    max_body_bytes: int = Field(default=16_384, ge=64)  # larger request bodies get 413
    max_pixels: int = Field(default=16_777_216, ge=1)  # output pixels per response (after scale)
    default_model: str = "fashion-mnist-cwgangp"  # falls back to the first loaded model
    cors_origins: str = ""  # comma-separated origins; empty disables CORS
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("log_level", "device", "dtype", mode="before")
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

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def worker_processes(self) -> int:
        """Processes serving the port: GAN_WORKERS, or 1 while it is still auto (0), which only
        python -m service resolves (it needs the device)."""
        return self.workers or 1

    def auto_workers(self, device_type: str) -> int:
        """What GAN_WORKERS=0 means on this device: 2 on a CPU with 2 or more cores, else 1."""
        return 2 if device_type == "cpu" and available_cores() >= 2 else 1

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
        if not (self.pin_cpus and self.worker_processes == 1 and self.engine == "process" and self.device != "cuda"):
            return None
        try:
            cores = sorted(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return None
        if len(cores) < 2:
            return None
        return {cores[0]}, set(cores[1:])

    def batch_sizes(self) -> list[int]:
        """The padded batch sizes the batcher runs: powers of two below max_batch, and max_batch.

        Padding every batch to one of these keeps the set of shapes small, so warm-up covers
        every shape a request can produce.
        """
        sizes, b = [], 1
        while b < self.max_batch:
            sizes.append(b)
            b *= 2
        sizes.append(self.max_batch)
        return sizes
