"""The two-hot signals: exactly two ones per sample, the noise at its configured level."""

import math

import pytest
import torch

from trainables.denoising.data import sample_batch


def test_every_clean_signal_has_exactly_two_ones_at_distinct_positions():
    x, clean = sample_batch(20_000, 16, 0.0, torch.Generator().manual_seed(0))
    assert clean.shape == (20_000, 16)
    assert set(clean.unique().tolist()) == {0.0, 1.0}
    assert (clean.sum(dim=1) == 2).all()
    assert torch.equal(x, clean)  # no noise asked, none added


def test_positions_are_uniform_over_coordinates():
    _, clean = sample_batch(64_000, 8, 0.0, torch.Generator().manual_seed(1))
    share = clean.sum(dim=0) / clean.sum()
    assert torch.allclose(share, torch.full((8,), 1 / 8), atol=0.01)


@pytest.mark.parametrize("variance", [0.005, 0.1])
def test_noise_has_the_configured_variance_and_zero_mean(variance):
    x, clean = sample_batch(4096, 256, variance, torch.Generator().manual_seed(2))
    noise = x - clean
    assert noise.mean().abs() < 3 * math.sqrt(variance / noise.numel())
    assert noise.var().item() == pytest.approx(variance, rel=0.02)


def test_batches_are_fresh_and_reproducible_from_the_seed():
    a = sample_batch(32, 64, 0.01, torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(3)
    b, c = sample_batch(32, 64, 0.01, gen), sample_batch(32, 64, 0.01, gen)
    assert torch.equal(a[0], b[0]) and not torch.equal(b[1], c[1])
