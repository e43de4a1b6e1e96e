"""Pieces every trainable shares: typed config fields and the trial context contract.

The context (checkpoints, devices) needs torch and is imported on first use, so that a
study's config, and with it the CLI's checks of a sweep's settings, loads without torch."""

from typing import Any

from trainables.common.config import param, section

_CONTEXT = (
    "LocalContext",
    "NoLoadableCheckpoint",
    "RefusedCheckpoint",
    "TrialContext",
    "UnreadableCheckpoint",
    "atomic_file",
    "load_state",
    "pick_device",
    "save_state",
    "user_path",
)

__all__ = ["param", "section", *_CONTEXT]  # noqa: PLE0604 (the context's names resolve through __getattr__)


def __getattr__(name: str) -> Any:
    if name in _CONTEXT:
        from trainables.common import context

        return getattr(context, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
