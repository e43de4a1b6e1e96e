"""The denoising study's declaration: its trainable, config, metrics, profiles, report and
compute budget, as the core runs them (`python tune_jobs/denoising.py` is its entry script)."""

from trainables import denoising
from tune_jobs.core.study import Study

STUDY = Study(
    name="denoising",
    train="trainables.denoising.train:train",
    config=denoising.Config,
    metrics=denoising.METRICS,
    metrics_when=denoising.METRICS_WHEN,
    default_experiment="denoising_search",
    profiles=denoising.PROFILES,
    describe=lambda cfg: {
        "d": cfg.data.d,
        "h": cfg.model.hidden_size,
        "noise": cfg.data.noise_variance,
        "lambda_on": cfg.loss.lambda_on,
        "lr": cfg.trainer.lr,
        "epochs": cfg.trainer.epochs,
    },
    estimate="trainables.denoising.train:estimate",
    report="trainables.denoising.report:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
)
