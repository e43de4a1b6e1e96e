"""The training loop through the in-process context: reports, artifacts, resume, profiles."""

import numpy as np
import pytest
from helpers import Interrupt, StopAfter

from trainables.common import LocalContext
from trainables.denoising import METRICS, PROFILES, Config
from trainables.denoising.train import train
from tune_jobs.core.config import build_config

TINY = {
    "data.d": 64,
    "model.hidden_size": 32,
    "data.n_train": 2048,
    "data.val_samples": 256,
    "trainer.batch_size": 256,
    "trainer.epochs": 3,
    "trainer.device": "cpu",
    "diagnostics.sample_size": 600,
    "diagnostics.silhouette_sample": 200,
    "diagnostics.gmm_sample": 200,
}


def science(history):
    """Every metric but the timings (wall-clock numbers differ between any two runs)."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/")} for row in history]


def test_one_report_per_epoch_with_every_declared_metric_and_the_scatter(tmp_path):
    ctx = LocalContext(tmp_path)
    train(build_config(Config, TINY), ctx)
    assert [m["step"] for m in ctx.history] == [1, 2, 3]
    assert set(ctx.history[-1]) == set(METRICS)
    last = ctx.history[-1]
    assert last["baseline/zero_loss"] == 32.0
    assert last["val/loss"] < last["baseline/zero_loss"]  # it learns something in 3 tiny epochs
    assert last["val/loss_vs_zero"] == pytest.approx(last["val/loss"] / 32.0)
    assert (tmp_path / "artifacts" / "weight_pairs" / "epoch_003.png").stat().st_size > 5_000
    with np.load(tmp_path / "artifacts" / "weight_pairs.npz") as z:
        assert z["pairs"].shape == (600, 2) and int(z["epoch"]) == 3
        assert float(z["score"]) == pytest.approx(last["blob/score"])


def test_scatter_every_epoch_and_last_only(tmp_path):
    for mode, expected in (("every", ["epoch_001.png", "epoch_002.png", "epoch_003.png"]), ("last", ["epoch_003.png"])):
        ctx = LocalContext(tmp_path / mode)
        train(build_config(Config, TINY, {"diagnostics.scatter": mode}), ctx)
        assert sorted(p.name for p in (tmp_path / mode / "artifacts" / "weight_pairs").iterdir()) == expected


def test_resume_from_a_checkpoint_gives_the_same_numbers_as_never_stopping(tmp_path):
    cfg = build_config(Config, TINY)
    straight = LocalContext(tmp_path / "straight")
    train(cfg, straight)
    with pytest.raises(Interrupt):
        train(cfg, StopAfter(tmp_path / "resumed", checkpoints=1))
    resumed = LocalContext(tmp_path / "resumed")
    train(cfg, resumed)
    assert [m["step"] for m in resumed.history] == [2, 3]
    assert science(resumed.history) == science(straight.history[1:])  # bit for bit on CPU


def test_divergence_stops_the_trial_with_a_clear_reason(tmp_path):
    cfg = build_config(Config, TINY | {"data.noise_variance": 1e300})  # inf inputs, NaN loss
    with pytest.raises(FloatingPointError, match="train/loss became"):
        train(cfg, LocalContext(tmp_path))


def test_without_diagnostics_no_blob_metrics_are_reported(tmp_path):
    ctx = LocalContext(tmp_path)
    train(build_config(Config, TINY, {"diagnostics.enabled": False, "trainer.epochs": 1}), ctx)
    assert not any(k.startswith("blob/") for k in ctx.history[0])


@pytest.mark.parametrize("profile", ["local", "full", "quick"])
def test_each_profile_builds_and_runs_a_few_steps_on_cpu(tmp_path, profile):
    cfg = build_config(Config, PROFILES[profile])
    if profile == "full":  # the seed's reference configuration
        assert (cfg.data.d, cfg.model.hidden_size, cfg.data.n_train, cfg.trainer.epochs) == (1024, 512, 300_000, 20)
        assert (cfg.loss.lambda_on, cfg.loss.decoder_reg, cfg.trainer.lr, cfg.data.noise_variance) == (
            16,
            0.03,
            0.02,
            0.005,
        )
    # The profile's model, diagnostics and batch size, for 3 steps of one epoch.
    short = {"data.n_train": 3 * cfg.trainer.batch_size, "trainer.epochs": 1, "trainer.device": "cpu"}
    ctx = LocalContext(tmp_path)
    train(build_config(Config, PROFILES[profile], short), ctx)
    assert len(ctx.history) == 1 and np.isfinite(ctx.history[0]["blob/score"])


def test_an_epoch_must_hold_a_batch():
    from tune_jobs.core.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.batch_size=4096 is larger than data.n_train=2048"):
        build_config(Config, TINY, {"trainer.batch_size": 4096})
