"""Component-count scaling of in-context mixture regression (study A, shared/DESIGN.md).

python tune_jobs/phase1.py                       # K in {1,2,3,4,5,6,8,10}, local profile
python tune_jobs/phase1.py --dry-run             # the trials, without running anything
python tune_jobs/phase1.py --experiment phase2   # contexts per component (phase 3, 4 alike)
python tune_jobs/phase1.py profile=full --address auto   # the paper's model on a GPU cluster
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables import icl_mixture
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study

STUDY = Study(
    name="phase1",
    train="trainables.icl_mixture.train:train",
    config=icl_mixture.Config,
    metrics=icl_mixture.METRICS,
    default_experiment="phase1",
    profiles=icl_mixture.PROFILES,
    describe=lambda cfg: {
        "K": cfg.data.n_components,
        "contexts/component": cfg.data.block_size,
        "target points": cfg.data.target_points,
        "d": cfg.data.n_dims,
        "noise": cfg.data.noise_std,
    },
    estimate="trainables.icl_mixture.train:estimate",
    report="tune_jobs.reports.phase1:build",
    budget=lambda params: (int(params["trainer.steps"]), "steps"),
    units_run=lambda steps: max(steps) + 1,  # steps are 0-based
)

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
