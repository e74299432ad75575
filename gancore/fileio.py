"""Atomic file writes: a temporary file in the same folder, fsync, rename. Readers see the old
file or the new one, never half of one; a crash leaves at most a hidden temporary file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import save as save_safetensors

FILE_MODE = 0o644  # mkstemp makes 0600; shipped files must be readable by a container's user


@contextmanager
def atomic_writer(path: Path, suffix: str = ".tmp") -> Iterator[IO[bytes]]:
    """Open a temporary file beside `path` for writing; on success it is fsynced and renamed
    onto `path` (mode 0644), on any error removed. For data written in pieces (downloads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable: without it a crash can bring back the old file (or none)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, AttributeError):  # no O_DIRECTORY (Windows), or a folder we may not open
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_writer)."""
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors bytes through atomic_write_bytes (0644, fsync, rename); weights are a few MB.
    The same tensors and metadata always make the same bytes (canonical_safetensors)."""
    atomic_write_bytes(path, canonical_safetensors(save_safetensors(tensors, metadata=metadata)))


def canonical_safetensors(data: bytes) -> bytes:
    """`data` with its header's `__metadata__` keys in sorted order.

    safetensors writes the metadata from a Rust HashMap, whose order differs from one call to the
    next: two exports of one checkpoint then had different bytes and SHA-256s (and config.json's
    evaluation figures, kept only for the same SHA, were lost). Sorting the keys keeps the header's
    length, so the header's padding and every tensor offset stay as they are."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header.get("__metadata__"), dict):
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # another JSON spelling than the writer's: leave the bytes alone
        return data
    return data[:8] + text + b" " * (size - len(text)) + data[8 + size :]
