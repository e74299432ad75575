"""Convolution weights packed once into oneDNN's layout, for float32 forwards on a CPU (GAN_PREPACK).

Why: an eager `conv_transpose2d` hands oneDNN its weights in PyTorch's layout, and oneDNN
reorders them into its blocked layout on every call. For the 28x28 generator's two transposed
convolutions (256->128 and 128->64 channels, 2 MB and 0.5 MB of weights) that reorder is about a
quarter of a one-image forward. Packing each weight once at start-up, with torch's own oneDNN ops
(`torch.ops.mkldnn`, which inductor's freezing emits), and running the ReLU that follows a
convolution as its post-op, took an n=1 forward from 3.9 to 2.9 ms on one thread of the Ice Lake
Xeon (the CIFAR-10 generator's 9.5 to 5.1), 0.85-0.94x at 4-32 images and 0.97-0.98x at 64, with
the same uint8 pixels at every size (`python -m bench.prepack`; BENCHMARKS.md, "Packed
convolution weights").

`prepack` builds the packed copy of a prepared model and keeps it only where its images match
the eager model's within the CPU/GPU agreement tolerance and its forward is no slower; anything
else (no oneDNN in this torch build, an op it refuses, different pixels, a slower forward on some
other platform's oneDNN) leaves the eager model in service, with a log line.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from gancore.images import to_uint8
from gancore.weights import LoadedGenerator

log = logging.getLogger(__name__)

# the tolerance of the CPU/GPU agreement test (tests/service/test_cuda.py): grey levels
MAX_LEVELS = 2
MIN_EQUAL = 0.95
# the packed model is kept unless its fastest example forward is more than this much slower than
# the eager one's, over this many runs each, in turns: a margin for start-up's noise (engines of
# several models and workers warm up at once) that a platform where packing clearly loses would
# still exceed. On the Ice Lake Xeon the 4-row example ran at 0.79-0.90x the eager time for the
# shipped generators, and at 0.87-1.05x for the tests' tiny ones (a few microseconds of work per
# convolution, so no reorder to save).
MAX_SLOWER = 1.25
TIMING_ROUNDS = 5


class PackedConv2d(nn.Module):
    """An eval-mode nn.Conv2d with its weight in oneDNN's blocked layout; `attr` "relu" fuses the ReLU after it."""

    def __init__(self, conv: nn.Conv2d, input_size: list[int], attr: str = "none"):
        super().__init__()
        padding, stride, dilation = (list(conv.padding), list(conv.stride), list(conv.dilation))  # type: ignore[arg-type]
        self.args = (padding, stride, dilation, conv.groups)
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(conv.weight.detach(), *self.args, input_size)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.attr = attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, self.bias, *self.args, self.attr, [], "")


class PackedConvTranspose2d(nn.Module):
    """An eval-mode nn.ConvTranspose2d with its weight in oneDNN's blocked layout (see PackedConv2d)."""

    def __init__(self, conv: nn.ConvTranspose2d, input_size: list[int], attr: str = "none"):
        super().__init__()
        self.args = (list(conv.padding), list(conv.output_padding), list(conv.stride), list(conv.dilation),
                     conv.groups)
        self.packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(conv.weight.detach(), *self.args,
                                                                             input_size)
        self.bias = None if conv.bias is None else conv.bias.detach()
        self.attr = attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_transpose_pointwise(x, self.packed, self.bias, *self.args, self.attr,
                                                                 [], "")


def _packable(module: nn.Module) -> bool:
    if type(module) not in (nn.Conv2d, nn.ConvTranspose2d):
        return False
    conv: nn.Conv2d | nn.ConvTranspose2d = module  # type: ignore[assignment]
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and conv.weight.dtype == torch.float32


