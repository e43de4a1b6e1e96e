"""Prompts for in-context mixture regression, drawn in one vectorised call per batch.

A prompt holds K context blocks of C points, block b drawn from component perm[b] (a random
order), then a target block of T points and one query, both from one component chosen
uniformly. Weights are w_k ~ N(0, scale^2 I): the scale is applied once, here, and y stays
in its own units; the model is fed y / scale (unit variance) by the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainables.phase1.config import DataConfig


@dataclass
class Prompts:
    xs: torch.Tensor  # [B, N, d]
    ys: torch.Tensor  # [B, N], original units (variance scale^2 * d without noise)
    component: torch.Tensor  # [B, N] index of the component each point was drawn from
    weights: torch.Tensor  # [B, K, d] the components' weight vectors

    @property
    def query_component(self) -> torch.Tensor:
        return self.component[:, -1]


def sample_prompts(cfg: DataConfig, batch: int, gen: torch.Generator, active_dims: int | None = None) -> Prompts:
    """Draw `batch` prompts on the CPU from `gen` (whose state is part of a checkpoint).

    `active_dims` < d zeroes the remaining coordinates of every x (the training curriculum);
    the random draws are the same either way, so the stream does not depend on it.
    """
    k, d, c, t = cfg.n_components, cfg.n_dims, cfg.block_size, cfg.target_points
    n = cfg.n_points
    weights = cfg.scale * torch.randn(batch, k, d, generator=gen)
    order = torch.argsort(torch.rand(batch, k, generator=gen), dim=1)
    target = torch.randint(0, k, (batch, 1), generator=gen)
    component = torch.cat([order.repeat_interleave(c, dim=1), target.expand(batch, t + 1)], dim=1)
    xs = torch.randn(batch, n, d, generator=gen)
    if active_dims is not None and active_dims < d:
        xs[..., active_dims:] = 0.0
    w_point = torch.gather(weights, 1, component.unsqueeze(-1).expand(batch, n, d))
    ys = (xs * w_point).sum(-1)
    if cfg.noise_std > 0:
        ys = ys + cfg.noise_std * torch.randn(batch, n, generator=gen)
    return Prompts(xs=xs, ys=ys, component=component, weights=weights)


def sample_eval_prompts(cfg: DataConfig, batch: int, seed: int) -> Prompts:
    """Validation prompts from the same distribution, drawn so that every K shares its rulers.

    What a prompt's target block and query are made of (the target component's weights, the
    target points and the query point, and their noise) comes from a stream of its own, seeded
    by `seed` alone, and is the same for every K, block size and component order; the context
    blocks, the other components and where the target's block sits come from a second stream.
    So the zero predictor and least squares on the target block score the same prompts at
    every K, and differences between K are the model's, not the evaluation set's.
    """
    k, d, c, t = cfg.n_components, cfg.n_dims, cfg.block_size, cfg.target_points
    shared = torch.Generator().manual_seed(seed)
    w_target = cfg.scale * torch.randn(batch, d, generator=shared)
    x_tail = torch.randn(batch, t + 1, d, generator=shared)  # the target points, then the query
    noise_tail = torch.randn(batch, t + 1, generator=shared)
    rest = torch.Generator().manual_seed(seed + 7919 * k + 104729 * c)
    weights = cfg.scale * torch.randn(batch, k, d, generator=rest)
    order = torch.argsort(torch.rand(batch, k, generator=rest), dim=1)
    target = torch.randint(0, k, (batch,), generator=rest)
    weights[torch.arange(batch), target] = w_target
    x_ctx = torch.randn(batch, k * c, d, generator=rest)
    noise_ctx = torch.randn(batch, k * c, generator=rest)
    component = torch.cat([order.repeat_interleave(c, dim=1), target[:, None].expand(batch, t + 1)], dim=1)
    xs = torch.cat([x_ctx, x_tail], dim=1)
    w_point = torch.gather(weights, 1, component.unsqueeze(-1).expand(batch, k * c + t + 1, d))
    ys = (xs * w_point).sum(-1)
    if cfg.noise_std > 0:
        ys = ys + cfg.noise_std * torch.cat([noise_ctx, noise_tail], dim=1)
    return Prompts(xs=xs, ys=ys, component=component, weights=weights)
