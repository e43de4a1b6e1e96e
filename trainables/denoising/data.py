"""The signals: x* in {0,1}^d with exactly two ones, observed as x = x* + N(0, noise_variance).

Batches are drawn fresh on the device, vectorised: no dataset is stored, n_train only sets
how many samples make an epoch.
"""

from __future__ import annotations

import math

import torch


def sample_batch(
    batch: int, d: int, noise_variance: float, gen: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, x*): `batch` two-hot signals and their noisy observations, both [batch, d]."""
    # Two distinct positions per sample, uniform over the d(d-1)/2 pairs: the first uniform,
    # the second a uniform non-zero offset from it (so never the same position).
    first = torch.randint(0, d, (batch,), generator=gen, device=device)
    offset = torch.randint(1, d, (batch,), generator=gen, device=device)
    on = torch.stack([first, (first + offset) % d], dim=1)
    clean = torch.zeros(batch, d, device=device).scatter_(1, on, 1.0)
    noise = torch.randn(batch, d, generator=gen, device=device) * math.sqrt(noise_variance)
    return clean + noise, clean
