"""Pieces every trainable shares: typed config fields and the trial context contract."""

from trainables.common.config import param, section
from trainables.common.context import LocalContext, TrialContext, load_state, save_state

__all__ = ["LocalContext", "TrialContext", "load_state", "param", "save_state", "section"]
