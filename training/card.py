"""`card.md`: a model card for someone choosing a model, generated from a weights folder's
config.json and the files beside it: a summary (what it draws, how well, which split, hardware
and time, how to reproduce it and whether exactly), the tables and figures, how it was made,
then known limitations. Regenerating it never loses a human note: free text lives in
`card_notes.md` and is copied in (a `## Known limitations` section of it goes to the end).

The metric table here is also what `evaluate` prints, so the terminal and the card agree; so is
the truncation table, when the evaluation measured one (`evaluate --truncation`).
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
    ("tstr_accuracy", "tstr_real", "Train on synthetic, test on real",
     "classifier trained on samples only, scored on the real test set; reference: TRTR at the same n, the "
     "same training on as many real training images"),
]

# Evaluations before TRTR at the same n (the shipped cards) hold only the reference classifier's accuracy
# beside TSTR: shown for what it is
TSTR_OLD_REFERENCE = ("classifier trained on samples only, scored on the real test set; reference: the reference "
                      "classifier, trained longer on every training image (TRTR at the same n was not measured), "
                      "so the gap overstates what the samples lack")


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, model value, reference value, meaning) for each metric present in `metrics`."""
    rows = []
    for key, ref, label, meaning in METRIC_ROWS:
        if key not in metrics:
            continue
        value = fmt(metrics[key])
        if key == "inception_score" and "inception_score_std" in metrics:
            value += f" ± {fmt(metrics['inception_score_std'], 2)}"
        reference = fmt(metrics.get(ref)) if ref else ""
        if key == "tstr_accuracy" and metrics.get("tstr_real") is None and metrics.get(key) is not None:
            reference, meaning = f"{fmt(metrics.get('classifier_test_accuracy'))} (reference classifier)", TSTR_OLD_REFERENCE
        rows.append((label, value, reference, meaning))
    return rows


