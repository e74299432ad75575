"""`card.md`: a human-readable model card generated from a weights folder's config.json and
the files beside it. Regenerating it never loses a human note: free text lives in
`card_notes.md` and is copied in.

The metric table here is also what `evaluate` prints, so the terminal and the card agree.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gancore.fileio import atomic_write_bytes
from gancore.files import (
    CARD_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    INTERPOLATION_FILE,
    NEIGHBOURS_FILE,
    NOTES_FILE,
    SAMPLES_FILE,
)

# (metric key, reference key or None, label, how to read it)
METRIC_ROWS: list[tuple[str, str | None, str, str]] = [
    ("conditional_accuracy", "classifier_test_accuracy", "Conditional accuracy",
     "share of samples the classifier puts in the requested class; reference: classifier on real test images"),
    ("fid", "fid_floor", "FID (classifier features)",
     "lower is better; reference: real training images vs test (the floor at this sample size)"),
    ("precision", "precision_floor", "Precision (k=3)", "samples inside the real-data manifold; higher is better"),
    ("recall", "recall_floor", "Recall (k=3)", "real data inside the samples' manifold; low means mode collapse"),
    ("inception_score", "inception_score_real", "Inception-style score",
     "exp E KL(p(y|x) || p(y)) with this classifier; at most the number of classes"),
    ("nn_train_median", "nn_train_median_real", "Median distance to nearest training image",
     "pixel L2 in [0, 1] units; reference: real test images; much lower than the reference suggests copying"),
    ("memorised_share", "memorised_share_real", "Share closer than the real 1st percentile",
     "samples nearer a training image than 99% of test images are; about 0.01 for a model that does not copy"),
    ("tstr_accuracy", "classifier_test_accuracy", "Train on synthetic, test on real",
     "classifier trained on samples only, scored on the real test set; reference: trained on real"),
]


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, model value, reference value, meaning) for each metric present in `metrics`."""
    rows = []
    for key, ref, label, meaning in METRIC_ROWS:
        if key not in metrics:
            continue
        value = fmt(metrics[key])
        if key == "inception_score" and "inception_score_std" in metrics:
            value += f" ± {fmt(metrics['inception_score_std'], 2)}"
        rows.append((label, value, fmt(metrics.get(ref)) if ref else "", meaning))
    return rows


