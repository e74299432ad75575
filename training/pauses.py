"""Step times that leave out the time a process spent stopped (SIGSTOP or Ctrl-Z, then SIGCONT).

SIGSTOP cannot be caught, so a pause is known only by the SIGCONT that ends it. A step during
which one arrived counts as long as the last step without one took, not the pause: a run
stopped for benchmarks otherwise recorded 10,377 s for 135 steps of about 10 s.
"""

from __future__ import annotations

import signal
import time
from typing import Any


class StepClock:
    """Counts SIGCONTs while installed (a context manager, main thread only: elsewhere it counts
    none), and turns each step's measured seconds into the seconds to record."""

    def __init__(self) -> None:
        self.continued = 0  # SIGCONTs received
        self.paused = 0.0  # seconds left out since the last take_paused()
        self._seen = 0
        self._began = 0.0  # perf_counter() at step_began()
        self._last: float | None = None  # the last step no pause fell into
        self._old: Any = None
        self._installed = False

    def __enter__(self) -> StepClock:
        if hasattr(signal, "SIGCONT"):  # not on Windows
            try:
                self._old = signal.signal(signal.SIGCONT, self._count)
                self._installed = True
            except ValueError:  # not the main thread (tests, notebooks): no pauses are seen
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGCONT, self._old)
            self._installed = False

    def _count(self, signum: int, frame: object) -> None:
        self.continued += 1

    def step_began(self) -> None:
        """Call as a step starts: a SIGCONT from here to the step's end marks the step paused."""
        self._seen = self.continued
        self._began = time.perf_counter()

    def step_ended(self) -> float:
        """The seconds to count for the step begun at step_began()."""
        return self.step_seconds(time.perf_counter() - self._began)

    def step_seconds(self, measured: float) -> float:
        """The seconds to count for the step just ended, `measured` by the wall clock."""
        if self.continued != self._seen and self._last is not None:
            self.paused += measured - self._last
            return self._last
        self._last = measured
        return measured

    def take_paused(self) -> float:
        """Seconds left out since the last call (for a rate over a window of steps)."""
        paused, self.paused = self.paused, 0.0
        return paused
