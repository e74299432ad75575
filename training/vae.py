"""A small VAE baseline for the model-comparison study (28x28 or 32x32 images).

The decoder *is* the project's DCGAN generator (`ConditionalGenerator`, tanh output in
[-1, 1]), so a trained VAE exports through the same `save_generator` path with architecture
"dcgan" and every tool that loads generators (evaluate, sample, the service) works unchanged:
sampling is decoder(z) with z ~ N(0, I), exactly as for a GAN.

Objective, per image (summed over pixels and latent dimensions, averaged over the batch):

    loss = reconstruction NLL + beta * KL( q(z|x) || N(0, I) )

with two reconstruction likelihoods on pixels rescaled from [-1, 1] to [0, 1]:
- "bernoulli" (default): the "Bernoulli-like" cross-entropy with grey-level targets t and means
  p = (x_hat + 1) / 2, the usual choice for MNIST-like data. With grey targets its minimum is
  the targets' entropy, not 0 (only binary targets reach 0).
- "gaussian": N(x; x_hat, sigma^2) on the [-1, 1] scale, i.e. ||x - x_hat||^2 / (2 sigma^2);
  the constant log(sigma sqrt(2 pi)) per pixel is dropped.

A VAE run is configured by the same `Recipe` as a GAN (VAE_RECIPE_FIELDS says which fields it
reads) plus a `VAEObjective`. The study's baseline is unconditional; a recipe with
`conditional=True` gives the encoder label channels and the decoder its label embedding (a
CVAE) at no other cost.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gancore.fileio import atomic_write_json
from gancore.files import METRICS_FILE, VAE_CONFIG_FILE
from gancore.networks.dcgan import ConditionalGenerator
from gancore.weights import save_generator
from training.data import ImageSet, load_dataset
from training.pauses import StepClock
from training.recipe import Recipe

RECONSTRUCTIONS = ("bernoulli", "gaussian")

# The Recipe fields a VAE run reads. The decoder is the recipe's generator (g_base_width), the
# encoder takes the critic's width (d_base_width), Adam runs at lr_g with `betas`; one step is
# one batch, so `steps` (or epochs * len(data) / batch_size) counts optimizer steps. The GAN-only
# fields (loss, n_critic, conditioning, ...) are ignored.
VAE_RECIPE_FIELDS = ("name", "dataset", "split", "data_dir", "verify_data", "image_size", "channels",
                     "conditional", "latent_dim", "embed_dim", "g_base_width", "d_base_width", "lr_g",
                     "betas", "steps", "epochs", "batch_size", "seed", "log_every")


@dataclass
class VAEObjective:
    """What a VAE adds to the recipe: its likelihood and the KL weight."""

    recon: str = "bernoulli"  # bernoulli | gaussian
    sigma: float = 0.2  # gaussian decoder std on the [-1, 1] scale (0.1 in [0, 1] pixel units)
    beta: float = 1.0  # weight of the KL term (1: the ELBO)

    def validate(self) -> VAEObjective:
        if self.recon not in RECONSTRUCTIONS:
            raise ValueError(f"recon must be bernoulli or gaussian, got {self.recon!r}")
        if self.sigma <= 0 or self.beta < 0:
            raise ValueError("sigma must be > 0, beta >= 0")
        return self


def vae_settings(recipe: Recipe, objective: VAEObjective) -> dict[str, Any]:
    """What a VAE run used: the recipe fields it reads and its objective (for vae.json and exports)."""
    d = recipe.to_dict()
    return {**{k: d[k] for k in VAE_RECIPE_FIELDS}, **dataclasses.asdict(objective)}


# ---------------------------------------------------------------- modules


class Encoder(nn.Module):
    """images (B, C, H, W) in [-1, 1] (and labels (B,)) -> (mu (B, D), logvar (B, D)).

    Strided convolutions down to about 4x4 (28 -> 14 -> 7 -> 4), as the critic, then one
    linear layer to the posterior's mean and log-variance.
    """

    def __init__(
        self,
        latent_dim: int = 20,  # size of z
        num_classes: int = 0,  # > 0: one-hot label channels joined to the image
        channels: int = 1,  # image channels
        image_size: int = 28,  # input height and width
        base_width: int = 32,  # channels after the first convolution; doubled per step
    ):
        super().__init__()
        self.num_classes = num_classes
        in_ch = channels + num_classes
        layers: list[nn.Module] = []
        width, size = base_width, image_size
        while size > 4:
            layers += [nn.Conv2d(in_ch, width, 4 if size % 2 == 0 else 3, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            size = (size + 1) // 2
            in_ch, width = width, width * 2
        self.features = nn.Sequential(*layers)
        self.to_posterior = nn.Linear(in_ch * size * size, 2 * latent_dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("this encoder is conditional: pass labels")
            onehot = F.one_hot(labels, self.num_classes).to(x.dtype)  # (B, K)
            x = torch.cat([x, onehot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        mu, logvar = self.to_posterior(self.features(x).flatten(1)).chunk(2, dim=1)  # (B, D) each
        return mu, logvar


class VAE(nn.Module):
    """Encoder plus a `ConditionalGenerator` decoder; forward returns (x_hat, mu, logvar)."""

    def __init__(
        self,
        latent_dim: int = 20,  # size of z
        num_classes: int = 0,  # 0: unconditional
        embed_dim: int = 10,  # decoder label embedding (conditional only)
        channels: int = 1,  # image channels
        image_size: int = 28,  # height and width
        g_base_width: int = 64,  # decoder width
        e_base_width: int = 32,  # encoder width
    ):
        super().__init__()
        self.decoder_args = dict(latent_dim=latent_dim, num_classes=num_classes, embed_dim=embed_dim,
                                 channels=channels, image_size=image_size, base_width=g_base_width)
        self.encoder = Encoder(latent_dim, num_classes, channels, image_size, e_base_width)
        self.decoder = ConditionalGenerator(**self.decoder_args)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, noise: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, labels)
        eps = torch.randn(mu.shape, generator=noise, device=mu.device, dtype=mu.dtype)
        z = mu + eps * torch.exp(0.5 * logvar)  # reparameterisation: (B, D)
        return self.decoder(z, labels), mu, logvar


# ---------------------------------------------------------------- objective


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL( N(mu, diag exp(logvar)) || N(0, I) ) per sample, summed over latent dims: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_nll(
    x: torch.Tensor, x_hat: torch.Tensor, kind: str = "bernoulli", sigma: float = 0.2, eps: float = 1e-6
) -> torch.Tensor:
    """Negative log-likelihood of images x under the decoder's x_hat, both in [-1, 1]: (B,)."""
    if kind == "bernoulli":
        t = (x + 1.0) / 2.0  # targets in [0, 1]
        p = ((x_hat + 1.0) / 2.0).clamp(eps, 1.0 - eps)  # tanh can round to exactly +-1
        return -(t * p.log() + (1.0 - t) * (1.0 - p).log()).flatten(1).sum(dim=1)
    if kind == "gaussian":
        return (x - x_hat).pow(2).flatten(1).sum(dim=1) / (2.0 * sigma**2)
    raise ValueError(f"reconstruction must be bernoulli or gaussian, got {kind!r}")


