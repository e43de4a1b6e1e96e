"""In-context learning of a mixture of linear regressions (study A: component-count scaling).

Read in order: config.py (what can be set), data.py (the prompts), model.py (GPT-2 with a
read-in and read-out), baselines.py (zero, target-only least squares, Bayes oracle),
train.py (the loop).
"""

from trainables.icl_mixture.config import PROFILES, Config
from trainables.icl_mixture.train import METRICS, estimate, train

__all__ = ["METRICS", "PROFILES", "Config", "estimate", "train"]
