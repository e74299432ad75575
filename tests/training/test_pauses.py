"""StepClock: a step into which a SIGCONT fell (the end of a SIGSTOP pause) counts as long as the
last step without one; the seconds left out are kept for a rate over a window of steps."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from training.pauses import StepClock


def test_a_continued_step_counts_as_the_last_whole_one():
    with StepClock() as clock:
        clock.step_began()
        assert clock.step_seconds(2.0) == 2.0
        clock.step_began()
        os.kill(os.getpid(), signal.SIGCONT)  # handled before kill returns to Python code
        assert clock.continued == 1
        assert clock.step_seconds(30.0) == 2.0  # 28 s of pause left out
        clock.step_began()
        assert clock.step_seconds(2.5) == 2.5  # the next step, unpaused, counts in full
        assert clock.take_paused() == pytest.approx(28.0)
        assert clock.take_paused() == 0.0


def test_the_first_step_counts_in_full_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGCONT)
    with StepClock() as clock:
        clock.step_began()
        os.kill(os.getpid(), signal.SIGCONT)
        assert clock.step_seconds(5.0) == 5.0  # no earlier step to stand in for it
    assert signal.getsignal(signal.SIGCONT) == before


def test_off_the_main_thread_it_counts_every_second():
    seen = []

    def run():
        with StepClock() as clock:
            clock.step_began()
            seen.append(clock.step_seconds(1.0))
            clock.step_began()
            seen.append(clock.step_seconds(7.0))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [1.0, 7.0]
