"""POST /admin/reload for every worker, not only the one that took the request.

Each worker has its own registry (service/registry.py does the reload itself). The workers share
a reload generation, a counter in a small file of the workers' shared folder
(service/shared.py). The worker that takes the request bumps it, reloads its own models and waits
until every live worker has reported that generation; every worker's watcher reads the counter
every WATCH_S and reloads when it has moved. A worker reports in its own small JSON file
(`gan-reload-<pid>.json`: the generation its models reflect, whether they are loaded, and what
its last reload did), so the answer lists each worker; one that has not caught up within the
wait is listed as pending (202) and still reloads. A worker started later (one that replaces a
dead one) reads the generation before its first scan of the folder, so its start-up load counts
as that generation once it has finished; until GAN_WORKERS workers have reported, the request
waits for the missing ones.
With one process there is no file: the reload is just this process's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import struct
from pathlib import Path
from typing import Any

from service.registry import Registry
from service.shared import SharedMemory, pid_alive

log = logging.getLogger(__name__)

GENERATION_FILE = "gan-reload.bin"
REPORT_PREFIX = "gan-reload-"  # + pid + ".json"
COUNTER = struct.Struct("<q")
WATCH_S = 0.25  # how often each worker looks at the generation (a read of 8 bytes under the lock)
WAIT_S = 120.0  # how long the request waits for the other workers (each loads and warms every change)


class Reloader:
    """One per worker: applies reloads to `registry` and tells the other workers (via `folder`,
    the workers' shared folder; None with one process)."""

    def __init__(self, registry: Registry, folder: Path | None, workers: int = 1):
        self.registry = registry
        self.folder = folder
        self.workers = workers  # how many workers should report (GAN_WORKERS)
        self.pid = os.getpid()
        self.memory = SharedMemory(COUNTER.size, folder / GENERATION_FILE) if folder is not None else None
        self._local = 0  # the generation with one process
        self.done = self.generation()  # the generation this worker's models reflect (read before loading)
        self.last: dict[str, Any] | None = None  # what this worker's last reload did
        self._lock = asyncio.Lock()
        self._write_report("loading")

    # ------------------------------------------------------------------ the shared generation

    def generation(self) -> int:
        if self.memory is None:
            return self._local
        with self.memory as m:
            return int(COUNTER.unpack_from(m, 0)[0])

    def _bump(self) -> int:
        if self.memory is None:
            self._local += 1
            return self._local
        with self.memory as m:
            value = int(COUNTER.unpack_from(m, 0)[0]) + 1
            COUNTER.pack_into(m, 0, value)
        return value

    # ------------------------------------------------------------------ reloading

    async def reload_everywhere(self, wait_s: float = WAIT_S) -> tuple[dict[str, Any], bool]:
        """POST /admin/reload: a new generation, this worker's reload, then the others' reports.
        Returns the answer and whether every live worker has reached the new generation."""
        target = self._bump()
        # shielded: a client that hangs up must not stop a reload halfway
        mine = await asyncio.shield(asyncio.ensure_future(self.apply()))
        workers, pending = await self._wait_for(target, wait_s)
        answer = {"generation": target, "worker": self.pid, **mine, "workers": workers, "pending": pending,
                  "workers_expected": self.workers}
        return answer, not pending and len(workers) >= self.workers

    async def apply(self) -> dict[str, Any]:
        """Bring this worker up to the current generation. A reload that read the generation
        after it was bumped scanned the folder after the request came, so it covers it."""
        async with self._lock:
            target = self.generation()
            if target <= self.done and self.last is not None:
                return self.last
            report = (await self.registry.reload()).as_dict()
            self.done = max(self.done, target)
            self.last = report
            self._write_report("ready")
            return report

    async def watch(self, loading: asyncio.Future[Any]) -> None:
        """This worker's watcher: once its models are loaded, reload whenever the shared
        generation moves past what it has applied."""
        with contextlib.suppress(Exception):  # a failed start-up load is logged by the lifespan
            await asyncio.shield(loading)
        self._write_report("ready")
        while True:
            await asyncio.sleep(WATCH_S)
            if self.generation() > self.done:
                try:  # shielded: shutdown cancels the watcher, not a reload halfway (the registry stops it)
                    await asyncio.shield(self.apply())
                except Exception:  # the next move of the generation tries again
                    log.exception("worker %d: reload failed", self.pid)

    # ------------------------------------------------------------------ reports

    def _report_path(self, pid: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{REPORT_PREFIX}{pid}.json"

    def _write_report(self, state: str) -> None:
        if self.folder is None:
            return
        path = self._report_path(self.pid)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"pid": self.pid, "generation": self.done, "state": state,
                                       "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                       "report": self.last}))
        os.replace(partial, path)  # readers see the old report or the new one, never half of one

    def _reports(self) -> dict[int, dict[str, Any]]:
        """The reports of the live workers (those of dead ones are deleted)."""
        if self.folder is None:
            return {self.pid: {"generation": self.done, "state": "ready", "report": self.last}}
        found = {}
        for path in self.folder.glob(f"{REPORT_PREFIX}*.json"):
            pid_text = path.stem.removeprefix(REPORT_PREFIX)
            if not pid_text.isdigit():
                continue
            pid = int(pid_text)
            if pid != self.pid and not pid_alive(pid):
                path.unlink(missing_ok=True)
                continue
            try:
                found[pid] = json.loads(path.read_text())
            except (OSError, ValueError):  # replaced while read: the next look gets it
                continue
        return found

    async def _wait_for(self, target: int, wait_s: float) -> tuple[dict[str, Any], list[int]]:
        """Each live worker's report once all have reached `target` with their models loaded
        (a worker still starting has not reported yet: waited for until GAN_WORKERS have), or
        when the wait ends; and the workers still pending then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            reports = self._reports()
            pending = sorted(pid for pid, r in reports.items()
                             if r.get("generation", -1) < target or r.get("state") != "ready")
            if (not pending and len(reports) >= self.workers) or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        workers = {str(pid): {"generation": r.get("generation"), "state": r.get("state"), **(r.get("report") or {})}
                   for pid, r in sorted(reports.items())}
        return workers, pending

    def close(self) -> None:
        """At shutdown: this worker's report goes (no request waits for a worker that left)."""
        if self.folder is not None:
            self._report_path(self.pid).unlink(missing_ok=True)
        if self.memory is not None:
            self.memory.close()
            self.memory = None
