"""Seeded latents and truncation: the same seed gives the same draw, truncation keeps the
entries in range and replaces only the others, and psi maps to the documented bound."""

from __future__ import annotations

import math

import pytest
import torch

from gancore.sampling import seeded_latents, truncation_threshold


def test_threshold_keeps_the_central_mass_psi() -> None:
    assert truncation_threshold(1.0) == math.inf
    assert truncation_threshold(0.5) == pytest.approx(0.67449, abs=1e-5)
    assert truncation_threshold(0.9) == pytest.approx(1.64485, abs=1e-5)
    # the mass of N(0, 1) within the bound is psi
    for psi in (0.1, 0.3, 0.7, 0.95):
        t = truncation_threshold(psi)
        assert math.erf(t / math.sqrt(2)) == pytest.approx(psi, abs=1e-9)


@pytest.mark.parametrize("psi", [0.0, -0.5, 1.01, float("nan")])
def test_threshold_refuses_psi_outside_0_1(psi: float) -> None:
    with pytest.raises(ValueError, match="truncation"):
        truncation_threshold(psi)


def test_psi_one_is_the_plain_draw() -> None:
    assert torch.equal(seeded_latents(7, 5, 20, truncation=1.0), seeded_latents(7, 5, 20))


@pytest.mark.parametrize("psi", [0.9, 0.5, 0.05, 0.001])
def test_truncation_bounds_and_replaces_only_what_is_out(psi: float) -> None:
    plain = seeded_latents(11, 64, 32)
    cut = seeded_latents(11, 64, 32, truncation=psi)
    bound = truncation_threshold(psi)
    assert cut.shape == plain.shape and cut.dtype == torch.float32
    assert cut.abs().max().item() <= bound
    inside = plain.abs() <= bound
    assert torch.equal(cut[inside], plain[inside])  # BigGAN's resampling: only the outliers move
    assert torch.equal(cut, seeded_latents(11, 64, 32, truncation=psi))  # deterministic


def test_truncated_draws_follow_the_truncated_normal() -> None:
    psi = 0.5
    z = seeded_latents(0, 4000, 64, truncation=psi).double()
    b = truncation_threshold(psi)
    # variance of N(0, 1) truncated to [-b, b]: 1 - 2 b phi(b) / psi
    phi = math.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    assert z.var().item() == pytest.approx(1 - 2 * b * phi / psi, rel=0.02)
    assert z.mean().item() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("psi", [1.0, 0.7, 0.001])
@pytest.mark.parametrize("latent_dim", [1, 7, 20, 128])
def test_rows_do_not_depend_on_how_many_are_drawn(psi: float, latent_dim: int) -> None:
    """A seed's grid of 8 is the first half of its grid of 16, and its single image is the first
    of both: torch's CPU normals differ in the tail of a draw whose length is not a multiple of 16,
    and truncation's draw comes from a stream of its own, not after however many entries the first took."""
    rows = seeded_latents(42, 37, latent_dim, truncation=psi)
    for n in (1, 2, 3, 5, 8, 16, 36):
        assert torch.equal(seeded_latents(42, n, latent_dim, truncation=psi), rows[:n]), n


def test_seeds_at_the_ends_of_the_range_draw_distinct_rows() -> None:
    from gancore.sampling import MAX_SEED

    a, b = seeded_latents(0, 4, 20, truncation=0.5), seeded_latents(MAX_SEED, 4, 20, truncation=0.5)
    assert not torch.equal(a, b)
    assert torch.equal(a[:2], seeded_latents(0, 2, 20, truncation=0.5))
