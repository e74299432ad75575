"""One generator on one device: latents and labels in (CPU), uint8 images out (CPU).

Everything device-specific lives here: dtype and memory format, pinned-memory transfers,
non-blocking copies on the model's own CUDA stream, optional CUDA graphs per padded batch size,
and the single synchronisation (a blocking event, so the waiting thread sleeps instead of
spinning a core) when the images come back.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gancore.devices import DeviceError, cpu_has_native_bf16
from gancore.images import to_uint8
from gancore.networks import LabelMixing
from gancore.weights import LoadedGenerator
from service.prepack import prepack_generator

log = logging.getLogger(__name__)

# uint8 images (n, C, H, W) and their float32 latents (n, D) -> what the request returns (its
# body: service/rendering.py)
Render = Callable[[torch.Tensor, torch.Tensor], Any]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# Failures a CUDA context survives: an allocation that failed (pinned host memory, a library's
# workspace) or an operation a library does not support. They fail their batch, not the process:
# restarting for them would loop as long as the memory is short.
_RECOVERABLE = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
                "CUDNN_STATUS_NOT_SUPPORTED", "CUBLAS_STATUS_NOT_SUPPORTED")


def is_device_error(exc: BaseException) -> bool:
    """True for errors after which a CUDA context cannot be trusted (device-side assert, illegal
    address, ECC): torch raises them as AcceleratorError (newer) or RuntimeError('CUDA error ...').
    Not for the failures a context survives (_RECOVERABLE), which torch raises the same way."""
    text = str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError) or any(s in text for s in _RECOVERABLE):  # torch >= 2.3
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("CUDA error", "CUBLAS_STATUS", "cuDNN error", "CUDNN_STATUS", "illegal memory access")
    )


class StreamClaims:
    """The CUDA streams the live Runners of this process use, one each.

    torch.cuda.Stream() hands out a fixed pool of streams per device in turn (32), so the 33rd
    Runner of a process (models reloaded over and over with GAN_ENGINE=thread) would get a
    stream a live one uses. A CUDA graph captures its stream, not its thread: another model's
    kernels launched there during the capture would break it. A claim draws from the pool until
    it finds a stream no live Runner holds; Runner.close gives it back."""

    def __init__(self, new_stream: Callable[[torch.device], Any] = torch.cuda.Stream, pool_size: int = 32):
        self._new_stream = new_stream
        self._pool_size = pool_size
        self._held: set[tuple[Any, int]] = set()
        self._lock = threading.Lock()

    def claim(self, device: torch.device) -> Any:
        with self._lock:
            for _ in range(self._pool_size):
                stream = self._new_stream(device)
                key = (stream.device, stream.stream_id)
                if key not in self._held:
                    self._held.add(key)
                    return stream
        log.warning("every CUDA stream of %s is held by a live model: two share one, and capturing a CUDA "
                    "graph beside the other can fail", device)
        return stream

    def release(self, stream: Any) -> None:
        with self._lock:
            self._held.discard((stream.device, stream.stream_id))


_STREAMS = StreamClaims()


def cuda_has_native_bf16() -> bool:
    """Whether the current GPU runs bf16 natively (Ampere or newer); torch's default answer
    counts emulation too (a T4, a V100), which runs slower than float16."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.5: no such argument, and no emulation counted
        return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The serving dtype, or DeviceError naming GAN_DTYPE when the device cannot run it well."""
    if name == "float32":
        return torch.float32
    if device.type == "cuda":
        # including_emulation=False: a pre-Ampere GPU (a T4, a V100) says True by default and
        # would run bf16 emulated, slower than float16
        if name == "bfloat16" and not cuda_has_native_bf16():
            raise DeviceError(f"GAN_DTYPE=bfloat16: {torch.cuda.get_device_name(device)} has no native bf16 "
                              "(an Ampere or newer GPU has); use GAN_DTYPE=float16 or float32")
        return DTYPES[name]
    if name == "bfloat16":
        if not cpu_has_native_bf16():
            raise DeviceError("GAN_DTYPE=bfloat16 needs a CPU with native bf16 (AVX512-BF16 or AMX); "
                              "this one would emulate it, slower than float32: use GAN_DTYPE=float32")
        return torch.bfloat16
    raise DeviceError(f"GAN_DTYPE={name} needs a CUDA device; on {device} use float32 or bfloat16")


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a convolution in an nn.Sequential
    into that convolution's weights and bias (in place; returns the module).

    In eval mode batch norm is a fixed per-channel affine map, so the folded convolution gives
    the same images up to float rounding, without a pass over the activations (1.15x on its own,
    1.9x with channels-last on the 2-core CPU, BENCHMARKS.md). Conditional batch norm (the ResNet
    generator) depends on the label and is left alone.
    """
    for child in module.children():
        fuse_conv_bn(child)
    if isinstance(module, nn.Sequential):
        items = list(module._modules.items())
        for (conv_key, conv), (bn_key, bn) in zip(items, items[1:], strict=False):
            if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and type(bn) is nn.BatchNorm2d
                    and not bn.training and bn.track_running_stats):
                module._modules[conv_key] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                module._modules[bn_key] = nn.Identity()
    return module


