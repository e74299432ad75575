"""Weights that travel: a weights folder holds `config.json` (everything that rebuilds the
network, plus labels, normalisation, provenance and metrics) and one `.safetensors` file.
Two artefacts share the format: generators (FORMAT) and the reference classifier
(CLASSIFIER_FORMAT). Loading never unpickles, and checks the weights' SHA-256.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from gancore.fileio import atomic_save_safetensors, atomic_write_json
from gancore.files import CLASSIFIER_WEIGHTS_FILE, CONFIG_FILE, WEIGHTS_FILE
from gancore.labels import resolve_label
from gancore.networks import ARCHITECTURES
from gancore.networks.classifier import Classifier

FORMAT = "cgan-service/generator"
CLASSIFIER_FORMAT = "cgan-service/classifier"
FORMAT_VERSION = 1

# A model's name is its weights folder's name and travels in HTTP headers, URLs and query strings:
# ASCII letters, digits, ".", "_", "-", starting with a letter or digit (so no "/", no "..").
# Anchored so that `.pattern` also serves a pydantic Field(pattern=...); Python code matches it with
# fullmatch, since Python's "$" also matches before a final newline.
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MODEL_NAME_RULE = "1 to 64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"

__all__ = [
    "CLASSIFIER_FORMAT", "CLASSIFIER_WEIGHTS_FILE", "CONFIG_FILE", "FORMAT", "FORMAT_VERSION", "WEIGHTS_FILE",
    "MODEL_NAME_PATTERN", "MODEL_NAME_RULE", "ClassifierLoadError", "InvalidModelName", "LoadedClassifier",
    "LoadedGenerator", "ModelLoadError", "artefact_format", "check_model_name", "load_classifier",
    "load_generator", "read_config", "save_classifier", "save_generator", "sha256_file", "update_metrics",
]


class ModelLoadError(RuntimeError):
    """A weights folder that cannot be loaded; the message names the file and the problem."""


class ClassifierLoadError(ModelLoadError):
    """A classifier folder that cannot be loaded; the message names the file and the problem."""


class InvalidModelName(ValueError):
    """A model name that cannot be a weights folder's name; the message states the rule."""


def check_model_name(name: str) -> str:
    """`name` when it follows MODEL_NAME_RULE, else InvalidModelName."""
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise InvalidModelName(f"model name {name!r} is not allowed: use {MODEL_NAME_RULE}")
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- config.json

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; a bigger one is not ours, and is not parsed


def _read_json(path: Path) -> Any:
    """path's JSON; ValueError for a file over MAX_CONFIG_BYTES or nested too deeply for the
    parser (RecursionError would otherwise escape every caller and stop the registry)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def artefact_format(folder: str | Path) -> str | None:
    """The `format` in folder/config.json: None without the file, "" when it cannot be read
    (such a folder is worth trying to load, so that its error is reported)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        value = _read_json(path).get("format", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""


_GENERATOR_FIELDS = ("architecture", "arch_args", "labels", "latent_dim", "image_size", "channels")
# what a hand-edited config.json gets wrong: checked here so that loading says which field
_FIELD_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "architecture": (str, "a string"), "arch_args": (dict, "an object"), "labels": (list, "a list of class names"),
    "latent_dim": (int, "an integer"), "image_size": (int, "an integer"), "channels": (int, "an integer"),
}


def read_config(
    folder: str | Path,
    fmt: str = FORMAT,
    required: Iterable[str] = _GENERATOR_FIELDS,
    missing_hint: str = "a weights folder needs config.json",
    error: type[ModelLoadError] = ModelLoadError,
) -> dict[str, Any]:
    """folder/config.json, checked to be of format `fmt` and to hold the `required` fields."""
    path = Path(folder) / CONFIG_FILE
    try:
        config = _read_json(path)
    except FileNotFoundError:
        raise error(f"{path}: missing ({missing_hint})") from None
    except OSError as exc:  # a file given where the folder should be, or no permission
        raise error(f"{path}: cannot read it ({exc.strerror or exc}); give a weights folder") from exc
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != fmt:
        kind = "classifier" if fmt == CLASSIFIER_FORMAT else "generator"
        raise error(f"{path}: not a {kind} config (format must be {fmt!r})")
    for key in required:
        if key not in config:
            raise error(f"{path}: missing field {key!r}")
        expected = _FIELD_TYPES.get(key)
        if expected is not None and not isinstance(config[key], expected[0]):
            raise error(f"{path}: field {key!r} must be {expected[1]}, got {json.dumps(config[key])[:60]}")
    sha = config.get("weights_sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-fA-F]{64}", sha)):
        raise error(f"{path}: field 'weights_sha256' must be 64 hex digits, got {json.dumps(sha)[:60]}")
    return config


