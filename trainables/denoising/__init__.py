"""Sparse denoising, the 3-blob hunt (study C).

Read in order: config.py (what can be set), data.py (two-hot signals plus noise), model.py
(Linear -> tanh^3 -> Linear and the lambda_on loss), diagnostics.py (the blob metrics of the
weight pairs), plots.py (the scatter), train.py (the loop), report.py (the sweep's report).
The study's tools: profiler.py and profiler_cli.py (batch sizes), monitor.py (the live four
panels), api.py (the seed's notebook API); their entry points are in tune_jobs/.

Importing the package loads its config only (no torch): the training function is
`trainables.denoising.train.train`, imported where a trial runs.
"""

from trainables.denoising.config import METRICS, METRICS_WHEN, PROFILES, Config

__all__ = ["METRICS", "METRICS_WHEN", "PROFILES", "Config"]
