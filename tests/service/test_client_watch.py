"""unless_client_leaves: a request that is answered within WATCH_AFTER_S never starts a watcher
(no task, no receive() call: most requests under load), and one that waits longer notices a
hang-up and gives its work up (ClientGone)."""

from __future__ import annotations

import asyncio

import pytest

from service.errors import ClientGone
from service.routes import common
from service.routes.common import unless_client_leaves

pytestmark = pytest.mark.anyio


class Receive:
    def __init__(self, gone: bool):
        self.gone = gone
        self.calls = 0

    async def __call__(self) -> dict[str, str]:
        self.calls += 1
        if self.gone:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()  # a client that stays: nothing more arrives
        raise AssertionError("unreachable")


async def test_a_fast_answer_never_watches_the_client() -> None:
    receive = Receive(gone=True)  # even a client already gone: the answer is ready first

    async def work() -> str:
        await asyncio.sleep(0)  # answered within the same few loop iterations
        return "image"

    tasks_before = len(asyncio.all_tasks())
    assert await unless_client_leaves(work(), receive) == "image"
    assert receive.calls == 0 and len(asyncio.all_tasks()) == tasks_before


async def test_a_client_that_leaves_during_a_long_wait_cancels_the_work() -> None:
    receive = Receive(gone=True)
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "image"

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ClientGone):
        await asyncio.wait_for(unless_client_leaves(work(), receive), 30)
    assert cancelled.is_set() and receive.calls == 1
    assert loop.time() - started >= common.WATCH_AFTER_S * 0.9  # noticed once watching began


async def test_a_client_that_stays_gets_its_answer_after_a_long_wait() -> None:
    receive = Receive(gone=False)

    async def work() -> str:
        await asyncio.sleep(common.WATCH_AFTER_S * 2)
        return "image"

    assert await unless_client_leaves(work(), receive) == "image"
    assert receive.calls == 1
    await asyncio.sleep(0)  # the watcher's cancellation runs
    assert all(t.done() or t is asyncio.current_task() for t in asyncio.all_tasks()
               if t.get_coro().__name__ == "_disconnect")
