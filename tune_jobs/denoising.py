"""Sparse denoising, the 3-blob hunt (study C).

python tune_jobs/denoising.py                                # Optuna + ASHA search, local profile
python tune_jobs/denoising.py --dry-run                      # what it would sample, nothing run
python tune_jobs/denoising.py --experiment reference_3blob   # the seed's reference configuration
python tune_jobs/denoising.py --experiment reference_3blob profile=full --address auto   # on GPUs
python tune_jobs/denoising_monitor.py                        # live 4-panel view of a running sweep
python tune_jobs/denoising_profiler.py --batch-sizes 256 512 1024   # pick a batch size
"""

import tune_jobs.core.startup  # noqa: F401  (first: a Ctrl-C while importing exits quietly)
from trainables.denoising.study import STUDY
from tune_jobs.core.cli import main

if __name__ == "__main__":
    raise SystemExit(main(STUDY))
