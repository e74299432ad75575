"""Loss values on hand-made critics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from training.losses import GANLoss, LossConfig, gradient_penalty


class LinearCritic(nn.Module):
    """D(x) = <u, x> + b with a fixed direction u: the gradient is u everywhere."""

    def __init__(self, u: torch.Tensor, logits: torch.Tensor | None = None):
        super().__init__()
        self.u = nn.Parameter(u.clone())
        self.logits = logits

    def forward(self, x, labels=None):
        score = (x * self.u).flatten(1).sum(1)
        logits = None if self.logits is None else self.logits.expand(x.shape[0], -1)
        return score, logits


def unit(shape, seed=0):
    u = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


def test_penalty_is_zero_for_unit_gradient_norm():
    critic = LinearCritic(unit((1, 28, 28)))
    real, fake = torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)
    gp = gradient_penalty(critic, real, fake, None, torch.rand(8, 1, 1, 1))
    assert gp.item() == pytest.approx(0.0, abs=1e-10)


def test_penalty_uses_norm_over_all_pixels_and_channels():
    # ||grad|| = 3 over a 3-channel image: (3 - 1)^2 = 4. A per-channel or per-row norm would differ.
    critic = LinearCritic(3 * unit((3, 8, 8)))
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    gp = gradient_penalty(critic, real, fake, None, torch.rand(4, 1, 1, 1))
    assert gp.item() == pytest.approx(4.0, rel=1e-5)


def test_wgan_gp_critic_loss_value():
    critic = LinearCritic(2 * unit((1, 4, 4), seed=1))
    real, fake = torch.randn(6, 1, 4, 4), torch.randn(6, 1, 4, 4)
    loss = GANLoss(LossConfig("wgan-gp", gp_lambda=10.0))
    value, stats = loss.critic_loss(critic, real, fake, None, torch.Generator().manual_seed(0))
    w = critic(real)[0].mean() - critic(fake)[0].mean()
    assert stats["wdist"].item() == pytest.approx(w.item(), rel=1e-6)
    assert stats["gp"].item() == pytest.approx(1.0, rel=1e-5)  # (2 - 1)^2
    assert value.item() == pytest.approx(-w.item() + 10.0, rel=1e-5)


def test_gan_losses_at_zero_logits():
    critic = LinearCritic(torch.zeros(1, 2, 2))
    x = torch.randn(5, 1, 2, 2)
    for kind in ("gan", "ns-gan"):
        d_loss, _ = GANLoss(LossConfig(kind)).critic_loss(critic, x, x, None)
        assert d_loss.item() == pytest.approx(2 * math.log(2), rel=1e-6)
    g_minimax, _ = GANLoss(LossConfig("gan")).generator_loss(critic, x, None)
    g_ns, _ = GANLoss(LossConfig("ns-gan")).generator_loss(critic, x, None)
    assert g_minimax.item() == pytest.approx(-math.log(2), rel=1e-6)  # log(1 - 1/2)
    assert g_ns.item() == pytest.approx(math.log(2), rel=1e-6)  # -log(1/2)


def test_ac_term_is_cross_entropy_on_raw_logits_with_settable_weights():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    critic = LinearCritic(torch.zeros(1, 2, 2), logits=logits)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    ce = nn.functional.cross_entropy(logits.expand(4, -1), y).item()
    cfg = LossConfig("wgan", ac_weight_d=0.5, ac_weight_g=0.1, ac_on_real=True, ac_on_fake=True)
    d_loss, stats = GANLoss(cfg).critic_loss(critic, x, x, y)
    assert stats["ac_d"].item() == pytest.approx(2 * ce, rel=1e-6)
    assert d_loss.item() == pytest.approx(0.5 * 2 * ce, rel=1e-6)  # wdist 0 for a zero critic
    only_real = GANLoss(LossConfig("wgan", ac_on_real=True, ac_on_fake=False))
    assert only_real.critic_loss(critic, x, x, y)[1]["ac_d"].item() == pytest.approx(ce, rel=1e-6)
    g_loss, g_stats = GANLoss(cfg).generator_loss(critic, x, y)
    assert g_loss.item() == pytest.approx(0.1 * ce, rel=1e-6)


def test_weight_clipping_only_for_wgan():
    critic = LinearCritic(torch.full((1, 2, 2), 5.0))
    GANLoss(LossConfig("wgan-gp")).after_critic_step(critic)
    assert critic.u.max().item() == 5.0
    GANLoss(LossConfig("wgan", clip_value=0.01)).after_critic_step(critic)
    assert critic.u.abs().max().item() == pytest.approx(0.01)
