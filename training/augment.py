"""`python -m training augment --generator weights/NAME`: the augmentation study.

For each k, the reference classifier's architecture is trained from scratch on
  (a) k real training images per class,
  (b) the same k real images plus the generated ones,
  (c) generated images only ("train on synthetic, test on real"),
and scored on the real test set. Every run takes the same number of optimizer steps, so rows
differ in data, not in compute.

Arms (b) and (c) draw on far more labelled data than k per class: the conditional generator was
trained on its whole labelled training split (6,000 images per class on Fashion-MNIST), so (b) at
k=10 uses that labelled set indirectly. For a true low-label study, train the generator on the same
k-per-class subset. A generator trained on the 'all' or 'test' split has seen the test images the
arms are scored on; the study refuses it unless --allow-test-leak is passed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from gancore.devices import resolve_device
from gancore.fileio import atomic_write_json
from gancore.weights import ModelLoadError, load_generator
from training.classifier import accuracy, train_classifier
from training.data import DatasetError, ImageSet, load_train_test
from training.evaluate import EvaluationError, generate


def generator_training_split(config: dict[str, Any]) -> str:
    """The split the generator trained on, read as evaluate reads it ('unknown' when not recorded)."""
    recipe = config.get("recipe")
    split = recipe.get("split", "unknown") if isinstance(recipe, dict) else "unknown"
    return str(config.get("training_split", split))


def check_training_split(name: str, split: str, allow_test_leak: bool) -> None:
    """Refuse a generator that trained on the test images unless the caller accepts the leak."""
    if split in ("all", "test") and not allow_test_leak:
        raise EvaluationError(
            f"{name} was trained on the {split!r} split, which holds the test images the study scores on; "
            "use a generator trained on 'train', or pass --allow-test-leak to run it anyway"
        )


def per_class_subset(data: ImageSet, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k images of every class drawn at random (seeded) from the set: (images, labels)."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(len(data.class_names)):
        idx = (data.labels == c).nonzero().squeeze(1)
        if len(idx) < k:
            raise DatasetError(f"class {data.class_names[c]!r} has {len(idx)} images, fewer than k={k}; lower --k")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    idx = torch.cat(picks)
    return data.images[idx], data.labels[idx]


def run_study(
    synthetic: tuple[torch.Tensor, torch.Tensor],
    train: ImageSet,
    test: ImageSet,
    ks: list[int],
    steps: int,
    seed: int,
    device: torch.device | str,
    arch_args: dict[str, Any] | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Real-test accuracy for each k and data source; returns {"rows": [...], "generated_only": acc}."""
    num_classes = len(train.class_names)
    fake_x, fake_y = synthetic

    def fit_and_score(x: torch.Tensor, y: torch.Tensor, what: str) -> float:
        t0 = time.time()
        model = train_classifier(
            x, y, num_classes, epochs=0, min_steps=steps, seed=seed, device=device, arch_args=arch_args
        )
        acc, _ = accuracy(model, test.images, test.labels)
        log(f"  {what}: {len(x)} images, {steps} steps, test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")
        return acc

    generated_only = fit_and_score(fake_x, fake_y, "generated only")
    rows = []
    for k in ks:
        real_x, real_y = per_class_subset(train, k, seed)
        real = fit_and_score(real_x, real_y, f"k={k} real")
        mixed = fit_and_score(torch.cat([real_x, fake_x]), torch.cat([real_y, fake_y]), f"k={k} real + generated")
        rows.append({"k": k, "real": real, "real_plus_generated": mixed, "generated_only": generated_only})
    return {"rows": rows, "generated_only": generated_only}


def markdown_table(result: dict[str, Any], generated_per_class: int) -> str:
    lines = [
        f"| real per class (k) | (a) real only | (b) real + {generated_per_class} generated per class "
        f"| (c) generated only |",
        "|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['k']} | {r['real']:.4f} | {r['real_plus_generated']:.4f} | {r['generated_only']:.4f} |"
        )
    return "\n".join(lines)


def augmentation_study(
    generator: Path,
    ks: list[int],
    generated_per_class: int = 1000,
    steps: int = 1500,
    dataset: str | None = None,
    data_dir: str | None = None,
    width: int = 32,
    feature_dim: int = 128,
    seed: int = 0,
    device: str = "auto",
    json_path: Path | None = None,
    log: Any = print,
    allow_test_leak: bool = False,
) -> dict[str, Any]:
    """The study for the conditional generator in `generator` on `dataset` (default: the one its
    recipe trained on); prints the table, writes `json_path` when given, returns run_study's result."""
    dev = resolve_device(device)
    gen = load_generator(generator, dev)
    if not gen.conditional:
        raise ModelLoadError(f"{generator}: the augmentation study needs a conditional generator")
    split = generator_training_split(gen.config)
    check_training_split(gen.name, split, allow_test_leak)
    if dataset is None:
        recipe = gen.config.get("recipe")
        dataset = str(recipe.get("dataset", "fashion-mnist")) if isinstance(recipe, dict) else "fashion-mnist"
    size, channels = int(gen.config["image_size"]), int(gen.config["channels"])
    train, test = load_train_test(dataset, data_dir, image_size=size, channels=channels)
    if list(train.class_names) != list(gen.labels):
        raise ModelLoadError(f"{generator}: labels {gen.labels} differ from {dataset}'s {train.class_names}")
    log(f"augmentation study for {gen.name}: k={ks}, {generated_per_class} generated per class, "
        f"{steps} steps per run, {dev}")
    synthetic = generate(gen, generated_per_class, seed, dev)
    arch_args = {"width": width, "feature_dim": feature_dim}
    result = run_study(synthetic, train, test, ks, steps, seed, dev, arch_args, log)
    log()
    log(markdown_table(result, generated_per_class))
    if json_path:
        atomic_write_json(json_path, {
            "model": gen.name, "generated_per_class": generated_per_class, "steps": steps,
            "seed": seed, "dataset": dataset, "generator_training_split": split,
            "classifier_arch_args": arch_args, **result,
        })
        log(f"wrote {json_path}")
    return result
