"""ResNet generator and critic: shapes at 32 and 96, conditional batch norm per class, the label
code path the service interpolates through, per-sample critic, parameter counts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gancore.networks import count_parameters
from gancore.networks.resnet import (
    ConditionalBatchNorm2d,
    ResNetCritic,
    ResNetGenerator,
    critic_plan,
    generator_plan,
)


def randomise_running_stats(module: nn.Module) -> None:
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize(("size", "start", "n_up", "n_down"), [(32, 4, 3, 2), (96, 6, 4, 4), (64, 4, 4, 3)])
def test_resolution_plan(size, start, n_up, n_down):
    assert generator_plan(size) == (start, n_up)
    assert critic_plan(size) == n_down


@pytest.mark.parametrize("size", [32, 96])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_shapes(size, num_classes):
    torch.manual_seed(0)
    G = ResNetGenerator(latent_dim=8, num_classes=num_classes, channels=3, image_size=size, width=8)
    D = ResNetCritic(num_classes=num_classes, channels=3, image_size=size, width=8,
                     conditioning="projection" if num_classes else "none", aux_classifier=num_classes > 0)
    z = torch.randn(3, 8)
    labels = torch.tensor([0, 1, 4]) if num_classes else None
    x = G(z, labels)
    assert x.shape == (3, 3, size, size)
    assert x.abs().max() <= 1.0 and x.std() > 0
    score, logits = D(x, labels)
    assert score.shape == (3,)
    assert (logits is None) if num_classes == 0 else (logits.shape == (3, num_classes))
    # Deeper at 96: one more up-block (from 6x6) and two more down-blocks.
    assert len(G.blocks) == {32: 3, 96: 4}[size]
    assert len(D.blocks) == {32: 4, 96: 6}[size]


def test_paper_widths_parameter_counts():
    """Width 128 at 32x32 with 10 classes: the paper's CIFAR-10 generator and AC critic."""
    G = ResNetGenerator(latent_dim=128, num_classes=10, channels=3, image_size=32, width=128)
    D = ResNetCritic(num_classes=10, channels=3, image_size=32, width=128, conditioning="none",
                     aux_classifier=True)
    assert count_parameters(G) == 1_218_307
    assert count_parameters(D) == 1_056_651
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())


def test_cbn_starts_as_plain_batch_norm():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(6, num_classes=3)
    assert torch.equal(cbn.gain, torch.ones(3, 6)) and torch.equal(cbn.bias, torch.zeros(3, 6))
    assert cbn.bn.eps == 1e-5 and cbn.bn.momentum == 0.1 and not cbn.bn.affine
    x = torch.randn(4, 6, 5, 5) * 3 + 1
    emb = F.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    expected = F.batch_norm(x, None, None, training=True, eps=1e-5)
    torch.testing.assert_close(cbn(x, emb), expected)


def test_cbn_gain_and_bias_per_class():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(4, num_classes=2).eval()
    with torch.no_grad():
        cbn.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        cbn.bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 1.5]))
        cbn.gain.copy_(torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.5, -1.0, 1.0, 3.0]]))
        cbn.bias.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 0.0, -1.0, 0.5]]))
    one = torch.randn(1, 4, 3, 3)
    x = one.repeat(3, 1, 1, 1)  # the same input three times
    emb = F.one_hot(torch.tensor([0, 0, 1]), 2).float()
    out = cbn(x, emb)
    assert torch.equal(out[0], out[1])  # same class, same output
    assert not torch.allclose(out[0], out[2])  # other class, other gain and bias
    normed = (one[0] - cbn.bn.running_mean[:, None, None]) / torch.sqrt(cbn.bn.running_var[:, None, None] + 1e-5)
    torch.testing.assert_close(out[0], normed * 2.0)
    torch.testing.assert_close(out[2], normed * cbn.gain[1][:, None, None] + cbn.bias[1][:, None, None])
    # Half of each class code: the average of the two classes' gains and biases.
    mixed = cbn(one, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(mixed[0], 0.5 * (out[0] + out[2]))


def test_unconditional_cbn_is_affine_batch_norm():
    cbn = ConditionalBatchNorm2d(4, num_classes=0)
    assert cbn.bn.affine and not hasattr(cbn, "gain")
    x = torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(cbn(x, None), cbn.bn(x))


def make_generator(num_classes: int = 4) -> ResNetGenerator:
    torch.manual_seed(1)
    G = ResNetGenerator(latent_dim=8, num_classes=num_classes, channels=3, image_size=32, width=8)
    randomise_running_stats(G)
    with torch.no_grad():  # class-dependent gains, as after training
        for m in G.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gain.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return G.eval()


def test_label_code_path_equals_forward_and_interpolates():
    G = make_generator()
    z = torch.randn(2, 8)
    labels = torch.tensor([1, 3])
    emb = G.label_embedding(labels)
    assert torch.equal(emb, F.one_hot(labels, 4).float())
    assert torch.equal(G.forward_embedded(z, emb), G(z, labels))
    # The service's mix at t = 0 is exactly the first class; the midpoint is a third image.
    other = G.label_embedding(torch.tensor([0, 0]))
    assert torch.equal(G.forward_embedded(z, 1.0 * emb + 0.0 * other), G(z, labels))
    mid = G.forward_embedded(z, 0.5 * emb + 0.5 * other)
    assert not torch.allclose(mid, G(z, labels)) and not torch.allclose(mid, G(z, torch.tensor([0, 0])))
    assert not torch.allclose(G(z, torch.tensor([1, 1])), G(z, torch.tensor([2, 2])))


def test_batched_equals_alone_in_eval_mode():
    G = make_generator()
    z = torch.randn(5, 8)
    labels = torch.tensor([0, 1, 2, 3, 1])
    batch = G(z, labels)
    alone = torch.cat([G(z[i : i + 1], labels[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)  # conv kernels vary by batch size


def test_critic_scores_each_sample_alone():
    """No batch statistics in the critic: the gradient penalty needs per-sample scores."""
    torch.manual_seed(2)
    D = ResNetCritic(num_classes=4, channels=3, image_size=32, width=8, conditioning="projection",
                     aux_classifier=True)
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    score, logits = D(x, y)
    for i in range(4):
        s, lg = D(x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(s, score[i : i + 1], rtol=0, atol=1e-5)
        torch.testing.assert_close(lg, logits[i : i + 1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["projection", "channels"])
def test_conditional_critic_depends_on_the_label(conditioning):
    torch.manual_seed(3)
    D = ResNetCritic(num_classes=3, channels=3, image_size=32, width=8, conditioning=conditioning)
    x = torch.randn(1, 3, 32, 32)
    a, _ = D(x, torch.tensor([0]))
    b, _ = D(x, torch.tensor([2]))
    assert not torch.allclose(a, b)


def test_bad_arguments_raise_with_a_message():
    with pytest.raises(ValueError, match="image_size 30"):
        ResNetGenerator(image_size=30)
    with pytest.raises(ValueError, match="batch norm"):
        ResNetCritic(norm="batch")
    with pytest.raises(ValueError, match="num_classes"):
        ResNetCritic(num_classes=0, aux_classifier=True)
    G = ResNetGenerator(latent_dim=8, num_classes=2, width=8)
    with pytest.raises(ValueError, match="pass labels"):
        G(torch.randn(1, 8))
    with pytest.raises(ValueError, match="unconditional"):
        ResNetGenerator(latent_dim=8, num_classes=0, width=8).label_embedding(torch.tensor([0]))
