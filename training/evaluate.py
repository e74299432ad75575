"""`python -m training evaluate weights/NAME`: measure a generator against the real test set in
the reference classifier's feature space, write the numbers into its config.json and a
`card.md` (with sample, interpolation and nearest-neighbour images) beside it.

Every figure comes with the same figure for real data at the same sample size, because
these metrics are biased by sample size and only mean something next to that floor.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from training import metrics as M
from training.card import (
    INTERPOLATION_FILE,
    NEIGHBOURS_FILE,
    SAMPLES_FILE,
    text_table,
    write_card,
)
from training.classifier import (
    LoadedClassifier,
    accuracy,
    load_classifier,
    predict,
    train_classifier,
)
from training.data import ImageSet, load_dataset, to_uint8
from training.devices import resolve_device
from training.export import (
    LoadedGenerator,
    ModelLoadError,
    atomic_write_bytes,
    atomic_write_json,
    load_generator,
)
from training.sampling import encode_png, make_grid, seeded_latents, slerp, upscale

DEFAULT_CLASSIFIER = "weights/fashion-mnist-classifier"


def find_classifier(gen: LoadedGenerator, search: list[Path]) -> Path:
    """The reference classifier for a generator when --classifier is not given: the first
    classifier folder (sorted by name) under `search` whose labels, channels and image size are
    the generator's. Raises ModelLoadError naming what was looked at."""
    from training.classifier import FORMAT as CLASSIFIER_FORMAT

    want = (list(gen.labels), gen.config["channels"], gen.config["image_size"])
    roots = list(dict.fromkeys(search))  # in order, each folder once
    seen: list[str] = []
    for root in roots:
        for config_path in sorted(root.glob("*/config.json")):
            try:
                config = json.loads(config_path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(config, dict) or config.get("format") != CLASSIFIER_FORMAT:
                continue
            args = config.get("arch_args", {})
            seen.append(str(config_path.parent))
            if (config.get("labels"), args.get("channels"), args.get("image_size")) == want:
                return config_path.parent
    raise ModelLoadError(
        f"no reference classifier for {gen.name} ({want[1]}x{want[2]}x{want[2]}, labels {want[0]}) in "
        f"{', '.join(str(r) for r in roots)} (classifiers there: {', '.join(seen) or 'none'}); "
        "train one with `python -m training classifier` and pass --classifier"
    )


def reference_data(clf: LoadedClassifier, data_dir: str | None) -> tuple[str, ImageSet, ImageSet]:
    """(dataset name, train split, test split) of the data the classifier was trained on, at its
    input size and channels: what every figure is measured against."""
    dataset = clf.config.get("dataset", "fashion-mnist")
    size, channels = clf.config["arch_args"]["image_size"], clf.config["arch_args"]["channels"]
    train = load_dataset(dataset, "train", data_dir, image_size=size, channels=channels)
    test = load_dataset(dataset, "test", data_dir, image_size=size, channels=channels)
    return dataset, train, test


@torch.no_grad()
def generate(
    gen: LoadedGenerator, n_per_class: int, seed: int, device: torch.device, batch_size: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class images of every class (uint8 (N, C, H, W), requested labels (N,)), class-major.

    Latents are `seeded_latents(seed, N, latent_dim)`, so the same seed gives the same images.
    Images are quantised to uint8, as the service delivers them. An unconditional generator
    gets n_per_class * len(labels) images and labels of -1.
    """
    k = len(gen.labels)
    n = n_per_class * k
    z = seeded_latents(seed, n, gen.latent_dim)
    requested = torch.arange(k).repeat_interleave(n_per_class)
    out = []
    for i in range(0, n, batch_size):
        labels = requested[i : i + batch_size].to(device) if gen.conditional else None
        out.append(to_uint8(gen.model(z[i : i + batch_size].to(device), labels).float().cpu()))
    return torch.cat(out), requested if gen.conditional else torch.full((n,), -1)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).float().div_(255.0)  # (N, C*H*W) in [0, 1]


def _subset(images: ImageSet, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of n images (all of them if n >= len) and its labels."""
    if n >= len(images):
        return images.images, images.labels
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images.images[idx], images.labels[idx]


def check_compatible(gen: LoadedGenerator, clf: LoadedClassifier, test: ImageSet) -> None:
    """Raise ModelLoadError when the generator, classifier and test set disagree."""
    args = clf.config["arch_args"]
    shape = (gen.config["channels"], gen.config["image_size"])
    if shape != (args["channels"], args["image_size"]):
        raise ModelLoadError(
            f"generator makes {shape[0]}x{shape[1]}x{shape[1]} images, the classifier "
            f"{clf.folder} takes {args['channels']}x{args['image_size']}x{args['image_size']}; "
            "pass --classifier for this dataset"
        )
    if test.images.shape[1:] != (shape[0], shape[1], shape[1]):
        raise ModelLoadError(f"test images are {tuple(test.images.shape[1:])}, the generator's {shape}")
    if list(gen.labels) != list(clf.labels):
        raise ModelLoadError(
            f"generator labels {gen.labels} differ from the classifier's {clf.labels}; "
            "pass --classifier trained on the same dataset"
        )


def evaluate_generator(
    gen: LoadedGenerator,
    clf: LoadedClassifier,
    train: ImageSet,
    test: ImageSet,
    n_per_class: int = 1000,
    seed: int = 0,
    tstr_epochs: int = 5,
    device: torch.device | str = "cpu",
    k: int = 3,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """All metrics for one generator, and the tensors the card's images are drawn from.

    Returns (metrics, extras) where extras holds `samples`, `requested`, `nn_index`, `nn_dist`.
    """
    device = torch.device(device)
    check_compatible(gen, clf, test)
    num_classes = len(gen.labels)
    samples, requested = generate(gen, n_per_class, seed, device)
    n = samples.shape[0]
    if n < max(2 * k, 10):
        raise ValueError(f"{n} samples are too few for these metrics; raise --n-per-class")

    # Real sets of the same size as the samples, so each figure has its floor at equal n.
    test_x, test_y = _subset(test, n, seed + 1)
    train_x, _ = _subset(train, n, seed + 2)
    f_fake, p_fake = predict(clf.model, samples)
    f_test, p_test = predict(clf.model, test_x)
    f_train, _ = predict(clf.model, train_x)

    out: dict[str, Any] = {}
    clf_acc, clf_per_class = accuracy(clf.model, test.images, test.labels)
    out["classifier_test_accuracy"] = clf_acc
    out["classifier_test_accuracy_per_class"] = dict(zip(gen.labels, clf_per_class, strict=True))
    if gen.conditional:
        acc, per_class = M.conditional_accuracy(p_fake.argmax(1), requested, num_classes)
        out["conditional_accuracy"] = acc
        out["conditional_accuracy_per_class"] = dict(zip(gen.labels, per_class, strict=True))
    out["fid"] = M.frechet_distance(f_fake, f_test)
    out["fid_floor"] = M.frechet_distance(f_train, f_test)
    out["precision"], out["recall"] = M.precision_recall(f_test, f_fake, k=k)
    out["precision_floor"], out["recall_floor"] = M.precision_recall(f_test, f_train, k=k)
    splits = 10 if n >= 100 else 1
    out["inception_score"], out["inception_score_std"] = M.inception_score(p_fake, splits)
    out["inception_score_real"], _ = M.inception_score(p_test, splits)

    # Memorisation: nearest training image in pixel space, for samples and for unseen test images.
    train_px = _pixels(train.images)
    nn_fake, nn_index = M.nearest_neighbours(_pixels(samples), train_px)
    nn_real = M.nearest_neighbour_distances(_pixels(test_x), train_px)
    threshold = torch.quantile(nn_real, 0.01).item()
    out["nn_train_median"] = nn_fake.median().item()
    out["nn_train_median_real"] = nn_real.median().item()
    out["nn_train_mean"] = nn_fake.mean().item()
    out["nn_train_mean_real"] = nn_real.mean().item()
    out["memorised_share"] = (nn_fake < threshold).float().mean().item()
    out["memorised_share_real"] = (nn_real < threshold).float().mean().item()
    out["memorisation_threshold"] = threshold

    if gen.conditional and tstr_epochs > 0:
        args = {k2: v for k2, v in clf.config["arch_args"].items()}
        tstr = train_classifier(
            samples, requested, num_classes, epochs=tstr_epochs, seed=seed, device=device,
            arch_args=args, min_steps=200,
        )
        out["tstr_accuracy"], _ = accuracy(tstr, test.images, test.labels)
    else:
        out["tstr_accuracy"] = None  # skipped: replace any figure from an earlier evaluation
    extras = {"samples": samples, "requested": requested, "nn_index": nn_index, "nn_dist": nn_fake}
    return out, extras


# ---------------------------------------------------------------- card images


def sample_grid(samples: torch.Tensor, n_per_class: int, num_classes: int, columns: int = 10) -> torch.Tensor:
    """One row per class from class-major samples: uint8 (C, H', W')."""
    cols = min(columns, n_per_class)
    rows = [samples[c * n_per_class : c * n_per_class + cols] for c in range(num_classes)]
    return upscale(make_grid(torch.cat(rows), nrow=cols), 2)


@torch.no_grad()
def interpolation_strip(gen: LoadedGenerator, seed: int, device: torch.device, steps: int = 10) -> torch.Tensor:
    """Spherical interpolation between two seeded latents, one row per class: uint8 (C, H', W')."""
    z = seeded_latents(seed + 12345, 2, gen.latent_dim)
    path = slerp(z[0], z[1], torch.linspace(0, 1, steps))  # (S, D)
    k = len(gen.labels) if gen.conditional else 1
    zs = path.repeat(k, 1).to(device)
    labels = torch.arange(k).repeat_interleave(steps).to(device) if gen.conditional else None
    images = to_uint8(gen.model(zs, labels).float().cpu())
    return upscale(make_grid(images, nrow=steps), 2)


def neighbour_pairs(extras: dict[str, torch.Tensor], train: ImageSet, count: int = 10) -> torch.Tensor:
    """The samples closest to a training image (top row) above those training images (bottom)."""
    order = extras["nn_dist"].argsort()[:count]
    top = extras["samples"][order]
    bottom = train.images[extras["nn_index"][order]]
    return upscale(make_grid(torch.cat([top, bottom]), nrow=len(order)), 2)


# ---------------------------------------------------------------- command


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="measure a generator (FID, precision/recall, accuracy, memorisation, TSTR) and write card.md",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("weights", type=Path, help="weights folder, e.g. weights/fashion-mnist-cwgangp")
    p.add_argument("--n-per-class", type=positive_int, default=1000, help="samples per class (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="latent seed (and subset seed)")
    p.add_argument("--classifier", type=Path, default=None,
                   help="reference classifier folder (default: the one in the generator's folder's parent or "
                        "weights/ whose labels and image size match)")
    p.add_argument("--tstr-epochs", type=int, default=5,
                   help="epochs of train-on-synthetic, test-on-real (0: skip)")
    p.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-card", action="store_true", help="do not write card.md and its PNGs")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    t0 = time.time()
    gen = load_generator(args.weights, device)
    if args.classifier is None:
        args.classifier = find_classifier(gen, [Path(args.weights).parent, Path("weights")])
        print(f"classifier: {args.classifier}")
    clf = load_classifier(args.classifier, device)
    dataset, train, test = reference_data(clf, args.data_dir)
    recipe = gen.config.get("recipe")
    split = recipe.get("split", "unknown") if isinstance(recipe, dict) else "unknown"
    if split in ("all", "test"):
        print(f"warning: {gen.name} was trained on the {split!r} split, which holds the test images: "
              "test-set figures and the memorisation reference are optimistic; train on 'train' to "
              "measure generalisation", file=sys.stderr)
    print(f"evaluating {gen.name}: {args.n_per_class} x {len(gen.labels)} samples, seed {args.seed}, {device}")
    metrics, extras = evaluate_generator(
        gen, clf, train, test, args.n_per_class, args.seed, args.tstr_epochs, device
    )
    metrics["evaluation"] = {
        "n_per_class": args.n_per_class,
        "samples": int(extras["samples"].shape[0]),
        "seed": args.seed,
        "dataset": dataset,
        "test_checksum": test.checksum,
        "classifier": str(args.classifier),
        "classifier_sha256": clf.config.get("weights_sha256"),
        "feature_dim": clf.config["arch_args"].get("feature_dim"),
        "k": 3,
        "tstr_epochs": args.tstr_epochs,
        "generator_training_split": split,
        "seconds": round(time.time() - t0, 1),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m training evaluate " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "evaluate" else f"python -m training evaluate {args.weights}",
    }
    print(text_table(metrics))
    if gen.conditional:
        per = metrics["conditional_accuracy_per_class"]
        print("per class: " + ", ".join(f"{name} {v:.3f}" for name, v in per.items()))

    from training.export import update_metrics

    config = update_metrics(args.weights, metrics)
    if args.json:
        atomic_write_json(args.json, {"model": gen.name, **metrics})
    if not args.no_card:
        folder = Path(args.weights)
        k = len(gen.labels) if gen.conditional else 1
        per = args.n_per_class if gen.conditional else extras["samples"].shape[0]
        atomic_write_bytes(folder / SAMPLES_FILE, encode_png(sample_grid(extras["samples"], per, k)))
        atomic_write_bytes(folder / INTERPOLATION_FILE, encode_png(interpolation_strip(gen, args.seed, device)))
        atomic_write_bytes(folder / NEIGHBOURS_FILE, encode_png(neighbour_pairs(extras, train)))
        card = write_card(folder, config)
        print(f"wrote metrics to {folder / 'config.json'} and {card}")
    if args.json:
        print(f"wrote {args.json}")
    return 0