def text_table(metrics: dict[str, Any]) -> str:
    """The metric table as aligned plain text, for the terminal."""
    rows = [("metric", "model", "real data"), *[(a, b, c) for a, b, c, _ in metric_rows(metrics)]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# (row key, column header, digits) of the truncation table; `psi` and `threshold` are formatted apart.
TRUNCATION_COLUMNS: list[tuple[str, str, int]] = [
    ("conditional_accuracy", "cond. acc.", 4),
    ("conditional_accuracy_min", "weakest class", 3),
    ("fid", "FID", 3),
    ("precision", "precision", 4),
    ("recall", "recall", 4),
    ("inception_score", "IS", 3),
    ("memorised_share", "memorised share", 4),
    ("seconds", "seconds", 1),
]


def truncation_rows(sweep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of strings) of a truncation sweep, one row per psi as measured; columns
    missing from every row (cond. acc. of an unconditional generator) are left out."""
    rows = sweep.get("rows") or []
    columns = [(key, head, digits) for key, head, digits in TRUNCATION_COLUMNS if any(key in r for r in rows)]
    header = ["psi", "bound on abs(z)", *(head for _, head, _ in columns)]
    table = []
    for r in rows:
        bound = r.get("threshold")
        cells = [f"{r['psi']:g}", "none" if bound is None else f"{bound:.3f}"]
        for key, _, digits in columns:
            cell = fmt(r.get(key), digits)
            if key == "conditional_accuracy_min" and r.get("conditional_accuracy_min_class"):
                cell += f" ({r['conditional_accuracy_min_class']})"
            cells.append(cell)
        table.append(cells)
    return header, table


def truncation_text_table(sweep: dict[str, Any]) -> str:
    """The truncation table as aligned plain text, for the terminal."""
    header, rows = truncation_rows(sweep)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(f"{cell:>{w}}" for cell, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return f"truncation (latent seed {sweep.get('seed', '?')}, {_count(sweep.get('samples'))} samples per psi):\n" + "\n".join(lines)


def _pick_psi(rows: list[dict[str, Any]]) -> str:
    """One sentence on choosing psi, from the table's loosest and tightest rows."""
    loose, tight = max(rows, key=lambda r: r["psi"]), min(rows, key=lambda r: r["psi"])
    if loose is tight:
        return ""
    moves = [f"{label} {fmt(loose.get(key), 3)} -> {fmt(tight.get(key), 3)}"
             for key, label in (("precision", "precision"), ("conditional_accuracy", "conditional accuracy"),
                                ("recall", "recall"), ("fid", "FID")) if key in loose]
    change = f"from psi {loose['psi']:g} to {tight['psi']:g}: " + ", ".join(moves)
    gains = any(isinstance(tight.get(key), float) and isinstance(loose.get(key), float) and tight[key] > loose[key]
                for key in ("precision", "conditional_accuracy"))
    if not gains:
        return (f"How to pick psi: here truncation buys no fidelity ({change}), so keep psi {loose['psi']:g}.")
    text = ("How to pick psi: take the largest psi whose precision and conditional accuracy are enough for "
            f"your use, because every step down pays for them in recall, the share of the real variety the "
            f"samples cover ({change}).")
    scored = [r for r in rows if isinstance(r.get("fid"), float)]
    best = min(scored, key=lambda r: r["fid"]) if scored else loose
    if best is not loose:
        text += f" FID, which counts both, is lowest at psi {best['psi']:g} ({fmt(best['fid'], 3)})."
    return text


def truncation_section(metrics: dict[str, Any]) -> list[str]:
    """The card's 'Truncation: variety against fidelity' section, or [] without a sweep."""
    sweep = metrics.get("truncation")
    if not isinstance(sweep, dict) or not sweep.get("rows"):
        return []
    header, rows = truncation_rows(sweep)
    seconds = sweep.get("seconds")
    took = f" ({seconds:,.0f} s for the {len(rows)} rows)" if isinstance(seconds, (int, float)) else ""
    plain = next((r for r in sweep["rows"] if r.get("psi") == 1), None)
    same = plain is not None and all(fmt(plain.get(key)) == fmt(metrics.get(key))
                                     for key in ("conditional_accuracy", "fid", "precision", "recall"))
    intro = (
        "Truncation draws each latent entry from a standard normal cut at the bound below "
        "(`seeded_latents(seed, n, latent_dim, truncation=psi)`: entries beyond Phi^-1((1 + psi) / 2) are "
        "replaced by draws from the normal truncated to the bound, the distribution of BigGAN's resampling), so a lower psi keeps the generator nearer the centre of its latent "
        "space: more typical, cleaner samples, less variety. psi 1 is no truncation"
        f"{': the figures of the table above' if same else ''}. Each row: "
        f"{_count(sweep.get('samples'))} samples ({_count(sweep.get('n_per_class'))} per class, latent seed "
        f"{sweep.get('seed', '?')}: the same draw at every psi, only its entries beyond the bound replaced) against the real "
        f"{sweep.get('dataset', '')} test set with `{sweep.get('classifier', '?')}`; memorised share as in the "
        f"table above. Measured with `{sweep.get('command', '?')}` on "
        f"{sweep.get('hardware', 'unknown hardware')}{took}. Train-on-synthetic accuracy is not measured per "
        "psi (it would train a classifier per row)."
    )
    parts = ["## Truncation: variety against fidelity", "", intro.replace("  ", " "), "",
             _markdown_table(header, rows), ""]
    pick = _pick_psi(sweep["rows"])
    return parts + ([pick, ""] if pick else [])


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]
    return "\n".join(out)


def _section(config: dict[str, Any], key: str) -> dict[str, Any]:
    """config[key] when it is a mapping, else {} (configs written by older versions lack some)."""
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _split(config: dict[str, Any]) -> str:
    """The split the generator trained on: config.json's training_split, else its recipe's."""
    recipe = _section(config, "recipe")
    ev = (config.get("metrics") or {}).get("evaluation") or {}
    return str(config.get("training_split") or recipe.get("split") or ev.get("generator_training_split") or "unknown")


def split_statement(config: dict[str, Any]) -> str:
    """One sentence on the training split and what it means for the test-set figures."""
    split = _split(config)
    dataset = _section(config, "dataset")
    size = dataset.get("size")
    images = f"{size:,} images" if isinstance(size, int) else "images"
    if split in ("all", "test"):
        return (f"**Trained on the `{split}` split ({images}, the test images included): the test figures "
                "below are not held out.** They are optimistic, and train-on-synthetic accuracy is scored "
                "on images the generator learned from.")
    if split == "train":
        return f"Trained on the `train` split only ({images}): every test-set figure is on held-out images."
    return "The training split is not recorded, so the test figures may not be held out."


def _what_it_draws(config: dict[str, Any]) -> str:
    size, channels = config.get("image_size", "?"), config.get("channels", 1)
    colour = "grayscale" if channels == 1 else "colour"
    labels = config.get("labels") or []
    dataset = config.get("dataset", {}).get("name") if isinstance(config.get("dataset"), dict) else config.get("dataset")
    if config.get("num_classes"):
        return (f"{size}x{size} {colour} images of the {len(labels)} {dataset or ''} classes, one class per "
                f"request: {', '.join(labels)}.").replace("  ", " ")
    return f"{size}x{size} {colour} images (unconditional)."


