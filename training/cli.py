"""`python -m training <command>`: a thin argparse front over the training package.

Every command parses its flags into typed objects (Recipe, paths, settings) and calls one
function that lives where its subject lives (loop, export, sample, classifier, evaluate, augment,
compare); nothing imports this module back. Known errors print one line and exit 2; nothing
prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from gancore.devices import DeviceError, resolve_device
from gancore.files import CLASSIFIER_WEIGHTS_FILE, CONFIG_FILE
from gancore.labels import UnknownLabel
from gancore.sampling import MAX_SEED, truncation_threshold
from gancore.weights import InvalidModelName, ModelLoadError, artefact_format, check_model_name
from training import augment, compare, evaluate
from training.checkpoint import CheckpointError
from training.classifier import train_reference_classifier
from training.data import DatasetError
from training.evaluate import DEFAULT_CLASSIFIER, evaluate_folder
from training.export import export_run
from training.loop import RunFolderError, train
from training.recipe import (
    RecipeError,
    apply_overrides,
    available_recipes,
    load_recipe,
    parse_field,
    recipe_table,
)
from training.sample import MissingLabel, write_sample_grid


class OutputError(ValueError):
    """An output path that would overwrite what it must not (another model, a file of another kind)."""


USER_ERRORS = (DatasetError, DeviceError, RecipeError, ModelLoadError, CheckpointError, UnknownLabel,
               evaluate.EvaluationError, MissingLabel, FileNotFoundError, FileExistsError, IsADirectoryError,
               NotADirectoryError, PermissionError, OutputError)


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecipeError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def model_folder_kind(folder: Path) -> str | None:
    """'generator', 'classifier' or 'model' when `folder` holds a config.json (a weights folder);
    None when it holds none."""
    fmt = artefact_format(folder)
    if fmt is None:
        return None
    return "classifier" if "classifier" in fmt else "generator" if fmt else "model"


def json_file(text: str) -> Path:
    """--json: a file to write; an existing folder is refused before any work is done."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the JSON file to write, e.g. {path / 'metrics.json'}")
    return path


def service_seed(text: str) -> int:
    """A latent seed in the HTTP service's range, 0..MAX_SEED, so that the service can draw the
    same latents again."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects an integer in 0..{MAX_SEED}, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"must be in 0..{MAX_SEED} (2**63-1, the seeds the HTTP service accepts), got {value}")
    return value


def model_name(text: str) -> str:
    """--name: a name the service can carry in headers and URLs (gancore.weights.MODEL_NAME_RULE)."""
    try:
        return check_model_name(text)
    except InvalidModelName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def png_file(text: str) -> Path:
    """--out of sample: the PNG file to write; an existing folder, another suffix and a file in a
    weights folder (its generator.safetensors, say) are refused rather than guessed into."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the PNG file to write, e.g. {path / 'grid.png'}")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text}: the grid is a PNG; give a file name ending in .png")
    if model_folder_kind(path.parent) is not None:  # its card's pictures, or its weights
        raise argparse.ArgumentTypeError(f"{text} is inside a weights folder ({path.parent}); write the grid elsewhere")
    return path


