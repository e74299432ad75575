"""Training the ResNet pair on a toy RGB folder: the critic learns, the generator phase uses
g_batch_size, the run exports and loads back unchanged; the two recipes resolve and build."""

from __future__ import annotations

import json

import pytest
import torch

from gancore.networks import build_networks, count_parameters
from gancore.networks.resnet import ResNetCritic, ResNetGenerator
from gancore.sampling import seeded_latents
from gancore.weights import load_generator
from tests.helpers import RGB_FOLDER_CLASSES as CLASSES
from tests.helpers import tiny_resnet_recipe
from training.checkpoint import latest_checkpoint, load_checkpoint
from training.cli import main
from training.data import load_dataset
from training.export import export_run
from training.losses import GANLoss, LossConfig
from training.recipe import RecipeError, apply_overrides, load_recipe


def test_training_steps_lower_the_critic_loss(resnet_run):
    run_dir, _ = resnet_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]
    first, last = records[0], records[-1]
    assert last["d_loss"] < first["d_loss"] - 0.5
    assert last["wdist"] > first["wdist"]  # the critic tells real from fake better
    assert {"gp", "ac_d", "ac_g", "ac_real_acc"} <= set(first)


def test_generator_phase_uses_g_batch_size(resnet_run):
    _, g_batches = resnet_run
    assert g_batches == [16] * 8  # critic batch 8, generator batch 16 (the paper's 64 / 128)


def test_critic_steps_against_a_fixed_generator_lower_its_loss(rgb_root):
    torch.manual_seed(0)
    data = load_dataset("folder", "train", rgb_root, 32, 3)
    G = ResNetGenerator(latent_dim=16, num_classes=4, channels=3, image_size=32, width=8).eval()
    D = ResNetCritic(num_classes=4, channels=3, image_size=32, width=8, aux_classifier=True)
    opt = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.9))
    loss_fn = GANLoss(LossConfig("wgan-gp", gp_lambda=10.0))
    real = data.images.float() / 127.5 - 1
    y = data.labels
    with torch.no_grad():
        fake = G(torch.randn(len(y), 16), y)
    losses = []
    for _ in range(12):
        loss, _ = loss_fn.critic_loss(D, real, fake, y, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses


def test_export_then_load_gives_the_same_images(resnet_run, tmp_path):
    run_dir, _ = resnet_run
    config = export_run(run_dir, tmp_path / "weights" / "tiny-resnet")
    assert config["architecture"] == "resnet" and config["channels"] == 3 and config["image_size"] == 32
    assert config["labels"] == sorted(CLASSES) and config["arch_args"]["width"] == 16
    loaded = load_generator(tmp_path / "weights" / "tiny-resnet")
    assert isinstance(loaded.model, ResNetGenerator) and not loaded.model.training
    state = load_checkpoint(latest_checkpoint(run_dir))
    G = ResNetGenerator(**state["g_args"])
    G.load_state_dict(state["G_ema"])
    G.eval()
    z = seeded_latents(5, 6, 16)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])  # class ids in sorted folder-name order
    with torch.no_grad():
        assert torch.equal(loaded.model(z, labels), G(z, labels))


def test_cli_sample_writes_an_rgb_png(resnet_run, tmp_path):
    from PIL import Image

    run_dir, _ = resnet_run
    export_run(run_dir, tmp_path / "w")
    out = tmp_path / "grid.png"
    assert main(["sample", str(tmp_path / "w"), "--label", "blue-square", "--n", "4", "--nrow", "2",
                 "--seed", "1", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.mode == "RGB"


def test_cifar10_recipe_is_the_papers_setup():
    r = load_recipe("cifar10-resnet-acgan")
    assert (r.arch, r.dataset, r.split, r.image_size, r.channels) == ("resnet", "folder", "train", 32, 3)
    assert (r.latent_dim, r.g_base_width, r.d_base_width) == (128, 128, 128)
    assert (r.loss, r.gp_lambda, r.n_critic, r.lr_g, r.lr_d, r.betas) == ("wgan-gp", 10.0, 5, 2e-4, 2e-4, (0.0, 0.9))
    assert (r.lr_decay, r.batch_size, r.g_batch_size, r.steps) == ("linear", 64, 128, 100_000)
    assert r.aux_classifier and r.conditioning == "none" and r.ac_weight_g == 0.1
    assert r.ac_on_real and not r.ac_on_fake
    G, D, g_args = build_networks(r, num_classes=10, channels=3, image_size=32)
    assert g_args == dict(latent_dim=128, num_classes=10, channels=3, image_size=32, width=128)
    assert (count_parameters(G), count_parameters(D)) == (1_218_307, 1_056_651)


def test_folder_96_recipe_builds_an_unconditional_deeper_pair():
    r = load_recipe("folder-96-wgangp")
    assert not r.conditional and r.image_size == 96 and r.arch == "resnet"
    G, D, g_args = build_networks(r, num_classes=10, channels=3, image_size=96)
    assert g_args["num_classes"] == 0 and D.conditioning == "none" and D.classify is None
    assert len(G.blocks) == 4 and G.start == 6
    with torch.no_grad():
        x = G.eval()(torch.randn(1, 128))
    assert x.shape == (1, 3, 96, 96)


def test_g_batch_size_override_and_validation(rgb_root):
    r = apply_overrides(tiny_resnet_recipe(rgb_root), {"g_batch_size": "32"})
    assert r.g_batch_size == 32
    with pytest.raises(RecipeError, match="g_batch_size"):
        apply_overrides(r, {"g_batch_size": "1"})