_ARCH_COPIES = ("latent_dim", "image_size", "channels", "num_classes")  # top-level copies of arch_args


def _check_generator_config(path: Path, config: dict[str, Any]) -> None:
    """Fields that must agree with each other, checked at load: a mismatch otherwise surfaces per
    request (IndexError past the embedding, a CUDA device-side assert, a 500 for every alias)."""
    arch_args = config["arch_args"]
    for key in _ARCH_COPIES:
        if key in config and key in arch_args and config[key] != arch_args[key]:
            raise ModelLoadError(f"{path}: field {key!r} is {config[key]!r} but arch_args has {arch_args[key]!r}")
    labels = config["labels"]
    if not all(isinstance(label, str) for label in labels):
        raise ModelLoadError(f"{path}: field 'labels' must be a list of strings, got {json.dumps(labels)[:60]}")
    num_classes = arch_args.get("num_classes", config.get("num_classes", 0))
    if not isinstance(num_classes, int) or isinstance(num_classes, bool):
        raise ModelLoadError(f"{path}: field 'num_classes' must be an integer, got {num_classes!r}")
    if num_classes > 0 and len(labels) != num_classes:  # unconditional (0) keeps the dataset's names
        raise ModelLoadError(f"{path}: field 'labels' has {len(labels)} names for num_classes {num_classes}")
    aliases = config.get("label_aliases") or {}
    if not isinstance(aliases, dict):
        raise ModelLoadError(f"{path}: field 'label_aliases' must be an object of name -> label")
    for alias, target in aliases.items():
        if not isinstance(target, str) or target not in labels:
            raise ModelLoadError(f"{path}: field 'label_aliases' maps {alias!r} to {target!r}, which is not a label")


