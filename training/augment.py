"""`python -m training augment --generator weights/NAME`: the augmentation study.

For each k, the reference classifier's architecture is trained from scratch on
  (a) k real training images per class,
  (b) the same k real images plus the generated ones,
  (c) generated images only ("train on synthetic, test on real"),
and scored on the real test set. Every run takes the same number of optimizer steps, so rows
differ in data, not in compute.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from training.classifier import accuracy, train_classifier
from training.data import DatasetError, ImageSet, load_dataset
from training.devices import resolve_device
from training.evaluate import generate, positive_int
from training.export import ModelLoadError, atomic_write_json, load_generator


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


def _ks(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be positive, got {text!r}")
    return values


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "augment",
        help="augmentation study: classifier on k real, k real + generated, generated only",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--generator", type=Path, required=True, help="weights folder of a conditional generator")
    p.add_argument("--k", type=_ks, default=[10, 100, 1000], help="real images per class, e.g. 10,100,1000")
    p.add_argument("--generated-per-class", type=positive_int, default=1000)
    p.add_argument("--steps", type=positive_int, default=1500, help="optimizer steps per classifier (batch 128)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | folder")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--width", type=int, default=32, help="classifier width (as the reference classifier)")
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="latent, subset and training seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    gen = load_generator(args.generator, device)
    if not gen.conditional:
        raise ModelLoadError(f"{args.generator}: the augmentation study needs a conditional generator")
    size, channels = int(gen.config["image_size"]), int(gen.config["channels"])
    train = load_dataset(args.dataset, "train", args.data_dir, image_size=size, channels=channels)
    test = load_dataset(args.dataset, "test", args.data_dir, image_size=size, channels=channels)
    if list(train.class_names) != list(gen.labels):
        raise ModelLoadError(f"{args.generator}: labels {gen.labels} differ from {args.dataset}'s {train.class_names}")
    print(f"augmentation study for {gen.name}: k={args.k}, {args.generated_per_class} generated per class, "
          f"{args.steps} steps per run, {device}")
    synthetic = generate(gen, args.generated_per_class, args.seed, device)
    arch_args = {"width": args.width, "feature_dim": args.feature_dim}
    result = run_study(synthetic, train, test, args.k, args.steps, args.seed, device, arch_args)
    print()
    print(markdown_table(result, args.generated_per_class))
    if args.json:
        atomic_write_json(args.json, {
            "model": gen.name, "generated_per_class": args.generated_per_class, "steps": args.steps,
            "seed": args.seed, "dataset": args.dataset, **result,
        })
        print(f"wrote {args.json}")
    return 0
