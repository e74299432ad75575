"""Data-parallel training over `torchrun` with torch.distributed (NCCL on GPUs, gloo on CPU).

The backend follows the device asked for, not what the machine has: `--device cpu` on a GPU
machine trains on the CPUs over gloo. Under torchrun each rank takes the GPU of its LOCAL_RANK, so
`--device cuda:N` (one named GPU) is refused there with a message instead of being ignored.

Each rank takes its own slice of every batch index and its own noise stream; gradients are
averaged with one all-reduce per model per step over a flattened buffer. We average gradients
ourselves rather than wrap the critic in DistributedDataParallel because a WGAN-GP critic step
runs three forwards (real, fake, interpolates with a double backward) before one backward,
which DDP's reducer does not support without `static_graph` tricks.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn

from gancore.devices import DeviceError

# Ranks agree on stop signals and time-based checkpoints within seconds, not after a fixed number of
# steps: torchrun SIGKILLs its workers 30 s after it forwards a SIGTERM, and a CPU step can take
# seconds (16 steps at 8 s each lost the checkpoint). Over gloo (CPU) they agree after every step, as
# an all-reduce of two numbers is nothing beside a CPU step; over NCCL each agreement is a
# host-device synchronisation that stalls the queue of kernels, so about every FLAG_SYNC_SECONDS.
FLAG_SYNC_SECONDS = 2.0
MAX_FLAG_SYNC_STEPS = 64  # however fast the steps, a stop is heard within this many
_joined_a_group = False  # this process joined a process group (it is destroyed again at the end of a run)


@dataclass
class Dist:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """This rank's device: its LOCAL_RANK's GPU for auto (with CUDA) or cuda, else the CPU."""
        requested = str(requested).strip().lower()
        if requested.startswith("cuda:"):
            raise DeviceError(f"--device {requested}: under torchrun each rank uses the GPU of its LOCAL_RANK; "
                              "pass --device cuda and choose GPUs with CUDA_VISIBLE_DEVICES")
        if requested == "cuda" and not torch.cuda.is_available():
            raise DeviceError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
        if requested in ("auto", "cuda") and torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    next_flag_sync: int = 1  # the step after which the ranks next exchange flags (agreed at the last one)
    _last_sync: tuple[int, float] | None = field(default=None, init=False, repr=False)  # (step, monotonic)

    def syncs_flags_at(self, step: int) -> bool:
        """Whether the ranks exchange their flags after `step` (every step in one process, where
        it costs nothing)."""
        return not self.enabled or step >= self.next_flag_sync

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def all_reduce_grads(self, module: nn.Module) -> None:
        if not self.enabled:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        tdist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def any_flag(self, flag: bool) -> bool:
        """True on every rank if any rank saw a stop signal (so all stop at the same step)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t)
        return bool(t.item() > 0)

    def exchange_flags(self, step: int, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over the ranks after `step`, and the step of the next exchange, in one
        all-reduce (the same answers on every rank). Rank 0 alone proposes the interval, from its
        time per step since the last exchange; the others add 0, so all read the same next step."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        now = time.monotonic()
        interval = 0
        if self.is_main:
            seconds = None
            if self._last_sync is not None and step > self._last_sync[0]:
                seconds = (now - self._last_sync[1]) / (step - self._last_sync[0])
            interval = flag_sync_interval(seconds, tdist.get_backend())
        self._last_sync = (step, now)
        t = torch.tensor([1.0 if f else 0.0 for f in flags] + [float(interval)])
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t)
        *values, agreed = t.tolist()
        self.next_flag_sync = step + max(1, int(agreed))
        return tuple(bool(v > 0) for v in values)

    def gather_rng(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's noise-generator state, so a resume restores each stream."""
        if not self.enabled:
            return [state]
        out = [torch.empty_like(state) for _ in range(self.world_size)]
        if tdist.get_backend() == "nccl":
            cuda_out = [o.cuda() for o in out]
            tdist.all_gather(cuda_out, state.cuda())
            return [o.cpu() for o in cuda_out]
        tdist.all_gather(out, state)
        return out

    def shutdown(self) -> None:
        """Leave the group together: a rank that tears gloo down while another still writes its
        last checkpoint can be aborted by gloo's I/O thread (SIGABRT, seen in CI)."""
        if self.enabled and tdist.is_initialized():
            tdist.barrier()
            tdist.destroy_process_group()


def exit_without_teardown(code: int) -> None:
    """End a process that joined a process group with os._exit(code), after flushing what it
    wrote; return (doing nothing) in a process that did not.

    By then the run is written (checkpoints and exports are fsynced and renamed) and the group
    destroyed. What is left to the interpreter's finalisation is only harm: gloo's worker threads
    can still release tensors whose Python objects need the GIL, and a thread that asks for the
    GIL while the interpreter shuts down is ended mid C++ frame, which aborts the process
    ("terminate called without an active exception", SIGABRT), about one torchrun run in 20 on
    two CPUs, after "finished" was printed (pytorch/pytorch#179291 describes the mechanism)."""
    if not _joined_a_group:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def flag_sync_interval(step_seconds: float | None, backend: str) -> int:
    """Steps until the ranks next agree on their flags: 1 over gloo or before a step time is known,
    else the steps that take about FLAG_SYNC_SECONDS (1 to MAX_FLAG_SYNC_STEPS)."""
    if backend != "nccl" or step_seconds is None or step_seconds <= 0:
        return 1
    return max(1, min(MAX_FLAG_SYNC_STEPS, int(FLAG_SYNC_SECONDS / step_seconds)))


def backend_for(device: str) -> str:
    """NCCL when the ranks will train on GPUs, gloo when on CPUs (`--device cpu`, or no CUDA)."""
    wants_gpu = str(device).strip().lower() in ("auto", "cuda") or str(device).lower().startswith("cuda:")
    return "nccl" if wants_gpu and torch.cuda.is_available() else "gloo"


def init(device: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else one process."""
    global _joined_a_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend_for(device)
    if not tdist.is_initialized():
        if backend == "nccl":  # NCCL binds each rank's communicator to the current device: this rank's GPU first
            torch.cuda.set_device(local)
        tdist.init_process_group(backend=backend)
    _joined_a_group = True
    return Dist(enabled=True, rank=rank, world_size=world, local_rank=local)
