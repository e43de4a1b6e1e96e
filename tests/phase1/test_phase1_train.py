"""The training loop through the plain in-process context: learning, resume, both profiles."""

import pytest
import torch
from helpers import Interrupt, StopAfter

from trainables.common import LocalContext
from trainables.phase1 import PROFILES, Config
from trainables.phase1.train import train
from tune_jobs.core.config import build_config

TINY = {
    "model.n_embd": 16,
    "model.n_layer": 1,
    "model.n_head": 2,
    "trainer.batch_size": 8,
    "trainer.steps": 40,
    "trainer.eval_every": 10,
    "trainer.checkpoint_every": 20,
    "trainer.eval_prompts": 32,
    "trainer.final_eval_prompts": 64,
    "trainer.warmup_steps": 5,
    "data.n_components": 2,
}


def test_reports_every_eval_and_the_baselines(tmp_path):
    ctx = LocalContext(tmp_path)
    train(build_config(Config, TINY), ctx)
    assert [m["step"] for m in ctx.history] == [0, 10, 20, 30, 39]
    last = ctx.history[-1]
    baselines = {"baseline/zero_nmse", "baseline/lstsq_nmse", "baseline/oracle_nmse"}
    assert set(last) >= {"train/loss", "val/nmse"} | baselines
    # The baselines are constants of the trial: at its first and last evaluation only, the same.
    assert [m["step"] for m in ctx.history if baselines <= set(m)] == [0, 39]
    assert all(ctx.history[0][k] == last[k] for k in baselines)
    assert all(not baselines & set(m) and "val/nmse_rel_oracle" in m for m in ctx.history[1:-1])
    assert last["val/nmse_rel_oracle"] == pytest.approx(last["val/nmse"] - last["baseline/oracle_nmse"])
    # The last step also judges the model on the large held-out set, with standard errors.
    assert all(not any(k.startswith("final/") for k in m) for m in ctx.history[:-1])
    assert last["final/nmse_minus_lstsq"] == pytest.approx(last["final/nmse"] - last["final/lstsq_nmse"])
    assert 0 < last["final/nmse_se"] < last["final/nmse"] and last["final/nmse_minus_lstsq_se"] > 0
    assert ctx.checkpoint_path.exists()


def _straight_and_resumed(cfg, tmp_path) -> tuple[LocalContext, LocalContext]:
    """The same run straight through, and stopped after its second checkpoint then resumed."""
    straight = LocalContext(tmp_path / "straight")
    train(cfg, straight)
    with pytest.raises(Interrupt):
        train(cfg, StopAfter(tmp_path / "resumed", checkpoints=2))  # checkpoints at steps 0, 20
    resumed = LocalContext(tmp_path / "resumed")
    train(cfg, resumed)
    return straight, resumed


def test_resume_from_a_checkpoint_gives_the_same_numbers_as_never_stopping(tmp_path):
    straight, resumed = _straight_and_resumed(build_config(Config, TINY), tmp_path)
    assert resumed.history[0]["step"] == 30
    assert resumed.history == straight.history[-len(resumed.history) :]  # bit for bit on CPU


def test_the_learning_rate_warms_up_then_stays_or_follows_a_cosine_to_lr_final():
    from trainables.phase1.train import lr_factor

    const = build_config(Config, TINY)  # 40 steps, 5 of warm-up
    assert [lr_factor(const, s) for s in (0, 4, 5, 39)] == [0.2, 1.0, 1.0, 1.0]
    cos = build_config(Config, TINY | {"trainer.lr_schedule": "cosine", "trainer.lr_final": 0.1})
    assert [lr_factor(cos, s) for s in (0, 4, 5)] == [0.2, 1.0, 1.0]
    assert lr_factor(cos, 22) == pytest.approx(0.55)  # half way from the warm-up's end to the last step
    assert lr_factor(cos, 39) == pytest.approx(0.1)
    factors = [lr_factor(cos, s) for s in range(5, 40)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_a_cosine_schedule_resumes_to_the_same_numbers(tmp_path):
    straight, resumed = _straight_and_resumed(build_config(Config, TINY | {"trainer.lr_schedule": "cosine"}), tmp_path)
    assert resumed.history == straight.history[-len(resumed.history) :]
    constant = LocalContext(tmp_path / "constant")
    train(build_config(Config, TINY), constant)
    assert constant.history[-1]["val/nmse"] != straight.history[-1]["val/nmse"]  # the schedule is in use


def test_nan_loss_stops_the_trial_with_a_clear_reason(tmp_path):
    cfg = build_config(Config, TINY | {"trainer.lr": 1.0, "trainer.warmup_steps": 0, "data.noise_std": 1e25})
    with pytest.raises(FloatingPointError, match="train/loss became"):
        train(cfg, LocalContext(tmp_path))


@pytest.mark.parametrize("profile", ["local", "full"])
def test_each_profile_builds_and_runs_a_few_steps_on_cpu(tmp_path, profile):
    short = {
        "trainer.steps": 3,
        "trainer.eval_every": 1,
        "trainer.checkpoint_every": 1,
        "trainer.eval_prompts": 16,
        "trainer.final_eval_prompts": 16,
        "trainer.batch_size": 4,
        "trainer.device": "cpu",
    }
    cfg = build_config(Config, {"data.n_components": 10}, PROFILES[profile], short)
    if profile == "full":
        assert (cfg.model.n_embd, cfg.model.n_layer, cfg.model.n_head) == (256, 12, 8)
    ctx = LocalContext(tmp_path)
    train(cfg, ctx)
    assert [m["step"] for m in ctx.history] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(m["val/nmse"])) for m in ctx.history)


def test_the_loss_covers_every_position_the_target_block_and_query_or_the_query_alone():
    from trainables.phase1.data import sample_prompts
    from trainables.phase1.train import _loss, build_model

    cfg = build_config(Config, TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    prompts = sample_prompts(cfg.data, 4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        err = (model(prompts.xs, prompts.ys / cfg.data.scale) - prompts.ys / cfg.data.scale) ** 2
        tail = cfg.data.target_points + 1
        for positions, expected in [
            ("all", err.mean()),
            ("target", err[:, -tail:].mean()),
            ("query", err[:, -1].mean()),
        ]:
            cfg.trainer.loss_positions = positions
            assert _loss(model, prompts, cfg, torch.device("cpu")) == pytest.approx(expected.item(), rel=1e-6)
