"""The work one /generate request asks for, without the service around it: seeded latents, one
generator forward, uint8 images, a PNG grid. The plain FastAPI app, the LitServe app and the
in-process ceiling all call these, so they do exactly what the service does per image."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from gancore.images import to_uint8
from gancore.sampling import seeded_latents
from gancore.weights import load_generator
from service.inference import prepare_model, set_tf32
from service.prepack import prepack_generator
from service.rendering import default_nrow, grid_png

TRUE = ("1", "true", "t", "yes", "y", "on")  # a true boolean setting, as pydantic reads it


class Body(BaseModel):
    """The part of the service's GenerateRequest that the benchmark sends."""

    label: int
    n: int = 16
    seed: int = 0


def load_model(weights: str | Path, device: str) -> tuple[Any, int]:
    """(generator on `device`, latent_dim), prepared as the service prepares it (batch norm folded,
    channels-last, convolutions packed for oneDNN on a CPU), so the baselines differ from the
    service in how they serve, not in the forward."""
    loaded = load_generator(weights, device="cpu", verify=True)
    if torch.device(device).type == "cuda":  # the service's TF32 policy (GAN_TF32, default off), not torch's
        set_tf32(os.environ.get("GAN_TF32", "false").strip().lower() in TRUE)
    model = prepare_model(loaded.model, device)
    # GAN_PREPACK as the service reads it (default on): its convolutions packed for oneDNN on a CPU
    if torch.device(device).type == "cpu" and os.environ.get("GAN_PREPACK", "true").strip().lower() in TRUE:
        model = prepack_generator(model, loaded)
    return model, loaded.latent_dim


def request_inputs(label: int, n: int, seed: int, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (n, latent_dim) from the seed alone, as the service draws it; labels (n,)."""
    return seeded_latents(seed, n, latent_dim), torch.full((n,), label, dtype=torch.long)


@torch.inference_mode()
def forward(model: Any, z: torch.Tensor, labels: torch.Tensor, device: str) -> torch.Tensor:
    """(B, D), (B,) on the CPU -> uint8 (B, C, H, W) on the CPU."""
    out = model(z.to(device, non_blocking=True), labels.to(device, non_blocking=True))
    return to_uint8(out).cpu()


def png(images: torch.Tensor) -> bytes:
    """The service's default grid: about sqrt(n) per row, padding 2, scale 1."""
    return grid_png(images, default_nrow(int(images.shape[0])), 2, 1)


def server_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The command line every baseline server shares, the one bench.serve starts them with:
    --weights DIR --port P [--device D]; each app adds its batching options."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="generator folder (config.json + generator.safetensors)")
    p.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    p.add_argument("--device", default="cpu")
    return p
