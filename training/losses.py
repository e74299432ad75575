"""GAN objectives. One class, one method per phase: the critic's step (with its regulariser:
the gradient penalty or weight clipping) and the generator's step, each optionally plus the
AC-GAN class term.

Critic outputs are raw scores (logits for the GAN losses); class heads return raw logits and
cross-entropy applies the softmax once (a double softmax is a known AC-GAN bug).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def gradient_penalty(
    critic: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor | None,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """WGAN-GP: mean over samples of (||grad_x D(x_hat)||_2 - 1)^2 at random interpolates.

    alpha is (B, 1, 1, 1) in [0, 1]. The norm is per sample over all pixels and channels
    (flattened first), and computed in fp32 even when the rest of the step uses autocast.
    """
    x_hat = (alpha * real.float() + (1 - alpha) * fake.float()).requires_grad_(True)
    with torch.autocast(device_type=x_hat.device.type, enabled=False):
        score, _ = critic(x_hat, labels)
        (grad,) = torch.autograd.grad(score.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norm - 1.0) ** 2).mean()


LOSSES = ("wgan-gp", "wgan", "gan", "ns-gan", "hinge")


@dataclass
class LossConfig:
    kind: str = "wgan-gp"  # wgan-gp | wgan | gan | ns-gan | hinge (the recipe's `loss`)
    gp_lambda: float = 10.0
    clip_value: float = 0.01
    ac_weight_d: float = 1.0
    ac_weight_g: float = 0.1
    ac_on_real: bool = True
    ac_on_fake: bool = False

    @classmethod
    def from_recipe(cls, recipe: Any) -> LossConfig:
        """The loss settings of a training recipe: its `loss` and the fields of the same names."""
        values = {f.name: getattr(recipe, f.name) for f in fields(cls) if f.name != "kind"}
        return cls(kind=recipe.loss, **values)


class GANLoss:
    """Critic and generator objectives for one loss kind; returns (loss, stats) where stats
    are detached scalars for logging (kept on the device: no sync per step)."""

    def __init__(self, cfg: LossConfig):
        if cfg.kind not in LOSSES:
            raise ValueError(f"unknown loss {cfg.kind!r}")
        self.cfg = cfg

    def critic_loss(
        self,
        critic: nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        labels: torch.Tensor | None,
        noise: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        # Real and fake in one forward: the critics score each sample on its own (layer norm,
        # never batch norm), so this is the two forwards' arithmetic in half the calls.
        sizes = [real.shape[0], fake.shape[0]]
        both = torch.cat([real, fake.to(real.dtype)])
        scores, logits = critic(both, None if labels is None else torch.cat([labels, labels]))
        real_score, fake_score = scores.float().split(sizes)
        real_logits, fake_logits = (None, None) if logits is None else logits.split(sizes)
        stats: dict[str, torch.Tensor] = {}
        if cfg.kind in ("wgan-gp", "wgan"):
            wdist = real_score.mean() - fake_score.mean()  # Wasserstein estimate
            loss = -wdist
            stats["wdist"] = wdist.detach()
        elif cfg.kind == "hinge":
            # SN-GAN / BigGAN's critic: max(0, 1 - D(x)) + max(0, 1 + D(G(z)))
            loss = F.relu(1.0 - real_score).mean() + F.relu(1.0 + fake_score).mean()
            stats["wdist"] = (real_score.mean() - fake_score.mean()).detach()
        else:
            # -log D(x) - log(1 - D(G(z))) with D = sigmoid(score), in a stable form.
            loss = F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
            stats["d_real"] = torch.sigmoid(real_score).mean().detach()
            stats["d_fake"] = torch.sigmoid(fake_score).mean().detach()
        if cfg.kind == "wgan-gp":
            alpha = torch.rand(
                (real.shape[0], 1, 1, 1), generator=noise, device=real.device, dtype=torch.float32
            )
            gp = gradient_penalty(critic, real, fake, labels, alpha)
            loss = loss + cfg.gp_lambda * gp
            stats["gp"] = gp.detach()
        if real_logits is not None and labels is not None:
            ac = real.new_zeros((), dtype=torch.float32)
            if cfg.ac_on_real:
                ac = ac + F.cross_entropy(real_logits.float(), labels)
                stats["ac_real_acc"] = (real_logits.argmax(1) == labels).float().mean().detach()
            if cfg.ac_on_fake and fake_logits is not None:
                ac = ac + F.cross_entropy(fake_logits.float(), labels)
            loss = loss + cfg.ac_weight_d * ac
            stats["ac_d"] = ac.detach()
        stats["d_loss"] = loss.detach()
        return loss, stats

    def generator_loss(
        self, critic: nn.Module, fake: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        score, logits = critic(fake, labels)
        score = score.float()
        if cfg.kind in ("wgan-gp", "wgan", "hinge"):
            loss = -score.mean()
        elif cfg.kind == "gan":
            loss = -F.softplus(score).mean()  # minimise log(1 - D(G(z))): saturates early
        else:
            loss = F.softplus(-score).mean()  # non-saturating: minimise -log D(G(z))
        stats: dict[str, torch.Tensor] = {}
        if logits is not None and labels is not None:
            ac = F.cross_entropy(logits.float(), labels)
            loss = loss + cfg.ac_weight_g * ac
            stats["ac_g"] = ac.detach()
        stats["g_loss"] = loss.detach()
        return loss, stats

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        """Weight clipping for the original WGAN; nothing for the other losses."""
        if self.cfg.kind == "wgan":
            for p in critic.parameters():
                p.clamp_(-self.cfg.clip_value, self.cfg.clip_value)