def update_metrics(folder: str | Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """Merge evaluation numbers into a generator's config.json `metrics` (atomically)."""
    folder = Path(folder)
    config = read_config(folder)
    config.setdefault("metrics", {}).update(metrics)
    atomic_write_json(folder / CONFIG_FILE, config)
    return config


# ---------------------------------------------------------------- one writer, one loader


def _save(folder: Path, weights_file: str, module: nn.Module, metadata: dict[str, str],
          dtype: torch.dtype | None = None) -> str:
    """Write the module's tensors atomically, floating ones as `dtype` when given (loading
    casts them back to the module's own); returns their SHA-256."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: _stored(v, dtype) for k, v in module.state_dict().items()}
    atomic_save_safetensors(folder / weights_file, tensors, metadata)
    return sha256_file(folder / weights_file)


def _stored(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    tensor = tensor.detach().to("cpu")
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.contiguous()


def _check_shapes(weights: Path, build: Callable[[], nn.Module], error: type[ModelLoadError]) -> None:
    """Compare the file's tensor shapes (headers only) with the module built on the meta device,
    before building the real one: a config asking for latent_dim 100000 or 60000 classes would
    otherwise allocate hundreds of MB (or GB) only to fail the shape check."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
        with safe_open(str(weights), "pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # bad arch_args (TypeError, ValueError), a file that is not safetensors
        raise error(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
    for key, shape in expected.items():
        if key in found and found[key] != shape:
            raise error(f"{weights}: tensor {key!r} has shape {list(found[key])}, config.json's "
                        f"arch_args make {list(shape)}")


def _check_tensors(weights: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                   error: type[ModelLoadError]) -> None:
    """load_state_dict casts silently: refuse integer or bool tensors for float parameters, and
    NaN or inf anywhere in a float tensor (the model would serve non-finite images)."""
    for key, tensor in tensors.items():
        own = expected.get(key)
        if own is None or not own.is_floating_point():  # unexpected keys: strict loading names them
            continue
        if not tensor.is_floating_point():
            raise error(f"{weights}: tensor {key!r} is {tensor.dtype}, expected floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise error(f"{weights}: tensor {key!r} holds NaN or inf")


def _load(
    folder: Path,
    weights_file: str,
    config: dict[str, Any],
    build: Callable[[], nn.Module],
    device: str | torch.device,
    verify: bool,
    error: type[ModelLoadError],
) -> nn.Module:
    """Check the weights file against config.json's SHA-256, rebuild the module with `build`,
    load the tensors strictly (no pickle); returns it on `device`, in eval mode, frozen."""
    weights = folder / weights_file
    if not weights.is_file():
        raise error(f"{weights}: missing")
    if verify and config.get("weights_sha256"):
        actual = sha256_file(weights)
        if actual != config["weights_sha256"].lower():
            raise error(
                f"{weights}: SHA-256 {actual[:12]}... does not match config.json's "
                f"{config['weights_sha256'][:12]}... (corrupt or replaced file)"
            )
    _check_shapes(weights, build, error)
    try:
        model = build()
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors and torch raise several types for bad files
        raise error(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
    _check_tensors(weights, tensors, model.state_dict(), error)
    try:
        model.load_state_dict(tensors, strict=True)
    except Exception as exc:
        raise error(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
    model.to(device).eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------- generators


def save_generator(
    folder: str | Path,
    generator: nn.Module,
    arch: str,
    arch_args: dict[str, Any],
    labels: list[str],
    label_aliases: dict[str, str],
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Write the generator's weights and config atomically; returns the config written.
    `dtype` (float16, bfloat16) stores the floating tensors at half size; loading casts them
    back to float32, so the served model computes in float32 from rounded weights."""
    folder = Path(folder)
    sha = _save(folder, WEIGHTS_FILE, generator, {"format": FORMAT, "arch": arch}, dtype)
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
        "weights_sha256": sha,
        "weights_dtype": str(dtype or torch.float32).removeprefix("torch."),
        "created": _now(),
        "metrics": {},
    }
    old = folder / CONFIG_FILE
    if old.is_file():  # evaluation figures written earlier stay only with the weights they measured
        try:
            previous = json.loads(old.read_text())
        except (OSError, ValueError):
            previous = {}
        if previous.get("weights_sha256") == sha:
            config["metrics"] = previous.get("metrics", {})
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


def load_generator(
    folder: str | Path, device: str | torch.device = "cpu", verify: bool = True
) -> LoadedGenerator:
    """Rebuild the generator from config.json and load its safetensors weights (no pickle).

    With verify, the weights file's SHA-256 must equal the one recorded in the config.
    """
    folder = Path(folder)
    config = read_config(folder)
    _check_generator_config(folder / CONFIG_FILE, config)
    name = config.get("name", folder.name)
    # the name becomes the registry's key and the X-Model header: no "..", no CR/LF
    # Not MODEL_NAME_RULE (what export writes): folders named otherwise ("snow✓") have always
    # served. What a name must never hold: control characters (it goes into the X-Model header),
    # path separators, or nothing at all.
    if not (isinstance(name, str) and 0 < len(name) <= 200 and name.isprintable()
            and not any(c in name for c in "/\\") and name not in (".", "..")):
        raise ModelLoadError(f"{folder / CONFIG_FILE}: field 'name' {json.dumps(name)[:60]} is not allowed: "
                             "a name of printable characters without '/' or '\\'")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelLoadError(f"{folder / WEIGHTS_FILE}: missing")
    family = ARCHITECTURES.get(config["architecture"])
    if family is None:
        raise ModelLoadError(
            f"{folder / CONFIG_FILE}: unknown architecture {config['architecture']!r}; "
            f"known: {', '.join(ARCHITECTURES)}"
        )
    model = _load(folder, WEIGHTS_FILE, config, lambda: family.generator(**config["arch_args"]),
                  device, verify, ModelLoadError)
    return LoadedGenerator(name=name, model=model, config=config)


# ---------------------------------------------------------------- the reference classifier


@dataclass
class LoadedClassifier:
    """A classifier rebuilt from its folder, in eval mode, with its config."""

    model: Classifier
    config: dict[str, Any]
    folder: Path

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]


def save_classifier(folder: str | Path, model: Classifier, arch_args: dict[str, Any], extra: dict[str, Any]) -> dict:
    """Write classifier.safetensors and config.json (atomically); returns the config."""
    folder = Path(folder)
    sha = _save(folder, CLASSIFIER_WEIGHTS_FILE, model, {"format": CLASSIFIER_FORMAT})
    config = {
        "format": CLASSIFIER_FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "classifier-cnn",
        "arch_args": arch_args,
        # Input: uint8 pixel p -> p / 127.5 - 1, the generator's output range.
        "normalization": {"input_range": [-1.0, 1.0], "mean": 0.5, "std": 0.5},
        "feature_layer": "embed (ReLU output)",
        "weights_sha256": sha,
        "created": _now(),
        **extra,
    }
    atomic_write_json(folder / CONFIG_FILE, config)
    return config


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild the classifier from config.json and load its safetensors weights."""
    folder = Path(folder)
    config = read_config(
        folder, CLASSIFIER_FORMAT, required=("arch_args",), error=ClassifierLoadError,
        missing_hint="pass --classifier FOLDER, or train one with `python -m training classifier --out FOLDER` "
                     "(an image folder: --dataset folder --data-dir ROOT)",
    )
    model = _load(folder, CLASSIFIER_WEIGHTS_FILE, config, lambda: Classifier(**config["arch_args"]),
                  device, True, ClassifierLoadError)
    return LoadedClassifier(model=model, config=config, folder=folder)  # type: ignore[arg-type]
