"""The VAE baseline: its objective on hand-made cases, determinism, and an export that loads
as an ordinary generator."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gancore.weights import load_generator
from training.data import load_dataset
from training.recipe import Recipe
from training.vae import VAE, export_vae, kl_divergence, reconstruction_nll, train_vae, vae_loss


def test_kl_of_the_prior_is_zero_and_grows_as_expected():
    zeros = torch.zeros(3, 5)
    assert kl_divergence(zeros, zeros).tolist() == [0.0, 0.0, 0.0]
    # Mean 1, unit variance: 0.5 * mu^2 per dimension.
    assert kl_divergence(torch.ones(2, 5), torch.zeros(2, 5)).tolist() == pytest.approx([2.5, 2.5])
    # Mean 0, variance 2: 0.5 * (2 - 1 - log 2) per dimension.
    logvar = torch.full((1, 4), math.log(2.0))
    assert kl_divergence(torch.zeros(1, 4), logvar).item() == pytest.approx(4 * 0.5 * (1 - math.log(2.0)))


def test_reconstruction_nll_on_known_cases():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert reconstruction_nll(x, x, "gaussian", sigma=0.5).tolist() == [0.0, 0.0]
    # Off by 0.1 everywhere: 784 * 0.01 / (2 * 0.25).
    shifted = reconstruction_nll(x, x + 0.1, "gaussian", sigma=0.5)
    assert shifted.tolist() == pytest.approx([784 * 0.01 / 0.5] * 2, rel=1e-4)
    # Binary targets predicted exactly cost ~0; predicting grey (p = 0.5) costs log 2 a pixel.
    binary = (torch.rand(2, 1, 28, 28) > 0.5).float() * 2 - 1
    assert reconstruction_nll(binary, binary, "bernoulli").max().item() < 1e-3
    grey = reconstruction_nll(binary, torch.zeros_like(binary), "bernoulli")
    assert grey.tolist() == pytest.approx([784 * math.log(2.0)] * 2, rel=1e-5)
    with pytest.raises(ValueError, match="bernoulli or gaussian"):
        reconstruction_nll(x, x, "laplace")


def test_vae_loss_is_batch_mean_of_recon_plus_beta_kl():
    x = torch.zeros(2, 1, 28, 28)
    mu, logvar = torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 2)
    loss, stats = vae_loss(x, x, mu, logvar, "gaussian", sigma=1.0, beta=0.5)
    assert stats["recon"].item() == 0.0
    assert stats["kl"].item() == pytest.approx(1.0)  # (0 + 2) / 2
    assert loss.item() == pytest.approx(0.5)


def _tiny_config(data_dir, **overrides) -> Recipe:
    # The VAE reads the recipe's fields: decoder g_base_width, encoder d_base_width, Adam at lr_g.
    fields = dict(data_dir=str(data_dir), split="train", conditional=False, latent_dim=6, embed_dim=4,
                  g_base_width=32, d_base_width=8, steps=8, batch_size=16, lr_g=2e-3, betas=(0.9, 0.999),
                  log_every=4, seed=3)
    fields.update(overrides)
    return Recipe(**fields)


def test_training_is_seeded_and_lowers_the_loss(idx_data, tmp_path):
    data = load_dataset("fashion-mnist", "train", idx_data)
    a = train_vae(_tiny_config(idx_data, steps=30, log_every=10), tmp_path / "a", dataset=data)
    b = train_vae(_tiny_config(idx_data, steps=30, log_every=10), tmp_path / "b", dataset=data)
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["loss"] == pytest.approx(records[-1]["recon"] + records[-1]["kl"], rel=1e-5)


@pytest.mark.parametrize("conditional", [False, True])
def test_export_loads_as_a_generator(idx_data, tmp_path, conditional):
    cfg = _tiny_config(idx_data, conditional=conditional)
    result = train_vae(cfg, tmp_path / "run", dataset=load_dataset("fashion-mnist", "train", idx_data))
    config = export_vae(result, cfg, tmp_path / "weights")
    assert config["architecture"] == "dcgan" and config["recipe"]["split"] == "train"
    gen = load_generator(tmp_path / "weights")
    assert gen.conditional is conditional and gen.latent_dim == 6 and len(gen.labels) == 10
    z = torch.randn(5, 6)
    labels = torch.arange(5) if conditional else None
    with torch.no_grad():
        out = gen.model(z, labels)
        before = result.model.decoder(z, labels)  # eval mode: same forward before and after saving
    assert out.shape == (5, 1, 28, 28)
    assert out.min() >= -1.0 and out.max() <= 1.0
    assert torch.allclose(out, before)


def test_encoder_shapes_and_conditional_needs_labels():
    vae = VAE(latent_dim=3, num_classes=10, g_base_width=32, e_base_width=4)
    x = torch.zeros(2, 1, 28, 28)
    x_hat, mu, logvar = vae(x, torch.tensor([1, 2]))
    assert x_hat.shape == x.shape and mu.shape == (2, 3) and logvar.shape == (2, 3)
    with pytest.raises(ValueError, match="pass labels"):
        vae(x)


def test_a_pause_with_sigstop_is_not_counted_as_training_time(idx_data, tmp_path, monkeypatch):
    # As in the GAN loop (tests/training/test_loop.py): the third step sleeps 1.5 s, and in the
    # "stopped" run the process then sends itself the SIGCONT that ends a real pause.
    import os
    import signal
    import time

    import training.vae as vae

    real_loss = vae.vae_loss
    seconds = {}
    for continued in (False, True):
        calls = {"n": 0}

        def slow_third_step(*args, calls=calls, continued=continued):
            calls["n"] += 1
            if calls["n"] == 3:
                time.sleep(1.5)
                if continued:
                    os.kill(os.getpid(), signal.SIGCONT)
            return real_loss(*args)

        monkeypatch.setattr(vae, "vae_loss", slow_third_step)
        data = load_dataset("fashion-mnist", "train", idx_data)
        seconds[continued] = train_vae(_tiny_config(idx_data), tmp_path / f"run-{continued}", dataset=data).train_seconds
    assert seconds[False] >= 1.5  # a slow step is training time
    assert 0 < seconds[True] < seconds[False] - 1.0  # a pause is not
