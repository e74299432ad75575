"""Training benchmark: generator steps/s of the project's loop (`training.loop.train`) against a
textbook WGAN-GP loop with the same networks, optimizers and EMA.

    python -m bench.train [--device cpu|cuda] [--steps N] [--warmup W] [--batch-size B]
                          [--variants loop,reference,...] [--json out.json]

Variants (those that need CUDA are skipped on the CPU unless named in --variants):
  loop                 training.loop.train, the recipe as shipped (data resident on the device)
  loop-bf16            the same with the recipe's bf16 autocast on
  reference            DataLoader over a TensorDataset of float images, a host->device copy per
                       critic batch, a separate critic forward for the penalty's interpolates
  reference-resident   the reference with the dataset resident on the device (random batches there)
  reference-bf16       the reference under bf16 autocast (penalty in fp32, as the loop does)
  reference-compile-g  the reference with torch.compile on the generator only
  reference-compile    torch.compile on both networks (the penalty needs double backward)
  reference-graphs-g   torch.compile(mode="reduce-overhead"), i.e. CUDA graphs, on the generator
A variant that raises is reported as failed with its error, not hidden.

steps/s counts generator steps (each with n_critic critic steps); images/s = steps/s * batch *
n_critic real images through the critic. The first W steps (compilation, cuDNN autotuning,
allocator warm-up) are not timed. The loop's rate comes from its own train_seconds in
metrics.jsonl between step W and the last step; the reference is timed with a device
synchronisation at both ends.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.common import machine_info
from gancore.files import METRICS_FILE
from gancore.networks import build_networks
from training.curves import read_metrics
from training.data import ImageSet, load_dataset, locate_idx_dir
from training.loop import make_optimizer, train, update_ema
from training.losses import gradient_penalty
from training.recipe import Recipe, load_recipe

CPU_VARIANTS = ("loop", "loop-bf16", "reference", "reference-resident", "reference-bf16")
CUDA_VARIANTS = ("loop", "loop-bf16", "reference", "reference-resident", "reference-bf16",
                 "reference-compile-g", "reference-compile", "reference-graphs-g")


def dataset(recipe: Recipe, random_size: int = 10_000) -> tuple[ImageSet, str]:
    """Real Fashion-MNIST when its IDX files are on this machine (no download), else random images."""
    try:
        locate_idx_dir(recipe.dataset, recipe.data_dir, download=False)
        return load_dataset(recipe.dataset, recipe.split, recipe.data_dir), f"{recipe.dataset} ({recipe.split})"
    except Exception:
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (random_size, recipe.channels, recipe.image_size, recipe.image_size),
                               dtype=torch.uint8, generator=gen)
        labels = torch.randint(0, 10, (random_size,), generator=gen)
        names = [f"class-{i}" for i in range(10)]
        return ImageSet("random", images, labels, names, {}, "random"), f"random uint8 ({random_size} images)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_loop(recipe: Recipe, data: ImageSet, device: str, steps: int, warmup: int) -> dict[str, Any]:
    """The project's loop; rate from its own per-step timer between step `warmup` and the end."""
    recipe = dataclasses.replace(recipe, steps=warmup + steps, log_every=warmup, checkpoint_every=10**9,
                                 samples_per_epoch=False)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as run_dir:
        t0 = time.perf_counter()
        train(recipe, run_dir, device=device, progress=False, dataset=data)
        wall = time.perf_counter() - t0
        records = read_metrics(Path(run_dir) / METRICS_FILE)
    first = next(r for r in records if r["step"] == warmup)
    last = records[-1]
    seconds = last["train_seconds"] - first["train_seconds"]
    return {"steps": last["step"] - first["step"], "seconds": seconds, "wall_incl_setup_s": wall}


