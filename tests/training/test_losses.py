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


# ---------------------------------------------------------------- a critic with a varying gradient


class QuadraticCritic(nn.Module):
    """D(x) = 1/2 <a, x*x> + <u, x>: grad_x D = a*x + u, which changes with x, and the penalty's
    derivative with respect to a and u is known in closed form."""

    def __init__(self, a: torch.Tensor, u: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.u = nn.Parameter(u.clone())

    def forward(self, x, labels=None):
        return (0.5 * self.a * x * x + self.u * x).flatten(1).sum(1), None


def _quadratic_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 3)
    a = torch.rand(shape, generator=g) + 0.5
    u = torch.randn(shape, generator=g) * 0.3
    real, fake = torch.randn(5, *shape, generator=g), torch.randn(5, *shape, generator=g)
    alpha = torch.rand(5, 1, 1, 1, generator=g)
    return QuadraticCritic(a, u), real, fake, alpha


def test_penalty_value_and_its_gradient_for_a_quadratic_critic():
    critic, real, fake, alpha = _quadratic_case()
    gp = gradient_penalty(critic, real, fake, None, alpha)
    # Closed form, in float64 and without autograd.
    a, u = critic.a.detach().double(), critic.u.detach().double()
    x = alpha.double() * real.double() + (1 - alpha.double()) * fake.double()  # (B, C, H, W)
    g = a * x + u  # grad_x D at each interpolate
    norm = g.flatten(1).norm(dim=1)  # (B,)
    assert gp.item() == pytest.approx(((norm - 1) ** 2).mean().item(), rel=1e-5)
    # d/dg_j (norm - 1)^2 = 2 (norm - 1) g_j / norm; dg_j/da_j = x_j, dg_j/du_j = 1.
    coeff = (2 * (norm - 1) / norm / len(norm))[:, None, None, None]  # (B, 1, 1, 1)
    grad_a = (coeff * g * x).sum(0)
    grad_u = (coeff * g).sum(0)
    gp.backward()
    assert critic.a.grad is not None and critic.u.grad is not None, "no penalty gradient reaches the critic"
    assert torch.allclose(critic.a.grad.double(), grad_a, rtol=1e-4, atol=1e-6)
    assert torch.allclose(critic.u.grad.double(), grad_u, rtol=1e-4, atol=1e-6)
    assert grad_a.abs().max() > 0.1  # a case where the penalty really moves the critic


