"""Images per second per API key (GAN_RATE_LIMIT_IMAGES_PER_S): one token bucket per key, shared
by every worker process.

A bucket holds at most one second's worth of images (the burst) and refills at the rate; a
request takes as many tokens as it asks images (n of /generate, steps of /interpolate), or is
refused with 429 and takes none; Retry-After is the time until enough have come back, rounded up
(never more than 1 s, since a request can ask at most a burst). A request larger than the burst
could never pass: it gets 422 naming the field and the burst, so a client does not retry it.

The buckets are fixed slots in one shared file (service/shared.py): a key's slot is found by its
SHA-256 (open addressing, never freed; twice as many slots as GAN_API_KEYS may hold), and a
charge is the lock, two doubles read and written, the unlock. The clock is CLOCK_MONOTONIC,
which every process on the host shares.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.errors import ApiError
from service.settings import MAX_API_KEYS
from service.shared import SharedMemory

SLOTS = 2 * MAX_API_KEYS
SLOT = struct.Struct("<16sdd")  # first 16 bytes of the key's SHA-256, tokens, time of the last update (s)
EMPTY = bytes(16)
FILE_NAME = "gan-ratelimit.bin"


def key_id(digest: bytes) -> str:
    """The short id of a key, for metrics and messages: 8 hex digits of its SHA-256."""
    return digest[:4].hex()


class TokenBuckets:
    """One bucket per key digest; `take` is the whole per-request cost."""

    def __init__(self, rate: float, memory: SharedMemory | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.rate = rate  # images per second
        self.burst = rate  # one second's worth
        self.memory = memory or SharedMemory(SLOTS * SLOT.size)
        self.clock = clock
        self._offsets: dict[bytes, int] = {}  # digest prefix -> its slot's offset (slots never move)

    @classmethod
    def shared(cls, rate: float, folder: Path | None) -> TokenBuckets:
        """Buckets in `folder` (the workers' shared folder), or in this process's memory."""
        return cls(rate, SharedMemory(SLOTS * SLOT.size, None if folder is None else folder / FILE_NAME))

    def take(self, digest: bytes, images: int) -> float:
        """Take `images` tokens from the key's bucket: 0.0 when taken, else the seconds until
        they will be there (and nothing is taken). `images` must not exceed the burst."""
        prefix = digest[:16]
        with self.memory as m:
            now = self.clock()
            offset = self._offsets.get(prefix)
            if offset is None:
                offset = self._slot(m, prefix, now)
            _, tokens, stamp = SLOT.unpack_from(m, offset)
            tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
            if tokens >= images:
                tokens -= images
                wait = 0.0
            else:
                wait = (images - tokens) / self.rate
            SLOT.pack_into(m, offset, prefix, tokens, now)
        return wait

    def tokens(self, digest: bytes) -> float:
        """The key's tokens now (for tests and debugging)."""
        with self.memory as m:
            now = self.clock()
            offset = self._offsets.get(digest[:16]) or self._slot(m, digest[:16], now)
            _, tokens, stamp = SLOT.unpack_from(m, offset)
        return min(self.burst, tokens + max(0.0, now - stamp) * self.rate)

    def _slot(self, m: Any, prefix: bytes, now: float) -> int:
        """The key's slot (under the lock), claimed with a full bucket when it has none yet."""
        index = int.from_bytes(prefix[:4], "little") % SLOTS
        for _ in range(SLOTS):
            offset = index * SLOT.size
            stored = m[offset : offset + 16]
            if stored == EMPTY:
                SLOT.pack_into(m, offset, prefix, self.burst, now)
                break
            if stored == prefix:
                break
            index = (index + 1) % SLOTS
        else:  # only when keys changed between workers' restarts more than SLOTS times over
            raise RuntimeError(f"all {SLOTS} rate-limit slots are taken; restart the service")
        self._offsets[prefix] = offset
        return offset

    def charge(self, digest: bytes, images: int, field: str) -> None:
        """Take `images` or raise the client's error: 422 over the burst, 429 over the rate."""
        if images > self.burst:
            most = math.floor(self.burst)
            raise ApiError(
                422, "invalid_input",
                f"{field}: {images} images in one request can never pass this key's rate limit of "
                f"{self.rate:g} images/s, whose burst holds {most}; ask for at most {most} per request",
                field, burst=most, limit_images_per_s=self.rate,
            )
        wait = self.take(digest, images)
        if wait:
            retry = max(1, math.ceil(wait))
            raise ApiError(
                429, "rate_limited",
                f"key {key_id(digest)} is over its rate limit of {self.rate:g} images/s (burst {self.burst:g}); "
                f"{images} more images fit in {wait:.2f} s: retry after {retry} s",
                headers={"Retry-After": str(retry)}, key_id=key_id(digest), limit_images_per_s=self.rate,
            )

    def close(self) -> None:
        self.memory.close()


def charge_images(state: Any, scope_state: dict[str, Any], images: int, field: str) -> None:
    """Count a request's `images` against its API key, once the count is known and checked.

    Called by the image routes (one line each); a no-op without GAN_API_KEYS (the front then
    sets no key). With GAN_RATE_LIMIT_IMAGES_PER_S it raises 429 (or 422 over the burst); the
    front reads `images` back to count the images served per key.
    """
    digest = scope_state.get("key_digest")
    if digest is None:
        return
    limiter: TokenBuckets | None = state.limiter
    if limiter is not None:
        limiter.charge(digest, images, field)
    scope_state["images"] = images
