"""`python -m training evaluate weights/NAME`: measure a generator against the real test set in
the reference classifier's feature space. The report (metrics.json, report.md and the sample,
interpolation and nearest-neighbour images) goes to a folder of its own, runs/evaluate/NAME by
default; the weights folder is only read. `--update-card` writes the numbers into the weights
folder's config.json and regenerates its card.md and images, and refuses a smaller sample than
the one on record unless `--force`. `--truncation 1,0.9,...` adds the sample figures (accuracy,
FID, precision, recall, memorisation) at each truncation psi, from the same seeded latents.

Every figure comes with the same figure for real data at the same sample size, because
these metrics are biased by sample size and only mean something next to that floor.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gancore.devices import hardware_description, resolve_device
from gancore.fileio import atomic_write_bytes, atomic_write_json
from gancore.files import CONFIG_FILE, INTERPOLATION_FILE, NEIGHBOURS_FILE, SAMPLES_FILE
from gancore.images import encode_png, make_grid, to_uint8, upscale
from gancore.sampling import seeded_latents, slerp, truncation_threshold
from gancore.weights import (
    CLASSIFIER_FORMAT,
    LoadedClassifier,
    LoadedGenerator,
    ModelLoadError,
    load_classifier,
    load_generator,
    read_config,
    update_metrics,
)
from training import metrics as M
from training.card import render_card, text_table, truncation_text_table, write_card
from training.classifier import accuracy, predict, random_subset, train_classifier
from training.data import ImageSet, load_train_test

DEFAULT_CLASSIFIER = "weights/fashion-mnist-classifier"
DEFAULT_OUT = Path("runs/evaluate")  # the report of weights/NAME goes to runs/evaluate/NAME
REPORT_JSON = "metrics.json"
REPORT_MD = "report.md"


class EvaluationError(ValueError):
    """An evaluation that would lose information (a smaller sample over a larger one) or could
    not be measured (a split too small for the metrics)."""


# TSTR trains at least this many steps: a classifier on a few hundred samples would hardly move in
# a few epochs of a few batches
TSTR_MIN_STEPS = 200

def find_classifier(gen: LoadedGenerator, search: list[Path]) -> Path:
    """The reference classifier for a generator when --classifier is not given: the first
    classifier folder (sorted by name) under `search` whose labels, channels and image size are
    the generator's. Raises ModelLoadError naming what was looked at."""
    want = (list(gen.labels), gen.config["channels"], gen.config["image_size"])
    roots = list(dict.fromkeys(search))  # in order, each folder once
    seen: list[str] = []
    for root in roots:
        for config_path in sorted(root.glob(f"*/{CONFIG_FILE}")):
            try:  # anything but a readable classifier config is skipped
                config = read_config(config_path.parent, CLASSIFIER_FORMAT, required=())
            except ModelLoadError:
                continue
            args = config.get("arch_args", {})
            seen.append(str(config_path.parent))
            if (config.get("labels"), args.get("channels"), args.get("image_size")) == want:
                return config_path.parent
    raise ModelLoadError(
        f"no reference classifier for {gen.name} ({want[1]}x{want[2]}x{want[2]}, labels {want[0]}) in "
        f"{', '.join(str(r) for r in roots)} (classifiers there: {', '.join(seen) or 'none'}); "
        f"train one with `python -m training classifier --dataset DATASET --data-dir ROOT --channels {want[1]} "
        f"--image-size {want[2]} --out FOLDER` (DATASET: the generator's, `folder` for an image folder) and pass "
        "--classifier FOLDER"
    )


def reference_data(clf: LoadedClassifier, data_dir: str | None) -> tuple[str, ImageSet, ImageSet]:
    """(dataset name, train split, test split) of the data the classifier was trained on, at its
    input size and channels: what every figure is measured against."""
    dataset = clf.config.get("dataset", "fashion-mnist")
    size, channels = clf.config["arch_args"]["image_size"], clf.config["arch_args"]["channels"]
    train, test = load_train_test(dataset, data_dir, image_size=size, channels=channels)
    return dataset, train, test