def run_reference(recipe: Recipe, data: ImageSet, device: str, steps: int, warmup: int, *, resident: bool = False,
                  bf16: bool = False, compile_g: str | None = None, compile_d: str | None = None) -> dict[str, Any]:
    """The textbook loop; see the module docstring. compile_*: None or a torch.compile mode."""
    dev = torch.device(device)
    torch.manual_seed(recipe.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = recipe.tf32
        torch.backends.cudnn.allow_tf32 = recipe.tf32
        torch.backends.cudnn.benchmark = True
    num_classes = len(data.class_names)
    G, D, _ = build_networks(recipe, num_classes, data.channels, data.image_size)
    G.to(dev)
    D.to(dev)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = make_optimizer(recipe, G.parameters(), recipe.lr_g)
    opt_d = make_optimizer(recipe, D.parameters(), recipe.lr_d)
    g_run = torch.compile(G, mode=compile_g) if compile_g else G
    d_run = torch.compile(D, mode=compile_d) if compile_d else D
    B = recipe.batch_size
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16)

    images = data.images.float().div_(127.5).sub_(1.0)  # (N, C, H, W) in [-1, 1], as a transform would give
    if resident:
        images_d, labels_d = images.to(dev), data.labels.to(dev)

        def batches():
            while True:
                idx = torch.randint(0, len(images_d), (B,), device=dev)
                yield images_d[idx], labels_d[idx]
    else:
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, data.labels), batch_size=B,
                                             shuffle=True, drop_last=True, num_workers=0,
                                             pin_memory=dev.type == "cuda")

        def batches():
            while True:
                for x, y in loader:
                    yield x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
    it = batches()

    def step() -> None:
        for _ in range(recipe.n_critic):
            real, y = next(it)
            z = torch.randn(B, recipe.latent_dim, device=dev)
            with torch.no_grad(), autocast:
                fake = g_run(z, y)
            with autocast:
                d_real, _ = d_run(real, y)
                d_fake, _ = d_run(fake.float(), y)
            alpha = torch.rand(B, 1, 1, 1, device=dev)
            gp = gradient_penalty(d_run, real, fake.float(), y, alpha)  # a third critic forward
            d_loss = d_fake.float().mean() - d_real.float().mean() + recipe.gp_lambda * gp
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        z = torch.randn(B, recipe.latent_dim, device=dev)
        y_fake = torch.randint(0, num_classes, (B,), device=dev)
        D.requires_grad_(False)
        with autocast:
            score, _ = d_run(g_run(z, y_fake), y_fake)
            g_loss = -score.float().mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        update_ema(G_ema, G, recipe.ema_beta)

    G.train()
    D.train()
    for _ in range(warmup):
        step()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    return {"steps": steps, "seconds": time.perf_counter() - t0}


def run_variant(name: str, recipe: Recipe, data: ImageSet, device: str, steps: int, warmup: int) -> dict[str, Any]:
    if name == "loop":
        return run_loop(recipe, data, device, steps, warmup)
    if name == "loop-bf16":
        return run_loop(dataclasses.replace(recipe, bf16=True), data, device, steps, warmup)
    options: dict[str, dict[str, Any]] = {
        "reference": {},
        "reference-resident": {"resident": True},
        "reference-bf16": {"bf16": True},
        "reference-compile-g": {"compile_g": "default"},
        "reference-compile": {"compile_g": "default", "compile_d": "default"},
        "reference-graphs-g": {"compile_g": "reduce-overhead"},
    }
    if name not in options:
        raise SystemExit(f"unknown variant {name!r}; known: {', '.join(CUDA_VARIANTS)}")
    return run_reference(recipe, data, device, steps, warmup, **options[name])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--recipe", default="fashion-mnist-cwgangp")
    p.add_argument("--steps", type=int, default=None, help="timed generator steps (default: 3 on CPU, 200 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 20 on CUDA)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--variants", default=None, help="comma-separated; default: all that run on the device")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    cuda = args.device.startswith("cuda")
    steps = args.steps or (200 if cuda else 3)
    warmup = args.warmup or (20 if cuda else 1)
    recipe = load_recipe(args.recipe)
    if args.batch_size:
        recipe = dataclasses.replace(recipe, batch_size=args.batch_size)
    variants = args.variants.split(",") if args.variants else list(CUDA_VARIANTS if cuda else CPU_VARIANTS)
    data, data_desc = dataset(recipe)
    info = machine_info(args.device)
    print(f"# machine: {json.dumps(info)}\n# recipe {recipe.name}: batch {recipe.batch_size}, n_critic "
          f"{recipe.n_critic}, data {data_desc}; {warmup} warm-up + {steps} timed steps", flush=True)

    rows = []
    for name in variants:
        try:
            result = run_variant(name, recipe, data, args.device, steps, warmup)
            rate = result["steps"] / result["seconds"]
            row = {"variant": name, "steps_per_s": rate, "images_per_s": rate * recipe.batch_size * recipe.n_critic,
                   **result}
        except Exception as exc:  # a variant that does not work is a result too
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            row = {"variant": name, "error": last[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print(f"\n| variant | steps/s | images/s | time for {recipe.steps} steps |\n|---|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | failed: {r['error']} | | |")
        else:
            total = recipe.steps / r["steps_per_s"] if recipe.steps else math.nan
            print(f"| {r['variant']} | {r['steps_per_s']:.3f} | {r['images_per_s']:,.0f} | {total / 60:,.1f} min |")
    base = next((r for r in rows if r["variant"] == "reference" and "error" not in r), None)
    if base:
        print("\nspeed-up against the reference: " + ", ".join(
            f"{r['variant']} {r['steps_per_s'] / base['steps_per_s']:.2f}x" for r in rows if "error" not in r))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "recipe": recipe.to_dict(), "data": data_desc,
                                               "steps": steps, "warmup": warmup, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
