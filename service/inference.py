"""One generator on one device: latents and labels in (CPU), uint8 images out (CPU).

Everything device-specific lives here: dtype, pinned-memory transfers, non-blocking copies,
and the single synchronisation when the images come back.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import torch

from gancore.devices import DeviceError
from gancore.images import to_uint8
from gancore.weights import LoadedGenerator

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "float32" and device.type != "cuda":
        raise DeviceError(f"GAN_DTYPE={name} needs a CUDA device; this service runs on {device}")
    return DTYPES[name]


class Runner:
    """Runs batched forwards of one loaded generator.

    Each row of a batch carries its own latent, its label and a second label with a mixing
    weight: the label embedding is (1 - t) * E(label) + t * E(label_to). For plain generation
    t = 0 and label_to = label, which gives exactly E(label) (x * 1 + y * 0 == x), so a row's
    image does not depend on the other rows or on the kind of request it came from.
    """

    def __init__(self, loaded: LoadedGenerator, device: torch.device, dtype: torch.dtype):
        self.name = loaded.name
        self.config = loaded.config
        self.device = device
        self.dtype = dtype
        # Any: generator classes differ (label_embedding / forward_embedded are duck-typed).
        self.model: Any = loaded.model.to(device=device, dtype=dtype).eval()
        self.latent_dim = loaded.latent_dim
        self.conditional = loaded.conditional
        self.can_mix_labels = self.conditional and hasattr(self.model, "forward_embedded")
        self.channels = int(self.config["channels"])
        self.image_size = int(self.config["image_size"])
        self._pin = device.type == "cuda"
        self._lock = threading.Lock()  # one forward at a time per model

    def _to_device(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, dtype=dtype, non_blocking=True)

    def run(
        self,
        z: torch.Tensor,  # (B, latent_dim) float32, CPU
        labels: torch.Tensor | None,  # (B,) int64, CPU; None for unconditional models
        labels_to: torch.Tensor | None = None,  # (B,) int64, CPU; with mix
        mix: torch.Tensor | None = None,  # (B,) float32 in [0, 1], CPU
    ) -> torch.Tensor:
        """One forward -> uint8 (B, C, H, W) on the CPU."""
        with self._lock, torch.inference_mode():
            z_d = self._to_device(z, self.dtype)
            if not self.conditional:
                out = self.model(z_d, None)
            elif labels is None:
                raise ValueError(f"model {self.name} is conditional: pass labels")
            elif mix is None or labels_to is None or not self.can_mix_labels:
                out = self.model(z_d, self._to_device(labels))
            else:
                emb_a = self.model.label_embedding(self._to_device(labels))  # (B, E)
                emb_b = self.model.label_embedding(self._to_device(labels_to))  # (B, E)
                t = self._to_device(mix, emb_a.dtype)[:, None]  # (B, 1)
                out = self.model.forward_embedded(z_d, (1 - t) * emb_a + t * emb_b)
            images = to_uint8(out)  # (B, C, H, W) uint8, still on the device
            if self._pin:
                host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(images, non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()  # the one sync per batch
                return host
            return images

    def warmup(self, batch_sizes: list[int]) -> None:
        """One forward per batch size, so no request pays for first-use allocations."""
        for b in batch_sizes:
            z = torch.zeros(b, self.latent_dim)
            labels = torch.zeros(b, dtype=torch.long) if self.conditional else None
            mix = torch.zeros(b) if self.can_mix_labels else None
            self.run(z, labels, labels, mix)
