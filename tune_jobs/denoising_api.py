"""The denoising study's notebook API under the path its users import (logic: trainables/denoising/api.py).

from tune_jobs.denoising_api import create_config, run_experiment, quick_run, load_results, compare_experiments
"""

from trainables.denoising.api import (
    ExperimentResults,
    compare_experiments,
    create_config,
    load_results,
    quick_run,
    run_experiment,
)

__all__ = [
    "ExperimentResults",
    "compare_experiments",
    "create_config",
    "load_results",
    "quick_run",
    "run_experiment",
]
