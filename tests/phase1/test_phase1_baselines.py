"""The baselines against closed forms and an independent per-prompt implementation."""

import numpy as np
import pytest
import torch

from trainables.phase1.baselines import lstsq_nmse, oracle_nmse, zero_nmse
from trainables.phase1.config import DataConfig
from trainables.phase1.data import sample_prompts


def prompts(n=4000, seed=0, **kw):
    cfg = DataConfig(**kw)
    return sample_prompts(cfg, n, torch.Generator().manual_seed(seed)), cfg


def test_zero_predictor_scores_one():
    p, cfg = prompts(n=20000, n_components=4)
    assert zero_nmse(p, cfg) == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("t", [1, 3, 4])
def test_target_only_least_squares_scores_one_minus_t_over_d(t):
    # Minimum-norm least squares from T < d Gaussian points recovers w's projection on a
    # T-dimensional subspace: expected nMSE = (d - T) / d.
    p, cfg = prompts(n=20000, n_components=2, target_points=t)
    assert lstsq_nmse(p, cfg) == pytest.approx((5 - t) / 5, abs=0.03)


@pytest.mark.parametrize("k", [1, 2, 4, 6, 8])
def test_oracle_is_exact_when_block_and_target_overdetermine_the_weights(k):
    # C + T > d noise-free points pin w down, and only the right block is consistent with them.
    p, cfg = prompts(n=1000, n_components=k)
    assert cfg.block_size + cfg.target_points > cfg.n_dims
    assert oracle_nmse(p, cfg) < 1e-3


def test_oracle_at_k10_matches_the_design_figure():
    p, cfg = prompts(n=4000, n_components=10)
    assert oracle_nmse(p, cfg) == pytest.approx(0.25, abs=0.04)


def _oracle_reference(p, cfg, noise_var):
    """Per-prompt numpy version of the Bayes block-matching oracle (no batching tricks)."""
    k, c, t, d = cfg.n_components, cfg.block_size, cfg.target_points, cfg.n_dims
    errs = []
    for b in range(p.xs.shape[0]):
        x, y = p.xs[b].double().numpy(), p.ys[b].double().numpy() / cfg.scale
        tx, ty = x[k * c : k * c + t], y[k * c : k * c + t]
        logw, preds = [], []
        for j in range(k):
            bx, by = x[j * c : (j + 1) * c], y[j * c : (j + 1) * c]
            cov = np.linalg.inv(np.eye(d) + bx.T @ bx / noise_var)
            mean = cov @ bx.T @ by / noise_var
            s = tx @ cov @ tx.T + noise_var * np.eye(t)
            r = ty - tx @ mean
            logw.append(-0.5 * r @ np.linalg.solve(s, r) - 0.5 * np.linalg.slogdet(s)[1])
            ax, ay = np.vstack([bx, tx]), np.concatenate([by, ty])
            cov2 = np.linalg.inv(np.eye(d) + ax.T @ ax / noise_var)
            preds.append(x[-1] @ (cov2 @ ax.T @ ay / noise_var))
        w = np.exp(np.array(logw) - max(logw))
        pred = (w / w.sum()) @ np.array(preds)
        errs.append((pred - y[-1]) ** 2)
    return float(np.mean(errs) / d)


@pytest.mark.parametrize("k,noise", [(10, 0.0), (3, 0.05), (8, 0.02)])
def test_oracle_matches_an_independent_per_prompt_implementation(k, noise):
    p, cfg = prompts(n=60, seed=5, n_components=k, noise_std=noise)
    noise_var = (noise / cfg.scale) ** 2 + 1e-6
    assert oracle_nmse(p, cfg) == pytest.approx(_oracle_reference(p, cfg, noise_var), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("k", [3, 8, 10])
def test_oracle_never_loses_to_target_only_least_squares(k):
    p, cfg = prompts(n=3000, n_components=k, noise_std=0.02)
    assert oracle_nmse(p, cfg) <= lstsq_nmse(p, cfg) + 0.01
