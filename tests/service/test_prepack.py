"""GAN_PREPACK: convolutions with their weights packed for oneDNN give the eager model's images at
every batch size, fuse the ReLU that follows them, and fall back to the eager model when packing
fails or changes the images."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from gancore.images import to_uint8
from gancore.networks.dcgan import ConditionalGenerator
from gancore.networks.resnet import ResNetGenerator
from service import prepack as prepack_module
from service.inference import prepare_model
from service.prepack import PackedConv2d, PackedConvTranspose2d, prepack
from tests.helpers import GRAY, png_array, serve

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs torch with oneDNN")


@pytest.fixture(autouse=True)
def no_timing_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny models' packed forwards save almost nothing (0.87-1.05x eager's time measured), so
    the start-up timing gate could drop them on a busy machine: these tests check the rest."""
    monkeypatch.setattr(prepack_module, "MAX_SLOWER", math.inf)


def tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "dcgan-gray":
        model: nn.Module = ConditionalGenerator(latent_dim=8, num_classes=10, embed_dim=4, channels=1,
                                                image_size=28, base_width=32)
    elif kind == "dcgan-rgb":
        model = ConditionalGenerator(latent_dim=8, num_classes=4, embed_dim=4, channels=3, image_size=32,
                                     base_width=32)
    else:
        model = ResNetGenerator(latent_dim=8, num_classes=4, channels=3, image_size=32, width=16)
    with torch.no_grad():  # non-trivial running stats, so that the folded batch norms matter
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return prepare_model(model, "cpu")


def images(model: nn.Module, b: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(b, 8, generator=generator)
    labels = torch.randint(0, 4, (b,), generator=generator)
    with torch.inference_mode():
        return to_uint8(model(z, labels)).to(torch.int16)


@pytest.mark.parametrize("kind", ["dcgan-gray", "dcgan-rgb", "resnet"])
def test_packed_convolutions_give_the_eager_images_at_every_batch_size(kind: str) -> None:
    eager = tiny(kind)
    packed = prepack(eager, lambda m: images(m, 3), kind)
    assert packed is not eager
    convs = [m for m in packed.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert convs == [], "every convolution is packed"
    assert any(isinstance(m, PackedConv2d | PackedConvTranspose2d) for m in packed.modules())
    for b in (1, 2, 5, 16):
        diff = (images(packed, b, seed=b) - images(eager, b, seed=b)).abs()
        # the CPU/GPU agreement tolerance; on the machines measured the pixels were equal
        assert diff.max() <= 2 and (diff == 0).float().mean() > 0.95, (b, diff.max())


def test_the_relu_after_a_convolution_runs_as_its_post_op() -> None:
    packed = prepack(tiny("dcgan-gray"), lambda m: images(m, 2))
    deconvs = [m for m in packed.modules() if isinstance(m, PackedConvTranspose2d)]
    assert len(deconvs) == 2 and all(m.attr == "relu" for m in deconvs)
    assert not any(isinstance(m, nn.ReLU) for m in packed.modules())
    assert packed.to_image.attr == "none"  # the last convolution is followed by tanh, not a ReLU
    # ResNet blocks apply their ReLUs in forward(), not as modules after the convolution: nothing fused
    assert all(m.attr == "none" for m in prepack(tiny("resnet"), lambda m: images(m, 2)).modules()
               if isinstance(m, PackedConv2d))


def assert_eager_kept(caplog: pytest.LogCaptureFixture, warning: str) -> nn.Module:
    """prepack of the tiny gray generator returns the eager model itself, with `warning` logged."""
    eager = tiny("dcgan-gray")
    with caplog.at_level(logging.WARNING, logger=prepack_module.__name__):
        assert prepack(eager, lambda m: images(m, 2), "tiny") is eager
    assert warning in caplog.text
    return eager


def test_packing_that_changes_the_images_keeps_the_eager_model(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    forward = PackedConvTranspose2d.forward
    monkeypatch.setattr(PackedConvTranspose2d, "forward", lambda self, x: forward(self, x) + 0.5)
    assert_eager_kept(caplog, "changed the images")


def test_packing_that_is_slower_keeps_the_eager_model(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    forward = PackedConvTranspose2d.forward

    def slow(self: PackedConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)  # the tiny model's whole eager forward takes about a millisecond
        return forward(self, x)

    monkeypatch.setattr(PackedConvTranspose2d, "forward", slow)
    monkeypatch.setattr(prepack_module, "MAX_SLOWER", 1.25)
    assert_eager_kept(caplog, "slower here")


def test_packing_that_fails_keeps_the_eager_model(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no such oneDNN primitive")

    monkeypatch.setattr(PackedConvTranspose2d, "__init__", refuse)
    eager = assert_eager_kept(caplog, "no such oneDNN primitive")
    assert images(eager, 2).shape == (2, 1, 28, 28)  # the eager model is untouched and serves


@pytest.mark.anyio
@pytest.mark.parametrize("engine", ["thread", "process"])
async def test_the_service_packs_by_default_and_serves_the_same_pixels_either_way(make_settings, engine: str) -> None:  # noqa: ANN001
    body = {"label": "sneaker", "n": 5, "seed": 11, "padding": 0}
    grids, packed = [], []
    for setting in (True, False):
        async with serve(make_settings(prepack=setting, engine=engine)) as s:
            r = await s.client.post("/generate", json=body)
            assert r.status_code == 200, r.text
            grids.append(png_array(r.content).astype(int))
            packed.append(s.app.state.registry.entries[GRAY].runner.prepacked)
    assert packed == [True, False]
    diff = np.abs(grids[0] - grids[1])
    assert diff.max() <= 2 and (diff == 0).mean() > 0.95
