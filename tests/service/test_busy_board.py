"""The engines' busy board (service/shared.py): an engine learns how many others are in a
forward, so that a lone batch may use every core's thread."""

from __future__ import annotations

import os
import time
from pathlib import Path

from service.shared import BusyBoard


def test_each_engine_sees_the_others_busy(tmp_path: Path) -> None:
    path = tmp_path / "gan-busy.bin"
    first, second = BusyBoard(path, pid=os.getpid()), BusyBoard(path, pid=os.getppid())
    assert first.offset != second.offset
    assert first.start() == 0  # alone: take every core
    assert second.start() == 1  # the first is mid-forward
    first.stop()
    assert first.start() == 1  # the second still is
    second.stop()
    first.stop()
    assert second.start() == 1  # the first ended a moment ago: engines taking turns keep their share
    second.stop()
    time.sleep(BusyBoard.RECENT_S + 0.01)
    assert first.start() == 0  # a while later the first is alone again
    first.stop()


def test_a_stale_or_dead_slot_does_not_count(tmp_path: Path) -> None:
    path = tmp_path / "gan-busy.bin"
    first, second = BusyBoard(path, pid=os.getpid()), BusyBoard(path, pid=os.getppid())
    # an engine that died mid-forward leaves its start time behind: after STALE_S it is idle
    BusyBoard.SLOT.pack_into(first.memory.map, first.offset, first.pid, time.monotonic() - BusyBoard.STALE_S - 1, 0.0)
    assert second.start() == 0
    second.close()
    # a slot whose pid is gone is claimed again by the next engine
    BusyBoard.SLOT.pack_into(first.memory.map, second.offset, 2**31 - 7, 0.0, 0.0)  # a pid that does not exist
    third = BusyBoard(path, pid=os.getppid())
    assert third.offset == second.offset