def _how_well(metrics: dict[str, Any]) -> str:
    ev = metrics.get("evaluation") or {}
    parts = []
    if "conditional_accuracy" in metrics:
        parts.append(f"conditional accuracy {fmt(metrics['conditional_accuracy'], 3)} (real test images: "
                     f"{fmt(metrics.get('classifier_test_accuracy'), 3)})")
    if "fid" in metrics:
        parts.append(f"FID {fmt(metrics['fid'], 2)} against a real-data floor of {fmt(metrics.get('fid_floor'), 3)}")
    if "precision" in metrics:
        parts.append(f"precision {fmt(metrics['precision'], 3)} and recall {fmt(metrics.get('recall'), 3)} "
                     f"(real data: {fmt(metrics.get('precision_floor'), 3)} and {fmt(metrics.get('recall_floor'), 3)})")
    if metrics.get("tstr_accuracy") is not None:
        parts.append(f"a classifier trained on its samples scores {fmt(metrics['tstr_accuracy'], 3)} on real test "
                     f"images ({_tstr_reference(metrics)})")
    if not parts:
        return "not evaluated yet."
    n = ev.get("samples")
    return "; ".join(parts) + f". Measured on {f'{n:,}' if isinstance(n, int) else '?'} samples; details under *Evaluation*."


def _tstr_reference(metrics: dict[str, Any]) -> str:
    """What TSTR is compared with, in words: TRTR at the same n, or for older evaluations the
    reference classifier, named as such."""
    if metrics.get("tstr_real") is not None:
        return f"TRTR at the same n, trained the same way on as many real images: {fmt(metrics['tstr_real'], 3)}"
    return (f"the reference classifier, trained longer on every real training image: "
            f"{fmt(metrics.get('classifier_test_accuracy'), 3)}")


def _hardware_and_time(config: dict[str, Any]) -> str:
    training = _section(config, "training")
    steps = config.get("steps")
    text = f"{training.get('hardware', 'unknown hardware')}"
    seconds = training.get("train_seconds")
    if isinstance(seconds, (int, float)):
        text += f", {seconds:,.0f} s of training ({seconds / 3600:.1f} h)" if seconds >= 3600 else f", {seconds:,.0f} s of training"
    if steps is not None:
        text += f" for {steps:,} generator steps"
    if training.get("epochs") is not None:
        text += f" ({training['epochs']:g} epochs)"
    return text + "."


def _on_gpu(config: dict[str, Any]) -> bool:
    training = _section(config, "training")
    hardware = str(training.get("hardware", ""))
    return any(word in hardware for word in ("NVIDIA", "CUDA", "cuda", "GPU"))


def reproduce_commands(config: dict[str, Any], folder: Path) -> list[str]:
    """train, export and evaluate commands for this model: the named recipe plus a --set for every
    field of the recorded recipe that differs from the recipe file as it is now."""
    from training.recipe import RecipeError, load_recipe  # the card needs recipes only here

    recipe = config.get("recipe") if isinstance(config.get("recipe"), dict) else None
    name = config.get("name", folder.name)
    if recipe is None:
        return []
    try:
        base = load_recipe(recipe.get("name", "")).to_dict()
        train = f"python -m training train --recipe {recipe['name']}"
    except (RecipeError, KeyError):
        base, train = {}, "python -m training train --recipe RECIPE.json  # the recipe in config.json"
    train += f" --out runs/{name} --device {'cuda' if _on_gpu(config) else 'cpu'}"
    # the folder path is this machine's, so not recorded; an image folder's run cannot start without one
    data_dir = " --data-dir ROOT" if recipe.get("dataset") == "folder" else ""
    train += data_dir
    for key, value in recipe.items():
        if key in ("name", "data_dir") or (base and base.get(key) == value):
            continue
        if key == "steps" and value is not None:
            train += f" --steps {value}"
        elif base:
            text = json.dumps(value) if not isinstance(value, str) else value
            train += f" --set {key}={text.replace(' ', '')}"
    steps, total = config.get("steps"), recipe.get("steps")
    if isinstance(steps, int) and isinstance(total, int) and steps < total:
        train += f" --stop-after {steps}"
    ev = (config.get("metrics") or {}).get("evaluation") or {}
    recorded = ev.get("command")
    evaluate = recorded if isinstance(recorded, str) else (
        f"python -m training evaluate weights/{name} --n-per-class {ev.get('n_per_class', 1000)} "
        f"--seed {ev.get('seed', 0)}{data_dir}")
    return [train, f"python -m training export runs/{name} --name {name}", evaluate]


