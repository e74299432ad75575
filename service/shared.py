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