def _description(doc: str | None) -> str:
    """A module docstring's first paragraph as one line: what `--help` shows above the flags."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _weights_folder(path: Path, weights_dir: Path = Path("weights")) -> Path:
    """A weights folder as given, or weights/NAME for a bare model name that is not a folder here."""
    if path.is_dir() or len(path.parts) != 1:
        return path
    candidate = weights_dir / path
    if candidate.is_dir():
        return candidate
    known = sorted(p.name for p in weights_dir.glob("*/") if (p / CONFIG_FILE).is_file()) if weights_dir.is_dir() else []
    raise ModelLoadError(
        f"{path}: no such folder here, nor {candidate}"
        + (f"; models in {weights_dir}/: {', '.join(known)}" if known else f" (no {weights_dir}/ folder here)")
    )


def _command(name: str, fallback: str) -> str:
    """The command line as typed, for reports that say how to reproduce them."""
    if len(sys.argv) > 2 and sys.argv[1] == name:
        return f"python -m training {name} " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    return fallback


# ---------------------------------------------------------------- train


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a GAN from a named recipe")
    p.add_argument("--recipe", required=True, help=f"named recipe or JSON file ({', '.join(available_recipes())})")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, samples, logs)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="epochs over the data (critic batches); clears the recipe's steps")
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


def length_overrides(overrides: dict) -> dict:
    """A length given in epochs clears the recipe's `steps`, which would otherwise override it (most
    named recipes set steps); epochs and steps given together are refused rather than one ignored."""
    if "epochs" not in overrides:
        return overrides
    steps = overrides.get("steps")
    if (parse_field("steps", steps) if isinstance(steps, str) else steps) is not None:  # steps=null may stay
        raise RecipeError("give the run's length once: epochs (--epochs, --set epochs=) or steps "
                          "(--steps, --set steps=), not both")
    return {**overrides, "steps": None}


def run_train(args) -> int:
    if args.out.exists() and not args.out.is_dir():  # said before the data loads, not after
        raise OutputError(f"--out {args.out} is a file; the run folder must be a folder")
    recipe = load_recipe(args.recipe)
    overrides = _overrides(args.set)
    for key, value in (("epochs", args.epochs), ("steps", args.steps), ("seed", args.seed),
                       ("batch_size", args.batch_size), ("data_dir", args.data_dir)):
        if value is not None:
            overrides[key] = value
    recipe = apply_overrides(recipe, length_overrides(overrides))
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
    p.add_argument("--name", required=True, type=model_name,
                   help="model name (folder under --weights-dir): letters, digits, '.', '_', '-'")
    p.add_argument("--weights-dir", type=Path, default=Path("weights"))
    p.add_argument("--force", action="store_true", help="replace the weights of an existing --weights-dir/NAME")
    p.add_argument("--raw", action="store_true", help="export the raw generator, not the EMA")
    p.add_argument("--dtype", choices=sorted(STORED_DTYPES), default="float32",
                   help="how the weights are stored: float16 halves the file (served in float32 from "
                        "the rounded weights; evaluate what you ship)")
    p.set_defaults(func=run_export)


STORED_DTYPES = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def run_export(args) -> int:
    folder = args.weights_dir / args.name
    if args.weights_dir.exists() and not args.weights_dir.is_dir():
        raise OutputError(f"--weights-dir {args.weights_dir} is a file, not a folder")
    if folder.exists() and not args.force:  # it may be a shipped model's folder
        raise FileExistsError(f"{folder} already exists; pass --force to replace its weights, "
                              "or choose another --name")
    kind = model_folder_kind(folder)
    if kind not in (None, "generator"):  # --force replaces a generator's weights, not another kind of model
        raise OutputError(f"{folder} holds a {kind}, not a generator; choose another --name")
    had, command = evaluated_as(folder)
    config = export_run(args.run, folder, use_ema=not args.raw, dtype=STORED_DTYPES[args.dtype])
    print(f"wrote {folder} ({config['steps']} steps, sha256 {config['weights_sha256'][:12]})")
    if had and not (config.get("metrics") or {}).get("evaluation"):  # said, so that no card loses them unnoticed
        print(f"note: the evaluation on record ({had}) was of other weights and is gone from config.json and "
              f"the card; measure the new ones as the old ones were: `{command}`")
    return 0


def evaluated_as(folder: Path) -> tuple[str, str]:
    """What a weights folder's config.json records of an evaluation ("" when none): "figures" or
    "figures and a truncation table", and the command that measured them (evaluate records it)."""
    try:
        metrics = json.loads((folder / CONFIG_FILE).read_text()).get("metrics") or {}
        evaluation = metrics.get("evaluation")
    except (OSError, ValueError, AttributeError):  # no config.json, or not the shape export writes
        return "", ""
    if not evaluation or not isinstance(evaluation, dict):
        return "", ""
    command = evaluation.get("command") or f"python -m training evaluate {folder} --update-card"
    return ("figures and a truncation table" if metrics.get("truncation") else "figures"), command


# ---------------------------------------------------------------- sample


def add_sample(sub) -> None:
    p = sub.add_parser("sample", help="write a PNG grid of generated images")
    p.add_argument("weights", type=Path,
                   help="weights folder, e.g. weights/fashion-mnist-cwgangp, or a model name in weights/")
    p.add_argument("--label", help="class slug, official name or index (required by conditional models)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=service_seed,
                   help=f"latent seed, 0..{MAX_SEED} as the HTTP service takes (printed when not given)")
    p.add_argument("--truncation", type=_psi, default=1.0,
                   help="truncation psi in (0, 1] as the service takes it: smaller gives more typical, less "
                        "varied images (default 1: off)")
    p.add_argument("--nrow", type=positive_int, default=8, help="images per grid row")
    p.add_argument("--scale", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=png_file, required=True, help="the PNG file to write, e.g. grid.png")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    if not 1 <= args.n <= 4096:
        raise RecipeError("--n must be between 1 and 4096")
    if not 1 <= args.scale <= 8:
        raise RecipeError("--scale must be between 1 and 8")
    if args.out.exists() and not args.force:
        raise FileExistsError(f"{args.out} already exists; pass --force to replace it, or choose another --out")
    device = resolve_device(args.device)
    seed = args.seed if args.seed is not None else int(time.time_ns() % 2**31)
    gen = write_sample_grid(_weights_folder(args.weights), args.out, args.label, args.n, seed, args.nrow,
                            args.scale, device, args.truncation)
    what = gen.labels[gen.label_id(args.label)] if gen.conditional and args.label is not None else "sample"
    psi = f", truncation {args.truncation:g}" if args.truncation < 1 else ""
    print(f"wrote {args.out}: {args.n} x {what} from {gen.name}, seed {seed}{psi}")
    return 0


def add_recipes(sub) -> None:
    p = sub.add_parser("recipes", help="list the named recipes: data, networks, loss, steps and measured cost")
    p.set_defaults(func=run_recipes)


def run_recipes(args) -> int:
    print(recipe_table())
    return 0


# ---------------------------------------------------------------- classifier


def add_classifier(sub) -> None:
    p = sub.add_parser(
        "classifier",
        help="train the reference classifier (real training images only) used by evaluate",
        description="Train the reference CNN on the training split only and report test accuracy.",
    )
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | folder")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files or ROOT/<split>/<class>/")
    p.add_argument("--out", default=None,
                   help="output folder (default runs/DATASET-classifier; the shipped one is weights/fashion-mnist-classifier)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=positive_float, default=3e-3)
    p.add_argument("--width", type=positive_int, default=32, help="channels of the first conv block")
    p.add_argument("--feature-dim", type=positive_int, default=128)
    p.add_argument("--shift", type=non_negative_int, default=2, help="random shift augmentation in pixels (0: off)")
    p.add_argument("--flip", action="store_true", help="random left-right mirroring (photos such as CIFAR-10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="an image folder read as 1 (grayscale) or 3 (RGB, the default) channels: those of the "
                        "generators it will measure")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help="an image folder's images resized to this (default: their own size)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--force", action="store_true", help="replace the classifier in an existing --out")
    p.set_defaults(func=run_classifier)




def run_classifier(args: argparse.Namespace) -> int:
    out = args.out or f"runs/{args.dataset}-classifier"
    kind = model_folder_kind(Path(out))
    if kind not in (None, "classifier"):  # before: a generator's weights folder lost its config.json
        raise OutputError(f"{out} holds a {kind} (its config.json); choose another --out for the classifier")
    if kind == "classifier" and not args.force:  # it may be the shipped reference classifier
        raise FileExistsError(f"{out} already holds a classifier; pass --force to replace it, or choose another --out")
    if Path(out).is_file():
        raise OutputError(f"{out} is a file; --out is the classifier's folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    config = train_reference_classifier(
        args.dataset, args.data_dir, out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        width=args.width, feature_dim=args.feature_dim, shift=args.shift, flip=args.flip, seed=args.seed,
        device=resolve_device(args.device), channels=args.channels, image_size=args.image_size,
    )
    print(f"wrote {Path(out) / CLASSIFIER_WEIGHTS_FILE} and config.json (test accuracy {config['test_accuracy']})")
    return 0


# ---------------------------------------------------------------- evaluate


def _psi(text: str) -> float:
    """--truncation of sample: one psi in (0, 1]."""
    values = _psis(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expects one psi in (0, 1], e.g. 0.7; got {text!r}")
    return values[0]


def _psis(text: str) -> list[float]:
    """--truncation: comma-separated psi values in (0, 1], each once, in the order given."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects comma-separated numbers in (0, 1], e.g. 1,0.8,0.6; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expects at least one psi in (0, 1], e.g. 1,0.8,0.6")
    for psi in values:
        try:
            truncation_threshold(psi)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"psi must be in (0, 1] (1 = no truncation, smaller = stronger), got {psi:g} in {text!r}") from None
    if len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"lists a psi twice: {text!r}")
    return values


