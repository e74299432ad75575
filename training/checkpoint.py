"""Resume state: everything the loop needs to continue exactly, written atomically, loaded
with `torch.load(..., weights_only=True)` (tensors, numbers, strings, lists and dicts only).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch

from gancore.fileio import atomic_write_bytes
from gancore.files import CHECKPOINT_DIR

_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"ckpt-{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints in the run folder, oldest first (ignores temporary files)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Serialise to memory, then temp file + fsync + rename; prune to the newest `keep`."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = checkpoint_path(Path(run_dir), step)
    atomic_write_bytes(path, buf.getvalue())
    for old in list_checkpoints(Path(run_dir))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files raise several types
        raise CheckpointError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})") from exc


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None
