"""Shapes per architecture and conditioning; what the critic refuses."""

from __future__ import annotations

import pytest
import torch

from gancore.networks import count_parameters
from gancore.networks.dcgan import ConditionalCritic, ConditionalGenerator


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("conditioning,aux", [("projection", False), ("channels", False), ("none", True)])
def test_shapes(size, channels, conditioning, aux):
    g = ConditionalGenerator(latent_dim=8, num_classes=10, embed_dim=4, channels=channels,
                             image_size=size, base_width=32)
    d = ConditionalCritic(num_classes=10, channels=channels, image_size=size, base_width=16,
                          conditioning=conditioning, aux_classifier=aux)
    z, y = torch.randn(3, 8), torch.tensor([0, 4, 9])
    x = g(z, y)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1
    score, logits = d(x, y)
    assert score.shape == (3,)
    assert (logits is not None) == aux and (logits is None or logits.shape == (3, 10))


def test_study_sizes_are_available():
    g = ConditionalGenerator(latent_dim=20, base_width=448)
    d = ConditionalCritic(base_width=128)
    assert 2.4e6 < count_parameters(g) < 2.9e6
    assert 1.7e6 < count_parameters(d) < 2.1e6


def test_label_changes_the_image_and_projection_changes_the_score():
    torch.manual_seed(0)
    g = ConditionalGenerator(latent_dim=8, embed_dim=4, base_width=32).eval()
    d = ConditionalCritic(base_width=16)
    z = torch.randn(1, 8)
    a, b = g(z, torch.tensor([0])), g(z, torch.tensor([1]))
    assert (a - b).abs().max() > 1e-4
    assert (d(a, torch.tensor([0]))[0] - d(a, torch.tensor([1]))[0]).abs().item() > 0


def test_critic_has_no_batch_norm_and_rejects_it():
    d = ConditionalCritic()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    with pytest.raises(ValueError, match="no batch norm"):
        ConditionalCritic(norm="batch")


def test_conditional_modules_require_labels():
    with pytest.raises(ValueError, match="pass labels"):
        ConditionalGenerator(latent_dim=4, base_width=32)(torch.randn(2, 4))
    with pytest.raises(ValueError, match="pass labels"):
        ConditionalCritic(base_width=8)(torch.randn(2, 1, 28, 28))


def test_unsupported_image_size():
    with pytest.raises(ValueError, match="not supported"):
        ConditionalGenerator(image_size=30)