@torch.no_grad()
def generate(
    gen: LoadedGenerator, n_per_class: int, seed: int, device: torch.device, batch_size: int = 500,
    truncation: float = 1.0, counts: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class images of every class (uint8 (N, C, H, W), requested labels (N,)), class-major;
    `counts[c]` images of class c instead when given (see sample_counts).

    Latents are `seeded_latents(seed, N, latent_dim, truncation)`, so the same seed (and psi)
    gives the same images; truncation 1 is none.
    Images are quantised to uint8, as the service delivers them. An unconditional generator
    gets n_per_class * len(labels) images and labels of -1.
    """
    k = len(gen.labels)
    per_class = torch.tensor(counts) if counts is not None else torch.full((k,), n_per_class)
    n = int(per_class.sum())
    z = seeded_latents(seed, n, gen.latent_dim, truncation=truncation)
    requested = torch.arange(k).repeat_interleave(per_class)
    out = []
    for i in range(0, n, batch_size):
        labels = requested[i : i + batch_size].to(device) if gen.conditional else None
        out.append(to_uint8(gen.model(z[i : i + batch_size].to(device), labels).float().cpu()))
    return torch.cat(out), requested if gen.conditional else torch.full((n,), -1)


def proportional_counts(weights: Sequence[int], total: int) -> list[int]:
    """`total` split in proportion to `weights` by largest remainder: each part its quota's floor,
    then one more to the largest remainders (the lower index first on a tie)."""
    quotas = [total * w / sum(weights) for w in weights]
    out = [int(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (out[i] - quotas[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def sample_counts(test: ImageSet, num_classes: int, n_per_class: int) -> list[int] | None:
    """Samples per class in the test split's proportions, n_per_class * num_classes in all, or None
    when its classes are equal (uniform draws). The real subsets every figure is compared with keep
    the test split's class mix, so uniform samples of unequal classes are penalised for the mix alone."""
    sizes = test.labels.bincount(minlength=num_classes).tolist()
    if len(set(sizes)) == 1:
        return None
    return proportional_counts(sizes, n_per_class * num_classes)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images.flatten(1).float().div_(255.0)  # (N, C*H*W) in [0, 1]


def sample_figures(
    gen: LoadedGenerator, p_fake: torch.Tensor, f_fake: torch.Tensor, requested: torch.Tensor,
    f_test: torch.Tensor, k: int = 3,
) -> dict[str, Any]:
    """The figures of one sample set that need only its classifier outputs (probabilities
    (N, K), features (N, F)) and the real test features: conditional accuracy (overall and
    per class, conditional generators only), FID, precision, recall and the inception-style
    score. Both the plain evaluation and each truncation psi use this, so psi 1 agrees."""
    out: dict[str, Any] = {}
    if gen.conditional:
        acc, per_class = M.conditional_accuracy(p_fake.argmax(1), requested, len(gen.labels))
        out["conditional_accuracy"] = acc
        out["conditional_accuracy_per_class"] = dict(zip(gen.labels, per_class, strict=True))
    out["fid"] = M.frechet_distance(f_fake, f_test)
    out["precision"], out["recall"] = M.precision_recall(f_test, f_fake, k=k)
    splits = 10 if len(p_fake) >= 100 else 1
    out["inception_score"], out["inception_score_std"] = M.inception_score(p_fake, splits)
    return out


def memorisation_threshold(nn_real: torch.Tensor) -> tuple[float, int]:
    """(1st percentile of the test images' distances (N,) to their nearest training image, how many
    test images were left out of it as exact copies of a training image). A folder may hold such
    duplicates; at 1% or more of them the percentile would be 0 and no copy would count."""
    distinct = nn_real[nn_real > 0]
    threshold = torch.quantile(distinct, 0.01).item() if len(distinct) else 0.0
    return threshold, len(nn_real) - len(distinct)


def memorised_share(nn_dist: torch.Tensor, threshold: float) -> float:
    """Share of distances (N,) below the threshold; an exact copy (distance 0) always counts,
    even when every test image is one and the threshold is 0."""
    return ((nn_dist < threshold) | (nn_dist == 0)).float().mean().item()


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


def check_split_sizes(train: ImageSet, test: ImageSet, k: int = 3) -> None:
    """Raise EvaluationError when a split is too small for the real-data references: precision and
    recall need each set's k-th nearest other image (k + 1 images), FID a covariance (2)."""
    need = max(k + 1, 2)
    for name, split in (("test", test), ("train", train)):
        if len(split) < need:
            raise EvaluationError(
                f"the {name} split holds {len(split)} image(s); the evaluation needs at least {need} "
                f"(precision and recall with k={k} need k + 1): add images to the {name} split"
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
    progress: Callable[[str], None] | None = None,
    truncation: Sequence[float] = (),
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """All metrics for one generator, and the tensors the card's images are drawn from.

    Returns (metrics, extras) where extras holds `samples`, `requested`, `nn_index`, `nn_dist`.
    `progress(message)` is called as each stage starts. The plain figures are untruncated; each
    psi in `truncation` adds a row to metrics["truncation"]["rows"] (see truncation_sweep).
    """
    say = progress or (lambda message: None)
    device = torch.device(device)
    check_compatible(gen, clf, test)
    check_split_sizes(train, test, k)
    for psi in truncation:  # before minutes of work, not after
        truncation_threshold(psi)
    num_classes = len(gen.labels)
    counts = sample_counts(test, num_classes, n_per_class) if gen.conditional else None
    if counts is not None:
        say(f"the test split's classes are unequal: the samples are drawn in its proportions, "
            f"{', '.join(f'{name} {c}' for name, c in zip(gen.labels, counts, strict=True))}, "
            f"not {n_per_class} per class (the real references keep its class mix)")
    say(f"generating {n_per_class * num_classes} samples")
    samples, requested = generate(gen, n_per_class, seed, device, counts=counts)
    n = samples.shape[0]
    if n < max(2 * k, 10):
        raise ValueError(f"{n} samples are too few for these metrics; raise --n-per-class")

    # Real sets of the same size as the samples, so each figure has its floor at equal n (or the
    # whole split, where it holds fewer: the floors are then at a smaller n than the samples')
    test_x, test_y = random_subset(test.images, test.labels, n, seed + 1)
    train_x, train_y = random_subset(train.images, train.labels, n, seed + 2)
    if len(test_x) < n:
        say(f"note: the test split holds {len(test_x)} images, fewer than the {n} samples: the real-data "
            "references are measured on fewer images than the samples' figures")
    say(f"classifier features of the samples and of {len(test_x) + len(train_x)} real images "
        f"({len(test_x)} test, {len(train_x)} training); accuracy on {len(test)} test images")
    f_fake, p_fake = predict(clf.model, samples)
    f_test, p_test = predict(clf.model, test_x)
    f_train, _ = predict(clf.model, train_x)

    out: dict[str, Any] = {}
    if counts is not None:
        out["samples_per_class"] = dict(zip(gen.labels, counts, strict=True))
    clf_acc, clf_per_class = accuracy(clf.model, test.images, test.labels)
    out["classifier_test_accuracy"] = clf_acc
    out["classifier_test_accuracy_per_class"] = dict(zip(gen.labels, clf_per_class, strict=True))
    say("FID, precision and recall, inception-style score")
    out.update(sample_figures(gen, p_fake, f_fake, requested, f_test, k))
    out["fid_floor"] = M.frechet_distance(f_train, f_test)
    out["precision_floor"], out["recall_floor"] = M.precision_recall(f_test, f_train, k=k)
    out["inception_score_real"], _ = M.inception_score(p_test, 10 if len(p_test) >= 100 else 1)

    # Memorisation: nearest training image in pixel space, for samples and for test images.
    say(f"memorisation: nearest of {len(train)} training images for {n + len(test_x)} images")
    train_px = _pixels(train.images)
    nn_fake, nn_index = M.nearest_neighbours(_pixels(samples), train_px)
    nn_real = M.nearest_neighbour_distances(_pixels(test_x), train_px)
    threshold, copies = memorisation_threshold(nn_real)
    if copies:
        say(f"warning: {copies} of {len(nn_real)} test images are exact copies of training images; the "
            "memorisation threshold leaves them out (they would make it 0 and hide every copy)")
    out["nn_train_median"] = M.median(nn_fake)
    out["nn_train_median_real"] = M.median(nn_real)
    out["nn_train_mean"] = nn_fake.mean().item()
    out["nn_train_mean_real"] = nn_real.mean().item()
    out["memorised_share"] = memorised_share(nn_fake, threshold)
    out["memorised_share_real"] = memorised_share(nn_real, threshold)
    out["memorisation_threshold"] = threshold
    out["memorisation_test_copies"] = copies

    if truncation:
        rows = truncation_sweep(gen, clf, truncation, n_per_class, seed, device, f_test, train_px, threshold, k, say,
                                counts)
        out["truncation"] = {"n_per_class": n_per_class, "samples": n, "seed": seed, "k": k, "rows": rows}

    if gen.conditional and tstr_epochs > 0:
        protocol = tstr_protocol(clf, tstr_epochs, seed)
        steps = max(tstr_epochs * max(1, n // 128), TSTR_MIN_STEPS)  # train_classifier's count, batch 128
        say(f"train on synthetic, test on real: {tstr_epochs} epoch(s) of a classifier on the samples, "
            f"{steps} steps (at least {TSTR_MIN_STEPS}, however few the samples), flip {protocol['flip']}")
        tstr = train_classifier(samples, requested, num_classes, device=device, **protocol)
        out["tstr_accuracy"], _ = accuracy(tstr, test.images, test.labels)
        # The reference classifier trained longer on every training image: its accuracy is no
        # reference for TSTR (0.940 against 0.885 at TSTR's protocol on Fashion-MNIST at n 10,000)
        say(f"its reference, TRTR at the same n: the same training on {len(train_x)} real training images")
        trtr = train_classifier(train_x, train_y, num_classes, device=device, **protocol)
        out["tstr_real"], _ = accuracy(trtr, test.images, test.labels)
    else:  # skipped: replace any figures from an earlier evaluation
        out["tstr_accuracy"] = out["tstr_real"] = None
    extras = {"samples": samples, "requested": requested, "nn_index": nn_index, "nn_dist": nn_fake}
    if gen.conditional:  # the sample grid's rows
        extras["counts"] = torch.tensor(counts if counts is not None else [n_per_class] * num_classes)
    return out, extras


def generator_training_split(config: dict[str, Any]) -> str:
    """The split a generator trained on: config.json's training_split, else its recipe's
    ('unknown' when neither records it). The studies that score on the test split read it too."""
    recipe = config.get("recipe")
    split = recipe.get("split", "unknown") if isinstance(recipe, dict) else "unknown"
    return str(config.get("training_split", split))


def tstr_protocol(clf: LoadedClassifier, epochs: int, seed: int) -> dict[str, Any]:
    """train_classifier's arguments for TSTR and its real-data counterpart alike: the reference
    classifier's architecture and augmentation (flip for CIFAR-10's, as recorded in its config)."""
    recorded = clf.config.get("training")
    training: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    return {
        "epochs": epochs, "seed": seed, "min_steps": TSTR_MIN_STEPS, "arch_args": dict(clf.config["arch_args"]),
        "flip": bool(training.get("flip_augmentation", False)), "shift": int(training.get("shift_augmentation", 2)),
    }


def truncation_sweep(
    gen: LoadedGenerator,
    clf: LoadedClassifier,
    psis: Sequence[float],
    n_per_class: int,
    seed: int,
    device: torch.device,
    f_test: torch.Tensor,
    train_px: torch.Tensor,
    threshold: float,
    k: int = 3,
    say: Callable[[str], None] = lambda message: None,
    counts: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One row per psi, in the order given: the sample figures of `generate(..., truncation=psi)`
    against the same real test features `f_test` (N, F), plus the memorisation share against the
    training pixels `train_px` (M, C*H*W) at the plain evaluation's `threshold`; `counts` as the
    plain evaluation drew its classes (see sample_counts). TSTR is left out:
    it trains a classifier per psi, several times what the rest of a row costs."""
    rows = []
    for psi in psis:
        bound = truncation_threshold(psi)  # raises ValueError outside (0, 1]
        t0 = time.time()
        say(f"truncation psi {psi:g}: {n_per_class * len(gen.labels)} samples, |z| <= {bound:.3f}")
        samples, requested = generate(gen, n_per_class, seed, device, truncation=psi, counts=counts)
        f_fake, p_fake = predict(clf.model, samples)
        fig = sample_figures(gen, p_fake, f_fake, requested, f_test, k)
        nn_fake, _ = M.nearest_neighbours(_pixels(samples), train_px)
        row: dict[str, Any] = {"psi": psi, "threshold": None if bound == float("inf") else bound}
        if gen.conditional:
            per_class = fig["conditional_accuracy_per_class"]
            weakest = min(per_class, key=per_class.__getitem__)
            row |= {"conditional_accuracy": fig["conditional_accuracy"],
                    "conditional_accuracy_min": per_class[weakest], "conditional_accuracy_min_class": weakest}
        row |= {key: fig[key] for key in ("fid", "precision", "recall", "inception_score")}
        row["memorised_share"] = memorised_share(nn_fake, threshold)
        row["nn_train_median"] = M.median(nn_fake)
        row["seconds"] = round(time.time() - t0, 1)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- card images


def label_rows(grid: torch.Tensor, names: list[str], padding: int = 4) -> torch.Tensor:
    """The grid (uint8 (C, H, W), len(names) equal rows) with each row's name written to its
    left on a white margin: uint8 (C, H, W + margin)."""
    font = ImageFont.load_default()
    c, h, w = grid.shape
    margin = max(int(font.getlength(name)) for name in names) + 2 * padding
    canvas = Image.new("L", (margin, h), 255)
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        y = h * (i + 0.5) / len(names)
        draw.text((margin - padding, y), name, fill=0, font=font, anchor="rm")
    column = torch.from_numpy(np.asarray(canvas).copy())[None].expand(c, h, margin)
    return torch.cat([column, grid], dim=2)


def sample_grid(
    samples: torch.Tensor, n_per_class: int, num_classes: int, columns: int = 10, names: list[str] | None = None,
    counts: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """One row per class from class-major samples, each row labelled with its class when
    `names` are given: uint8 (C, H', W'). With `counts` (samples per class, unequal) a class of
    fewer samples than the grid's columns has its row filled with blank images."""
    counts = [int(c) for c in counts] if counts is not None else [n_per_class] * num_classes
    cols = min(columns, max(counts))
    starts = np.cumsum([0, *counts[:-1]])
    blank = torch.zeros_like(samples[:1])
    rows = [torch.cat([samples[s : s + min(cols, c)], *[blank] * (cols - min(cols, c))])
            for s, c in zip(starts, counts, strict=True)]
    grid = upscale(make_grid(torch.cat(rows), nrow=cols), 2)
    return label_rows(grid, names) if names else grid


@torch.no_grad()
def interpolation_strip(gen: LoadedGenerator, seed: int, device: torch.device, steps: int = 10) -> torch.Tensor:
    """Spherical interpolation between two seeded latents, one row per class: uint8 (C, H', W')."""
    z = seeded_latents(seed + 12345, 2, gen.latent_dim)
    path = slerp(z[0], z[1], torch.linspace(0, 1, steps))  # (S, D)
    k = len(gen.labels) if gen.conditional else 1
    zs = path.repeat(k, 1).to(device)
    labels = torch.arange(k).repeat_interleave(steps).to(device) if gen.conditional else None
    images = to_uint8(gen.model(zs, labels).float().cpu())
    grid = upscale(make_grid(images, nrow=steps), 2)
    return label_rows(grid, list(gen.labels)) if gen.conditional else grid


def neighbour_pairs(extras: dict[str, torch.Tensor], train: ImageSet, count: int = 10) -> torch.Tensor:
    """The samples closest to a training image (top row) above those training images (bottom)."""
    order = extras["nn_dist"].argsort()[:count]
    top = extras["samples"][order]
    bottom = train.images[extras["nn_index"][order]]
    return upscale(make_grid(torch.cat([top, bottom]), nrow=len(order)), 2)


# ---------------------------------------------------------------- a weights folder, end to end


def _check_sample_size(weights: Path, config: dict[str, Any], samples: int, n_per_class: int) -> None:
    """Refuse to replace the evaluation on record with one on fewer samples (its figures are
    noisier and biased differently, see the module docstring)."""
    on_record = (config.get("metrics") or {}).get("evaluation") or {}
    old = on_record.get("samples")
    if isinstance(old, int) and samples < old:
        raise EvaluationError(
            f"{weights} holds an evaluation on {old} samples ({on_record.get('n_per_class')} per class); "
            f"this one has {samples} ({n_per_class} per class) and would replace its numbers with noisier "
            f"ones. Use --n-per-class {on_record.get('n_per_class')} or more, leave out --update-card to "
            "write only the report, or pass --force"
        )


def default_out(weights: str | Path) -> Path:
    """runs/evaluate/NAME for weights/NAME."""
    return DEFAULT_OUT / Path(weights).resolve().name


def evaluate_folder(
    weights: Path,
    classifier: Path | None = None,
    n_per_class: int = 1000,
    seed: int = 0,
    tstr_epochs: int = 5,
    data_dir: str | None = None,
    device: str = "auto",
    json_path: Path | None = None,
    card: bool = True,
    command: str = "",
    log: Any = print,
    out: Path | None = None,
    update_card: bool = False,
    force: bool = False,
    truncation: Sequence[float] = (),
) -> dict[str, Any]:
    """Evaluate the generator in `weights` and write the report to `out` (runs/evaluate/NAME
    by default): metrics.json, and unless `card` is False report.md and its images. The weights
    folder is only read, unless `update_card`: then its config.json gets the numbers and its
    card.md and images are regenerated (unless `card` is False); a sample smaller than the one
    on record is refused unless `force`. Also writes the metrics to `json_path` when given.
    Each psi in `truncation` adds a row to metrics["truncation"] (printed, and a section of the
    card). Returns the metrics. Without `classifier`, the one beside the generator or in weights/
    that matches is used."""
    weights = Path(weights)
    out = Path(out) if out is not None else default_out(weights)
    dev = resolve_device(device)
    t0 = time.time()
    gen = load_generator(weights, dev)
    k = len(gen.labels) if gen.conditional else 1
    if update_card and not force:
        _check_sample_size(weights, gen.config, n_per_class * len(gen.labels), n_per_class)
    if out.resolve() == weights.resolve():
        raise EvaluationError(f"--out {out} is the weights folder itself; use --update-card to write there")
    if classifier is None:
        classifier = find_classifier(gen, [weights.parent, Path("weights")])
        log(f"classifier: {classifier}")
    clf = load_classifier(classifier, dev)

    def progress(message: str) -> None:
        print(f"[{time.time() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)

    progress("loading the real train and test images")
    dataset, train, test = reference_data(clf, data_dir)
    split = generator_training_split(gen.config)
    if split in ("all", "test"):
        print(f"warning: {gen.name} was trained on the {split!r} split, which holds the test images: "
              "test-set figures and the memorisation reference are optimistic; train on 'train' to "
              "measure generalisation", file=sys.stderr)
    log(f"evaluating {gen.name}: {n_per_class} x {len(gen.labels)} samples, seed {seed}, {dev}")
    metrics, extras = evaluate_generator(gen, clf, train, test, n_per_class, seed, tstr_epochs, dev,
                                         progress=progress, truncation=truncation)
    metrics["evaluation"] = {
        "n_per_class": n_per_class,
        "samples": int(extras["samples"].shape[0]),
        "seed": seed,
        "dataset": dataset,
        "test_checksum": test.checksum,
        "classifier": str(classifier),
        "classifier_sha256": clf.config.get("weights_sha256"),
        "feature_dim": clf.config["arch_args"].get("feature_dim"),
        "k": 3,
        "tstr_epochs": tstr_epochs,
        "generator_training_split": split,
        "seconds": round(time.time() - t0, 1),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or f"python -m training evaluate {weights}",
    }
    if "truncation" in metrics:  # self-contained: the card's section may outlive this evaluation record
        sweep = metrics["truncation"]
        sweep |= {key: metrics["evaluation"][key] for key in ("dataset", "classifier", "date", "command")}
        sweep["hardware"] = hardware_description(dev)
        sweep["seconds"] = round(sum(row["seconds"] for row in sweep["rows"]), 1)
    progress("done")
    log(text_table(metrics))
    if gen.conditional:
        per = metrics["conditional_accuracy_per_class"]
        log("per class: " + ", ".join(f"{name} {v:.3f}" for name, v in per.items()))
    if metrics.get("tstr_real") is not None:
        log(f"train on synthetic {metrics['tstr_accuracy']:.4f} against TRTR at the same n {metrics['tstr_real']:.4f} "
            f"(the same training on real images); the reference classifier: {metrics['classifier_test_accuracy']:.4f}")
    if "truncation" in metrics:
        log(truncation_text_table(metrics["truncation"]))

    folders = [out] + ([weights] if update_card else [])
    if card:
        per = n_per_class if gen.conditional else extras["samples"].shape[0]
        names = list(gen.labels) if gen.conditional else None
        images = {
            SAMPLES_FILE: encode_png(sample_grid(extras["samples"], per, k, names=names, counts=extras.get("counts")), smallest=True),
            INTERPOLATION_FILE: encode_png(interpolation_strip(gen, seed, dev), smallest=True),
            NEIGHBOURS_FILE: encode_png(neighbour_pairs(extras, train), smallest=True),
        }
        for folder in folders:
            for name, png in images.items():
                atomic_write_bytes(folder / name, png)
    # The report: the card as it would read with these numbers (a sweep on record dropped, as
    # --update-card drops it, unless this evaluation made one), beside its images.
    merged = {**gen.config, "metrics": {**(gen.config.get("metrics") or {}), "truncation": None, **metrics}}
    atomic_write_json(out / REPORT_JSON, {"model": gen.name, "weights": str(weights), **metrics})
    written = [str(out / REPORT_JSON)]
    if card:
        atomic_write_bytes(out / REPORT_MD, render_card(out, merged, notes_from=weights).encode())
        written.append(str(out / REPORT_MD))
    if update_card:  # without a sweep, drop one on record: it belongs to an earlier evaluation
        config = update_metrics(weights, {"truncation": None, **metrics})
        written.append(str(weights / CONFIG_FILE))
        if card:
            written.append(str(write_card(weights, config)))
    if json_path:
        atomic_write_json(json_path, {"model": gen.name, **metrics})
        written.append(str(json_path))
    log("wrote " + ", ".join(written) + ("" if update_card else f" ({weights} unchanged; --update-card writes there)"))
    return metrics