def _notes(folder: Path, notes_from: Path | None) -> tuple[str, str]:
    """card_notes.md split at its '## Known limitations' heading: (how it was made, limitations)."""
    path = (notes_from or folder) / NOTES_FILE
    if not path.is_file():
        return "", ""
    text = path.read_text().strip()
    head, sep, tail = text.partition(LIMITATIONS_HEADING)
    return head.strip(), tail.strip() if sep else ""


LIMITATIONS_HEADING = "## Known limitations"


def _limitations(config: dict[str, Any]) -> list[str]:
    """Limitations that follow from the numbers and the split."""
    metrics = config.get("metrics") or {}
    out = []
    split = _split(config)
    if split in ("all", "test"):
        out.append(f"Trained on the `{split}` split: the test images were training data, so no figure on this "
                   "card measures generalisation to unseen images. A model trained with the recipe as it is "
                   "now (`split` train) is measured on held-out images.")
    per_class = metrics.get("conditional_accuracy_per_class")
    if isinstance(per_class, dict) and per_class:
        weak = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
        real = metrics.get("classifier_test_accuracy_per_class") or {}
        text = "Its weakest classes by conditional accuracy: " + ", ".join(f"{n} {v:.3f}" for n, v in weak)
        if all(isinstance(real.get(n), (int, float)) for n, _ in weak):
            text += " (real test images of those classes: " + ", ".join(f"{real[n]:.3f}" for n, _ in weak) + ")"
        out.append(text + ".")
    fid, floor = metrics.get("fid"), metrics.get("fid_floor")
    if isinstance(fid, (int, float)) and isinstance(floor, (int, float)) and floor > 0:
        out.append(f"FID is {fid / floor:.0f}x the real-data floor ({fmt(fid, 2)} against {fmt(floor, 3)}): "
                   "in the classifier's features the samples lie much further from the real test images than real "
                   "training images do.")
    recall, recall_floor = metrics.get("recall"), metrics.get("recall_floor")
    if isinstance(recall, (int, float)) and isinstance(recall_floor, (int, float)) and recall < 0.9 * recall_floor:
        out.append(f"Recall {fmt(recall, 3)} against {fmt(recall_floor, 3)} for real images: it covers less of "
                   "the variety within each class than the data has.")
    return out


def _details(config: dict[str, Any]) -> list[str]:
    lines = [f"- Architecture: `{config.get('architecture', '?')}` "
             f"({config.get('image_size', '?')}x{config.get('image_size', '?')}, "
             f"{config.get('channels', '?')} channel(s), latent {config.get('latent_dim', '?')}, "
             f"{config.get('num_classes', 0)} classes)"]
    if config.get("arch_args"):
        lines.append(f"- Constructor arguments: `{json.dumps(config['arch_args'], sort_keys=True)}`")
    recipe = config.get("recipe")
    if isinstance(recipe, dict):
        keys = ("name", "split", "loss", "conditioning", "aux_classifier", "batch_size", "n_critic", "lr_g", "lr_d")
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


def _memorisation_paragraph(config: dict[str, Any]) -> str:
    split = _split(config)
    text = ("The memorisation check measures, in pixel space, how far each sample lies from its nearest "
            "training image and compares that with the same distance for real test images. ")
    if split == "train":
        text += ("This model never saw those test images, so they show how close an unseen image of the same "
                 "distribution comes to the training set. A model that copies its training set has samples "
                 "much closer than test images are; the share of samples closer than the 1st percentile of "
                 "the test images' distances is about 0.01 for a model that does not copy.")
    else:
        text += (f"This model trained on the `{split}` split, which includes the test images, so they are not "
                 "an unseen reference, and the nearest neighbours are searched among the training split only: "
                 "a sample that copied a test image would not be caught here. Within that limit, a model that "
                 "copies has samples much closer than test images are; the share of samples closer than the "
                 "1st percentile of the test images' distances is about 0.01 for a model that does not copy.")
    return text


def _neighbours_caption(metrics: dict[str, Any], count: int = 10) -> str:
    ev = metrics.get("evaluation") or {}
    n = ev.get("samples")
    of = f"out of {n:,}" if isinstance(n, int) else "of all samples"
    text = (f"The {count} samples, {of}, that lie closest to a training image (top row), above that training "
            "image (bottom row): the closest pairs, picked to look for copies, not typical samples, so similar "
            "pairs are expected here.")
    if "nn_train_median" in metrics:
        text += (f" Median pixel distance to the nearest training image: {fmt(metrics['nn_train_median'], 2)} for "
                 f"samples, {fmt(metrics.get('nn_train_median_real'), 2)} for real test images; share of samples "
                 f"closer than 99% of the test images: {fmt(metrics.get('memorised_share'), 3)} "
                 f"(real test images: {fmt(metrics.get('memorised_share_real'), 3)}).")
    copies = metrics.get("memorisation_test_copies")
    if isinstance(copies, int) and copies:
        text += (f" {copies} test image(s) are exact copies of a training image: left out of the 1st percentile "
                 "(they would make it 0), counted in the real share.")
    return text


