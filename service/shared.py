"""Memory the worker processes of one service share: a small file mapped into each, under a lock.

With GAN_WORKERS > 1 every worker is a process of its own, so what must hold for the whole
service (a per-key rate limit, the reload generation of service/reload.py) has to live outside
any of them. A file of fixed size in the folder `python -m service` makes for the metrics (see
metrics.multiprocess_dir; /tmp, an emptyDir or a tmpfs), mapped with MAP_SHARED by every worker
and read and written under flock: no server to run, and an access costs microseconds (the rate
limiter's whole charge measured about 4 us with the lock, 2.5 us without, on two busy cores).
The kernel drops the lock of a worker that dies. With one process (and in the in-process test
apps) the same class maps anonymous memory and takes no lock.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from pathlib import Path


class SharedMemory:
    """`size` bytes, zero-filled when first made; `with memory:` holds the lock (exclusive,
    across processes; the event loop's single thread needs none within a process)."""

    def __init__(self, size: int, path: Path | None = None):
        self.size = size
        self.path = path
        self._fd: int | None = None
        if path is None:
            self.map = mmap.mmap(-1, size)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # two workers may make the file at once
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)  # the new bytes read as zeros
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def __enter__(self) -> mmap.mmap:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self.map

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BusyBoard:
    """Which engine processes of the service are running a forward right now, across workers.

    On a CPU host with several workers each engine runs its forwards on its share of the cores
    (one thread on 2 cores), which is right while the others are busy too, but leaves cores idle
    when one request comes alone: an n=1 forward takes 1.7 ms on one thread of this project's
    2-core host and 1.2 ms on two. So an engine asks the board before each batch whether any
    other is busy and uses every core's thread when none is.

    An engine counts as busy while in a forward and for RECENT_S after one: engines that take
    turns on small batches (several clients at once) then keep their share instead of both
    taking every core at the same moment, which stalls both at OpenMP's barriers (measured: n=1
    at 8 clients fell from 743 to 441 req/s when only the current forward counted).

    One slot per engine (its pid, when its forward began, 0 when idle, and when its last one
    ended), written only by its owner and read by all without a lock: a torn or stale read costs
    one batch a less than best thread count, never a wrong answer. A slot whose forward began
    more than STALE_S ago counts as idle (its engine died mid-forward); a slot whose pid is gone
    is reused.
    """

    SLOTS = 64
    SLOT = struct.Struct("<qdd")  # pid, start of the current forward, end of the last (CLOCK_MONOTONIC)
    STALE_S = 2.0
    RECENT_S = 0.05

    def __init__(self, path: Path, pid: int | None = None):
        self.memory = SharedMemory(self.SLOTS * self.SLOT.size, path)
        self.pid = pid or os.getpid()  # the owner of the slot (tests give two boards of one process)
        self.offset = self._claim()

    def _claim(self) -> int:
        with self.memory as m:
            for i in range(self.SLOTS):
                offset = i * self.SLOT.size
                pid = self.SLOT.unpack_from(m, offset)[0]
                if pid == 0 or pid == self.pid or not pid_alive(pid):
                    self.SLOT.pack_into(m, offset, self.pid, 0.0, 0.0)
                    return offset
        raise RuntimeError(f"more than {self.SLOTS} engine processes share {self.memory.path}")

    def start(self) -> int:
        """Mark this engine busy; the number of other engines busy now or a moment ago."""
        now = time.monotonic()
        m = self.memory.map
        others = 0
        for i in range(self.SLOTS):
            offset = i * self.SLOT.size
            if offset == self.offset:
                continue
            pid, began, ended = self.SLOT.unpack_from(m, offset)
            if pid and ((began and now - began < self.STALE_S) or now - ended < self.RECENT_S):
                others += 1
        self.SLOT.pack_into(m, self.offset, self.pid, now, 0.0)
        return others

    def stop(self) -> None:
        self.SLOT.pack_into(self.memory.map, self.offset, self.pid, 0.0, time.monotonic())

    def close(self) -> None:
        with self.memory as m:
            self.SLOT.pack_into(m, self.offset, 0, 0.0, 0.0)
        self.memory.close()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
