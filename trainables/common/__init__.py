"""Pieces every trainable shares: typed config fields and the trial context contract."""

from trainables.common.config import param, section
from trainables.common.context import (
    LocalContext,
    NoLoadableCheckpoint,
    RefusedCheckpoint,
    TrialContext,
    UnreadableCheckpoint,
    atomic_file,
    load_state,
    pick_device,
    save_state,
    user_path,
)

__all__ = [
    "LocalContext",
    "NoLoadableCheckpoint",
    "RefusedCheckpoint",
    "TrialContext",
    "UnreadableCheckpoint",
    "atomic_file",
    "load_state",
    "param",
    "pick_device",
    "save_state",
    "section",
    "user_path",
]