def render_card(folder: str | Path, config: dict[str, Any], notes_from: str | Path | None = None) -> str:
    """The card's Markdown for a weights folder, from its config and the images beside it;
    the human notes come from `notes_from` (default: the folder itself)."""
    folder = Path(folder)
    notes_from = Path(notes_from) if notes_from is not None else None
    metrics = config.get("metrics", {})
    ev = metrics.get("evaluation", {})
    made, noted_limits = _notes(folder, notes_from)
    commands = reproduce_commands(config, folder)
    parts = [f"# {config.get('name', folder.name)}", "", split_statement(config), ""]
    parts += [
        f"- **What it draws:** {_what_it_draws(config)}",
        f"- **How well:** {_how_well(metrics)}",
        f"- **Trained on:** the `{_split(config)}` split of {_dataset_name(config)}.",
        f"- **Hardware and time:** {_hardware_and_time(config)}",
    ]
    if "```" in made:
        parts.append("- **How to reproduce it:** the exact commands are under *How this model was made* below.")
    elif commands:
        parts += ["- **How to reproduce it:**", "", "  ```bash", *[f"  {c}" for c in commands], "  ```"]
    parts.append("- **Is reproduction exact?** " + (
        "No: it was trained on a GPU, whose kernels are not deterministic, so a rerun gives a similar, not an "
        "identical, generator." if _on_gpu(config) else
        "Yes on a CPU with the same code and PyTorch build: the loop is deterministic there, across "
        "interruptions and resumes too (tested). Other CPUs or builds may differ by rounding."))
    parts.append("")

    parts += ["## Evaluation", ""]
    rows = metric_rows(metrics)
    if rows:
        if ev:
            parts += [
                f"{_count(ev.get('samples'))} samples ({_count(ev.get('n_per_class'))} per class, latent seed "
                f"{ev.get('seed', '?')}) against the real {ev.get('dataset', '')} test set, measured with "
                f"the reference classifier `{ev.get('classifier', '?')}` (test accuracy "
                f"{fmt(metrics.get('classifier_test_accuracy'))}). Features: its "
                f"{ev.get('feature_dim', '?')}-dimensional penultimate layer. Reproduce with "
                f"`{ev.get('command', 'python -m training evaluate ' + str(folder))}`.",
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
        parts += [_memorisation_paragraph(config), ""]
        parts += truncation_section(metrics)
    else:
        parts += [f"Not evaluated yet: run `python -m training evaluate {folder}`.", ""]

    for file, title, caption in (
        (SAMPLES_FILE, "Samples (one row per class, named on the left)", ""),
        (INTERPOLATION_FILE, "Latent interpolation (spherical, one row per class)",
         "The same path between two latents, drawn for every class."),
        (NEIGHBOURS_FILE, "Samples closest to a training image", _neighbours_caption(metrics) if metrics else ""),
        (CURVES_FILE, "Training curves", ""),
    ):
        if (folder / file).is_file():
            parts += [f"## {title}", "", f"![{title}]({file})", ""]
            if caption:
                parts += [caption, ""]

    if made:
        parts += ["## How this model was made", "", made, ""]
    parts += ["## Model details", "", *_details(config), ""]
    limits = _limitations(config)
    if limits or noted_limits:
        parts += ["## Known limitations", "", *[f"- {line}" for line in limits], ""]
        if noted_limits:
            parts += [noted_limits, ""]
    parts += [f"<!-- generated by training/card.py from {CONFIG_FILE} and {NOTES_FILE}; edit {NOTES_FILE}, "
              "not this file -->", ""]
    return "\n".join(parts)


def _dataset_name(config: dict[str, Any]) -> str:
    dataset = config.get("dataset")
    if isinstance(dataset, dict):
        size = dataset.get("size")
        return f"{dataset.get('name', '?')}" + (f" ({size:,} images)" if isinstance(size, int) else "")
    return str(dataset or "its dataset")


def write_card(folder: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Render and atomically write `card.md` into the weights folder; returns its path."""
    folder = Path(folder)
    if config is None:
        config = json.loads((folder / CONFIG_FILE).read_text())
    path = folder / CARD_FILE
    atomic_write_bytes(path, render_card(folder, config).encode())
    return path
