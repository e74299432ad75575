"""`python -m training augment --generator weights/NAME`: the augmentation study.

For each k, the reference classifier's architecture is trained from scratch on
  (a) k real training images per class,
  (b) the same k real images plus the generated ones,
  (c) generated images only ("train on synthetic, test on real"),
and scored on the real test set. Every run takes the same number of optimizer steps, so rows
differ in data, not in compute; batches are 128 images, or the whole set when it has fewer (the
real-only arm at k <= 12 on a ten-class set), so those runs also differ in batch size.

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
from training.evaluate import EvaluationError, generate, generator_training_split


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


# Two-sided 95% quantiles of Student's t by degrees of freedom (scipy is not a dependency).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(dof: int) -> float:
    """The two-sided 95% t quantile for `dof` degrees of freedom (the nearest tabled dof below)."""
    return _T95[max(d for d in _T95 if d <= dof)] if dof < 120 else 1.960


def _mean_sd(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = sum(values) / n
    sd = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n >= 2 else None
    return mean, sd


def aggregate(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per k from per-seed rows (runs[seed][i] = {"k", "real", "real_plus_generated",
    "generated_only"}): the means under the same keys, and with two or more seeds each arm's SD
    and the paired difference (b) - (a): mean and half-width of its 95% t interval."""
    rows = []
    for i, first in enumerate(runs[0]):
        per_seed = [run[i] for run in runs]
        row: dict[str, Any] = {"k": first["k"], "seeds": len(per_seed)}
        for arm in ("real", "real_plus_generated", "generated_only"):
            mean, sd = _mean_sd([r[arm] for r in per_seed])
            row[arm] = mean
            if sd is not None:
                row[f"{arm}_sd"] = sd
        diff_mean, diff_sd = _mean_sd([r["real_plus_generated"] - r["real"] for r in per_seed])
        row["difference"] = diff_mean
        if diff_sd is not None:
            row["difference_ci95"] = t95(len(per_seed) - 1) * diff_sd / len(per_seed) ** 0.5
        row["runs"] = per_seed
        rows.append(row)
    return rows


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
    repeats: int = 1,
) -> dict[str, Any]:
    """Real-test accuracy for each k and data source, repeated with seeds seed..seed+repeats-1
    (each draws its own real subset and classifier initialisation; the generated set is the one
    given); returns {"rows": aggregate(...), "generated_only": mean acc}."""
    num_classes = len(train.class_names)
    fake_x, fake_y = synthetic

    def fit_and_score(x: torch.Tensor, y: torch.Tensor, what: str, run_seed: int) -> float:
        t0 = time.time()
        model = train_classifier(
            x, y, num_classes, epochs=0, min_steps=steps, seed=run_seed, device=device, arch_args=arch_args
        )
        acc, _ = accuracy(model, test.images, test.labels)
        log(f"  {what}: {len(x)} images, {steps} steps, test accuracy {acc:.4f} ({time.time() - t0:.0f} s)")
        return acc

    runs = []
    for run_seed in range(seed, seed + repeats):
        if repeats > 1:
            log(f" seed {run_seed}")
        generated_only = fit_and_score(fake_x, fake_y, "generated only", run_seed)
        rows = []
        for k in ks:
            real_x, real_y = per_class_subset(train, k, run_seed)
            real = fit_and_score(real_x, real_y, f"k={k} real", run_seed)
            mixed = fit_and_score(torch.cat([real_x, fake_x]), torch.cat([real_y, fake_y]),
                                  f"k={k} real + generated", run_seed)
            rows.append({"k": k, "real": real, "real_plus_generated": mixed, "generated_only": generated_only})
        runs.append(rows)
    rows = aggregate(runs)
    return {"rows": rows, "generated_only": rows[0]["generated_only"] if rows else None, "seeds": repeats}


def markdown_table(result: dict[str, Any], generated_per_class: int) -> str:
    """Per k the mean over seeds; with two or more seeds, ± the SD and the paired difference
    (b) - (a) with its 95% interval."""
    def cell(r: dict[str, Any], arm: str) -> str:
        sd = r.get(f"{arm}_sd")
        return f"{r[arm]:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")

    lines = [
        f"| real per class (k) | (a) real only | (b) real + {generated_per_class} generated per class "
        f"| (c) generated only | (b) - (a) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ci = r.get("difference_ci95")
        diff = f"{r['difference']:+.4f}" + (f" ± {ci:.4f} (95%)" if ci is not None else "")
        lines.append(f"| {r['k']} | {cell(r, 'real')} | {cell(r, 'real_plus_generated')} "
                     f"| {cell(r, 'generated_only')} | {diff} |")
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
    repeats: int = 1,
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
        f"{steps} steps per run, seeds {seed}..{seed + repeats - 1}, {dev}")
    synthetic = generate(gen, generated_per_class, seed, dev)
    arch_args = {"width": width, "feature_dim": feature_dim}
    result = run_study(synthetic, train, test, ks, steps, seed, dev, arch_args, log, repeats)
    log()
    log(markdown_table(result, generated_per_class))
    if json_path:
        atomic_write_json(json_path, {
            "model": gen.name, "generated_per_class": generated_per_class, "steps": steps,
            "seed": seed, "repeats": repeats, "dataset": dataset, "generator_training_split": split,
            "classifier_arch_args": arch_args, **result,
        })
        log(f"wrote {json_path}")
    return result