def _input_sizes(model: nn.Module, run_example: Callable[[nn.Module], torch.Tensor],
                 ) -> tuple[dict[nn.Module, list[int]], torch.Tensor]:
    """The input shape each packable convolution sees in one example forward (oneDNN picks the
    weight's blocked layout for it; any batch size runs with it), and that forward's images."""
    sizes: dict[nn.Module, list[int]] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:  # None: the arguments stay as they are
        sizes.setdefault(module, list(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if _packable(m)]
    try:
        images = run_example(model)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes, images


def _pack_children(module: nn.Module, sizes: dict[nn.Module, list[int]]) -> tuple[int, int]:
    """Replace the packable convolutions below `module` (in place); (packed, ReLUs fused)."""
    packed = fused = 0
    for child in module.children():
        p, f = _pack_children(child, sizes)
        packed, fused = packed + p, fused + f
    items = list(module._modules.items())
    for i, (key, conv) in enumerate(items):
        if conv is None or conv not in sizes:
            continue
        attr, relu_key = "none", None
        if isinstance(module, nn.Sequential):  # the ReLU after it (past Identities that folded batch norms left)
            for next_key, following in items[i + 1:]:
                if type(following) is nn.ReLU:
                    attr, relu_key = "relu", next_key
                if type(following) is not nn.Identity:
                    break
        kind = PackedConvTranspose2d if isinstance(conv, nn.ConvTranspose2d) else PackedConv2d
        module._modules[key] = kind(conv, sizes[conv], attr)  # type: ignore[arg-type]
        packed += 1
        if relu_key is not None:
            module._modules[relu_key] = nn.Identity()
            fused += 1
    return packed, fused


def prepack(model: nn.Module, run_example: Callable[[nn.Module], torch.Tensor], name: str = "") -> nn.Module:
    """A copy of `model` (eval mode, float32, on the CPU) with its convolutions packed, when its
    images agree with the eager model's and its forward is at most MAX_SLOWER as slow; else
    `model` itself. `run_example(m)` runs one forward of m on fixed inputs and returns its uint8
    images; it is called with the eager model and the packed one, so give it a few rows to compare."""
    if not torch.backends.mkldnn.is_available():
        log.info("%s: this torch build has no oneDNN; convolutions stay eager", name)
        return model
    try:
        with torch.inference_mode():
            sizes, expected = _input_sizes(model, run_example)
            if not sizes:
                return model
            packed_model = copy.deepcopy(model)
            # the copy's modules are new objects: map each shape to its counterpart by position
            by_position = {copy_m: sizes[orig] for orig, copy_m in zip(model.modules(), packed_model.modules(),
                                                                      strict=True) if orig in sizes}
            packed, fused = _pack_children(packed_model, by_position)
            got = run_example(packed_model)
    except Exception as exc:  # an op this build refuses: serve the eager model
        log.warning("%s: could not pack the convolutions for oneDNN (%s: %s); they stay eager",
                    name, type(exc).__name__, exc)
        return model
    if got.shape != expected.shape:
        log.warning("%s: packed convolutions gave images of shape %s, not %s; they stay eager",
                    name, tuple(got.shape), tuple(expected.shape))
        return model
    diff = (got.to(torch.int16) - expected.to(torch.int16)).abs()
    if diff.max() > MAX_LEVELS or (diff == 0).float().mean() < MIN_EQUAL:
        log.warning("%s: packed convolutions changed the images (max %d levels); they stay eager",
                    name, int(diff.max()))
        return model
    eager_s, packed_s = _fastest_of(run_example, model, packed_model)
    if packed_s > eager_s * MAX_SLOWER:  # a platform whose oneDNN serves these ops badly (not seen yet)
        log.warning("%s: packed convolutions were slower here (%.2f against %.2f ms a forward); they stay eager",
                    name, packed_s * 1000, eager_s * 1000)
        return model
    log.info("%s: %d convolutions packed for oneDNN, %d with their ReLU fused (%.2f against %.2f ms a forward)",
             name, packed, fused, packed_s * 1000, eager_s * 1000)
    return packed_model


def _fastest_of(run_example: Callable[[nn.Module], torch.Tensor], *models: nn.Module) -> list[float]:
    """Each model's fastest of TIMING_ROUNDS runs of the example, the models in turns."""
    best = [math.inf] * len(models)
    with torch.inference_mode():
        for _ in range(TIMING_ROUNDS):
            for i, m in enumerate(models):
                started = time.perf_counter()
                run_example(m)
                best[i] = min(best[i], time.perf_counter() - started)
    return best


def prepack_generator(model: nn.Module, loaded: LoadedGenerator) -> nn.Module:
    """`prepack` for `model`, the prepared form of `loaded`'s generator (`model(z, labels)`),
    compared on four seeded rows (labels drawn when it is conditional, else None)."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(4, loaded.latent_dim, generator=generator)
    num_classes = int(loaded.config.get("num_classes", 0))
    labels = torch.randint(0, num_classes, (4,), generator=generator) if loaded.conditional else None

    def run_example(m: nn.Module) -> torch.Tensor:
        return to_uint8(m(z, labels))

    return prepack(model, run_example, loaded.name)