def test_wgan_gp_critic_loss_gradient_includes_the_penalty():
    critic, real, fake, _ = _quadratic_case(seed=1)
    loss = GANLoss(LossConfig("wgan-gp", gp_lambda=10.0))
    value, stats = loss.critic_loss(critic, real, fake, None, torch.Generator().manual_seed(3))
    alpha = torch.rand((5, 1, 1, 1), generator=torch.Generator().manual_seed(3))  # the loss's draw
    w = critic(real)[0].mean() - critic(fake)[0].mean()
    gp = gradient_penalty(critic, real, fake, None, alpha)
    assert stats["gp"].item() == pytest.approx(gp.item(), rel=1e-6)
    assert value.item() == pytest.approx((-w + 10.0 * gp).item(), rel=1e-6)
    (expected_a, expected_u) = torch.autograd.grad(-w + 10.0 * gp, [critic.a, critic.u])
    value.backward()
    assert torch.allclose(critic.a.grad, expected_a, rtol=1e-5, atol=1e-6)
    assert torch.allclose(critic.u.grad, expected_u, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- every loss kind with a non-zero critic


def _scored_case():
    """A linear critic with known, unequal scores on real and fake: D(real) = (1, 2, -0.5),
    D(fake) = (-1, 0.5, -3), so a flipped sign or swapped inputs change every loss."""
    u = torch.zeros(1, 1, 2)
    u[0, 0, 0] = 1.0
    critic = LinearCritic(u)
    real = torch.tensor([1.0, 2.0, -0.5])[:, None, None, None].expand(3, 1, 1, 2).clone()
    fake = torch.tensor([-1.0, 0.5, -3.0])[:, None, None, None].expand(3, 1, 1, 2).clone()
    return critic, real, fake, [1.0, 2.0, -0.5], [-1.0, 0.5, -3.0]


def _sigmoid(s: float) -> float:
    return 1 / (1 + math.exp(-s))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


@pytest.mark.parametrize("kind", ["wgan-gp", "wgan", "gan", "ns-gan"])
def test_critic_and_generator_losses_with_a_non_zero_critic(kind):
    critic, real, fake, r, f = _scored_case()
    loss = GANLoss(LossConfig(kind, gp_lambda=0.0))  # the penalty is tested on its own above
    d_loss, stats = loss.critic_loss(critic, real, fake, None, torch.Generator().manual_seed(0))
    g_loss, _ = loss.generator_loss(critic, fake, None)
    if kind in ("wgan-gp", "wgan"):
        assert stats["wdist"].item() == pytest.approx(_mean(r) - _mean(f))  # 1.25 real vs fake
        assert d_loss.item() == pytest.approx(_mean(f) - _mean(r))  # the critic raises real scores
        assert g_loss.item() == pytest.approx(-_mean(f))  # the generator raises fake scores
    else:
        # -log D(real) - log(1 - D(fake)), D = sigmoid(score)
        expected_d = _mean(-math.log(_sigmoid(s)) for s in r) + _mean(-math.log(1 - _sigmoid(s)) for s in f)
        assert d_loss.item() == pytest.approx(expected_d, rel=1e-6)
        assert stats["d_real"].item() == pytest.approx(_mean(_sigmoid(s) for s in r), rel=1e-6)
        assert stats["d_fake"].item() == pytest.approx(_mean(_sigmoid(s) for s in f), rel=1e-6)
        if kind == "gan":  # minimise log(1 - D(G(z)))
            expected_g = _mean(math.log(1 - _sigmoid(s)) for s in f)
        else:  # minimise -log D(G(z))
            expected_g = _mean(-math.log(_sigmoid(s)) for s in f)
        assert g_loss.item() == pytest.approx(expected_g, rel=1e-6)
    # Gradient descent on the generator loss raises the fake scores, for every kind.
    fake_param = fake.clone().requires_grad_(True)
    loss.generator_loss(critic, fake_param, None)[0].backward()
    assert (fake_param.grad[:, 0, 0, 0] < 0).all()
    # Gradient descent on the critic loss raises real scores and lowers fake ones: d/du_0 < 0
    # would mean the critic's weight on the score pixel grows, i.e. sum of real - fake wins.
    critic.zero_grad()
    loss.critic_loss(critic, real, fake, None, torch.Generator().manual_seed(0))[0].backward()
    assert critic.u.grad[0, 0, 0].item() < 0


@pytest.mark.parametrize("kind", ["wgan-gp", "gan", "ns-gan"])
def test_ac_generator_term_with_a_non_zero_critic(kind):
    logits = torch.tensor([[0.5, 2.0, -1.0]])
    critic, real, fake, _, f = _scored_case()
    critic.logits = logits
    y = torch.tensor([2, 1, 0])
    ce = nn.functional.cross_entropy(logits.expand(3, -1), y).item()
    plain = GANLoss(LossConfig(kind, ac_weight_g=0.0)).generator_loss(critic, fake, y)[0].item()
    with_ac, stats = GANLoss(LossConfig(kind, ac_weight_g=0.3)).generator_loss(critic, fake, y)
    assert stats["ac_g"].item() == pytest.approx(ce, rel=1e-6)
    assert with_ac.item() == pytest.approx(plain + 0.3 * ce, rel=1e-6)


class LabelScaledCritic(nn.Module):
    """D(x, y) = (y + 1) <u, x> with a unit u: the gradient norm is y + 1, so a penalty that
    drops the labels (a conditional critic judged unconditionally) gets another value."""

    def __init__(self, u: torch.Tensor):
        super().__init__()
        self.u = nn.Parameter(u.clone())

    def forward(self, x, labels=None):
        scale = 1.0 if labels is None else (labels.float() + 1.0)
        return scale * (x * self.u).flatten(1).sum(1), None


def test_penalty_and_stats_use_the_labels_and_the_loss():
    critic = LabelScaledCritic(unit((1, 4, 4), seed=2))
    real, fake = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 3])  # gradient norms 1, 2, 3, 4 -> (0 + 1 + 4 + 9) / 4
    assert gradient_penalty(critic, real, fake, y, torch.rand(4, 1, 1, 1)).item() == pytest.approx(3.5, rel=1e-5)
    loss = GANLoss(LossConfig("wgan-gp"))
    d_loss, d_stats = loss.critic_loss(critic, real, fake, y, torch.Generator().manual_seed(0))
    assert d_stats["gp"].item() == pytest.approx(3.5, rel=1e-5)
    assert d_stats["d_loss"].item() == d_loss.item()
    # The Wasserstein term scores real and fake with their labels too.
    w = critic(real, y)[0].mean() - critic(fake, y)[0].mean()
    assert d_stats["wdist"].item() == pytest.approx(w.item(), rel=1e-6)
    g_loss, g_stats = loss.generator_loss(critic, fake, y)
    assert g_loss.item() == pytest.approx(-critic(fake, y)[0].mean().item(), rel=1e-6)
    assert g_stats["g_loss"].item() == g_loss.item()


def test_ac_real_accuracy_stat():
    logits = torch.tensor([[2.0, 0.0, -1.0]])  # always predicts class 0
    critic = LinearCritic(torch.zeros(1, 2, 2), logits=logits)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 0, 2])
    _, stats = GANLoss(LossConfig("wgan-gp")).critic_loss(critic, x, x, y)
    assert stats["ac_real_acc"].item() == pytest.approx(0.5)
    # Without labels there is no class term, even from a critic with a class head.
    _, stats = GANLoss(LossConfig("wgan-gp")).critic_loss(critic, x, x, None)
    assert "ac_d" not in stats
    _, g_stats = GANLoss(LossConfig("wgan-gp")).generator_loss(critic, x, None)
    assert "ac_g" not in g_stats
