"""Sparse denoising, the 3-blob hunt (study C).

Read in order: config.py (what can be set), data.py (two-hot signals plus noise), model.py
(Linear -> tanh^3 -> Linear and the lambda_on loss), diagnostics.py (the blob metrics of the
weight pairs), plots.py (the scatter), train.py (the loop), profiler.py (batch sizes).

Importing the package loads its config only (no torch): the training function is
`trainables.denoising.train.train`, imported where a trial runs.
"""

from trainables.denoising.config import METRICS, METRICS_WHEN, PROFILES, Config

__all__ = ["METRICS", "METRICS_WHEN", "PROFILES", "Config"]
