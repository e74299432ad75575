"""Retry pacing: a connection that asks again at once after a 503 gets its next 503 later.

Under a retry storm, clients that ignore Retry-After re-post the moment their 503 arrives, and
the event loops spend their cores answering them: with 200 such clients on two cores, two event
loops took about 0.9 of a core answering about 6,000 refusals a second, taken from the forwards
(BENCHMARKS.md, "Retry storm"). Refusing more cheaply has a floor; refusing less often does not.

So the front remembers, per connection, when it last answered 503 for want of capacity. When the
same connection asks again within `eager_s` of that answer (no backoff at all) and is refused
again, the refusal is held for `pause_s` before it is sent, and each further eager refusal in a
row is held twice as long as the one before, up to `max_pause_s`: the backoff the client did not
do. With a fixed 100 ms, 200 such clients still drew about 1,700 refusals a second, which on a
2-core AVX2 EPYC cost the forwards a third of the images (BENCHMARKS.md). Each hold is drawn
between half and all of its length ("equal jitter"): clients refused together would otherwise
come back together, and each such wave of hundreds of refusals stalled the event loop for
hundreds of milliseconds, which a well-behaved client then waited out. Nothing else changes:

- only refusals are held, never an accepted request, so a client that gets through is not slowed;
- a client that waits at least `eager_s` before asking again (any backoff, any think time) is
  never held, and neither is its first refusal; either resets its streak to the first pause;
- the longest hold stays well below a request's deadline, so the queue that the held clients
  come back to has not drained meanwhile (an idle engine would cost more than the refusals);
- holding is an asyncio timer on the event loop, no thread and no CPU while it waits.

A connection is the ASGI scope's `client` (address and port): behind a proxy that pools upstream
connections, one held refusal can delay another user's refusal on the same upstream connection
by at most `max_pause_s` (the streak is the connection's, not the user's), never a request that
would have been served.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable

# Connections remembered at most: beyond this, entries older than eager_s are dropped (they can
# no longer pace anything), and if every entry is recent, the oldest half goes.
MAX_TRACKED = 8192


class RetryPacer:
    def __init__(self, pause_s: float, eager_s: float, max_pause_s: float | None = None,
                 rng: random.Random | None = None):
        self.pause_s = pause_s
        self._rng = rng or random.Random()
        self.eager_s = eager_s
        self.max_pause_s = pause_s if max_pause_s is None else max(pause_s, max_pause_s)
        # connection -> (when its last 503 was sent (monotonic), eager refusals in a row before it)
        self._last: dict[Hashable, tuple[float, int]] = {}

    def hold_for(self, connection: Hashable | None, now: float | None = None) -> float:
        """Seconds to hold this connection's refusal before sending it (0: send it now)."""
        if self.pause_s <= 0 or connection is None:
            return 0.0
        now = time.monotonic() if now is None else now
        last = self._last.get(connection)
        if last is None or now - last[0] >= self.eager_s:
            return 0.0
        full = min(self.pause_s * 2 ** min(last[1], 32), self.max_pause_s)
        return full * (1.0 - 0.5 * self._rng.random())  # in (full / 2, full]

    def refused(self, connection: Hashable | None, now: float | None = None, held: bool = False) -> None:
        """Record that a refusal was just sent on this connection; `held`: it was held (an eager
        repeat), which lengthens the next hold, while one sent at once starts the streak anew."""
        if self.pause_s <= 0 or connection is None:
            return
        now = time.monotonic() if now is None else now
        streak = self._last[connection][1] + 1 if held and connection in self._last else 0
        self._last[connection] = (now, streak)
        if len(self._last) > MAX_TRACKED:
            self._prune(now)

    def _prune(self, now: float) -> None:
        recent = {c: v for c, v in self._last.items() if now - v[0] < self.eager_s}
        if len(recent) > MAX_TRACKED // 2:
            recent = dict(sorted(recent.items(), key=lambda item: item[1][0])[len(recent) // 2:])
        self._last = recent
