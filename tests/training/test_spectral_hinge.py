"""Spectral normalisation in the critic and the hinge loss (SN-GAN): each layer's largest
singular value is held at 1, the hinge terms are the textbook ones, and a run with them trains,
resumes exactly and exports like any other."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.parametrize import is_parametrized

from gancore.networks.dcgan import ConditionalCritic
from gancore.networks.resnet import ResNetCritic
from tests.helpers import tiny_recipe
from training.loop import train
from training.losses import GANLoss, LossConfig


@pytest.mark.parametrize("critic", [
    lambda: ConditionalCritic(num_classes=10, channels=1, image_size=28, base_width=16, norm="spectral"),
    lambda: ResNetCritic(num_classes=10, channels=3, image_size=32, width=16, conditioning="projection",
                         norm="spectral"),
])
def test_every_layer_is_spectrally_normalised(critic) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    D = critic()
    layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))]
    assert layers and all(is_parametrized(m, "weight") for m in layers)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in D.modules())  # no layer norm beside it
    D.train()
    x, y = torch.randn(4, *((1, 28, 28) if isinstance(D, ConditionalCritic) else (3, 32, 32))), torch.arange(4)
    for _ in range(30):  # power iterations run in training forwards
        D(x, y)
    D.eval()
    for m in layers:
        w = m.weight.detach().flatten(1) if not isinstance(m, torch.nn.Embedding) else m.weight.detach()
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_hinge_loss_on_hand_made_scores() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x, labels=None):  # noqa: ANN001, ANN201 - the score is the input's first pixel
            return x.flatten(1)[:, 0], None

    real = torch.tensor([2.0, 0.5]).view(2, 1, 1, 1)
    fake = torch.tensor([-3.0, 0.0]).view(2, 1, 1, 1)
    d_loss, stats = GANLoss(LossConfig("hinge")).critic_loss(Fixed(), real, fake, None)
    # real: max(0, 1 - 2) = 0, max(0, 1 - 0.5) = 0.5; fake: max(0, 1 - 3) = 0, max(0, 1 + 0) = 1
    assert d_loss.item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert "gp" not in stats
    g_loss, _ = GANLoss(LossConfig("hinge")).generator_loss(Fixed(), fake, None)
    assert g_loss.item() == pytest.approx(1.5)  # -mean(D(G(z)))


def test_a_spectral_hinge_run_trains_and_resumes_exactly(tmp_path, idx_dir) -> None:  # noqa: ANN001
    recipe = tiny_recipe(idx_dir, loss="hinge", d_norm="spectral", steps=4)
    straight = train(recipe, tmp_path / "straight", device="cpu", progress=False)
    train(recipe, tmp_path / "split", device="cpu", progress=False, stop_after=2)
    resumed = train(recipe, tmp_path / "split", device="cpu", progress=False, resume=True)
    assert straight.step == resumed.step == 4
    a = torch.load(sorted((tmp_path / "straight" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    b = torch.load(sorted((tmp_path / "split" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert any("parametrizations" in k for k in a["D"])  # the critic really was spectrally normalised
