"""The CUDA paths' bookkeeping that runs without a GPU: each live Runner gets a stream of its own
from torch's fixed pool, and a CUDA graph is replayed only with the inputs it captured."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import pytest
import torch

from service.inference import StreamClaims, _Graph


@dataclass(frozen=True)
class FakeStream:
    device: torch.device
    stream_id: int


def pool_of(size: int):  # noqa: ANN201
    """torch.cuda.Stream's behaviour: a fixed pool per device, handed out in turn."""
    turn = itertools.count()
    return lambda device: FakeStream(device, next(turn) % size)


def test_live_runners_never_share_a_pool_stream() -> None:
    claims = StreamClaims(pool_of(4), pool_size=4)
    cuda = torch.device("cuda", 0)
    held = [claims.claim(cuda) for _ in range(3)]
    assert len({s.stream_id for s in held}) == 3
    claims.release(held[1])  # a reloaded model's old Runner closed
    # the pool's turn comes to stream 3, then 0 (held), 1 (free again): never a held one
    fresh = [claims.claim(cuda), claims.claim(cuda)]
    assert {s.stream_id for s in fresh} == {3, held[1].stream_id}
    assert len({s.stream_id for s in held[:1] + held[2:] + fresh}) == 4


def test_a_full_pool_shares_a_stream_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    claims = StreamClaims(pool_of(2), pool_size=2)
    cuda = torch.device("cuda", 0)
    claims.claim(cuda), claims.claim(cuda)
    with caplog.at_level(logging.WARNING):
        claims.claim(cuda)
    assert "two share one" in caplog.text


def test_streams_of_two_devices_are_claimed_apart() -> None:
    claims = StreamClaims(pool_of(1), pool_size=1)
    first, second = claims.claim(torch.device("cuda", 0)), claims.claim(torch.device("cuda", 1))
    assert first.stream_id == second.stream_id and first.device != second.device


def test_a_graph_of_the_mixing_path_needs_labels_to_and_mix() -> None:
    """A graph captured with labels_to and mix replayed without them would draw with the last
    batch's: it does not fit, and replaying it anyway raises before anything runs."""
    z, labels, mix = torch.zeros(4, 20), torch.zeros(4, dtype=torch.long), torch.zeros(4)
    mixing = _Graph(graph=None, inputs=[z.clone(), labels.clone(), labels.clone(), mix.clone()],  # type: ignore[arg-type]
                    output=torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    assert mixing.fits(z, labels, labels, mix)
    assert not mixing.fits(z, labels, None, None)
    with pytest.raises(ValueError, match="without them"):
        mixing.replay(z, labels, None, None)
    plain = _Graph(graph=None, inputs=[z.clone(), labels.clone(), None, None],  # type: ignore[arg-type]
                   output=torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    assert plain.fits(z, labels, None, None) and plain.fits(z, labels, labels, mix)  # extra inputs: not used
