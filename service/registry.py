"""The models the service serves: every folder under the weights directory, loaded at start-up.

A folder that fails to load is kept as an entry with its error, so /models and /readyz can say
what is wrong while the other models serve.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gancore.weights import CONFIG_FILE, FORMAT, ModelLoadError, artefact_format, load_generator
from service.batcher import Batcher
from service.engine import EngineClient
from service.inference import Runner, RunnerOptions
from service.metrics import ServiceMetrics
from service.settings import Settings

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    def __init__(self, name: str, valid: list[str]):
        self.name = name
        self.valid = valid
        super().__init__(f"unknown model {name!r}; available: {', '.join(valid) or 'none'}")


class ModelUnavailable(RuntimeError):
    """The model exists but failed to load, or no model is loaded at all."""


@dataclass
class ModelEntry:
    name: str
    folder: Path
    runner: Runner | EngineClient | None = None
    batcher: Batcher | None = None
    error: str | None = None
    load_seconds: float | None = None

    @property
    def loaded(self) -> bool:
        return self.runner is not None and self.batcher is not None

    @property
    def config(self) -> dict[str, Any]:
        return self.runner.config if self.runner is not None else {}


class Registry:
    """Name -> ModelEntry, plus whether start-up has finished."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        device: torch.device,
        dtype: torch.dtype,
        on_device_error: Callable[[str, BaseException], None] | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.device = device
        self.dtype = dtype
        self.options = RunnerOptions(dtype=dtype, channels_last=settings.channels_last,
                                     cuda_graphs=settings.cuda_graphs and device.type == "cuda",
                                     compile=settings.compile)
        self.on_device_error = on_device_error
        self.entries: dict[str, ModelEntry] = {}
        self.ready = False

    def folders(self) -> list[Path]:
        root = self.settings.weights_dir
        if not root.is_dir():
            log.warning("weights folder %s does not exist; no models to serve (set GAN_WEIGHTS_DIR)", root)
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _load_one(self, folder: Path) -> Runner | EngineClient:
        """In-process: load, check and move to the device (runs in a thread). Engine: a handle
        whose process loads the weights. Either way the warm-up runs on the model's serving
        thread, in Batcher.start."""
        if self.settings.engine == "process":
            split = self.settings.cpu_split()
            threads = len(split[1]) if split and not self.settings.torch_threads else self.settings.threads_per_worker()
            return EngineClient(folder, folder.name, self.device, self.options, threads,
                                cpus=split[1] if split else None)
        loaded = load_generator(folder, device="cpu", verify=True)
        return Runner(loaded, self.device, self.options)

    async def load_all(self) -> None:
        """Load every folder one after another; failures are logged and recorded, never raised."""
        for folder in self.folders():
            kind = artefact_format(folder)
            if kind is None:
                log.info("skipping %s: no %s", folder, CONFIG_FILE)
                continue
            if kind != FORMAT and kind != "":
                log.info("skipping %s: it holds a %s, not a generator", folder, kind)
                continue
            started = time.perf_counter()
            batcher: Batcher | None = None
            try:
                runner = await asyncio.to_thread(self._load_one, folder)
                batcher = self._batcher(runner)
                await batcher.start()  # warm-up, on the thread that will serve (or in the engine)
            except Exception as exc:  # a bad folder must not stop the others
                if batcher is not None:
                    await batcher.close()
                error = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
                log.error("model in %s NOT loaded: %s", folder, error)
                self.entries[folder.name] = ModelEntry(name=folder.name, folder=folder, error=error)
                self.metrics.observe_load(folder.name, None, loaded=False)
                continue
            if runner.name in self.entries:
                error = f"duplicate model name {runner.name!r} (also in {self.entries[runner.name].folder})"
                log.error("model in %s NOT loaded: %s", folder, error)
                self.entries[folder.name + " (duplicate)"] = ModelEntry(name=folder.name, folder=folder, error=error)
                await batcher.close()
                continue
            seconds = time.perf_counter() - started
            self.entries[runner.name] = ModelEntry(
                name=runner.name, folder=folder, runner=runner, batcher=batcher, load_seconds=seconds
            )
            self.metrics.observe_load(runner.name, seconds, loaded=True)
            self.metrics.observe_queue(runner.name, 0)
            log.info(
                "model %s loaded from %s on %s (%s) in %.2f s", runner.name, folder, self.device,
                str(self.dtype).removeprefix("torch."), seconds,
            )
        if not self.loaded_names():
            log.warning("no model loaded from %s: /readyz stays 503", self.settings.weights_dir)
        self.ready = True

    def _batcher(self, runner: Runner | EngineClient) -> Batcher:
        s = self.settings
        return Batcher(
            runner,
            max_batch=s.max_batch,
            max_wait_s=s.max_wait_ms / 1000.0,
            queue_size=s.queue_size,
            batch_sizes=s.batch_sizes(),
            observer=self.metrics,
            on_device_error=self._device_failed,
        )

    def _device_failed(self, model: str, exc: BaseException) -> None:
        self.metrics.observe_load(model, None, loaded=False)
        if self.on_device_error is not None:
            self.on_device_error(model, exc)

    def broken(self) -> dict[str, str]:
        """Models whose device failed: name -> the error. Non-empty means restart the process."""
        return {name: e.batcher.broken for name, e in self.entries.items()
                if e.batcher is not None and e.batcher.broken is not None}

    def hurry(self) -> None:
        """Shutdown has begun (SIGTERM): every batcher runs what it holds at once."""
        for entry in self.entries.values():
            if entry.batcher is not None:
                entry.batcher.hurry()

    async def close(self) -> None:
        """Drain every batcher's queue, then stop it."""
        await asyncio.gather(*(e.batcher.close() for e in self.entries.values() if e.batcher is not None))

    def loaded_names(self) -> list[str]:
        return [name for name, e in self.entries.items() if e.loaded]

    @property
    def default_name(self) -> str | None:
        names = self.loaded_names()
        if self.settings.default_model in names:
            return self.settings.default_model
        return names[0] if names else None

    def get(self, name: str | None) -> ModelEntry:
        """The loaded model called `name` (the default one for None)."""
        if not self.ready and (name is None or name not in self.entries):
            raise ModelUnavailable("models are still loading; retry when /readyz answers 200")
        if name is None:
            name = self.default_name
            if name is None:
                raise ModelUnavailable("no model is loaded; see /readyz and the server log")
        entry = self.entries.get(name)
        if entry is None:
            raise UnknownModel(name, sorted(self.entries))
        if not entry.loaded:
            raise ModelUnavailable(f"model {name!r} failed to load: {entry.error}")
        return entry