def vae_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kind: str = "bernoulli",
    sigma: float = 0.2,
    beta: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Batch mean of reconstruction NLL + beta * KL (the negative ELBO at beta = 1), and stats."""
    recon = reconstruction_nll(x, x_hat, kind, sigma).mean()
    kl = kl_divergence(mu, logvar).mean()
    loss = recon + beta * kl
    return loss, {"loss": loss.detach(), "recon": recon.detach(), "kl": kl.detach()}


# ---------------------------------------------------------------- training and export


@dataclass
class VAEResult:
    model: VAE
    labels: list[str]
    aliases: dict[str, str]
    dataset: dict[str, Any]
    steps: int
    train_seconds: float


def train_vae(
    recipe: Recipe,
    run_dir: str | Path,
    device: str | torch.device = "cpu",
    dataset: ImageSet | None = None,
    objective: VAEObjective | None = None,
) -> VAEResult:
    """Adam for the recipe's steps (one batch each); logs `metrics.jsonl` (loss, recon, kl) and
    `vae.json` (vae_settings) in run_dir. See VAE_RECIPE_FIELDS for what is read from the recipe.

    Deterministic on CPU for a fixed seed: the initialisation, the batch order (a permutation
    per epoch seeded by (seed, epoch)) and the reparameterisation noise all come from it.
    """
    cfg = recipe.validate()  # short name: read throughout the loop
    objective = (objective or VAEObjective()).validate()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / VAE_CONFIG_FILE, vae_settings(cfg, objective))
    dev = torch.device(device)
    data = dataset or load_dataset(cfg.dataset, cfg.split, cfg.data_dir, cfg.image_size, cfg.channels,
                                   cfg.verify_data)
    num_classes = len(data.class_names)
    torch.manual_seed(cfg.seed)
    model = VAE(cfg.latent_dim, num_classes if cfg.conditional else 0, cfg.embed_dim, data.channels,
                data.image_size, cfg.g_base_width, cfg.d_base_width).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr_g, betas=(cfg.betas[0], cfg.betas[1]))
    noise = torch.Generator(device=dev).manual_seed(cfg.seed * 1000)
    images, targets = data.images.to(dev), data.labels.to(dev)
    n = len(data)
    batch_size = min(cfg.batch_size, n)
    steps = cfg.steps if cfg.steps is not None else max(1, int(cfg.epochs * n / cfg.batch_size))
    per_epoch = max(1, n // batch_size)
    perm = torch.empty(0, dtype=torch.long)
    sums: dict[str, torch.Tensor] = {}
    count, train_seconds = 0, 0.0
    metrics_path = run_dir / METRICS_FILE
    metrics_path.unlink(missing_ok=True)
    model.train()
    with StepClock() as clock:  # leaves out time stopped with SIGSTOP
        for step in range(1, steps + 1):
            clock.step_began()
            epoch, offset = divmod(step - 1, per_epoch)
            if offset == 0:
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch)).to(dev)
            idx = perm[offset * batch_size : (offset + 1) * batch_size]
            x = images[idx].float().div_(127.5).sub_(1.0)  # (B, C, H, W) in [-1, 1]
            y = targets[idx] if cfg.conditional else None
            x_hat, mu, logvar = model(x, y, noise)
            loss, stats = vae_loss(x, x_hat, mu, logvar, objective.recon, objective.sigma, objective.beta)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            train_seconds += clock.step_ended()
            for key, val in stats.items():
                sums[key] = sums.get(key, 0) + val
            count += 1
            if step % cfg.log_every == 0 or step == steps:
                record = {k: round(float(v) / count, 6) for k, v in sums.items()}
                record.update(step=step, train_seconds=round(train_seconds, 2))
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
                sums, count = {}, 0
    model.eval()
    info = {"name": data.name, "checksum": data.checksum, "size": n}
    return VAEResult(model, list(data.class_names), dict(data.aliases), info, steps, train_seconds)


def export_vae(
    result: VAEResult,
    recipe: Recipe,
    folder: str | Path,
    hardware: str = "unknown",
    objective: VAEObjective | None = None,
) -> dict[str, Any]:
    """Save the decoder as a generator weights folder (arch "dcgan"); returns its config."""
    extra = {
        "model": "vae",
        # carries `split`, which evaluate reads to warn about test leakage
        "recipe": vae_settings(recipe, objective or VAEObjective()),
        "steps": result.steps,
        "ema": False,
        "dataset": result.dataset,
        "training": {"hardware": hardware, "train_seconds": round(result.train_seconds, 1),
                     "epochs": round(result.steps * recipe.batch_size / result.dataset["size"], 3)},
        "sampling": "decoder(z), z ~ N(0, I)",
    }
    return save_generator(folder, result.model.decoder, "dcgan", dict(result.model.decoder_args),
                          result.labels, result.aliases, extra)
