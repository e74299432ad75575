"""Async micro-batcher: one per model.

Requests put rows (latent, label, label_to, mix) on a queue; one loop gathers them until
`max_batch` images are waiting or `max_wait_s` has passed since the oldest arrived, pads the
batch to the next of the warmed-up sizes (GAN_BATCH_GRID: powers of two on CUDA, a finer grid on
a CPU) and hands it to the model's own thread. That thread runs the
forward and then each request's `render` (its PNG), so a batch costs one thread hop and one
wake-up of the event loop, whatever the number of requests in it. The loop never dies from a
failed batch: only that batch's requests fail, except for a device error (CUDA), after which the
model is marked broken so that /healthz and /readyz take the process out of service.

Requests that arrive while a forward runs queue up and form the next batch, so batches grow with
the load even with `max_wait_s` = 0 (the default): a lone request then starts at once, as in
Triton's dynamic batcher.

The queue is served in arrival order, with one exception: requests of one batch or less (a page's
n=1 image) do not wait behind every part of the requests larger than a batch queued before them
(a client's 256-image grids). While such a part heads the queue, every other batch is made of the
small requests first, so a small one waits for at most one large part per batch of small ones
ahead of it, and the large ones still get every other batch (no starvation). Admission and
shedding estimate each request's wait in that order. A queue of one kind is plain arrival order.
While small requests keep coming beside the large ones, a large part is not sent ahead behind
the batch that runs (the pipelining below) when batches are long (a CPU): a small request that
arrives then waits for the rest of the running batch only, not for the part queued behind it too,
and the large parts run in slices of about SLICE_S of forward each (a sequential client of single
images, which posts again just after its own batch, otherwise waits for a whole large batch every
time); the slices of a part are put back together before its request is answered.

Admission is by expected wait, not only by queue length: the batcher times every padded batch
size (at warm-up and then as a moving average under load), so it knows how long the images
already queued will take. A request that could not finish before its deadline is refused at once
with 503 and a Retry-After taken from that wait. Forwards can slow down after admission (a storm
takes the cores), so whenever a batch ends the queue is walked again at the rate measured now,
and a request none of whose parts has started that can no longer end in time (with a quarter of
its own forwards' time to spare) is shed (503) at once instead of timing out; the same check runs
as such a request is about to start. A started request whose deadline would pass during the forward its
next part is about to join has that part dropped before the forward starts (504), so no compute
is spent on answers nobody will read.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch

from service.engine import EngineClient, EngineDied
from service.inference import Render, Runner, is_device_error

log = logging.getLogger(__name__)

# A batch's measured time enters the estimate with this weight (the rest is the old estimate).
EMA_WEIGHT = 0.2
# A request is admitted when its expected wait is within this share of its deadline: the rest is
# headroom for the estimate being wrong under load, where forwards slow down as the event loop
# competes for the cores. A request shed after admission has waited seconds for its 503, so the
# headroom keeps that rare next to START_MARGIN: 200 storm clients (n=256, 2 workers on 2 cores)
# had 10-37 requests a run shed at 0.8 with the margin, 6-22 at 0.6 (before the calibration fix
# in _calibrate; with it, none in 8 storms of 12).
ADMIT_SHARE = 0.6
# The expected wait is corrected by how long admitted requests really waited against what was
# expected when they were admitted (an EMA of the ratio, from requests expected to wait at least
# CALIBRATE_MIN_S, where the ratio is about the queue rather than one batch's jitter). The engine
# times only its forward and renders; under a storm the event loop also delays every hand-off and
# answer (measured with 2 workers on 2 cores: admitted at 7.9 s expected, answered after 9.8 s).
CALIBRATE_MIN_S = 0.5
# A request not yet started is shed (503) unless it is expected to end before its deadline with
# this share of its own forwards' time to spare: once started it can no longer be shed without
# throwing compute away, and one forward slower than the estimate would then cost a 504 (measured:
# 1 in 5 storms of 200 clients x n=256 on 2 cores ended one request with 504 without this margin).
START_MARGIN = 0.25
CALIBRATE_WEIGHT = 0.2
WAIT_SCALE_RANGE = (0.75, 4.0)
# A batch is "calm" when this batcher refused no request for this long: only then may an engine
# take every core while the others are idle (engine.py). Under a storm the event loops, not the
# engines, use the cores, and a forward spread over them stalls (measured: storm goodput 0.44).
CALM_S = 0.5
# A large request's part is held back from the pipeline (sent when the running batch ends, not
# queued behind it) while small requests came within SMALL_RECENT_S, nothing was refused for
# CALM_S and a full batch takes at least HOLD_MIN_S: a small request then waits for the rest of
# one batch, not two (n=1 beside 256-image grids on 2 CPU cores: p50 170 -> 90 ms), at the cost
# of the hand-off between two batches (well under a millisecond when calm). Not on a GPU-fast
# forward, where that hand-off would be a large share of a batch and a batch's wait is small.
# SMALL_RECENT_S is long enough for a person's pace: with 2 s, a single image posted every 3 s
# beside 4 grid connections came after the window had closed each time and waited for two whole
# batches, 105-248 ms (one worker, 2 CPU cores); with 30 s, 8-51 ms after the first. A service with
# no small request for that long (bulk clients only) keeps whole batches in the pipeline.
SMALL_RECENT_S = 30.0
HOLD_MIN_S = 0.02
# Under the same conditions, a large request's rows run in batches of their own of at most SLICE_S of
# forward (GAN_SLICE_MS; 0: whole batches): the largest warmed size that fits, at least a quarter of
# max_batch (so at most four times the forwards). A sequential client of single images posts again
# just after its own batch ends, when the next large batch has just started, so without slices it
# waits for about one whole large batch every time: one worker on 2 CPU cores beside 4 connections of
# 256-image grids, p50 112-119 ms with batches of 64 (about 105 ms each), 45-53 ms with slices of 17-32;
# grids alone ran as many images/s in batches of 28 as of 64 (bench.overload --mixed, BENCHMARKS.md).
SLICE_S = 0.05


class QueueFull(Exception):
    """The model cannot take this request in time (or its queue is full); retry later."""

    metric_reason = "queue_full"  # the `reason` label of gan_rejected_requests

    def __init__(self, model: str, retry_after: int, reason: str = "queue full"):
        self.model = model
        self.retry_after = retry_after
        super().__init__(f"model {model!r} is busy ({reason}); retry after {retry_after} s")


class ShuttingDown(QueueFull):
    """The service is draining its queues before exit and takes no new work."""


class Shed(QueueFull):
    """A queued request, none of it started, that the queue can no longer finish before its
    deadline at the rate it drains now: answered 503 at once instead of 504 at the deadline."""

    metric_reason = "shed"


class DeadlineExceeded(Exception):
    """A request waited longer than its deadline."""


class BatchFailed(Exception):
    """The forward that held this request raised; the cause is logged with the request ids."""


class DeviceFailed(Exception):
    """The model's device failed (a CUDA error); the process must be restarted."""

    def __init__(self, model: str, cause: str):
        self.model = model
        super().__init__(f"model {model!r} is out of service after a device error ({cause}); "
                         "the process is being restarted")


