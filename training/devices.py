"""One place that turns a --device flag into a torch.device, with a clear error for bad ones."""

from __future__ import annotations

import platform
import re

import torch

_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device flag that is malformed or names a GPU that is not there."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' or 'cuda:N' without that GPU is an error."""
    name = str(name).strip().lower()
    if not _VALID.match(name):
        raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(name)


def hardware_description(device: torch.device) -> str:
    """What a run's card and checkpoint record as its hardware."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