def prepare_model(model: nn.Module, device: torch.device | str, dtype: torch.dtype = torch.float32,
                  channels_last: bool = True) -> nn.Module:
    """A generator ready to serve: eval mode, batch norm folded, on the device in the dtype, and
    NHWC when asked (oneDNN's and cuDNN's fast layout for these convolutions). The benchmark's
    baselines use this too, so every server compared runs the same forward."""
    model = fuse_conv_bn(model.eval()).to(device=device, dtype=dtype)
    if channels_last:  # nn.Module.to takes memory_format; its type stubs do not say so
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def set_tf32(enabled: bool) -> None:
    """Whether float32 matmuls and convolutions may run in TF32 on CUDA, for this process.
    Stated, not inherited: torch's default lets cuDNN use TF32 for "float32" convolutions (and
    not matmuls), so a process that never says would run this generator's convolutions in TF32
    whatever GAN_TF32 says. Every process that runs forwards calls it (engine processes too)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> tuple[bool, bool]:
    """(matmul, cuDNN) TF32 flags of this process, as set_tf32 left them."""
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


@dataclass(frozen=True)
class RunnerOptions:
    """How the forward runs; from Settings (see service/settings.py for each knob)."""

    dtype: torch.dtype = torch.float32
    channels_last: bool = True
    cuda_graphs: bool = False
    compile: bool = False
    tf32: bool = False  # GAN_TF32; applied on CUDA only
    prepack: bool = True  # GAN_PREPACK; float32 on a CPU, without GAN_COMPILE only (service/prepack.py)


class Runner:
    """Runs batched forwards of one loaded generator.

    Each row of a batch carries its own latent, its label and a second label with a mixing
    weight: the label embedding is (1 - t) * E(label) + t * E(label_to). For plain generation
    t = 0 and label_to = label, which gives exactly E(label) (x * 1 + y * 0 == x), so a row's
    image does not depend on the other rows or on the kind of request it came from.
    """

    pipeline_depth = 2  # batches in flight for the batcher: one on the thread, the next queued behind it
    lone_holds = 0  # an engine process's thread guard holds (engine.LoneThreadsGuard); in-process, none

    def __init__(self, loaded: LoadedGenerator, device: torch.device, options: RunnerOptions):
        self.name = loaded.name
        self.config = loaded.config
        self.device = device
        self.options = options
        self.dtype = options.dtype
        if device.type == "cuda":  # before the first forward; in an engine process, its only setting of it
            set_tf32(options.tf32)
        self.model: Any = prepare_model(loaded.model, device, self.dtype, options.channels_last)
        self.latent_dim = loaded.latent_dim
        self.conditional = loaded.conditional
        self.prepacked = False  # whether the convolutions run with packed weights (GAN_PREPACK)
        if options.prepack and device.type == "cpu" and self.dtype == torch.float32 and not options.compile:
            packed = prepack_generator(self.model, loaded)
            self.model, self.prepacked = packed, packed is not self.model
        self.can_mix_labels = self.conditional and isinstance(self.model, LabelMixing)
        self.channels = int(self.config["channels"])
        self.image_size = int(self.config["image_size"])
        self._cuda = device.type == "cuda"
        self._lock = threading.Lock()  # one forward at a time per model
        self._forward: Callable[..., torch.Tensor] = self._images
        self._compiled = False
        if options.compile and self._cuda and options.cuda_graphs:
            # A graph replays the kernels its capture recorded: the eager forward's. Compiling too
            # would only add minutes of start-up that no request uses.
            log.warning("%s: GAN_COMPILE is ignored with GAN_CUDA_GRAPHS (the graphs replay the eager forward)",
                        self.name)
        elif options.compile:
            self._forward, self._compiled = torch.compile(self._images, dynamic=False), True
        self._stream: torch.cuda.Stream | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gen-{self.name}")
        self._graphs: dict[int, _Graph] = {}

    # ------------------------------------------------------------------ the computation

    def _images(
        self, z: torch.Tensor, labels: torch.Tensor | None, labels_to: torch.Tensor | None, mix: torch.Tensor | None
    ) -> torch.Tensor:
        """Device tensors in -> uint8 (B, C, H, W) on the device."""
        if not self.conditional:
            out = self.model(z, None)
        elif labels is None:
            raise ValueError(f"model {self.name} is conditional: pass labels")
        elif mix is None or labels_to is None or not self.can_mix_labels:
            out = self.model(z, labels)
        else:
            emb_a = self.model.label_embedding(labels)  # (B, E)
            emb_b = self.model.label_embedding(labels_to)  # (B, E)
            t = mix.to(emb_a.dtype)[:, None]  # (B, 1)
            out = self.model.forward_embedded(z, (1 - t) * emb_a + t * emb_b)
        return to_uint8(out).contiguous()  # (B, C, H, W) uint8

    def _to_device(self, t: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if t is None:
            return None
        if self._cuda:  # the cast on the GPU: with a dtype, .to(device, dtype) casts on the CPU into pageable memory
            moved = t.pin_memory().to(self.device, non_blocking=True)
            return moved if dtype is None or moved.dtype == dtype else moved.to(dtype)
        return t if dtype is None else t.to(dtype)

    def run(
        self,
        z: torch.Tensor,  # (B, latent_dim) float32, CPU
        labels: torch.Tensor | None,  # (B,) int64, CPU; None for unconditional models
        labels_to: torch.Tensor | None = None,  # (B,) int64, CPU; with mix
        mix: torch.Tensor | None = None,  # (B,) float32 in [0, 1], CPU
    ) -> torch.Tensor:
        """One forward -> uint8 (B, C, H, W) on the CPU."""
        with self._lock, torch.inference_mode():
            if not self._cuda:
                return self._forward(z.to(self.dtype), labels, labels_to, mix)
            if self._stream is None:  # first use on this thread (the warm-up)
                self._stream = _STREAMS.claim(self.device)
                # __init__ converted the weights on the default stream, which a pool stream does
                # not wait for: without this the first forward could read them half converted
                self._stream.wait_stream(torch.cuda.default_stream(self.device))
            with torch.cuda.stream(self._stream):
                graph = self._graphs.get(int(z.shape[0]))
                if graph is not None and graph.fits(z, labels, labels_to, mix):
                    images = graph.replay(z, labels, labels_to, mix)
                else:
                    images = self._forward(cast(torch.Tensor, self._to_device(z, self.dtype)),
                                           self._to_device(labels), self._to_device(labels_to),
                                           self._to_device(mix))
                host = torch.empty(images.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(images, non_blocking=True)
                done = torch.cuda.Event(blocking=True)  # the waiting thread sleeps, it does not spin
                done.record(self._stream)
            done.synchronize()  # the one sync per batch
            return host

    def forward_and_render(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None,
        labels_to: torch.Tensor | None,
        mix: torch.Tensor | None,
        renders: list[tuple[int, Render | None]],  # per request: its rows, in order, and its render
    ) -> list[tuple[bool, Any]]:
        """One forward of the padded batch, then each request's render of its own rows (its
        images and latents): (True, result) or (False, the exception), one per request. Raises
        when the forward fails."""
        return self.render(self.forward(z, labels, labels_to, mix), z, renders)

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None, labels_to: torch.Tensor | None, mix: torch.Tensor | None,
    ) -> torch.Tensor:
        """`run`, checked: uint8 (B, C, H, W) on the CPU, one image per row of z."""
        images = self.run(z, labels, labels_to, mix)
        if images.shape[0] != z.shape[0]:
            raise RuntimeError(f"generator returned {images.shape[0]} images for a batch of {z.shape[0]}")
        return images

    def render(self, images: torch.Tensor, z: torch.Tensor,
               renders: list[tuple[int, Render | None]]) -> list[tuple[bool, Any]]:
        """Each request's render of its own rows of a batch's images (CPU work only: an engine
        with render threads runs it beside the next forward). Never raises for one request."""
        results: list[tuple[bool, Any]] = []
        offset = 0
        for n, render in renders:
            rows = slice(offset, offset + n)
            offset += n
            if render is None:
                results.append((True, images[rows]))
                continue
            try:
                results.append((True, render(images[rows], z[rows])))
            except Exception as exc:  # one request's rendering must not fail the others
                log.exception("model %s: rendering failed", self.name)
                results.append((False, exc))
        return results

    # The batcher's view: work goes to this model's one thread and comes back as a future.
    # One thread per model: forwards of one model never overlap, the event loop stays free, and
    # CUDA state that is per thread (cuDNN plans, cuBLAS handles, the stream) is made by the
    # warm-up on the thread that serves.

    def start(self, batch_sizes: list[int]) -> concurrent.futures.Future[dict[int, float]]:
        """Warm up on the serving thread; the future gives seconds per padded batch size."""
        return self._executor.submit(self.warmup, batch_sizes)

    def submit(
        self, z: torch.Tensor, labels: torch.Tensor | None, labels_to: torch.Tensor | None,
        mix: torch.Tensor | None, renders: list[tuple[int, Render | None]], calm: bool = True,
    ) -> concurrent.futures.Future[tuple[list[tuple[bool, Any]], float, bool]]:
        """forward_and_render on the serving thread; the future gives (results, seconds it took,
        False: it ran on the threads it always has). `calm` (no overload lately) matters only to
        engine processes' thread counts."""
        def run() -> tuple[list[tuple[bool, Any]], float, bool]:
            results, seconds = timed(self.forward_and_render, z, labels, labels_to, mix, renders)
            return results, seconds, False

        return self._executor.submit(run)

    def close(self) -> None:
        """Stop the forward thread, then let go of the model, its graphs and its compiled forward.

        The service moves start-up's objects out of the garbage collector's sight (gc.freeze), and
        a Runner sits in a reference cycle (its forward is its own bound method), so a Runner
        replaced by POST /admin/reload would otherwise never be collected: its weights, and on a
        GPU its CUDA graphs and their memory pool, would stay for the life of the process.
        Dropping the references here leaves reference counting to free them."""
        self._executor.shutdown(wait=True)
        self._graphs.clear()
        self._forward = _closed_forward
        self.model = None
        self.__dict__.pop("_graph_pool", None)
        if self._stream is not None:
            _STREAMS.release(self._stream)
        self._stream = None
        if self._cuda:
            try:  # the freed blocks back to the driver, for the model that replaces this one
                torch.cuda.empty_cache()
            except Exception as exc:  # a broken context (the error that closes this runner) raises here too
                log.warning("%s: could not empty the CUDA cache on close: %s", self.name, exc)

    # ------------------------------------------------------------------ start-up

    def _example(self, b: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        z = torch.zeros(b, self.latent_dim)
        labels = torch.zeros(b, dtype=torch.long) if self.conditional else None
        mix = torch.zeros(b) if self.can_mix_labels else None
        return z, labels, labels if mix is not None else None, mix

    def warmup(self, batch_sizes: list[int]) -> dict[int, float]:
        """Run every batch size once (its first use: allocations, oneDNN primitives, compilation,
        CUDA graph capture) so no request pays for that, then time a second run of the sizes that
        `timed_sizes` picks; the others get `interpolate_seconds`. Returns seconds per size (the
        batcher's starting estimate, which it then follows with the timings of real batches).

        Call it on the thread that will serve: cuDNN plans, cuBLAS handles and the stream are
        made for that thread.
        """
        measured: dict[int, float] = {}
        timed_set = timed_sizes(batch_sizes)
        if self._compiled:
            allow_recompiles(len(batch_sizes))
        for b in sorted(batch_sizes, reverse=True):  # largest first: graphs share its memory pool
            example = self._example(b)
            self.run(*example)
            if self._cuda and self.options.cuda_graphs:
                with torch.inference_mode(), torch.cuda.stream(self._stream):
                    self._graphs[b] = _Graph.capture(self, b, example, self._pool())
            if b in timed_set:
                started = time.perf_counter()
                self.run(*example)
                measured[b] = time.perf_counter() - started
        return interpolate_seconds(measured, batch_sizes)

    def _pool(self) -> Any:
        if not hasattr(self, "_graph_pool"):
            self._graph_pool = torch.cuda.graph_pool_handle()
        return self._graph_pool


def timed_sizes(batch_sizes: list[int]) -> set[int]:
    """The sizes whose forward the warm-up times: the powers of two and the largest. A finer grid
    (GAN_BATCH_GRID=fine: 32 sizes at 64) then costs one run per size at start, not two; the
    time of a forward is close to linear in its rows between two powers of two, so the sizes
    between are interpolated (`interpolate_seconds`)."""
    return {b for b in batch_sizes if b & (b - 1) == 0} | {max(batch_sizes)}


def interpolate_seconds(measured: dict[int, float], batch_sizes: list[int]) -> dict[int, float]:
    """Seconds for every size in `batch_sizes`: measured where measured, else linear between the
    nearest measured sizes below and above (the largest size is always measured; below the
    smallest measured size, that size's time)."""
    known = sorted(measured)
    seconds: dict[int, float] = {}
    for b in batch_sizes:
        if b in measured:
            seconds[b] = measured[b]
            continue
        above = next(k for k in known if k > b)
        below = max((k for k in known if k < b), default=None)
        if below is None:
            seconds[b] = measured[above]
            continue
        share = (b - below) / (above - below)
        seconds[b] = measured[below] + share * (measured[above] - measured[below])
    return seconds


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(fn(*args), the seconds it took): the compute time of a batch, without its wait in line."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def allow_recompiles(sizes: int) -> None:
    """Let Dynamo compile `sizes` more shapes of the forward in this process. Its limit (8) is per
    code object, and every Runner's forward shares `Runner._images`' code: past it, later batch
    sizes and later models would silently run eager (7 sizes at GAN_MAX_BATCH=64, 9 at 256, and
    with GAN_ENGINE=thread every model's sizes add up)."""
    import torch._dynamo.config as dynamo

    for names in (("recompile_limit", "cache_size_limit"),  # the newer name first; older torch has the other
                  ("accumulated_recompile_limit", "accumulated_cache_size_limit")):
        name = next((n for n in names if hasattr(dynamo, n)), None)
        if name is not None:
            setattr(dynamo, name, getattr(dynamo, name) + sizes)


def _closed_forward(*_: Any) -> torch.Tensor:
    raise RuntimeError("this model's runner is closed")


class _Graph:
    """A CUDA graph of one padded batch size: static inputs are overwritten, then replayed.

    Launching one graph instead of the forward's dozens of kernels removes the per-kernel CPU
    launch cost, which is what bounds small batches on a GPU.
    """

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[torch.Tensor | None], output: torch.Tensor):
        self.graph = graph
        self.inputs = inputs
        self.output = output

    @classmethod
    def capture(cls, runner: Runner, b: int, example: tuple[Any, ...], pool: Any) -> _Graph:
        z, labels, labels_to, mix = example
        inputs = [runner._to_device(z, runner.dtype), runner._to_device(labels), runner._to_device(labels_to),
                  runner._to_device(mix)]
        z_device = cast(torch.Tensor, inputs[0])
        torch.cuda.current_stream(runner.device).synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: only this thread's unsafe CUDA calls break the capture; with the default
        # ("global") another model's serving thread (GAN_ENGINE=thread, a model reloaded beside
        # the others) allocating during the capture would fail it, and its batch with it
        with torch.cuda.graph(graph, pool=pool, stream=torch.cuda.current_stream(runner.device),
                              capture_error_mode="thread_local"):
            output = runner._images(z_device, *inputs[1:])
        return cls(graph, inputs, output)

    def fits(self, *host: torch.Tensor | None) -> bool:
        """Whether these inputs are the ones captured: a graph of the label-mixing path needs
        labels_to and mix (the batcher always passes them; a direct caller may not)."""
        return all(value is not None for static, value in zip(self.inputs, host, strict=True) if static is not None)

    def replay(self, *host: torch.Tensor | None) -> torch.Tensor:
        if not self.fits(*host):  # it would reuse the last batch's labels_to and mix (Runner.run checks first)
            raise ValueError("a CUDA graph captured with labels_to and mix replayed without them")
        for static, value in zip(self.inputs, host, strict=True):
            if static is not None and value is not None:  # cast here (a few KB), then one pinned copy
                source = value if value.dtype == static.dtype else value.to(static.dtype)
                static.copy_(source.pin_memory(), non_blocking=True)
        self.graph.replay()
        return self.output


__all__ = ["DTYPES", "DeviceError", "Render", "Runner", "RunnerOptions", "cpu_has_native_bf16", "interpolate_seconds",
           "is_device_error", "resolve_dtype", "timed_sizes"]
