"""Weights that travel: `generator.safetensors` + `config.json` (everything that rebuilds the
generator, plus labels, normalisation, provenance and metrics). Loading never unpickles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from training.labels import resolve_label
from training.networks import ConditionalGenerator
from training.resnet import ResNetGenerator

WEIGHTS_FILE = "generator.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "cgan-service/generator"
FORMAT_VERSION = 1
_FILE_MODE = 0o644


def architectures() -> dict[str, type[nn.Module]]:
    """Architecture names recorded in config.json -> generator classes."""
    return {"dcgan": ConditionalGenerator, "resnet": ResNetGenerator}


class ModelLoadError(RuntimeError):
    """A weights folder that cannot be loaded; the message names the file and the problem."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Temporary file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; shipped files must be world-readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """safetensors bytes through atomic_write_bytes (0644, fsync, rename); weights are a few MB."""
    atomic_write_bytes(path, save_safetensors(tensors, metadata=metadata))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_generator(
    folder: str | Path,
    generator: nn.Module,
    arch: str,
    arch_args: dict[str, Any],
    labels: list[str],
    label_aliases: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the generator's weights and config atomically; returns the config written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    atomic_save_safetensors(folder / WEIGHTS_FILE, tensors, {"format": FORMAT, "arch": arch})
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": folder.name,
        "architecture": arch,
        "arch_args": arch_args,
        "latent_dim": arch_args["latent_dim"],
        "image_size": arch_args["image_size"],
        "channels": arch_args["channels"],
        "num_classes": arch_args.get("num_classes", 0),
        "labels": list(labels),
        "label_aliases": dict(label_aliases),
        # Generator output is tanh in [-1, 1]; pixel = round((x + 1) * 127.5).
        "normalization": {"output_range": [-1.0, 1.0], "mean": 0.5, "std": 0.5},
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": {},
    }
    old = folder / CONFIG_FILE
    if old.is_file():  # keep evaluation numbers written earlier, unless replaced
        try:
            config["metrics"] = json.loads(old.read_text()).get("metrics", {})
        except (OSError, ValueError):
            pass
    config.update(extra or {})
    atomic_write_json(folder / CONFIG_FILE, config)
    return config


@dataclass
class LoadedGenerator:
    """A generator rebuilt from a weights folder, in eval mode, with its config."""

    name: str
    model: nn.Module
    config: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]

    @property
    def latent_dim(self) -> int:
        return int(self.config["latent_dim"])

    @property
    def conditional(self) -> bool:
        return int(self.config.get("num_classes", 0)) > 0

    def label_id(self, value: str | int) -> int:
        return resolve_label(value, self.labels, self.config.get("label_aliases"))


def read_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing (a weights folder needs config.json)") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: not a generator config (format must be {FORMAT!r})")
    for key in ("architecture", "arch_args", "labels", "latent_dim", "image_size", "channels"):
        if key not in config:
            raise ModelLoadError(f"{path}: missing field {key!r}")
    return config


def load_generator(
    folder: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> LoadedGenerator:
    """Rebuild the generator from config.json and load its safetensors weights (no pickle).

    With verify, the weights file's SHA-256 must equal the one recorded in the config.
    """
    folder = Path(folder)
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: missing")
    if verify and config.get("weights_sha256"):
        actual = sha256_file(weights)
        if actual != config["weights_sha256"]:
            raise ModelLoadError(
                f"{weights}: SHA-256 {actual[:12]}... does not match config.json's "
                f"{config['weights_sha256'][:12]}... (corrupt or replaced file)"
            )
    table = architectures()
    if config["architecture"] not in table:
        raise ModelLoadError(
            f"{folder / CONFIG_FILE}: unknown architecture {config['architecture']!r}; "
            f"known: {', '.join(table)}"
        )
    try:
        model = table[config["architecture"]](**config["arch_args"])
        state = load_file(str(weights))
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # safetensors and torch raise several types for bad files
        raise ModelLoadError(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return LoadedGenerator(name=config.get("name", folder.name), model=model, config=config)


def update_metrics(folder: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge evaluation numbers into config.json's `metrics` (atomically)."""
    folder = Path(folder)
    config = read_config(folder)
    config.setdefault("metrics", {}).update(metrics)
    atomic_write_json(folder / CONFIG_FILE, config)
    return config