class BatchObserver(Protocol):
    def observe_batch(self, model: str, images: int, seconds: float) -> None: ...

    def observe_batch_failure(self, model: str) -> None: ...

    def observe_queue(self, model: str, images: int) -> None: ...

    def observe_lone_holds(self, model: str, holds: int) -> None: ...



@dataclass(eq=False)
class _Item:
    z: torch.Tensor  # (n, latent_dim) float32, CPU
    labels: torch.Tensor | None  # (n,) int64
    labels_to: torch.Tensor | None  # (n,) int64
    mix: torch.Tensor | None  # (n,) float32
    deadline: float  # loop.time() after which the item is dropped
    request_id: str
    enqueued: float  # loop.time() when queued
    future: asyncio.Future[Any]
    render: Render | None  # run on the model's thread right after the forward
    expected: float = 0.0  # the wait expected at admission (seconds, calibrated)
    raw_expected: float = 0.0  # the same before calibration (expected / wait_scale at admission)
    batch_s: float = 0.0  # the estimate of a full batch's seconds at admission
    queued: bool = True  # its images are counted in queued_images
    taken: bool = False  # handed to a batch (it may still sit in the queue: taken ahead of its turn)
    # every part of a request larger than one batch, in order, shared by the parts; None for one part
    parts: list[_Item] | None = None
    n: int = 0  # its images, len(z): set once, since admission and batching read it many times a request
    # A large request's part can run in slices (SLICE_S): each slice is an item of its own, never
    # queued, with the part's future (`whole` is the part). The part keeps its place with the rows
    # not yet taken; `offset` is where its rows start in the part as submitted (so the part had
    # offset + n rows then), and `pieces` the (offset, images) answered so far, until they add up.
    whole: _Item | None = None
    offset: int = 0
    pieces: list[tuple[int, torch.Tensor]] | None = None

    def __post_init__(self) -> None:
        self.n = int(self.z.shape[0])

    @property
    def untouched(self) -> bool:
        """Still queued whole: no slice of it taken."""
        return self.queued and not self.offset


