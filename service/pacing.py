"""Retry pacing: a connection that asks again at once after a 503 gets its next 503 later.

Under a retry storm, clients that ignore Retry-After re-post the moment their 503 arrives, and
the event loops spend their cores answering them: with 200 such clients on two cores, two event
loops took about 0.9 of a core answering about 6,000 refusals a second, taken from the forwards
(BENCHMARKS.md, "Retry storm"). Refusing more cheaply has a floor; refusing less often does not.

So the front remembers, per connection, when it last answered 503 for want of capacity. When the
same connection asks again within `eager_s` of that answer (no backoff at all) and is refused
again, the refusal is held for `pause_s` before it is sent. Nothing else changes:

- only refusals are held, never an accepted request, so a client that gets through is not slowed;
- a client that waits at least `eager_s` before asking again (any backoff, any think time) is
  never held, and neither is its first refusal;
- holding is an asyncio timer on the event loop, no thread and no CPU while it waits.

A connection is the ASGI scope's `client` (address and port): behind a proxy that pools upstream
connections, one held refusal can delay another user's refusal on the same upstream connection
by at most `pause_s`, never a request that would have been served.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

# Connections remembered at most: beyond this, entries older than eager_s are dropped (they can
# no longer pace anything), and if every entry is recent, the oldest half goes.
MAX_TRACKED = 8192


class RetryPacer:
    def __init__(self, pause_s: float, eager_s: float):
        self.pause_s = pause_s
        self.eager_s = eager_s
        self._last: dict[Hashable, float] = {}  # connection -> when its last 503 was sent (monotonic)

    def hold_for(self, connection: Hashable | None, now: float | None = None) -> float:
        """Seconds to hold this connection's refusal before sending it (0: send it now)."""
        if self.pause_s <= 0 or connection is None:
            return 0.0
        now = time.monotonic() if now is None else now
        last = self._last.get(connection)
        return self.pause_s if last is not None and now - last < self.eager_s else 0.0

    def refused(self, connection: Hashable | None, now: float | None = None) -> None:
        """Record that a refusal was just sent on this connection."""
        if self.pause_s <= 0 or connection is None:
            return
        now = time.monotonic() if now is None else now
        self._last[connection] = now
        if len(self._last) > MAX_TRACKED:
            self._prune(now)

    def _prune(self, now: float) -> None:
        recent = {c: t for c, t in self._last.items() if now - t < self.eager_s}
        if len(recent) > MAX_TRACKED // 2:
            recent = dict(sorted(recent.items(), key=lambda item: item[1])[len(recent) // 2:])
        self._last = recent