def text_table(metrics: dict[str, Any]) -> str:
    """The metric table as aligned plain text, for the terminal."""
    rows = [("metric", "model", "real data"), *[(a, b, c) for a, b, c, _ in metric_rows(metrics)]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(out)


def _summary(config: dict[str, Any]) -> list[str]:
    lines = [f"- Architecture: `{config.get('architecture', '?')}` "
             f"({config.get('image_size', '?')}x{config.get('image_size', '?')}, "
             f"{config.get('channels', '?')} channel(s), latent {config.get('latent_dim', '?')}, "
             f"{config.get('num_classes', 0)} classes)"]
    if config.get("arch_args"):
        lines.append(f"- Constructor arguments: `{json.dumps(config['arch_args'], sort_keys=True)}`")
    recipe = config.get("recipe")
    if isinstance(recipe, dict):
        keys = ("name", "loss", "conditioning", "aux_classifier", "batch_size", "n_critic", "lr_g", "lr_d")
        shown = ", ".join(f"{k}={recipe[k]}" for k in keys if k in recipe)
        lines.append(f"- Recipe: {shown or json.dumps(recipe, sort_keys=True)[:300]}")
    if "steps" in config:
        lines.append(f"- Generator steps: {config['steps']}" + (" (EMA weights)" if config.get("ema") else ""))
    training = config.get("training")
    if isinstance(training, dict):
        lines.append("- Training: " + ", ".join(f"{k} {v}" for k, v in training.items()))
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        lines.append("- Data: " + ", ".join(f"{k} {v}" for k, v in dataset.items()))
    elif dataset:
        lines.append(f"- Data: {dataset}")
    if config.get("data_checksum"):
        lines.append(f"- Data checksum (SHA-256): `{config['data_checksum']}`")
    if config.get("labels"):
        lines.append(f"- Labels: {', '.join(config['labels'])}")
    if config.get("weights_sha256"):
        lines.append(f"- Weights SHA-256: `{config['weights_sha256']}`")
    if config.get("created"):
        lines.append(f"- Exported: {config['created']}")
    return lines


def render_card(folder: str | Path, config: dict[str, Any]) -> str:
    """The card's Markdown for a weights folder, from its config and the images beside it."""
    folder = Path(folder)
    metrics = config.get("metrics", {})
    ev = metrics.get("evaluation", {})
    parts = [f"# {config.get('name', folder.name)}", "", "## Model", "", *_summary(config), ""]

    parts += ["## Evaluation", ""]
    rows = metric_rows(metrics)
    if rows:
        if ev:
            parts += [
                f"{ev.get('samples', '?')} samples ({ev.get('n_per_class', '?')} per class, latent seed "
                f"{ev.get('seed', '?')}) against the real {ev.get('dataset', '')} test set, measured with "
                f"the reference classifier `{ev.get('classifier', '?')}` (test accuracy "
                f"{fmt(metrics.get('classifier_test_accuracy'))}). Features: its "
                f"{ev.get('feature_dim', '?')}-dimensional penultimate layer. Reproduce with "
                f"`{ev.get('command', 'python -m training evaluate ' + str(folder))}`.",
                "",
            ]
        if ev.get("generator_training_split") in ("all", "test"):
            parts += [
                f"**Caveat:** this generator was trained on the `{ev['generator_training_split']}` split, "
                "which includes the test images, so the test-set figures are optimistic and the "
                "memorisation reference (test images' distance to the training split) is not an unseen "
                "set. Train on the `train` split for a clean measurement.",
                "",
            ]
        parts += [_markdown_table(["Metric", "Model", "Real data", "How to read it"], [list(r) for r in rows]), ""]
        per_class = metrics.get("conditional_accuracy_per_class")
        if isinstance(per_class, dict) and per_class:
            parts += ["Conditional accuracy per class:", ""]
            table = [["samples", *(fmt(v, 3) for v in per_class.values())]]
            reference = metrics.get("classifier_test_accuracy_per_class")
            if isinstance(reference, dict):
                table.append(["real test images", *(fmt(reference.get(c), 3) for c in per_class)])
            parts += [_markdown_table(["", *per_class], table), ""]
        parts += [
            "The memorisation check measures, in pixel space, how far each sample lies from its "
            "nearest training image and compares that with the same distance for real test "
            "images, which the model never saw. A model that copies its training set has samples "
            "much closer than test images are; the share of samples closer than the 1st percentile "
            "of the test images' distances is about 0.01 for a model that does not copy.",
            "",
        ]
    else:
        parts += [f"Not evaluated yet: run `python -m training evaluate {folder}`.", ""]

    for file, title in (
        (SAMPLES_FILE, "Samples (one row per class)"),
        (INTERPOLATION_FILE, "Latent interpolation (spherical, one row per class)"),
        (NEIGHBOURS_FILE, "Samples closest to a training image (top) and those training images (bottom)"),
        (CURVES_FILE, "Training curves"),
    ):
        if (folder / file).is_file():
            parts += [f"## {title}", "", f"![{title}]({file})", ""]

    notes = folder / NOTES_FILE
    if notes.is_file():
        parts += ["## Notes", "", notes.read_text().strip(), ""]
    parts += [f"<!-- generated by training/card.py from {CONFIG_FILE}; edit {NOTES_FILE}, not this file -->", ""]
    return "\n".join(parts)


def write_card(folder: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Render and atomically write `card.md` into the weights folder; returns its path."""
    folder = Path(folder)
    if config is None:
        config = json.loads((folder / CONFIG_FILE).read_text())
    path = folder / CARD_FILE
    atomic_write_bytes(path, render_card(folder, config).encode())
    return path