def _rows(tensor: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    """Those rows of an item's optional tensor (labels, labels_to, mix)."""
    return None if tensor is None else tensor[rows]


def _drop_gone(queue: deque[_Item]) -> None:
    """Pop the items at the front that are no longer waiting: taken into a batch ahead of their
    turn (a small request), or answered already (expired, shed, or their client left)."""
    while queue and (queue[0].taken or not queue[0].queued):
        queue.popleft()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as read (its waiter is gone)."""
    if not future.cancelled():
        future.exception()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    """loop.call_soon_threadsafe from another thread, unless the loop has closed meanwhile."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nothing left to tell
        pass


class FailingRepeatedly(RuntimeError):
    """A model's batches failed GAN_FAILED_BATCHES_LIMIT times in a row, with errors a process
    survives (out of memory): it is taken out of service as after a device error."""


class Batcher:
    """Gathers requests for one `Runner` into padded batches; see the module docstring."""

    def __init__(
        self,
        runner: Runner | EngineClient,
        *,
        max_batch: int,  # images per forward
        max_wait_s: float,  # how long the oldest request may wait for the batch to fill
        queue_size: int,  # images waiting before new requests get QueueFull (small ones: of small requests)
        batch_sizes: list[int],  # padded sizes, ascending, the last one >= max_batch
        observer: BatchObserver | None = None,
        on_device_error: Callable[[str, BaseException], None] | None = None,
        failed_batches_limit: int = 0,  # batches failing in a row that break the model (0: none)
        slice_s: float = SLICE_S,  # a large request's forwards while small ones come (0: whole batches)
    ):
        self.runner = runner
        self.name = runner.name
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_size = queue_size
        self.batch_sizes = batch_sizes
        self.observer = observer
        self._lone_holds_seen = 0
        self.on_device_error = on_device_error
        self.queued_images = 0
        self.queued_small_images = 0  # of which in requests of one part (n <= max_batch)
        self.broken: str | None = None  # the device error that took this model out of service
        self.failed_batches_limit = failed_batches_limit
        self.slice_s = slice_s
        self._failed_in_row = 0  # batches failed since the last one that ran
        self._queue: deque[_Item] = deque()  # every item, in arrival order
        # whether an item was queued with an earlier deadline than one queued before it (a shorter
        # timeout_s): until the queue empties, its earliest deadline is then not its first item's
        self._deadlines_unordered = False
        # the one-part requests among them, in arrival order, which may be taken ahead of the parts
        # of larger requests queued before them (see the module docstring); taken or finished
        # items leave both deques lazily, when they reach the front
        self._small: deque[_Item] = deque()
        self._small_went_ahead = False  # the last batch was taken small-first: the next one is not
        self._small_seen = -math.inf  # loop.time() of the last small request queued
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._busy_until = 0.0  # loop.time() at which the forwards already dispatched should end
        # images of each batch dispatched and not yet answered (at most the runner's
        # pipeline_depth: 2, or an engine's render threads + 1), oldest first
        self._flight_images: deque[int] = deque()
        # seconds per padded batch size (forward + renders), measured at warm-up, then averaged
        self._seconds: dict[int, float] = {}
        # the padded size of every image count up to the largest size, looked up several times a request
        self._padded = [next(b for b in batch_sizes if b >= n) for n in range(batch_sizes[-1] + 1)]
        self.wait_scale = 1.0  # how much longer requests really wait than the raw estimate says
        self._refused_at = -math.inf  # loop.time() of the last request refused for overload

    async def start(self) -> None:
        """Warm up every padded batch size on the serving thread (or in the engine process),
        timing each; then serve."""
        loop = asyncio.get_running_loop()
        if isinstance(self.runner, EngineClient):  # an engine killed while idle breaks the model now
            self.runner.on_exit = lambda exc: _call_soon(loop, self._engine_exited, exc)
        self._seconds = await asyncio.wrap_future(self.runner.start(self.batch_sizes))
        self.name = self.runner.name  # an engine learns its model's name from the weights it loaded
        self._task = loop.create_task(self._loop(), name=f"batcher-{self.name}")

    def hurry(self) -> None:
        """Shutdown has begun: stop holding requests for company, run what is queued now."""
        self.max_wait_s = 0.0
        self._wakeup.set()

    async def close(self) -> None:
        """Stop taking work, finish everything already queued, then stop the loop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        await asyncio.to_thread(self.runner.close)  # an engine process takes a while to exit: not on the loop

    # ------------------------------------------------------------------ admission

    def _padded_size(self, n: int) -> int:
        return self._padded[n] if n < len(self._padded) else n

    def batch_seconds(self, n: int) -> float:
        """Expected time of one forward (with its renders) of n <= max_batch images."""
        size = self._padded_size(n)
        if size in self._seconds:
            return self._seconds[size]
        known = [s for s in self._seconds if s >= size]  # not warmed (tests): the next larger size
        return self._seconds[min(known)] if known else 0.0

    def expected_wait(self, extra_images: int = 0, now: float | None = None) -> float:
        """Seconds until the images already queued plus `extra_images` more are done: the rest
        of the forward now running, then the queue in full batches, times the calibration
        `wait_scale` learnt from requests already served."""
        now = asyncio.get_running_loop().time() if now is None else now
        return self._drain_seconds(self.queued_images + extra_images, now)

    def _small_ahead(self, n: int, small_ahead: int, all_ahead: int) -> int:
        """Images served before the last of a one-part request of n images that has `small_ahead`
        images of one-part requests and `all_ahead` images in all ahead of it: the small ones, and
        at most one full batch of the others per batch of small ones, taken in turns."""
        small_batches = -(-(small_ahead + n) // self.max_batch)
        return small_ahead + n + min(all_ahead - small_ahead, small_batches * self.max_batch)

    def _small_wait(self, n: int, now: float) -> float:
        """expected_wait of a one-part request of n images joining the queue now."""
        return self._drain_seconds(self._small_ahead(n, self.queued_small_images, self.queued_images), now)

    def _drain_seconds(self, images: int, now: float) -> float:
        """Calibrated seconds until the forward now running and then `images` queued images are done."""
        full, rest = divmod(images, self.max_batch)
        wait = max(0.0, self._busy_until - now) + full * self.batch_seconds(self.max_batch)
        return self.wait_scale * (wait + (self.batch_seconds(rest) if rest else 0.0))

    def _calibrate(self, batch: list[_Item], now: float) -> None:
        """Move wait_scale towards the ratio of waited to expected time of this batch's
        requests that were expected to wait long enough for the ratio to mean something.

        Each ratio is taken against the request's raw estimate (before the scale it was admitted
        with), corrected by how much the batch timings have moved since: those already carry
        part of the error, and the scale is what remains. Taken against the calibrated estimate
        and multiplied by the current scale instead, the error was counted again with every
        batch: in a storm's first burst, all admitted at scale 1 and waiting twice as long, the
        scale ran from 1.0 to 2.5 in a second, and requests that would have ended in time were shed."""
        full = self.batch_seconds(self.max_batch)
        ratios = [(now - i.enqueued) / i.raw_expected * (i.batch_s / full if i.batch_s > 0 and full > 0 else 1.0)
                  for i in batch if i.expected >= CALIBRATE_MIN_S and i.raw_expected > 0
                  and (i.parts is None or (i.parts and i is i.parts[-1]))]  # the estimate is for its last image
        if not ratios:
            return
        target = sum(ratios) / len(ratios)
        low, high = WAIT_SCALE_RANGE
        self.wait_scale = min(high, max(low, (1 - CALIBRATE_WEIGHT) * self.wait_scale + CALIBRATE_WEIGHT * target))

    def admit(self, n: int, timeout_s: float, now: float | None = None) -> float:
        """The expected wait of n more images; raises (QueueFull, ShuttingDown, DeviceFailed)
        unless they can be served within timeout_s (the routes refuse n above queue_size with 422 first)."""
        now = asyncio.get_running_loop().time() if now is None else now
        if self.broken is not None:
            raise DeviceFailed(self.name, self.broken)
        if self._closing:
            raise ShuttingDown(self.name, retry_after=1, reason="shutting down")
        small = n <= self.max_batch
        # a small request is bounded by the small ones queued: they go first in turns, so the
        # grids queued beside them do not make it wait (in all, at most twice queue_size images)
        if (self.queued_small_images if small else self.queued_images) + n > self.queue_size:
            self._refused_at = now
            wait = self._small_wait(0, now) if small else self.expected_wait(0, now)
            raise QueueFull(self.name, max(1, min(60, math.ceil(wait))), "queue full")
        wait = self._small_wait(n, now) if small else self.expected_wait(n, now)
        limit = ADMIT_SHARE * timeout_s
        if wait > limit:
            self._refused_at = now
            # it could be served once the queue has shrunk by the excess
            raise QueueFull(self.name, max(1, min(60, math.ceil(wait - limit))),
                            f"expected wait {wait:.1f} s is over {limit:.1f} s of the {timeout_s:g} s deadline")
        return wait

    # ------------------------------------------------------------------ requests

    async def submit(
        self,
        z: torch.Tensor,
        labels: torch.Tensor | None,
        labels_to: torch.Tensor | None,
        mix: torch.Tensor | None,
        *,
        timeout_s: float,
        request_id: str,
        render: Render | None = None,
        expected: float | None = None,
    ) -> Any:
        """Queue n rows and wait for their images: uint8 (n, C, H, W) on the CPU, or what
        `render` makes of them (it runs on the model's thread, off the event loop).

        Raises QueueFull at once when the request cannot finish within timeout_s,
        DeadlineExceeded after timeout_s, BatchFailed when the forward raised, DeviceFailed
        after a device error. `expected`: what admit() returned for this request in the same
        step of the event loop (nothing queued since), which is then not asked again.
        """
        n = int(z.shape[0])
        loop = asyncio.get_running_loop()
        now = loop.time()
        if expected is None:
            expected = self.admit(n, timeout_s, now)
        if self.runner.can_mix_labels:  # every row of a batch then goes through the same path
            labels_to = labels if labels_to is None else labels_to
            mix = torch.zeros(n) if mix is None else mix
        else:
            labels_to = mix = None
        deadline = now + timeout_s
        raw_expected, batch_s = expected / self.wait_scale, self.batch_seconds(self.max_batch)
        single = n <= self.max_batch
        futures = []
        parts: list[_Item] = []
        for start in range(0, n, self.max_batch):  # requests larger than a batch span several
            # a one-part request keeps its tensors: four slicing ops cost more than the rest of the item
            part = slice(start, start + self.max_batch)
            item = _Item(
                z=z if single else z[part],
                labels=labels if single else _rows(labels, part),
                labels_to=labels_to if single else _rows(labels_to, part),
                mix=mix if single else _rows(mix, part),
                deadline=deadline,
                request_id=request_id,
                enqueued=now,
                future=loop.create_future(),
                render=render if single else None,
                expected=expected,
                raw_expected=raw_expected,
                batch_s=batch_s,
                # a one-part request has no list: item -> list -> item is a reference cycle, which
                # only the cyclic collector frees (with the item's tensors, render spec and future:
                # seven objects a request, measured) instead of reference counting, at once
                parts=None if single else parts,
            )
            parts.append(item)
            self._append(item)
            if single:
                self._small.append(item)
                self.queued_small_images += item.n
                self._small_seen = now
            item.future.add_done_callback(partial(self._cancelled, item))
            futures.append(item.future)
        self._observe_queue()
        self._wakeup.set()
        if single:
            # The deadline as one timer on the item's own future: asyncio.wait_for would add a
            # second future and two callbacks to every request.
            item = parts[0]
            timer = loop.call_at(deadline, self._expire, item, timeout_s)
            try:
                return await item.future
            finally:
                timer.cancel()
        gathered = asyncio.gather(*futures)
        # When this waiter is cancelled (the client left), wait_for cancels the gather, which then
        # ends with a CancelledError that nobody reads: asyncio would log "exception was never
        # retrieved" at ERROR for every client that leaves a multi-batch request.
        gathered.add_done_callback(_retrieve)
        try:
            result = await asyncio.wait_for(gathered, timeout=timeout_s)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"waited more than {timeout_s:g} s") from None
        finally:
            parts.clear()  # break the parts' cycle; an item still queued then counts as its own request
        images = torch.cat(result)
        return images if render is None else await asyncio.to_thread(render, images, z)

    @property
    def in_flight(self) -> int:
        """Batches handed to the worker and not yet answered."""
        return len(self._flight_images)

    def _unqueue(self, item: _Item) -> bool:
        """Stop counting the item's images as queued (once); True if they were counted."""
        if not item.queued:
            return False
        item.queued = False
        self.queued_images -= item.n
        if item.parts is None:
            self.queued_small_images -= item.n
        return True

    def _cancelled(self, item: _Item, _future: object = None) -> None:
        """A queued item's waiter was cancelled (the client left): its images stop counting at
        once, for admission and the queue gauge; the loop drops the item when it reaches it."""
        if item.future.cancelled() and self._unqueue(item):
            self._observe_queue()

    def _expire(self, item: _Item, timeout_s: float) -> None:
        """The request's deadline passed before its answer: 504, and its rows leave the queue."""
        if item.future.done():
            return
        item.future.set_exception(DeadlineExceeded(f"waited more than {timeout_s:g} s"))
        if self._unqueue(item):
            self._observe_queue()

    def _observe_queue(self) -> None:
        if self.observer is not None:
            self.observer.observe_queue(self.name, self.queued_images)

    # ------------------------------------------------------------------ the loop

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing and not self.in_flight:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            while self._queue and self.queued_images < self.max_batch and not self._closing:
                remaining = self._queue[0].enqueued + self.max_wait_s - loop.time()  # hurry() may cut it
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            # A further batch is dispatched while one runs once it is as large as the last one sent
            # (or full): the worker then starts it the moment the first ends, instead of idling
            # until this loop gets its turn (tens of ms behind a storm of requests); a smaller one
            # waits, and grows, so pipelining never shrinks the batches. An engine with render
            # threads takes more at once: it renders earlier batches while it runs the next forward.
            while self.in_flight >= self.runner.pipeline_depth or (
                self.in_flight >= 1 and self.queued_images < min(self.max_batch, self._flight_images[-1])
            ) or self._hold_large(loop.time()):
                self._wakeup.clear()
                await self._wakeup.wait()  # set by a new request and by a finished batch
            batch = self._take(loop.time())
            self._observe_queue()
            if batch:
                self._flight_images.append(sum(item.n for item in batch))
                loop.create_task(self._run(batch), name=f"batch-{self.name}")

    def _calm(self, now: float) -> bool:
        """No request refused for overload in the last CALM_S."""
        return now - self._refused_at > CALM_S

    def _sharing(self, now: float) -> bool:
        """Small requests are coming beside the large ones (SMALL_RECENT_S), the service is calm
        and a full batch is long enough for a small request's wait behind it to matter
        (HOLD_MIN_S): large parts are then held out of the pipeline and run in slices."""
        return (not self._closing and now - self._small_seen < SMALL_RECENT_S and self._calm(now)
                and self.batch_seconds(self.max_batch) >= HOLD_MIN_S)

    def _hold_large(self, now: float) -> bool:
        """Keep the next batch, a large request's part, out of the pipeline while one runs and
        small requests are coming (_sharing), none waiting now. A small one that arrives meanwhile
        then goes next; otherwise the part goes when the running batch ends."""
        if not self.in_flight or not self._sharing(now):
            return False
        _drop_gone(self._queue)
        _drop_gone(self._small)
        return bool(self._queue and self._queue[0].parts is not None and not self._small)

    def _slice_images(self) -> int:
        """Rows of a large request per batch while sharing: the largest warmed size whose forward
        takes at most slice_s, at least a quarter of max_batch; max_batch when slicing is off."""
        if self.slice_s <= 0:
            return self.max_batch
        floor = max(1, self.max_batch // 4)
        return max((b for b in self.batch_sizes if floor <= b <= self.max_batch and self.batch_seconds(b) <= self.slice_s),
                   default=floor)

    def _shed(self, now: float) -> None:
        """Answer 503 now, not 504 at the deadline, for each queued request that the queue can no
        longer finish in time at the rate it drains now (forwards slow down after admission when
        a storm takes the cores: requests admitted at 2.5 s expected waited 9.8 s). Only requests
        of which no part has started are shed, so no compute is thrown away; the rest keep their
        place and are dropped by _take only if their own forward would end too late."""
        if not self._queue or self._none_can_end_too_late(now):
            return
        images = small = 0  # queued images ahead in arrival order, and those of one-part requests
        shed: list[_Item] = []
        for item in self._queue:
            if not item.queued:
                continue
            if item.parts is None:  # one part: only the small ones ahead, and a large batch per batch of them
                if self._ends_too_late([item], self._small_ahead(item.n, small, images) - item.n, now):
                    shed.append(item)
                else:
                    images += item.n
                    small += item.n
                continue
            parts = item.parts or [item]
            if not all(p.untouched for p in parts):  # a request already started keeps its place
                images += item.n
                continue
            if item is not parts[0]:  # counted, or shed, with the request's first part
                continue
            # small requests queued behind it go first, a batch of them per part of its own at most
            own = sum(p.n for p in parts)
            jumping = min(self.queued_small_images - small, -(-own // self.max_batch) * self.max_batch)
            if self._ends_too_late(parts, images + jumping, now):
                shed.extend(parts)
            else:
                images += own
        if shed:
            self._shed_request(shed, now)

    def _append(self, item: _Item) -> None:
        """Queue an item last, keeping count of its images and of whether deadlines still come in
        arrival order (every request has the service's one timeout, so they do unless a caller
        passes its own)."""
        if not self._queue:
            self._deadlines_unordered = False
        elif item.deadline < self._queue[-1].deadline:
            self._deadlines_unordered = True
        self._queue.append(item)
        self.queued_images += item.n

    def _earliest_deadline(self) -> float:
        """The earliest deadline of any item in the queue (answered ones too, as they leave it
        lazily): its first item's, in O(1), while deadlines come in arrival order."""
        if self._deadlines_unordered:
            return min(item.deadline for item in self._queue)
        return self._queue[0].deadline

    def _none_can_end_too_late(self, now: float) -> bool:
        """True when even the last queued image, behind the whole queue, would end with
        START_MARGIN of a whole queue's forwards to spare before the earliest deadline queued:
        an upper bound of every request's _ends_too_late test, in O(1).
        The scan it spares costs O(queue) per batch end: with a GPU-fast forward at n=64 and 64
        clients it was 57% of the front's profile, and skipping it saved 20-33% of the front's
        CPU per request (BENCHMARKS.md)."""
        batches = -(-self.queued_images // self.max_batch)  # every part of every request, at most
        if 0 < self.queued_small_images < self.queued_images:  # taking turns: batches not always full
            batches = 2 * batches + 1
        longest = max(self._seconds.values(), default=0.0)  # bounds batch_seconds of any size
        wait = self.wait_scale * (max(0.0, self._busy_until - now) + (1 + START_MARGIN) * batches * longest)
        return now + wait <= self._earliest_deadline()

    def _ends_too_late(self, parts: Sequence[_Item], ahead: int, now: float) -> bool:
        """Would this request, behind `ahead` queued images, end without START_MARGIN of its own
        forwards' time to spare before its deadline?"""
        total = ahead + sum(p.n for p in parts)
        own = self.wait_scale * sum(self.batch_seconds(p.n) for p in parts)
        return now + self._drain_seconds(total, now) + START_MARGIN * own > parts[0].deadline

    def _starts_too_late(self, parts: Sequence[_Item], now: float) -> bool:
        """A request of several parts, none started, about to start: _shed's question, asked
        again (a request can reach the head of the queue between two batch ends)."""
        if not all(p.untouched for p in parts) or parts[0].future.done():
            return False
        return self._ends_too_late(parts, 0, now)

    def _shed_request(self, shed: Sequence[_Item], now: float) -> None:
        """Answer 503 to queued items (whole requests) that could not end in time."""
        for part in shed:
            self._unqueue(part)
        # as admit() says: once the queue has shrunk by the excess over the admission limit
        timeout_s = shed[0].deadline - shed[0].enqueued
        retry_after = max(1, min(60, math.ceil(self.expected_wait(0, now) - ADMIT_SHARE * timeout_s)))
        first = shed[0]
        log.info("%s: shed %d queued request(s) that could no longer end in time, first %s: admitted "
                 "expecting %.2f s, waited %.2f s, %.2f s before its deadline, %.2f s of queue now expected; "
                 "wait_scale %.2f, %.3f s per full batch", self.name, len({id(p.parts or p) for p in shed}),
                 first.request_id, first.expected, now - first.enqueued, first.deadline - now,
                 self._drain_seconds(self.queued_images, now), self.wait_scale,
                 self.batch_seconds(self.max_batch))
        for part in shed:
            if not part.future.done():
                part.future.set_exception(Shed(self.name, retry_after, "the queue drains slower than when the "
                                                                     "request was admitted"))
        self._refused_at = now
        self._observe_queue()

    def _take(self, now: float) -> list[_Item]:
        """Pop items in arrival order while they fit in one batch, after the one-part requests
        when it is their turn (the module docstring); drop cancelled items and items that would
        miss their deadline in this forward. While sharing (small requests coming), a large
        request's rows run alone, at most a slice at a time."""
        queue, small = self._queue, self._small
        _drop_gone(queue)
        _drop_gone(small)
        batch: list[_Item] = []
        images = 0
        # a large request's part heads the queue and a small request waits behind it: small first,
        # unless the last batch was taken that way
        small_first = bool(queue and small and queue[0].parts is not None and not self._small_went_ahead)
        self._small_went_ahead = small_first
        if small_first:
            while small and images + small[0].n <= self.max_batch:
                images += self._take_item(small.popleft(), batch, images, now)
                _drop_gone(small)
            _drop_gone(queue)
        # while sharing, large rows run alone, at most a slice at a time (never lengthening small ones' batch)
        cap = self._slice_images() if queue and self._sharing(now) else self.max_batch
        while queue and images + queue[0].n <= self.max_batch:
            item = queue[0]
            if item.parts and item is item.parts[0] and self._starts_too_late(item.parts, now):
                queue.popleft()
                self._shed_request(item.parts, now)
                _drop_gone(queue)
                continue
            if cap < self.max_batch and item.parts is not None and not item.future.done():
                if not batch and item.n > cap:  # the large rows run alone, a slice at a time
                    images += self._take_item(self._slice(item, cap), batch, images, now)
                    break
                if batch or item.n > cap:  # nor beside small ones, whose batch they would lengthen
                    break
            queue.popleft()
            images += self._take_item(item, batch, images, now)
            _drop_gone(queue)
        return batch

    def _slice(self, part: _Item, rows: int) -> _Item:
        """Cut the first `rows` rows off a queued large part into an item of their own (the part
        keeps its place with the rest); the slice answers into the part's future."""
        head, rest = slice(None, rows), slice(rows, None)
        piece = _Item(z=part.z[head], labels=_rows(part.labels, head), labels_to=_rows(part.labels_to, head),
                      mix=_rows(part.mix, head), deadline=part.deadline, request_id=part.request_id,
                      enqueued=part.enqueued, future=part.future, render=None, queued=False, parts=part.parts,
                      whole=part, offset=part.offset)
        part.z, part.labels = part.z[rest], _rows(part.labels, rest)
        part.labels_to, part.mix = _rows(part.labels_to, rest), _rows(part.mix, rest)
        part.n -= rows
        part.offset += rows
        self.queued_images -= rows
        return piece

    def _take_item(self, item: _Item, batch: list[_Item], images: int, now: float) -> int:
        """Add a queued item to the batch of `images` images unless its client gave up or it could
        not end in time; the images it added."""
        self._unqueue(item)
        item.taken = True
        if item.future.done():  # the client gave up (timeout or disconnect)
            return 0
        if max(now, self._busy_until) + self.batch_seconds(images + item.n) > item.deadline:
            item.future.set_exception(DeadlineExceeded("its deadline would pass before the forward ended"))
            if item.whole is not None and self._unqueue(item.whole):  # the rest of its part goes too
                self._observe_queue()
            return 0
        batch.append(item)
        return item.n

    async def _run(self, batch: list[_Item]) -> None:
        n = sum(item.n for item in batch)
        size = self._padded_size(n)
        pad = size - n

        def cat(parts: Sequence[torch.Tensor | None], *fill_shape: int, dtype: torch.dtype = torch.float32,
                ) -> torch.Tensor | None:
            tensors = [p for p in parts if p is not None]
            if not tensors:
                return None
            if pad:  # padding rows: their images are computed and dropped
                tensors.append(torch.zeros(pad, *fill_shape, dtype=dtype))
            return torch.cat(tensors) if len(tensors) > 1 else tensors[0]

        z = cat([i.z for i in batch], self.runner.latent_dim)
        labels = cat([i.labels for i in batch], dtype=torch.long)
        labels_to = cat([i.labels_to for i in batch], dtype=torch.long)
        mix = cat([i.mix for i in batch])
        assert z is not None
        loop = asyncio.get_running_loop()
        self._busy_until = max(loop.time(), self._busy_until) + self.batch_seconds(size)
        renders = [(item.n, item.render) for item in batch]
        try:
            calm = self._calm(loop.time())
            results, seconds, spread = await asyncio.wrap_future(
                self.runner.submit(z, labels, labels_to, mix, renders, calm=calm))
        except Exception as exc:
            self._fail(batch, n, exc)
            return
        finally:
            self._flight_images.popleft()
            if not self.in_flight:
                self._busy_until = 0.0
            self._wakeup.set()
        # A batch spread over the cores of idle workers says how fast this queue drains only
        # while they stay idle; the estimate keeps this worker's own share, which a storm or the
        # other workers' clients leave it (storm: admitted on a spread batch's 0.04 s per 64
        # images, the queue then drained at 0.18 s and its last requests missed their deadline).
        if not spread:
            old = self._seconds.get(size)
            self._seconds[size] = seconds if old is None else (1 - EMA_WEIGHT) * old + EMA_WEIGHT * seconds
        if self.observer:
            self.observer.observe_batch(self.name, n, seconds)
            # an engine process counts the times its guard kept lone batches off the cores
            # (service.engine.LoneThreadsGuard); the in-process runner's count stays 0
            holds = self.runner.lone_holds
            if holds > self._lone_holds_seen:
                self.observer.observe_lone_holds(self.name, holds - self._lone_holds_seen)
                self._lone_holds_seen = holds
        self._failed_in_row = 0
        now = loop.time()
        self._calibrate(batch, now)
        self._shed(now)
        for item, (ok, value) in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if not ok:
                item.future.set_exception(value)
            elif item.whole is None and item.offset == 0:
                item.future.set_result(value)
            else:  # a slice of a part, or the rest of one: answered once every row is in
                whole = item.whole or item
                whole.pieces = whole.pieces or []
                whole.pieces.append((item.offset, value))
                if sum(int(v.shape[0]) for _, v in whole.pieces) == whole.offset + whole.n:
                    whole.future.set_result(torch.cat([v for _, v in sorted(whole.pieces, key=lambda p: p[0])]))

    def _break(self, reason: str, exc: BaseException) -> None:
        """Take the model out of service (503, /healthz and /readyz down) once, for `reason`."""
        if self.broken is None:
            self.broken = reason
            log.critical("model %s: device error, taking the process out of service: %s", self.name, self.broken)
            if self.on_device_error is not None:
                self.on_device_error(self.name, exc)

    def _engine_exited(self, exc: EngineDied) -> None:
        """The engine process exited unasked; what is queued fails at its next submit (DeviceFailed)."""
        self._break(f"{type(exc).__name__}: {exc}", exc)
        self._wakeup.set()

    def _fail(self, batch: list[_Item], n: int, exc: BaseException) -> None:
        ids = ", ".join(sorted({i.request_id for i in batch}))
        log.error("model %s: batch of %d images failed; requests %s", self.name, n, ids, exc_info=exc)
        if self.observer:
            self.observer.observe_batch_failure(self.name)
        self._failed_in_row += 1
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        device_error = isinstance(exc, EngineDied) or is_device_error(exc)
        if not device_error and self.failed_batches_limit and self._failed_in_row >= self.failed_batches_limit:
            # an error the device survives (out of memory) that does not go away: a fresh process may do better
            device_error = True
            reason = f"{self._failed_in_row} batches in a row failed, the last with {reason}"
            exc = FailingRepeatedly(reason)
        if device_error:
            self._break(reason, exc)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(
                    DeviceFailed(self.name, self.broken or "") if device_error
                    else BatchFailed(f"generation failed (request {item.request_id})")
                )

