"""In-context learning of a mixture of linear regressions (study A: component-count scaling).

Read in order: config.py (what can be set), data.py (the prompts), model.py (GPT-2 with a
read-in and read-out), baselines.py (zero, target-only least squares, Bayes oracle),
train.py (the loop).

Importing the package loads its config only (no torch): the training function is
`trainables.phase1.train.train`, imported where a trial runs.
"""

from trainables.phase1.config import METRICS, PROFILES, Config

__all__ = ["METRICS", "PROFILES", "Config"]
