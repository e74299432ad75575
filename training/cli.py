"""`python -m training <command>`: a thin argparse front over the training package.

Every command parses its flags into typed objects (Recipe, paths) and calls one function.
Known errors print one line and exit 2; nothing prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from training.data import DatasetError
from training.devices import DeviceError, resolve_device
from training.export import ModelLoadError, load_generator, save_generator
from training.labels import UnknownLabel
from training.recipe import RecipeError, apply_overrides, available_recipes, load_recipe

USER_ERRORS = (DatasetError, DeviceError, RecipeError, ModelLoadError, CheckpointError, UnknownLabel,
               FileNotFoundError, FileExistsError)


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecipeError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- train


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a GAN from a named recipe")
    p.add_argument("--recipe", required=True, help=f"named recipe or JSON file ({', '.join(available_recipes())})")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, samples, logs)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="epochs over the data (critic batches)")
    length.add_argument("--steps", type=int, help="generator steps (overrides epochs)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N generator steps in this call, as an interruption would "
                        "(checkpoint written; the schedule still runs to the recipe's length)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set lr_g=1e-4 --set bf16=true")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    from training.loop import RunFolderError, train

    recipe = load_recipe(args.recipe)
    overrides = _overrides(args.set)
    for key, value in (("epochs", args.epochs), ("steps", args.steps), ("seed", args.seed),
                       ("batch_size", args.batch_size), ("data_dir", args.data_dir)):
        if value is not None:
            overrides[key] = value
    recipe = apply_overrides(recipe, overrides)
    if args.dry_run:
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    try:
        if args.stop_after is not None and args.stop_after < 1:
            raise RecipeError("--stop-after must be >= 1")
        result = train(recipe, args.out, device=args.device, resume=args.resume,
                       progress=not args.no_progress, stop_after=args.stop_after)
    except RunFolderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'stopped' if result.interrupted else 'finished'}: step {result.step}/{result.total_steps}, "
          f"{result.train_seconds:.0f} s of training, run folder {result.run_dir}")
    return 130 if result.interrupted else 0


# ---------------------------------------------------------------- export


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write a run's EMA generator to weights/NAME")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--name", required=True, help="model name (folder under --weights-dir)")
    p.add_argument("--weights-dir", type=Path, default=Path("weights"))
    p.add_argument("--raw", action="store_true", help="export the raw generator, not the EMA")
    p.set_defaults(func=run_export)


def export_run(run_dir: Path, folder: Path, use_ema: bool = True) -> dict:
    """Rebuild the generator from a run's last checkpoint and save it as a weights folder."""
    from training.recipe import Recipe

    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir}: no checkpoints found (train first)")
    state = load_checkpoint(ckpt)
    recipe = Recipe.from_dict(state["recipe"])
    g_args = dict(state["g_args"])
    from training.export import architectures

    G = architectures()[recipe.arch](**g_args)
    G.load_state_dict(state["G_ema" if use_ema else "G"])
    extra = {
        "recipe": recipe.to_dict(),
        "steps": int(state["step"]),
        "ema": use_ema,
        "dataset": state["dataset"],
        "training": {
            "hardware": state.get("hardware", "unknown"),
            "train_seconds": round(float(state["train_seconds"]), 1),
            "epochs": round(int(state["step"]) * recipe.n_critic * recipe.batch_size
                            / int(state["dataset"]["size"]), 3),
            "checkpoint": ckpt.name,
        },
    }
    config = save_generator(folder, G, recipe.arch, g_args, state["labels"], state["aliases"], extra)
    from training.loop import METRICS_FILE

    metrics = Path(run_dir) / METRICS_FILE
    if metrics.is_file():
        from training.curves import plot_curves

        plot_curves(metrics, Path(folder) / "curves.png", title=f"{folder.name}: training curves")
    return config


def run_export(args) -> int:
    config = export_run(args.run, args.weights_dir / args.name, use_ema=not args.raw)
    print(f"wrote {args.weights_dir / args.name} ({config['steps']} steps, sha256 {config['weights_sha256'][:12]})")
    return 0


# ---------------------------------------------------------------- sample


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a PNG grid of generated images")
    p.add_argument("weights", type=Path, help="weights folder, e.g. weights/fashion-mnist-cwgangp")
    p.add_argument("--label", help="class slug, official name or index (conditional models)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, help="latent seed (printed when not given)")
    p.add_argument("--nrow", type=int, default=8)
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    from training.data import to_uint8
    from training.export import atomic_write_bytes
    from training.sampling import encode_png, make_grid, seeded_latents, upscale

    if not 1 <= args.n <= 4096:
        raise RecipeError("--n must be between 1 and 4096")
    if not 1 <= args.scale <= 8:
        raise RecipeError("--scale must be between 1 and 8")
    device = resolve_device(args.device)
    gen = load_generator(args.weights, device)
    seed = args.seed if args.seed is not None else int(time.time_ns() % 2**31)
    labels = None
    if gen.conditional:
        if args.label is None:
            raise UnknownLabel(None, gen.labels)
        labels = torch.full((args.n,), gen.label_id(args.label), dtype=torch.long, device=device)
    z = seeded_latents(seed, args.n, gen.latent_dim).to(device)
    with torch.inference_mode():
        images = to_uint8(gen.model(z, labels).cpu())
    grid = upscale(make_grid(images, nrow=args.nrow), args.scale)
    atomic_write_bytes(args.out, encode_png(grid))
    print(f"wrote {args.out}: {args.n} x {args.label or 'sample'} from {gen.name}, seed {seed}")
    return 0


# ---------------------------------------------------------------- main


def add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="list the named recipes")
    p.set_defaults(func=lambda args: print("\n".join(available_recipes())) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    from training import augment, classifier, compare, evaluate

    for add in (add_train, add_export, add_sample, add_recipes, classifier.add_parser,
                evaluate.add_parser, augment.add_parser, compare.add_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