def add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a generator (FID, precision/recall, accuracy, memorisation, TSTR) into a report folder",
        description=_description(evaluate.__doc__),
    )
    p.add_argument("weights", type=Path,
                   help="weights folder, e.g. weights/fashion-mnist-cwgangp, or a model name in weights/")
    p.add_argument("--n-per-class", type=positive_int, default=1000, help="samples per class (default 1000)")
    p.add_argument("--seed", type=service_seed, default=0, help="latent seed (and subset seed)")
    p.add_argument("--classifier", type=Path, default=None,
                   help="reference classifier folder (default: the one in the generator's folder's parent or "
                        "weights/ whose labels and image size match)")
    p.add_argument("--tstr-epochs", type=non_negative_int, default=5,
                   help="epochs of train-on-synthetic, test-on-real (0: skip)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"report folder: metrics.json, report.md and its PNGs (default {evaluate.DEFAULT_OUT}/NAME)")
    p.add_argument("--update-card", action="store_true",
                   help="also write the numbers into the weights folder's config.json and regenerate its card.md "
                        "and PNGs (refused for a smaller sample than the one on record unless --force)")
    p.add_argument("--force", action="store_true", help="with --update-card: replace the evaluation on record "
                                                        "even with a smaller sample")
    p.add_argument("--json", type=json_file, help="also write the metrics to this JSON file")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--no-card", action="store_true", help="write no report.md, card.md or PNGs (metrics only)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is much faster on a CPU shared with other jobs")
    p.add_argument("--truncation", type=_psis, default=[],
                   help="also measure the samples at these truncation psi values, e.g. 1,0.9,0.8,0.7,0.6,0.5: "
                        "accuracy, FID, precision, recall, memorisation per psi, from the same seeded latents "
                        "(default: none; the main figures are always untruncated)")
    p.set_defaults(func=run_evaluate)




def run_evaluate(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.force and not args.update_card:
        raise evaluate.EvaluationError("--force only matters with --update-card")
    weights = _weights_folder(args.weights)
    if args.out is not None:  # checked before minutes of evaluation, not after
        if args.out.is_file():
            raise OutputError(f"{args.out} is a file; --out is the report's folder")
        kind = model_folder_kind(args.out)
        if kind is not None and args.out.resolve() != weights.resolve():
            raise OutputError(f"{args.out} is a {kind}'s weights folder: the report's PNGs would replace its "
                              "pictures; choose another --out (--update-card writes this model's own card)")
    fallback = f"python -m training evaluate {args.weights} --n-per-class {args.n_per_class} --seed {args.seed}"
    if args.truncation:
        fallback += " --truncation " + ",".join(f"{psi:g}" for psi in args.truncation)
    evaluate_folder(
        weights, args.classifier, args.n_per_class, args.seed, args.tstr_epochs,
        args.data_dir, args.device, args.json, card=not args.no_card,
        command=_command("evaluate", fallback),
        out=args.out, update_card=args.update_card, force=args.force, truncation=args.truncation,
    )
    return 0


# ---------------------------------------------------------------- augment


def _ks(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k expects comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--k values must be positive, got {text!r}")
    return values


def add_augment(sub) -> None:
    p = sub.add_parser(
        "augment",
        help="augmentation study: classifier on k real, k real + generated, generated only "
             "((b) and (c) also use the labels the generator was trained on)",
        description=_description(augment.__doc__),
    )
    p.add_argument("--generator", type=Path, required=True,
                   help="weights folder of a conditional generator, or a model name in weights/")
    p.add_argument("--k", type=_ks, default=[10, 100, 1000], help="real images per class, e.g. 10,100,1000")
    p.add_argument("--generated-per-class", type=positive_int, default=1000)
    p.add_argument("--steps", type=positive_int, default=1500, help="optimizer steps per classifier (batch 128, or the whole set when it holds fewer images)")
    p.add_argument("--dataset", default=None,
                   help="fashion-mnist | mnist | folder (default: the one the generator's recipe trained on)")
    p.add_argument("--data-dir", help="folder holding the dataset files (ROOT/train and ROOT/test for a folder)")
    p.add_argument("--width", type=positive_int, default=32, help="classifier width (as the reference classifier)")
    p.add_argument("--feature-dim", type=positive_int, default=128)
    p.add_argument("--seed", type=service_seed, default=0, help="latent, subset and training seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--json", type=json_file, help="also write the results to this JSON file")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is much faster on a CPU shared with other jobs")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="run every arm with seeds SEED..SEED+N-1 and report means, SDs and the paired "
                        "difference's 95%% interval (default 1: one seed, differences under ~0.02 are noise)")
    p.add_argument("--allow-test-leak", action="store_true",
                   help="run with a generator trained on the 'all' or 'test' split (it has seen the test images)")
    p.set_defaults(func=run_augment)




def run_augment(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    augment.augmentation_study(
        _weights_folder(args.generator), args.k, args.generated_per_class, args.steps, args.dataset, args.data_dir,
        args.width, args.feature_dim, args.seed, args.device, args.json, allow_test_leak=args.allow_test_leak,
        repeats=args.repeats,
    )
    return 0


# ---------------------------------------------------------------- compare


def _models(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in compare.MODELS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {','.join(compare.MODELS)}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"a model is named twice in {text!r}")
    return names


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="model-comparison study: GAN, NS-GAN, CGAN, WGAN, WGAN-GP, cWGAN-GP, AC-WGAN-GP, VAE",
        description=_description(compare.__doc__),
    )
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="study folder (default runs/compare)")
    p.add_argument("--models", type=_models, default=list(compare.MODELS), help=f"comma-separated ({','.join(compare.MODELS)})")
    p.add_argument("--steps", type=positive_int, default=2000,
                   help="generator steps per model (VAE: optimizer steps); default 2000 (GPU), try 300 on a CPU")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--seed", type=int, default=0, help="initialisation, data order, noise and evaluation seed")
    p.add_argument("--g-width", type=positive_int, default=64, help="generator (VAE decoder) base width")
    p.add_argument("--d-width", type=positive_int, default=32, help="critic (VAE encoder) base width")
    p.add_argument("--latent-dim", type=positive_int, default=20)
    p.add_argument("--ema-beta", type=_unit_interval, help="generator EMA (default 1 - 10/steps, at most 0.999)")
    p.add_argument("--vae-lr", type=positive_float, default=1e-3, help="VAE Adam learning rate")
    p.add_argument("--n-per-class", type=positive_int, default=200, help="evaluation samples per class")
    p.add_argument("--tstr-epochs", type=non_negative_int, default=0,
                   help="train-on-synthetic epochs for conditional models (default 0: off, for speed)")
    p.add_argument("--classifier", type=Path, default=Path(DEFAULT_CLASSIFIER), help="reference classifier folder")
    p.add_argument("--data-dir", help="folder holding the dataset files")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="torch CPU threads (0: torch's default); 1 is much faster on a CPU shared with other jobs")
    p.add_argument("--progress", action="store_true", help="show a progress bar per GAN")
    p.add_argument("--force", action="store_true",
                   help="replace the report (report.json, report.md, curves.png) of an earlier study in --out")
    p.set_defaults(func=run_compare)




def run_compare(args: argparse.Namespace) -> int:
    s = compare.StudySettings(
        out=args.out, models=args.models, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        g_width=args.g_width, d_width=args.d_width, latent_dim=args.latent_dim, ema_beta=args.ema_beta,
        vae_lr=args.vae_lr, n_per_class=args.n_per_class, tstr_epochs=args.tstr_epochs,
        classifier=args.classifier, data_dir=args.data_dir, device=args.device, threads=args.threads,
        progress=args.progress,
    )
    report = compare.run_study(s, _command("compare", "python -m training compare").strip(), force=args.force)
    print()
    print(compare.markdown_table(report["models"], report["reference"]))
    print(f"\nwrote {s.out / compare.REPORT_MD}, {s.out / compare.REPORT_JSON} and {s.out / compare.CURVES_FILE} "
          f"({report['total_seconds']:.0f} s)")
    return 0


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=_description(__doc__))
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_train, add_export, add_sample, add_recipes, add_classifier, add_evaluate, add_augment,
                add_compare):
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
