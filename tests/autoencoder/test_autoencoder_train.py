"""The autoencoder's loop through the in-process context: files per trial, resume, profiles."""

import csv
import re

import pytest
import torch
from helpers import Interrupt, StopAfter

from trainables.autoencoder import PROFILES, Config
from trainables.autoencoder.train import log_line, train
from trainables.common import LocalContext
from tune_jobs.core.config import build_config

LINE = re.compile(
    r"^\[(\d+)/(\d+)\] val_loss=(\d+\.\d{3}) rec_tokens=(\d+\.\d{3}) rec_globals=(\d+\.\d{3})"
    r" total_loss=\d+\.\d{3} train_total_loss=\d+\.\d{3}( perplexity=\d+\.\d code_usage=\d\.\d\d)?$"
)


def tiny(tmp_path, **kw):
    settings = {
        "data.cache_dir": str(tmp_path / "cache"),
        "data.n_train": 400,
        "data.n_val": 100,
        "model.hidden": 16,
        "vq.codebook_size": 16,
        "trainer.batch_size": 64,
        "trainer.epochs": 3,
    }
    return build_config(Config, settings | kw)


def test_log_line_reads_like_the_seed():
    m = {"step": 20, "val/loss": 0.1234, "val/rec_tokens": 0.1, "val/rec_globals": 0.0234}
    m |= {"val/total_loss": 0.2, "train/total_loss": 0.3}
    assert log_line(m, 20).startswith("[20/20] val_loss=0.123 rec_tokens=0.100 rec_globals=0.023 ")
    assert LINE.match(log_line(m, 20))


@pytest.mark.parametrize("latent", ["linear", "vq"])
def test_every_epoch_is_reported_and_the_trial_files_are_written(tmp_path, latent):
    ctx = LocalContext(tmp_path / "trial")
    train(tiny(tmp_path, **{"model.latent_space": latent, "model.globals_beta": 10.0}), ctx)
    assert [m["step"] for m in ctx.history] == [1, 2, 3]
    last = ctx.history[-1]
    assert set(last) >= {"train/total_loss", "train/rec_tokens", "train/rec_globals", "val/loss", "val/total_loss"}
    assert last["val/loss"] == pytest.approx(last["val/rec_tokens"] + last["val/rec_globals"])
    assert ("vq/perplexity" in last) == ("vq/code_usage" in last) == (latent == "vq")
    art = ctx.artifact_dir
    lines = (art / "run.log").read_text().splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines), lines
    match = LINE.match(lines[-1])
    assert match.group(1, 2) == ("3", "3")
    assert float(match.group(3)) == pytest.approx(last["val/loss"], abs=6e-4)
    with open(art / "facts" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3]
    assert (art / "facts" / "normalisation.json").exists()
    assert (art / "figures" / "loss_curves.png").stat().st_size > 10_000
    best = torch.load(art / "model.pt", weights_only=True)
    totals = [m["val/total_loss"] for m in ctx.history]
    assert best["epoch"] == 1 + totals.index(min(totals))
    assert best["config"]["model"]["latent_space"] == latent
    assert set(best["normalisation"]) == {"token_mean", "token_std", "globals_mean", "globals_std"}


def test_resume_gives_the_same_numbers_and_files_as_never_stopping(tmp_path):
    cfg = tiny(tmp_path, **{"model.latent_space": "vq", "trainer.epochs": 4, "trainer.checkpoint_every": 2})
    straight = LocalContext(tmp_path / "straight")
    train(cfg, straight)
    with pytest.raises(Interrupt):  # dies after epoch 3; its last checkpoint is epoch 2's
        train(cfg, StopAfter(tmp_path / "resumed", reports=3))
    resumed = LocalContext(tmp_path / "resumed")
    train(cfg, resumed)
    assert [m["step"] for m in resumed.history] == [3, 4]

    def same(a, b):
        return {k: v for k, v in a.items() if k != "time/epoch_s"} == {
            k: v for k, v in b.items() if k != "time/epoch_s"
        }

    assert all(same(a, b) for a, b in zip(resumed.history, straight.history[2:]))
    log = lambda name: (tmp_path / name / "artifacts" / "run.log").read_text()
    assert log("resumed") == log("straight")  # the lines past the checkpoint were replaced, not doubled


def test_nan_stops_the_trial_with_a_clear_reason(tmp_path):
    cfg = tiny(tmp_path, **{"trainer.lr": 1.0, "model.globals_beta": 1e39})
    with pytest.raises(FloatingPointError, match="total_loss became"):
        train(cfg, LocalContext(tmp_path / "t"))


@pytest.mark.parametrize("profile", ["local", "full"])
def test_each_profile_builds_and_runs_an_epoch_on_cpu(tmp_path, profile):
    small_data = {"data.n_train": 256, "data.n_val": 64, "trainer.epochs": 1, "trainer.device": "cpu"}
    cfg = build_config(
        Config, {"model.latent_space": "vq"}, PROFILES[profile], small_data, {"data.cache_dir": str(tmp_path)}
    )
    if profile == "full":
        assert (cfg.model.hidden, cfg.model.latent_dim, cfg.vq.codebook_size) == (256, 32, 512)
    ctx = LocalContext(tmp_path / "t")
    train(cfg, ctx)
    assert ctx.history[-1]["step"] == 1 and torch.isfinite(torch.tensor(ctx.history[-1]["val/loss"]))
