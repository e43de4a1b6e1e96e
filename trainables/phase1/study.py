"""The phase1 study's declaration: its trainable, config, metrics, profiles, report and
compute budget, as the core runs them (`python tune_jobs/phase1.py` is its entry script)."""

from trainables import phase1 as study_package
from tune_jobs.core.study import Study

STUDY = Study(
    name="phase1",
    train="trainables.phase1.train:train",
    config=study_package.Config,
    metrics=study_package.METRICS,
    default_experiment="phase1",
    profiles=study_package.PROFILES,
    describe=lambda cfg: {
        "K": cfg.data.n_components,
        "contexts/component": cfg.data.block_size,
        "target points": cfg.data.target_points,
        "d": cfg.data.n_dims,
        "noise": cfg.data.noise_std,
    },
    estimate="trainables.phase1.train:estimate",
    report="trainables.phase1.report:build",
    budget=lambda params: (int(params["trainer.steps"]), "steps"),
    units_run=lambda steps: max(steps) + 1,  # steps are 0-based
)
