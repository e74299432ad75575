"""One place that turns a --device flag into a torch.device, with a clear error for bad ones."""

from __future__ import annotations

import platform
import re

import torch

_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(ValueError):
    """A device flag that is malformed or names a GPU that is not there."""


def _setting(flag: str, value: str) -> str:
    """How the user wrote it: `--device cuda` for a CLI flag, `GAN_DEVICE=cuda` for a variable."""
    return f"{flag} {value}" if flag.startswith("-") else f"{flag}={value}"


def resolve_device(name: str, flag: str = "--device") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' or 'cuda:N' without that GPU is an error.

    `flag` is the option or environment variable the value came from, for the error message.
    """
    name = str(name).strip().lower()
    if not _VALID.match(name):
        raise DeviceError(f"{flag} must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"{_setting(flag, name)} asked for, but PyTorch sees no CUDA GPU; "
                              f"use {_setting(flag, 'cpu')} or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"{_setting(flag, name)}: only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN then runs bf16 matmuls and convolutions natively (several times
    fp32 on AMX); elsewhere it emulates them, far slower than fp32 (a 1024x1024 matmul ran at
    0.8 GFLOP/s in bf16 against 55 in fp32 on one core of an AVX2-only EPYC, 2026-12-01)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def hardware_description(device: torch.device) -> str:
    """What a run's card and checkpoint record as its hardware."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
