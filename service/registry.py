"""The models the service serves: every folder under the weights directory, loaded at start-up
and again, for what changed, by `reload` (POST /admin/reload).

A folder that fails to load is kept as an entry with its error, so /models and /readyz can say
what is wrong while the other models serve. A reload loads and warms a new or changed folder
beside the running model, swaps the new entry in (one dict assignment on the event loop, so a
request sees the old entry or the new one, never a mix), then drains the old batcher: what was
queued or running finishes on the old weights.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gancore.files import WEIGHTS_FILE
from gancore.labels import closest_name
from gancore.weights import CONFIG_FILE, FORMAT, ModelLoadError, artefact_format, load_generator, sha256_file
from service.batcher import Batcher
from service.engine import EngineClient
from service.inference import Runner, RunnerOptions, is_device_error
from service.metrics import ServiceMetrics, multiprocess_dir
from service.settings import Settings, available_cores

log = logging.getLogger(__name__)

BUSY_BOARD_FILE = "gan-busy.bin"  # service.shared.BusyBoard, in the workers' shared folder


class UnknownModel(LookupError):
    def __init__(self, name: str, valid: list[str]):
        self.name = name
        self.valid = valid
        self.suggestion = closest_name(name, valid)
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        super().__init__(f"unknown model {name!r}{hint}; available: {', '.join(valid) or 'none'}")


class ModelUnavailable(RuntimeError):
    """The model exists but failed to load, or no model is loaded at all."""


@dataclass
class ModelEntry:
    name: str  # the model's name (config.json), its key in Registry.entries
    folder: Path
    runner: Runner | EngineClient | None = None
    batcher: Batcher | None = None
    error: str | None = None
    load_seconds: float | None = None  # load, SHA check and warm-up
    loaded_at: dt.datetime | None = None  # when it started serving (UTC)
    fingerprint: tuple[str, str] = ("", "")  # SHA-256 of config.json and of the weights file, read before loading

    @property
    def loaded(self) -> bool:
        return self.runner is not None and self.batcher is not None

    @property
    def config(self) -> dict[str, Any]:
        return self.runner.config if self.runner is not None else {}

    @property
    def weights_sha256(self) -> str | None:
        """The SHA-256 of the weights being served (config.json's, checked at load)."""
        if not self.loaded:
            return None
        return self.config.get("weights_sha256") or self.fingerprint[1] or None


@dataclass
class ReloadReport:
    """What one reload did, by model name (a failed folder by its folder name)."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)  # {"model", "folder", "error"}

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "replaced": self.replaced, "removed": self.removed,
                "unchanged": self.unchanged, "failed": self.failed}


def fingerprint(folder: Path) -> tuple[str, str]:
    """SHA-256 of the folder's config.json and of its weights file ("" for a missing file): a
    reload replaces a model when either differs from what it loaded."""
    def digest(path: Path) -> str:
        try:
            return sha256_file(path)
        except OSError:
            return ""

    return digest(folder / CONFIG_FILE), digest(folder / WEIGHTS_FILE)


class Registry:
    """Name -> ModelEntry, plus whether start-up has finished."""

    # Start-up longer than this is logged as a warning: the Kubernetes base's startup probe gives
    # the models 150 s (k8s/base/deployment.yaml), and a large GAN_MAX_BATCH with a fine grid on a
    # CPU can take longer (BENCHMARKS.md: 217 s with GAN_BATCH_GRID=every at 256).
    SLOW_START_S = 120.0

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
                                     compile=settings.compile, tf32=settings.tf32,
                                     prepack=settings.prepack)
        self.on_device_error = on_device_error
        self.entries: dict[str, ModelEntry] = {}
        self.ready = False
        self._reload_lock = asyncio.Lock()  # one reload at a time (in this process)
        self._draining: set[asyncio.Task[None]] = set()  # old batchers finishing their work
        self._closing = False

    def folders(self) -> list[Path]:
        root = self.settings.weights_dir
        if not root.is_dir():
            log.warning("weights folder %s %s; no models to serve (set GAN_WEIGHTS_DIR)", root,
                        "is a file, not a folder" if root.exists() else "does not exist")
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def generator_folders(self) -> list[Path]:
        """The folders that hold a generator (or a config.json that cannot be read, worth trying
        so that its error is reported); others are skipped with a log line."""
        found = []
        for folder in self.folders():
            kind = artefact_format(folder)
            if kind is None:
                log.info("skipping %s: no %s", folder, CONFIG_FILE)
            elif kind != FORMAT and kind != "":
                log.info("skipping %s: it holds a %s, not a generator", folder, kind)
            else:
                found.append(folder)
        return found

    def _load_one(self, folder: Path) -> Runner | EngineClient:
        """In-process: load, check and move to the device (runs in a thread). Engine: a handle
        whose process loads the weights. Either way the warm-up runs on the model's serving
        thread, in Batcher.start."""
        if self.settings.engine == "process":
            split = self.settings.cpu_split()
            threads = len(split[1]) if split and not self.settings.torch_threads else self.settings.threads_per_worker()
            board, alone = self._busy_board(split is not None)
            return EngineClient(folder, folder.name, self.device, self.options, threads,
                                cpus=split[1] if split else None, board=board, threads_alone=alone,
                                omp_wait_policy=self.settings.omp_wait_policy,
                                render_threads=self.settings.render_threads_for(self.device.type))
        loaded = load_generator(folder, device="cpu", verify=True)
        return Runner(loaded, self.device, self.options)

    def _busy_board(self, pinned: bool) -> tuple[Path | None, int]:
        """(the workers' busy board, threads for a lone batch) when engines should take every
        core while alone (GAN_ADAPTIVE_THREADS): several workers on a CPU, threads left to us."""
        s = self.settings
        folder = multiprocess_dir()
        if (not s.adaptive_threads or s.torch_threads or pinned or folder is None
                or self.device.type != "cpu" or s.worker_processes < 2):
            return None, 0
        return folder / BUSY_BOARD_FILE, available_cores()

    async def load_all(self) -> None:
        """Load every folder one after another; failures are logged and recorded, never raised."""
        started = time.perf_counter()
        # said while still loading, so that it is in the log before a probe gives up on the process
        warning = asyncio.get_running_loop().call_later(
            self.SLOW_START_S, lambda: log.warning("the models are still loading after %.0f s: %s",
                                                   time.perf_counter() - started, self._slow_start_advice()))
        try:
            await self._load_folders()
        finally:
            warning.cancel()
        seconds = time.perf_counter() - started
        if seconds > self.SLOW_START_S:
            log.warning("the models took %.0f s to load and warm up: %s", seconds, self._slow_start_advice())
        self.ready = True

    def _slow_start_advice(self) -> str:
        s = self.settings
        return (f"{len(s.batch_sizes(self.device.type))} batch sizes each (GAN_BATCH_GRID={s.batch_grid}, "
                f"GAN_MAX_BATCH={s.max_batch}), over the {self.SLOW_START_S:.0f} s an orchestrator's start-up "
                "probe may allow (the Kubernetes base gives 150 s): lower GAN_MAX_BATCH, use "
                "GAN_BATCH_GRID=powers, or give the probe more time")

    async def _load_folders(self) -> None:
        for folder in await asyncio.to_thread(self.generator_folders):
            entry = await self._load_entry(folder)
            if not entry.loaded:
                self.entries[entry.name] = entry
            elif entry.name in self.entries:
                await self._refuse_duplicate(entry)
            else:
                self._serve(entry)
        names = self.loaded_names()
        if not names:
            log.warning("no model loaded from %s: /readyz stays 503", self.settings.weights_dir)
        elif self.settings.default_model not in names:  # a typo would otherwise go unnoticed
            log.warning("GAN_DEFAULT_MODEL=%s is not among the loaded models (%s): requests that name no "
                        "model go to %s", self.settings.default_model, ", ".join(names), names[0])

    async def _load_entry(self, folder: Path, serving: str | None = None) -> ModelEntry:
        """Load, SHA-check and warm up the model in `folder`, off the serving path: the entry it
        returns is not yet in `entries`. A failure gives an entry with the error (named after the
        folder), logged and counted as not loaded, under `serving` (the name of the model that
        still serves from the folder) when given, else under the folder's name."""
        started = time.perf_counter()
        prints = await asyncio.to_thread(fingerprint, folder)
        batcher: Batcher | None = None
        try:
            runner = await asyncio.to_thread(self._load_one, folder)
            batcher = self._batcher(runner)
            await batcher.start()  # warm-up, on the thread that will serve (or in the engine)
        except Exception as exc:  # a bad folder must not stop the others
            if batcher is not None:
                try:
                    await batcher.close()
                except Exception as close_exc:  # a broken CUDA context can fail the close too
                    log.warning("model in %s: closing after the failed load: %s", folder, close_exc)
            error = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            log.error("model in %s NOT loaded: %s", folder, error)
            self.metrics.observe_load(serving or folder.name, None, loaded=False)
            if self.settings.engine == "thread" and self.device.type == "cuda" and is_device_error(exc):
                # in this process's CUDA context (an engine process's error ended that process
                # alone): the context is broken for every model here, so take the process out
                self._device_failed(folder.name, exc)
            return ModelEntry(name=folder.name, folder=folder, error=self._public(error), fingerprint=prints)
        seconds = time.perf_counter() - started
        entry = ModelEntry(name=runner.name, folder=folder, runner=runner, batcher=batcher, load_seconds=seconds,
                           loaded_at=dt.datetime.now(dt.timezone.utc), fingerprint=prints)
        log.info(
            "model %s loaded from %s on %s (%s%s) in %.2f s, %d batch sizes warmed up (GAN_BATCH_GRID, GAN_MAX_BATCH)",
            runner.name, folder, self.device, str(self.dtype).removeprefix("torch."),
            ", convolutions packed for oneDNN" if runner.prepacked else "", seconds, len(batcher.batch_sizes),
        )
        return entry

    def engines_memory_bytes(self) -> float:
        """What this worker's engine processes hold on the device (their models live there, not
        in this process); 0 with in-process runners, which this process's own figure counts."""
        return sum(entry.runner.memory_bytes() for entry in list(self.entries.values())
                   if isinstance(entry.runner, EngineClient))

    def _public(self, error: str) -> str:
        """A load error as /models, /readyz and 503 bodies show it (open to every client, keys or
        not): paths inside the weights folder relative to it, so that the server's layout is not
        published; the log keeps the full text."""
        for root in {str(self.settings.weights_dir.resolve()), str(self.settings.weights_dir)}:
            error = error.replace(root.rstrip("/") + "/", "")
        return error

    def _serve(self, entry: ModelEntry) -> None:
        """Make a loaded entry the one requests get (replacing any of that name)."""
        self.entries[entry.name] = entry
        self.metrics.observe_load(entry.name, entry.load_seconds, loaded=True)
        self.metrics.observe_queue(entry.name, 0)

    async def _refuse_duplicate(self, entry: ModelEntry) -> ModelEntry:
        """A folder whose model has the name of one already served: recorded as failed."""
        assert entry.batcher is not None
        error = f"duplicate model name {entry.name!r} (also in {self.entries[entry.name].folder.name}/)"
        log.error("model in %s NOT loaded: %s", entry.folder, error)
        await entry.batcher.close()
        failed = ModelEntry(name=entry.folder.name + " (duplicate)", folder=entry.folder, error=error,
                            fingerprint=entry.fingerprint)
        self.entries[failed.name] = failed
        return failed

    async def reload(self) -> ReloadReport:
        """Rescan the weights folder: load what is new or changed (config.json or weights SHA-256)
        beside what serves, swap each in once warm, drain what it replaces, and drain the models
        whose folder is gone. A folder that fails leaves its old model serving. Failed entries
        are tried again on every reload."""
        async with self._reload_lock:
            report = ReloadReport()
            root = self.settings.weights_dir
            if not root.is_dir():  # a mount gone missing must not take every model away
                report.failed.append({"model": "", "folder": str(root),
                                      "error": f"the weights folder {root} does not exist; nothing was changed"})
                return report
            retired: list[ModelEntry] = []
            by_folder = {e.folder: (key, e) for key, e in self.entries.items()}
            for folder in await asyncio.to_thread(self.generator_folders):
                key, old = by_folder.pop(folder, (None, None))
                if old is not None and old.loaded and old.fingerprint == await asyncio.to_thread(fingerprint, folder):
                    report.unchanged.append(old.name)
                    continue
                new = await self._load_entry(folder, old.name if old is not None and old.loaded else None)
                if self._closing:  # shutdown began while it loaded: change nothing more
                    if new.batcher is not None:
                        await new.batcher.close()
                    by_folder.clear()
                    break
                if not new.loaded:
                    report.failed.append({"model": old.name if old else folder.name, "folder": folder.name,
                                          "error": str(new.error)})
                    self.metrics.observe_reload(old.name if old else folder.name, "failed")
                    if old is None or not old.loaded:  # nothing serves from it: /models shows the error
                        if key is not None:
                            del self.entries[key]
                        self.entries[new.name] = new
                    else:
                        self.metrics.observe_load(old.name, old.load_seconds, loaded=True)  # still serving
                    continue
                clash = self.entries.get(new.name)
                if clash is not None and clash is not old:
                    failed = await self._refuse_duplicate(new)
                    report.failed.append({"model": new.name, "folder": folder.name, "error": str(failed.error)})
                    self.metrics.observe_reload(new.name, "failed")
                    continue
                if key is not None and key != new.name:  # renamed, or it had failed under its folder's name
                    del self.entries[key]
                    if old is not None and not old.loaded:
                        self.metrics.observe_removed(old.name)  # the failed entry's gauge goes with it
                self._serve(new)
                result = "replaced" if old is not None and old.loaded else "added"
                (report.replaced if result == "replaced" else report.added).append(new.name)
                self.metrics.observe_reload(new.name, result)
                if old is not None and old.loaded:
                    retired.append(old)
                    if old.name != new.name:
                        self.metrics.observe_removed(old.name)
            for key, old in by_folder.values():  # folders that went away (or no longer hold a generator)
                del self.entries[key]
                if old.loaded:
                    report.removed.append(old.name)
                    retired.append(old)
                    self.metrics.observe_reload(old.name, "removed")
                self.metrics.observe_removed(old.name)  # a failed entry's gauge (0) goes too
            for old in retired:
                log.info("model %s from %s retired: draining its queue", old.name, old.folder)
            await asyncio.gather(*(self._drain(old) for old in retired))
            log.info("reload: %s", report.as_dict())
            return report

    def _drain(self, entry: ModelEntry) -> asyncio.Task[None]:
        """Close a retired entry's batcher (it finishes what it holds), tracked so that close()
        waits for it too."""
        assert entry.batcher is not None
        task = asyncio.get_running_loop().create_task(entry.batcher.close(), name=f"drain-{entry.name}")
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        return task

    def _batcher(self, runner: Runner | EngineClient) -> Batcher:
        s = self.settings
        return Batcher(
            runner,
            max_batch=s.max_batch,
            max_wait_s=s.max_wait_ms / 1000.0,
            queue_size=s.queue_size,
            batch_sizes=s.batch_sizes(self.device.type),
            observer=self.metrics,
            on_device_error=self._device_failed,
            failed_batches_limit=s.failed_batches_limit,
            slice_s=s.slice_ms / 1000.0,
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
        """Drain every batcher's queue, then stop it (retired ones included)."""
        self._closing = True
        await asyncio.gather(*(e.batcher.close() for e in self.entries.values() if e.batcher is not None),
                             *self._draining)

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
