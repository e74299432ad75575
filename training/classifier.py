"""The reference classifier: a small CNN trained on real training images only, whose
penultimate features and class probabilities stand in for Inception in FID, precision/recall
and the Inception-Score-style figure (no Inception network can be downloaded here).

Ships as `classifier.safetensors` + `config.json` (architecture arguments, labels,
normalisation, data checksum, test accuracy); loading never unpickles.

    python -m training classifier --dataset fashion-mnist --out weights/fashion-mnist-classifier
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from training.devices import resolve_device
from training.export import ModelLoadError, atomic_save_safetensors, atomic_write_json, sha256_file

WEIGHTS_FILE = "classifier.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "cgan-service/classifier"
FORMAT_VERSION = 1


class ClassifierLoadError(ModelLoadError):
    """A classifier folder that cannot be loaded; the message names the file and the problem."""


class Classifier(nn.Module):
    """images (B, C, H, W) in [-1, 1] -> class logits (B, K); `features` gives (B, feature_dim).

    Two conv blocks (conv-BN-ReLU twice, max-pool, dropout), then a fully connected feature
    layer with BN; FID and precision/recall are measured on that layer's output after ReLU.
    """

    def __init__(
        self,
        channels: int = 1,  # image channels
        image_size: int = 28,  # input height and width (divisible by 4)
        num_classes: int = 10,  # output classes
        width: int = 32,  # channels of the first block; doubled in the second
        feature_dim: int = 128,  # penultimate (feature) layer size
        dropout: float = 0.25,  # after each conv block; twice this before the output layer
    ):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.feature_dim = feature_dim

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            )

        self.body = nn.Sequential(block(channels, width), block(width, 2 * width))
        flat = 2 * width * (image_size // 4) ** 2
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Dropout(min(2 * dropout, 0.5)), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, feature_dim) penultimate activations."""
        return self.embed(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K) logits


@dataclass
class LoadedClassifier:
    """A classifier rebuilt from its folder, in eval mode, with its config."""

    model: Classifier
    config: dict[str, Any]
    folder: Path

    @property
    def labels(self) -> list[str]:
        return self.config["labels"]


# ---------------------------------------------------------------- training


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image of (B, C, H, W) by up to `pad` pixels each way, filling with background.

    Background is the minimum value -1 (black in [-1, 1]), as Fashion-MNIST's border is.
    """
    if pad == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    idx = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of (B, C, H, W) left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    shift: int = 2,
    flip: bool = False,
    min_steps: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    arch_args: dict[str, Any] | None = None,
    log_every: int = 0,
) -> Classifier:
    """Train a fresh Classifier on uint8 images (N, C, H, W) and labels (N,).

    AdamW with a one-cycle schedule over max(epochs * batches, min_steps) steps; random
    shifts of up to `shift` pixels and, with `flip`, left-right mirroring (right for CIFAR-10's
    photos; Fashion-MNIST's reference was trained without it). `min_steps` keeps tiny training sets (k images per
    class) from getting a handful of steps. Returns the model in eval mode.
    """
    from training.data import to_unit_range

    device = torch.device(device)
    torch.manual_seed(seed)
    n, c, h, _ = images.shape
    args = {"channels": c, "image_size": h, "num_classes": num_classes, **(arch_args or {})}
    model = Classifier(**args).to(device)
    x_all = to_unit_range(images).to(device)  # (N, C, H, W) in [-1, 1]
    y_all = labels.to(device)
    batch_size = min(batch_size, n)
    per_epoch = max(1, n // batch_size)
    steps = max(epochs * per_epoch, min_steps, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if steps >= 10:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    else:  # too few steps for a warm-up phase (OneCycleLR divides by its length)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step, t0 = 0, time.time()
    while step < steps:
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(per_epoch):
            if step >= steps:
                break
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = random_shift(x_all[idx], shift, gen)
            if flip:
                x = random_flip(x, gen)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if log_every and (step % log_every == 0 or step == steps):
                print(
                    f"  step {step}/{steps} (epoch {step / per_epoch:.2f}) loss {loss.item():.4f} "
                    f"{time.time() - t0:.0f}s",
                    flush=True,
                )
    return model.eval()


@torch.no_grad()
def predict(
    model: Classifier, images: torch.Tensor, batch_size: int = 1000, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) or float in [-1, 1] -> (features (N, F), probabilities (N, K)) on CPU."""
    from training.data import to_unit_range

    model.eval()
    device = device or next(model.parameters()).device
    feats, probs = [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        x = to_unit_range(x) if x.dtype == torch.uint8 else x.float()
        f = model.features(x.to(device))
        feats.append(f.float().cpu())
        probs.append(F.softmax(model.head(f), dim=1).float().cpu())
    if not feats:
        return torch.zeros(0, model.feature_dim), torch.zeros(0, model.num_classes)
    return torch.cat(feats), torch.cat(probs)


def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float]]:
    """(overall, per-class) accuracy of the model on labelled uint8 images."""
    from training.metrics import conditional_accuracy

    _, probs = predict(model, images)
    return conditional_accuracy(probs.argmax(1), labels, model.num_classes)


