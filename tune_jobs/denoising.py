"""Sparse denoising, the 3-blob hunt (study C, shared/DESIGN.md).

python tune_jobs/denoising.py                                # Optuna + ASHA search, local profile
python tune_jobs/denoising.py --dry-run                      # what it would sample, nothing run
python tune_jobs/denoising.py --experiment reference_3blob   # the seed's reference configuration
python tune_jobs/denoising.py --experiment reference_3blob profile=full --address auto   # on GPUs
python tune_jobs/denoising_monitor.py                        # live 4-panel view of a running sweep
python tune_jobs/denoising_profiler.py --batch-sizes 256 512 1024   # pick a batch size
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables import denoising
from tune_jobs.core.cli import main
from tune_jobs.core.study import Study

STUDY = Study(
    name="denoising",
    train="trainables.denoising.train:train",
    config=denoising.Config,
    metrics=denoising.METRICS,
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
    report="tune_jobs.reports.denoising:build",
    budget=lambda params: (int(params["trainer.epochs"]), "epochs"),
)

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
