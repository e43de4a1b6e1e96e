"""A toy study for the tests that need a study of their own, run as a user runs any entry script:
python tests/toy_study.py --experiment some.yaml

Each epoch sleeps `seconds`, then reports and checkpoints once; a resumed trial goes on from its
checkpoint. val/score rises to `quality` as quality * (1 - exp(-epoch / 2)), so every rung of
ASHA ranks the trials the same way, and val/loss ranks them the other way round (lowest for the
worst), plus `noise` times a draw of the trial's seed. train/loss = 1 / (x - epoch) becomes
infinite at epoch x: a diverging trial."""

import math
import random
import time
from dataclasses import dataclass

from trainables.common import param, section
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study


@dataclass
class Trainer:
    epochs: int = param(6, "epochs", ge=1)
    first: int = param(0, "the number of the first epoch")
    seconds: float = param(0.0, "seconds per epoch")
    quality: float = param(1.0, "the score this trial converges to")
    x: float = param(1000.0, "the epoch at which train/loss is infinite")
    raise_error: bool = param(False, "raise FloatingPointError instead of reporting inf")
    noise: float = param(0.0, "val/score's offset per seed: noise times a standard normal draw of the seed", ge=0)


@dataclass
class Config:
    seed: int = param(0, "seed")
    trainer: Trainer = section(Trainer, "training")


def train(cfg, ctx):
    t = cfg.trainer
    state = ctx.restored_state()
    offset = t.noise * random.Random(cfg.seed).gauss(0.0, 1.0)
    for epoch in range(state["step"] + 1 if state else t.first, t.first + t.epochs):
        time.sleep(t.seconds)
        gap = t.x - epoch
        loss = 1.0 / gap if gap else float("inf")
        if t.raise_error and loss == float("inf"):
            raise FloatingPointError(f"train/loss became inf at step {epoch}; lower trainer.lr")
        score = t.quality * (1 - math.exp(-epoch / 2)) + offset
        metrics = {"step": epoch, "train/loss": loss, "val/score": score, "val/loss": t.quality / (epoch + 1)}
        ctx.report(metrics, {"step": epoch})


STUDY = Study(
    name="toy",
    train=train,
    config=Config,
    metrics=("step", "train/loss", "val/score", "val/loss"),
    default_experiment="toy",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
    report=lambda sweep, out: [],
)

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