# ---------------------------------------------------------------- weights


def save_classifier(folder: str | Path, model: Classifier, arch_args: dict[str, Any], extra: dict[str, Any]) -> dict:
    """Write classifier.safetensors and config.json (atomically); returns the config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_save_safetensors(folder / WEIGHTS_FILE, tensors, {"format": FORMAT})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "classifier-cnn",
        "arch_args": arch_args,
        # Input: uint8 pixel p -> p / 127.5 - 1, the generator's output range.
        "normalization": {"input_range": [-1.0, 1.0], "mean": 0.5, "std": 0.5},
        "feature_layer": "embed (ReLU output)",
        "weights_sha256": sha256_file(folder / WEIGHTS_FILE),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    atomic_write_json(folder / CONFIG_FILE, config)
    return config


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild the classifier from config.json and load its safetensors weights."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClassifierLoadError(
            f"{path}: missing; train one with `python -m training classifier --out {folder}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClassifierLoadError(f"{path}: not valid JSON ({exc})") from exc
    if config.get("format") != FORMAT:
        raise ClassifierLoadError(f"{path}: not a classifier config (format must be {FORMAT!r})")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ClassifierLoadError(f"{weights}: missing")
    if config.get("weights_sha256") and sha256_file(weights) != config["weights_sha256"]:
        raise ClassifierLoadError(f"{weights}: SHA-256 does not match config.json (corrupt or replaced)")
    try:
        model = Classifier(**config["arch_args"])
        model.load_state_dict(load_file(str(weights)), strict=True)
    except Exception as exc:  # safetensors and torch raise several types for bad files
        raise ClassifierLoadError(f"{weights}: cannot load ({type(exc).__name__}: {exc})") from exc
    model.to(device).eval().requires_grad_(False)
    return LoadedClassifier(model=model, config=config, folder=folder)


# ---------------------------------------------------------------- command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "classifier",
        help="train the reference classifier (real training images only) used by evaluate",
        description="Train the reference CNN on the training split only and report test accuracy.",
    )
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | mnist | folder")
    p.add_argument("--data-dir", default=None, help="folder with the IDX files or ROOT/<split>/<class>/")
    p.add_argument("--out", default="weights/fashion-mnist-classifier", help="output folder")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--feature-dim", type=int, default=128)
    p.add_argument("--shift", type=int, default=2, help="random shift augmentation in pixels (0: off)")
    p.add_argument("--flip", action="store_true", help="random left-right mirroring (photos such as CIFAR-10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from training.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    train = load_dataset(args.dataset, "train", args.data_dir)
    test = load_dataset(args.dataset, "test", args.data_dir)
    arch_args = {
        "channels": train.channels,
        "image_size": train.image_size,
        "num_classes": len(train.class_names),
        "width": args.width,
        "feature_dim": args.feature_dim,
        "dropout": 0.25,
    }
    print(f"training on {len(train)} {args.dataset} training images ({device}), testing on {len(test)}")
    t0 = time.time()
    steps_per_epoch = max(1, len(train) // args.batch_size)
    model = train_classifier(
        train.images,
        train.labels,
        arch_args["num_classes"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        shift=args.shift,
        flip=args.flip,
        seed=args.seed,
        device=device,
        arch_args=arch_args,
        log_every=max(1, steps_per_epoch // 2),
    )
    seconds = time.time() - t0
    acc, per_class = accuracy(model, test.images, test.labels)
    train_acc, _ = accuracy(model, train.images[:10000], train.labels[:10000])
    print(f"test accuracy {acc:.4f} (train subset {train_acc:.4f}) after {seconds / 60:.1f} min")
    for name, a in zip(train.class_names, per_class, strict=True):
        print(f"  {name:<12} {a:.4f}")
    config = save_classifier(
        args.out,
        model,
        arch_args,
        {
            "labels": list(train.class_names),
            "label_aliases": dict(train.aliases),
            "dataset": args.dataset,
            "data_checksum": train.checksum,
            "trained_on": f"{args.dataset} train split ({len(train)} images); test split never seen",
            "training": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "optimizer": "AdamW (weight decay 5e-4), one-cycle schedule",
                "shift_augmentation": args.shift,
                "flip_augmentation": args.flip,
                "seed": args.seed,
                "device": str(device),
                "seconds": round(seconds, 1),
                "torch": torch.__version__,
            },
            "test_accuracy": round(acc, 5),
            "test_accuracy_per_class": {n: round(a, 5) for n, a in zip(train.class_names, per_class, strict=True)},
            "train_subset_accuracy": round(train_acc, 5),
        },
    )
    print(f"wrote {Path(args.out) / WEIGHTS_FILE} and config.json (test accuracy {config['test_accuracy']})")
    return 0

