"""Reference predictors at the query, computed on the same validation prompts as the model.

All three work in scaled units (y / scale, so w / scale ~ N(0, I)) and return nMSE, the MSE
at the query divided by scale^2 * d: a zero predictor scores about 1.

- zero:   predict 0.
- lstsq:  minimum-norm least squares on the target block alone (about 1 - T/d for T < d).
- oracle: the Bayes-optimal predictor that knows the generative process: the query's
  component is the target block's, which is one of the K context blocks, each equally likely
  a priori. It weighs every block by the marginal likelihood of the target block given that
  block's data and averages the posterior-mean predictions.
"""

from __future__ import annotations

import math

import torch

from trainables.phase1.config import DataConfig
from trainables.phase1.data import Prompts

# Observation noise of the oracle when the data has none: keeps the Gaussian algebra finite
# while being far below any error the baselines or the model can reach.
_JITTER_VAR = 1e-6


def _split(prompts: Prompts, cfg: DataConfig):
    k, c, t = cfg.n_components, cfg.block_size, cfg.target_points
    xs = prompts.xs.double()
    ys = prompts.ys.double() / cfg.scale
    b, _, d = xs.shape
    ctx_x = xs[:, : k * c].reshape(b, k, c, d)
    ctx_y = ys[:, : k * c].reshape(b, k, c)
    tgt_x, tgt_y = xs[:, k * c : k * c + t], ys[:, k * c : k * c + t]
    return ctx_x, ctx_y, tgt_x, tgt_y, xs[:, -1], ys[:, -1]


def zero_errors(prompts: Prompts, cfg: DataConfig) -> torch.Tensor:
    """Each prompt's squared error at the query over d (their mean is the nMSE)."""
    *_, y_q = _split(prompts, cfg)
    return y_q**2 / cfg.n_dims


def lstsq_errors(prompts: Prompts, cfg: DataConfig) -> torch.Tensor:
    _, _, tgt_x, tgt_y, x_q, y_q = _split(prompts, cfg)
    if cfg.target_points == 0:
        return zero_errors(prompts, cfg)
    w = torch.linalg.pinv(tgt_x) @ tgt_y.unsqueeze(-1)  # [B, d, 1]
    pred = (x_q.unsqueeze(1) @ w).squeeze(-1).squeeze(-1)
    return (pred - y_q) ** 2 / cfg.n_dims


def zero_nmse(prompts: Prompts, cfg: DataConfig) -> float:
    return float(zero_errors(prompts, cfg).mean())


def lstsq_nmse(prompts: Prompts, cfg: DataConfig) -> float:
    return float(lstsq_errors(prompts, cfg).mean())


def _posterior(x: torch.Tensor, y: torch.Tensor, noise_var: float):
    """Posterior N(mean, cov) of w ~ N(0, I) after y = x w + N(0, noise_var)."""
    d = x.shape[-1]
    eye = torch.eye(d, dtype=x.dtype)
    precision = eye + x.transpose(-1, -2) @ x / noise_var
    cov = torch.linalg.inv(precision)
    cov = (cov + cov.transpose(-1, -2)) / 2
    mean = cov @ (x.transpose(-1, -2) @ y.unsqueeze(-1)) / noise_var
    return mean.squeeze(-1), cov


def oracle_nmse(prompts: Prompts, cfg: DataConfig) -> float:
    return float(oracle_errors(prompts, cfg).mean())


def oracle_errors(prompts: Prompts, cfg: DataConfig) -> torch.Tensor:
    ctx_x, ctx_y, tgt_x, tgt_y, x_q, y_q = _split(prompts, cfg)
    noise_var = (cfg.noise_std / cfg.scale) ** 2 + _JITTER_VAR
    b, k, _, d = ctx_x.shape
    t = tgt_x.shape[1]
    mean_k, cov_k = _posterior(ctx_x, ctx_y, noise_var)  # [B, K, d], [B, K, d, d]
    # Marginal likelihood of the target block under each block's posterior.
    tx = tgt_x.unsqueeze(1).expand(b, k, t, d)
    resid = tgt_y.unsqueeze(1) - (tx @ mean_k.unsqueeze(-1)).squeeze(-1)  # [B, K, T]
    cov_t = tx @ cov_k @ tx.transpose(-1, -2) + noise_var * torch.eye(t, dtype=tx.dtype)
    chol = torch.linalg.cholesky(cov_t)
    white = torch.cholesky_solve(resid.unsqueeze(-1), chol).squeeze(-1)
    log_lik = -0.5 * (resid * white).sum(-1) - torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_lik = log_lik - 0.5 * t * math.log(2 * math.pi)
    weight = torch.softmax(log_lik, dim=1)  # [B, K]
    # Posterior mean given block k's data and the target block together.
    both_x = torch.cat([ctx_x, tx], dim=2)
    both_y = torch.cat([ctx_y, tgt_y.unsqueeze(1).expand(b, k, t)], dim=2)
    mean_kt, _ = _posterior(both_x, both_y, noise_var)
    pred = (weight * (mean_kt @ x_q.unsqueeze(-1)).squeeze(-1)).sum(1)
    return (pred - y_q) ** 2 / cfg.n_dims


def all_baselines(prompts: Prompts, cfg: DataConfig) -> dict[str, float]:
    return {
        "baseline/zero_nmse": zero_nmse(prompts, cfg),
        "baseline/lstsq_nmse": lstsq_nmse(prompts, cfg),
        "baseline/oracle_nmse": oracle_nmse(prompts, cfg),
    }
