"""A run folder's last checkpoint -> a weights folder (`python -m training export`): the EMA
generator (or the raw one) through gancore.weights.save_generator, with the recipe, step count,
data and hardware in config.json, and the training curves beside it. Exported over a folder
that held other, evaluated weights, the folder's evaluation images go and its card is written
again without their figures (it says "not evaluated yet") until `evaluate --update-card`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gancore.files import (
    CARD_FILE,
    CURVES_FILE,
    INTERPOLATION_FILE,
    METRICS_FILE,
    NEIGHBOURS_FILE,
    SAMPLES_FILE,
)
from gancore.networks import ARCHITECTURES
from gancore.weights import save_generator
from training.card import write_card
from training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from training.curves import plot_curves
from training.recipe import Recipe


def _epochs(state: dict[str, Any], recipe: Recipe) -> float:
    """Passes over the data, counted as the loop's metrics.jsonl counts them. Checkpoints written
    before the loop stored the count are estimated from the images seen by one process."""
    if "epochs" in state:
        return float(state["epochs"])
    return int(state["step"]) * recipe.n_critic * recipe.batch_size / int(state["dataset"]["size"])


def export_run(run_dir: Path, folder: Path, use_ema: bool = True, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Rebuild the generator from a run's last checkpoint and save it as a weights folder
    (floating tensors stored as `dtype` when given: float16 halves the file)."""
    run_dir, folder = Path(run_dir), Path(folder)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: no checkpoints found (train first)")
    state = load_checkpoint(ckpt)
    recipe = Recipe.from_dict(state["recipe"])
    g_args = dict(state["g_args"])
    G = ARCHITECTURES[recipe.arch].generator(**g_args)
    G.load_state_dict(state["G_ema" if use_ema else "G"])
    extra = {
        # What the test-set figures mean depends on it: "all" and "test" include the test images.
        "training_split": recipe.split,
        "test_figures_held_out": recipe.split == "train",
        "recipe": recipe.to_dict(),
        "steps": int(state["step"]),
        "ema": use_ema,
        "dataset": state["dataset"],
        "training": {
            "hardware": state.get("hardware", "unknown"),
            "train_seconds": round(float(state["train_seconds"]), 1),
            "epochs": round(_epochs(state, recipe), 3),
            "checkpoint": ckpt.name,
        },
    }
    had_card = (folder / CARD_FILE).is_file()
    config = save_generator(folder, G, recipe.arch, g_args, state["labels"], state["aliases"], extra, dtype)
    metrics = run_dir / METRICS_FILE
    if metrics.is_file():
        plot_curves(metrics, folder / CURVES_FILE, title=f"{folder.name}: training curves")
    if had_card and not config.get("metrics"):  # the card and its images described other weights
        for name in (SAMPLES_FILE, INTERPOLATION_FILE, NEIGHBOURS_FILE):
            (folder / name).unlink(missing_ok=True)
        write_card(folder, config)
    return config
