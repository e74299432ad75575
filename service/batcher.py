"""Async micro-batcher: one per model.

Requests put rows (latent, label, label_to, mix) on a bounded queue; one loop gathers them until
`max_batch` images are waiting or `max_wait_s` has passed since the oldest arrived, pads the
batch to one of the warmed-up sizes, runs one forward in a worker thread and hands each request
its own rows back. The loop never dies from a failed batch: only that batch's requests fail.

Requests that arrive while a forward runs queue up and form the next batch, so batches grow with
the load even with `max_wait_s` = 0 (the default): a lone request then starts at once, as in
Triton's dynamic batcher. A positive wait holds the oldest request that long for company, which
buys larger batches at moderate load for a fixed latency cost (measured in BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from service.inference import Runner

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The model's queue holds `queue_size` images already; the client should retry later."""

    def __init__(self, model: str, retry_after: int):
        self.model = model
        self.retry_after = retry_after
        super().__init__(f"model {model!r} is busy (queue full); retry after {retry_after} s")


class ShuttingDown(QueueFull):
    """The service is draining its queues before exit and takes no new work."""


class DeadlineExceeded(Exception):
    """A request waited longer than its deadline."""


class BatchFailed(Exception):
    """The forward that held this request raised; the cause is logged with the request ids."""


class BatchObserver(Protocol):
    def observe_batch(self, model: str, images: int, seconds: float) -> None: ...

    def observe_batch_failure(self, model: str) -> None: ...


@dataclass
class _Item:
    z: torch.Tensor  # (n, latent_dim) float32, CPU
    labels: torch.Tensor | None  # (n,) int64
    labels_to: torch.Tensor | None  # (n,) int64
    mix: torch.Tensor | None  # (n,) float32
    deadline: float  # loop.time() after which the item is dropped
    request_id: str
    enqueued: float  # loop.time() when queued
    future: asyncio.Future[torch.Tensor]

    @property
    def n(self) -> int:
        return int(self.z.shape[0])


class Batcher:
    """Gathers requests for one `Runner` into padded batches; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        *,
        max_batch: int,  # images per forward
        max_wait_s: float,  # how long the oldest request may wait for the batch to fill
        queue_size: int,  # images waiting before new requests get QueueFull
        batch_sizes: list[int],  # padded sizes, ascending, the last one >= max_batch
        observer: BatchObserver | None = None,
    ):
        self.runner = runner
        self.name = runner.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.batch_sizes = batch_sizes
        self.observer = observer
        self.queued_images = 0
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._last_batch_s = 0.01
        # One thread per model: forwards of one model never overlap, and the event loop stays free.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"gen-{self.name}")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Stop taking work, finish everything already queued, then stop the loop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _retry_after(self) -> int:
        batches_ahead = self.queued_images / self.max_batch
        return max(1, min(60, math.ceil(batches_ahead * self._last_batch_s)))

    async def submit(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None,
        labels_to: torch.Tensor | None,
        mix: torch.Tensor | None,
        *,
        timeout_s: float,
        request_id: str,
    ) -> torch.Tensor:
        """Queue n rows and wait for their images: uint8 (n, C, H, W) on the CPU.

        Raises QueueFull at once when the queue cannot take n more images, DeadlineExceeded
        after timeout_s, BatchFailed when the forward raised.
        """
        if self._closing:
            raise ShuttingDown(self.name, retry_after=1)
        n = int(z.shape[0])
        if self.runner.can_mix_labels:  # every row of a batch then goes through the same path
            labels_to = labels if labels_to is None else labels_to
            mix = torch.zeros(n) if mix is None else mix
        else:
            labels_to = mix = None
        if self.queued_images + n > self.queue_size:
            raise QueueFull(self.name, self._retry_after())
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + timeout_s
        futures = []
        for start in range(0, n, self.max_batch):  # requests larger than a batch span several
            part = slice(start, start + self.max_batch)
            item = _Item(
                z=z[part],
                labels=None if labels is None else labels[part],
                labels_to=None if labels_to is None else labels_to[part],
                mix=None if mix is None else mix[part],
                deadline=deadline,
                request_id=request_id,
                enqueued=now,
                future=loop.create_future(),
            )
            self._queue.append(item)
            self.queued_images += item.n
            futures.append(item.future)
        self._wakeup.set()
        try:
            parts = await asyncio.wait_for(asyncio.gather(*futures), timeout=timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"waited more than {timeout_s:g} s") from None
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            fill_until = self._queue[0].enqueued + self.max_wait_s
            while self.queued_images < self.max_batch and not self._closing:
                remaining = fill_until - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take(loop.time())
            if batch:
                await self._run(batch)

    def _take(self, now: float) -> list[_Item]:
        """Pop items in arrival order while they fit in one batch; drop cancelled or late ones."""
        batch: list[_Item] = []
        images = 0
        while self._queue and images + self._queue[0].n <= self.max_batch:
            item = self._queue.popleft()
            self.queued_images -= item.n
            if item.future.done():  # the client gave up (timeout or disconnect)
                continue
            if now > item.deadline:
                item.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                continue
            batch.append(item)
            images += item.n
        return batch

    def _padded_size(self, n: int) -> int:
        return next((b for b in self.batch_sizes if b >= n), n)

    async def _run(self, batch: list[_Item]) -> None:
        n = sum(item.n for item in batch)
        size = self._padded_size(n)
        pad = size - n

        def cat(parts: Sequence[torch.Tensor | None], fill: torch.Tensor) -> torch.Tensor | None:
            tensors = [p for p in parts if p is not None]
            if not tensors:
                return None
            if pad:  # padding rows: their images are computed and dropped
                tensors.append(fill.expand(pad, *fill.shape[1:]))
            return torch.cat(tensors)

        z = cat([i.z for i in batch], torch.zeros(1, self.runner.latent_dim))
        labels = cat([i.labels for i in batch], torch.zeros(1, dtype=torch.long))
        labels_to = cat([i.labels_to for i in batch], torch.zeros(1, dtype=torch.long))
        mix = cat([i.mix for i in batch], torch.zeros(1))
        assert z is not None
        started = time.perf_counter()
        try:
            images = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.runner.run, z, labels, labels_to, mix
            )
            if images.shape[0] != size:
                raise RuntimeError(f"generator returned {images.shape[0]} images for a batch of {size}")
        except Exception:
            ids = ", ".join(sorted({i.request_id for i in batch}))
            log.exception("model %s: batch of %d images failed; requests %s", self.name, n, ids)
            if self.observer:
                self.observer.observe_batch_failure(self.name)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(BatchFailed(f"generation failed (request {item.request_id})"))
            return
        seconds = time.perf_counter() - started
        self._last_batch_s = seconds
        if self.observer:
            self.observer.observe_batch(self.name, n, seconds)
        offset = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(images[offset : offset + item.n])
            offset += item.n
