"""Training the reference classifier (gancore.networks.classifier) on real training images
only, and scoring it: its penultimate features and class probabilities stand in for Inception
in FID, precision/recall and the Inception-Score-style figure (no Inception network can be
downloaded here). It ships as a weights folder (gancore.weights.save_classifier).

    python -m training classifier --dataset fashion-mnist --out runs/fashion-mnist-classifier
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gancore.images import to_unit_range
from gancore.networks.classifier import Classifier
from gancore.weights import save_classifier
from training.data import load_train_test
from training.metrics import conditional_accuracy

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
    class) from getting a handful of steps; a set smaller than `batch_size` is trained in batches of
    all of it, so such a run differs from the others in batch size too. Returns the model in eval mode.
    """
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
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
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
    _, probs = predict(model, images)
    return conditional_accuracy(probs.argmax(1), labels, model.num_classes)


def random_subset(
    images: torch.Tensor, labels: torch.Tensor, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random subset of n images and labels (all of them if n >= N). Not the first n: an
    image folder is listed class by class, so its first images are only its first classes."""
    if n >= len(labels):
        return images, labels
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx], labels[idx]


def train_reference_classifier(
    dataset: str,
    data_dir: str | None,
    out: str | Path,
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 3e-3,
    width: int = 32,
    feature_dim: int = 128,
    shift: int = 2,
    flip: bool = False,
    seed: int = 0,
    device: torch.device | str = "cpu",
    log: Any = print,
    channels: int | None = None,
    image_size: int | None = None,
) -> dict[str, Any]:
    """Train the reference CNN on `dataset`'s training split only, score it on the test split
    and write it to `out` as a weights folder; returns the config written. `channels` and
    `image_size` are an image folder's (default: RGB at the images' own size); they must be the
    generators' that it will measure."""
    device = torch.device(device)
    train, test = load_train_test(dataset, data_dir, image_size=image_size, channels=channels)
    arch_args: dict[str, Any] = {
        "channels": train.channels,
        "image_size": train.image_size,
        "num_classes": len(train.class_names),
        "width": width,
        "feature_dim": feature_dim,
        "dropout": 0.25,
    }
    log(f"training on {len(train)} {dataset} training images ({device}), testing on {len(test)}")
    t0 = time.time()
    steps_per_epoch = max(1, len(train) // batch_size)
    model = train_classifier(
        train.images,
        train.labels,
        arch_args["num_classes"],
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        shift=shift,
        flip=flip,
        seed=seed,
        device=device,
        arch_args=arch_args,
        log_every=max(1, steps_per_epoch // 2),
    )
    seconds = time.time() - t0
    acc, per_class = accuracy(model, test.images, test.labels)
    sub_x, sub_y = random_subset(train.images, train.labels, 10000, seed)
    train_acc, _ = accuracy(model, sub_x, sub_y)
    log(f"test accuracy {acc:.4f} (train subset {train_acc:.4f}) after {seconds / 60:.1f} min")
    for name, a in zip(train.class_names, per_class, strict=True):
        log(f"  {name:<12} {a:.4f}")
    return save_classifier(
        out,
        model,
        arch_args,
        {
            "labels": list(train.class_names),
            "label_aliases": dict(train.aliases),
            "dataset": dataset,
            "data_checksum": train.checksum,
            "trained_on": f"{dataset} train split ({len(train)} images); test split never seen",
            "training": {
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "optimizer": "AdamW (weight decay 5e-4), one-cycle schedule",
                "shift_augmentation": shift,
                "flip_augmentation": flip,
                "seed": seed,
                "device": str(device),
                "seconds": round(seconds, 1),
                "torch": torch.__version__,
            },
            "test_accuracy": round(acc, 5),
            "test_accuracy_per_class": {n: round(a, 5) for n, a in zip(train.class_names, per_class, strict=True)},
            "train_subset_accuracy": round(train_acc, 5),
            "train_subset": f"{min(10000, len(train))} training images drawn at random (seed {seed})",
        },
    )
