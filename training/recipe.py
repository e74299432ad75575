"""Training recipes: one typed dataclass, named presets in `recipes/*.json`, CLI overrides.

Configuration flows one way: recipe file -> `--set key=value` / explicit flags -> Recipe.
The resolved recipe is written to the run folder as JSON and travels with every export.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gancore.networks import ARCHITECTURES
from training.losses import LOSSES

RECIPE_DIR = Path(__file__).parent / "recipes"

OPTIMIZERS = ("adam", "rmsprop")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the field."""


# Seeds of a run: the loop multiplies them (per rank and epoch), and the products must stay within
# the 64 bits torch.Generator.manual_seed takes.
MAX_RECIPE_SEED = 2**40


@dataclass
class Recipe:
    name: str = "custom"
    # data
    dataset: str = "fashion-mnist"  # fashion-mnist | mnist | folder
    split: str = "all"  # train | test | all (70,000 for Fashion-MNIST, as the WGAN-GP study)
    data_dir: str | None = None
    verify_data: bool = True  # SHA-256 check of IDX files; off only for hand-made test data
    image_size: int = 28
    channels: int = 1
    conditional: bool = True  # False trains an unconditional GAN on the same data
    # networks
    arch: str = "dcgan"  # a name in gancore.networks.ARCHITECTURES: dcgan | resnet
    latent_dim: int = 20
    embed_dim: int = 10
    g_base_width: int = 256  # about 1.1M generator parameters at 28x28 (448: the study's ~2.7M)
    d_base_width: int = 128  # about 1.9M critic parameters at 28x28
    conditioning: str = "projection"  # projection | channels | none
    aux_classifier: bool = False  # AC-GAN head on the critic
    # critic normalisation: layer norm (with a gradient penalty), spectral norm (SN-GAN; pairs
    # with the hinge loss, no penalty and so no double backward), or none
    d_norm: str = "layer"
    # loss
    loss: str = "wgan-gp"
    gp_lambda: float = 10.0
    clip_value: float = 0.01  # wgan weight clipping
    ac_weight_d: float = 1.0  # critic's class loss weight
    ac_weight_g: float = 0.1  # generator's class loss weight (official AC-WGAN-GP code: 0.1)
    ac_on_real: bool = True
    ac_on_fake: bool = False  # official WGAN-GP AC code: critic class loss on real images only
    # optimisation
    optimizer: str = "adam"
    lr_g: float = 5e-5
    lr_d: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.9)
    lr_decay: str = "none"  # none | linear (to zero at the last step)
    n_critic: int = 5
    batch_size: int = 64  # critic batch (per process)
    g_batch_size: int | None = None  # generator-phase batch; None = batch_size (ResNet paper: 128)
    epochs: float = 30.0  # one epoch = len(data) / (batch_size * processes) critic batches
    steps: int | None = None  # generator steps; overrides epochs when set
    ema_beta: float = 0.999  # 0 disables the EMA generator; warmed up, see loop.ema_decay
    seed: int = 0
    # bookkeeping
    log_every: int = 100  # metrics.jsonl every this many generator steps...
    log_seconds: float = 60.0  # ...and at least this often (0: steps only), for slow CPUs
    checkpoint_every: int = 2000  # a checkpoint every this many generator steps...
    checkpoint_minutes: float = 10.0  # ...and at least this often (0: steps only), so a kill loses little
    keep_checkpoints: int = 3
    samples_per_epoch: bool = True
    # Speed options. bf16 autocast (the penalty stays fp32) works on CUDA and on the CPU; on a CPU
    # it pays only with native bf16 (AVX512-BF16 or AMX in lscpu's flags: 1.33x per training step
    # on an EPYC with AVX512-BF16); elsewhere it is emulated, and an AVX2-only EPYC took 118 s for
    # the AC-GAN's first step against 10 s in fp32, so train() warns. tf32 applies to CUDA only.
    # channels_last (NHWC) pays on the CPU too: 1.23-1.33x per AC-GAN step in fp32 on an AVX2
    # EPYC (oneDNN's convolutions, which are 94% of a step there; 2026-12-01).
    bf16: bool = False
    tf32: bool = True
    channels_last: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Recipe:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise RecipeError(f"recipe {self.name!r}: {msg}")

        need(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be adam or rmsprop, got {self.optimizer!r}")
        need(self.lr_decay in ("none", "linear"), f"lr_decay must be none or linear, got {self.lr_decay!r}")
        need(self.arch in ARCHITECTURES, f"arch must be {' or '.join(ARCHITECTURES)}, got {self.arch!r}")
        need(self.split in ("train", "test", "all"), f"split must be train, test or all, got {self.split!r}")
        need(self.conditioning in ("projection", "channels", "none"), "conditioning: projection|channels|none")
        need(self.d_norm in ("layer", "spectral", "none"), f"d_norm must be layer, spectral or none, got {self.d_norm!r}")
        need(self.n_critic >= 1, "n_critic must be >= 1")
        need(self.batch_size >= 2, "batch_size must be >= 2")
        need(self.g_batch_size is None or self.g_batch_size >= 2, "g_batch_size must be >= 2 or null")
        need(self.latent_dim >= 1, "latent_dim must be >= 1")
        for name in ("g_base_width", "d_base_width", "embed_dim", "image_size", "channels"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        # the loop derives seeds as seed * 100003 + epoch, which torch takes up to 2**64 - 1
        need(0 <= self.seed <= MAX_RECIPE_SEED, f"seed must be in 0..{MAX_RECIPE_SEED} (2**40)")
        need(self.steps is None or self.steps >= 1, "steps must be >= 1")
        need(self.epochs > 0, "epochs must be > 0")
        need(0.0 <= self.ema_beta < 1.0, "ema_beta must be in [0, 1)")
        need(self.lr_g > 0 and self.lr_d > 0, "learning rates must be > 0")
        need(len(self.betas) == 2, "betas must be two numbers")
        need(self.log_every >= 1 and self.checkpoint_every >= 1, "log_every and checkpoint_every must be >= 1")
        need(self.log_seconds >= 0 and self.checkpoint_minutes >= 0,
             "log_seconds and checkpoint_minutes must be >= 0 (0 turns the time-based interval off)")
        if not self.conditional:
            need(not self.aux_classifier, "an unconditional run cannot have an AC head")
        return self

    def total_steps(self, dataset_size: int, world_size: int = 1) -> int:
        """Generator steps for this recipe on a dataset of this size. Under torchrun every step
        takes a batch_size batch on each of `world_size` processes, so an epoch is fewer steps."""
        if self.steps is not None:
            return int(self.steps)
        critic_batches = self.epochs * dataset_size / (self.batch_size * world_size)
        return max(1, int(critic_batches // self.n_critic))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RecipeError(f"unknown recipe field(s): {', '.join(unknown)}")
        data = {key: conform_field(key, value) for key, value in data.items()}
        return cls(**data).validate()


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.json"))


def load_recipe(name_or_path: str) -> Recipe:
    """A named preset (`recipes/NAME.json`) or a path to a recipe JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = RECIPE_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise RecipeError(
            f"no recipe {name_or_path!r}; named recipes: {', '.join(available_recipes())}"
        )
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise RecipeError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a JSON object of fields, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return Recipe.from_dict(data)


def _suggest(key: str, fields: list[str]) -> str:
    """'; did you mean lr_g, lr_d?' for a near miss (fields that start with it, then close
    spellings), or a pointer to the full list."""
    starts = [f for f in fields if f.startswith(key) or key.startswith(f)]
    close = difflib.get_close_matches(key, fields, n=4, cutoff=0.6)
    matches = list(dict.fromkeys(starts + close))[:4]
    if matches:
        return f"; did you mean {', '.join(matches)}?"
    return "; `python -m training train --recipe NAME --dry-run` lists every field"


# ---------------------------------------------------------------- field types: --set text and JSON values

# "null" (or "none") resets a field declared `X | None`, such as g_batch_size or steps; where
# "none" is an ordinary value (conditioning, d_norm) the field is not optional, so it stays a word.
NULL_WORDS = ("null", "none")
TRUE_WORDS = ("true", "1", "yes")
FALSE_WORDS = ("false", "0", "no")


@functools.cache
def _field_type(key: str) -> tuple[Any, Any, bool]:
    """(the field's type without None, its bare class, whether None is allowed):
    `int | None` -> (int, int, True); `tuple[float, float]` -> (tuple[float, float], tuple, False)."""
    hint = typing.get_type_hints(Recipe)[key]  # the annotations are strings (`from __future__`)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, optional = args[0], len(args) < len(typing.get_args(hint))
    return hint, typing.get_origin(hint) or hint, optional


def _expected(key: str) -> str:
    """What field `key` takes, in words: the end of "FIELD: expected ..." messages."""
    kind, base, optional = _field_type(key)
    if base is tuple:
        example = ",".join(f"{v:g}" for v in getattr(Recipe(), key))
        words = f"{len(typing.get_args(kind))} numbers separated by commas, e.g. {example}"
    else:
        words = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
                 dict: "a JSON object"}[base]
    return words + (" or null" if optional else "")


def _wrong(key: str, got: Any) -> RecipeError:
    return RecipeError(f"{key}: expected {_expected(key)}, got {got!r}")


def parse_field(key: str, text: str) -> Any:
    """A `--set KEY=VALUE` text as the value of field `key`, parsed by the field's declared type;
    RecipeError ("FIELD: expected ...") when it is not one."""
    kind, base, optional = _field_type(key)
    word = text.strip().lower()
    if word in NULL_WORDS and (optional or word == "null"):
        if not optional:
            raise RecipeError(f"{key}: cannot be null")
        return None
    try:
        if base is bool:
            if word in TRUE_WORDS or word in FALSE_WORDS:
                return word in TRUE_WORDS
            raise ValueError(text)
        if base is int:
            return int(text)
        if base is float:
            return _finite(float(text))
        if base is tuple:  # "0.5,0.9", or the JSON list "[0.5, 0.9]"
            values = tuple(_finite(float(part)) for part in text.strip().strip("[]()").split(","))
            if len(values) != len(typing.get_args(kind)):
                raise ValueError(text)
            return values
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError(text)
            return value
    except ValueError:
        raise _wrong(key, text) from None
    return _json_string(text)


def _finite(value: float) -> float:
    if not math.isfinite(value):  # nan passes every `>` check in validate() unnoticed
        raise ValueError(value)
    return value


def _json_string(text: str) -> str:
    """A string field's value: a JSON string's contents (`"a b"`), else the text as given."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def conform_field(key: str, value: Any) -> Any:
    """A JSON value (a recipe file, a checkpoint, a flag's typed value) checked against field `key`'s
    type: ints become floats where floats are declared, lists tuples; RecipeError otherwise."""
    kind, base, optional = _field_type(key)
    if value is None:
        if not optional:
            raise RecipeError(f"{key}: cannot be null")
        return None
    if base in (bool, str, dict) and isinstance(value, base):
        return value
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base is float and _is_number(value):
        return float(value)
    if (base is tuple and isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(kind))
            and all(_is_number(v) for v in value)):
        return tuple(float(v) for v in value)
    raise _wrong(key, value)


def _is_number(value: Any) -> bool:
    """A finite int or float; JSON's true and false are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def apply_overrides(recipe: Recipe, overrides: dict[str, str | Any]) -> Recipe:
    """`{"lr_g": "1e-4", "epochs": 5}` -> a new validated Recipe (strings are parsed by the
    field's type, other values checked against it)."""
    data = recipe.to_dict()
    for key, raw in overrides.items():
        if key not in data:
            raise RecipeError(f"unknown recipe field {key!r}{_suggest(key, list(data))}")
        data[key] = parse_field(key, raw) if isinstance(raw, str) else raw
    return Recipe.from_dict(data)


# ---------------------------------------------------------------- `python -m training recipes`

# Training speed measured for a named recipe, with where the figure comes from. Only figures that
# the model cards or BENCHMARKS.md record; everything else is "not measured".
MEASURED: dict[str, dict[str, str]] = {
    "fashion-mnist-cwgangp": {
        "gpu": "13.3 steps/s on an H100 shared with 3 other runs (6,840 steps in 518 s; its card)",
        "cpu": "2.3-2.6 s/step on a 2-core Xeon (AMX) with bf16, 4.6 s on one core: about 6 h (2026-11-30)",
    },
    "fashion-mnist-acgan": {
        "cpu": "7.7-8.9 s/step on a 2-core AMD EPYC (AVX2, no native bf16), fp32 channels-last: 3,400 steps in about 10.5 h (its card)",
    },
    "cifar10-sngan-projection": {
        "cpu": "0.37 s/step on a 2-core Xeon (AMX) with bf16: about 3.7 h (docs/resnet.md)",
    },
    "cifar10-dcgan-projection": {
        "cpu": "0.60-0.76 s/step on a 2-core Xeon (AMX) with bf16, 1.14 s on one core: 3.7-4.6 h (docs/resnet.md)",
    },
}

# Images per split, for the step count of a recipe given in epochs.
SPLIT_SIZES = {
    "fashion-mnist": {"train": 60_000, "test": 10_000, "all": 70_000},
    "mnist": {"train": 60_000, "test": 10_000, "all": 70_000},
}


def describe(recipe: Recipe) -> str:
    """One line: data, networks, loss, length and measured speed."""
    conditioning = "AC head" if recipe.aux_classifier else recipe.conditioning
    loss = f"{recipe.loss} ({conditioning}, n_critic {recipe.n_critic}, batch {recipe.batch_size})"
    size = SPLIT_SIZES.get(recipe.dataset, {}).get(recipe.split)
    if recipe.steps is not None:
        length = f"{recipe.steps:,} steps"
    elif size:
        length = f"{recipe.total_steps(size):,} steps ({recipe.epochs:g} epochs)"
    else:
        length = f"{recipe.epochs:g} epochs"
    measured = MEASURED.get(recipe.name, {})
    return (f"{recipe.name}: {recipe.dataset}/{recipe.split}, {recipe.arch} {recipe.image_size}x{recipe.image_size}, "
            f"{loss}, {length}; CPU: {measured.get('cpu', 'not measured')}; GPU: {measured.get('gpu', 'not measured')}")


def recipe_table() -> str:
    """`python -m training recipes`: one line per named recipe."""
    return "\n".join(describe(load_recipe(name)) for name in available_recipes())
