"""The trainable contract: `train(cfg, ctx)` talks to whoever runs it only through `ctx`.

`ctx.report(metrics, state)` hands over one row of metrics and, when `state` is given, a
checkpoint (model, optimizer, RNG, step: everything needed to continue bit for bit).
`ctx.restored_state()` returns the last such state when the trial is resumed, else None.
Files a trainable writes under `ctx.artifact_dir` (logs, tables, figures, the best model) are
attached to the trial's MLflow run when the trial ends. Tune copies that folder to the sweep's
storage when the trial reports, so write them before the last `ctx.report`.
The Ray adapter (tune_jobs.core.adapter) and `LocalContext` below both implement it, so the
same function runs under Tune, in unit tests and in a notebook.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch

STATE_FILE = "state.pt"
ARTIFACTS = "artifacts"  # <trial dir>/artifacts/: attached to the trial's MLflow run at its end


class TrialContext(Protocol):
    trial_dir: Path

    @property
    def artifact_dir(self) -> Path:
        """A folder for the trial's files; everything in it ends up in its MLflow run."""

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        """Hand over one row of metrics (and a checkpoint when `state` is given)."""

    def restored_state(self) -> dict[str, Any] | None:
        """The state of the last checkpoint when this trial is being resumed, else None."""


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else the CPU; `cpu` and `cuda` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def user_path(text: str) -> Path:
    """A path from the config; a relative one is taken from where the sweep was started
    (Ray Tune runs each trial inside its own folder and leaves the start folder in
    TUNE_ORIG_WORKING_DIR)."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return path
    return Path(os.environ.get("TUNE_ORIG_WORKING_DIR") or os.getcwd()) / path


def artifact_dir(trial_dir: Path) -> Path:
    path = trial_dir / ARTIFACTS
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_file(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` only when the block ends
    without error, so a reader (or a crash) never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_state(state: Mapping[str, Any], path: Path) -> None:
    """Write a checkpoint atomically: a crash mid-write never leaves a torn file behind."""
    with atomic_file(path) as tmp:
        torch.save(dict(state), tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read a checkpoint; weights_only=True so a checkpoint file can never run code."""
    return torch.load(path, map_location="cpu", weights_only=True)


class LocalContext:
    """Runs a trainable in-process: metrics are kept in a list, checkpoints under trial_dir."""

    def __init__(self, trial_dir: str | os.PathLike[str]) -> None:
        self.trial_dir = Path(trial_dir)
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, float]] = []
        self.checkpoints = 0

    @property
    def artifact_dir(self) -> Path:
        return artifact_dir(self.trial_dir)

    @property
    def checkpoint_path(self) -> Path:
        return self.trial_dir / "checkpoint" / STATE_FILE

    def report(self, metrics: Mapping[str, float], state: Mapping[str, Any] | None = None) -> None:
        self.history.append(dict(metrics))
        if state is not None:
            save_state(state, self.checkpoint_path)
            self.checkpoints += 1

    def restored_state(self) -> dict[str, Any] | None:
        return load_state(self.checkpoint_path) if self.checkpoint_path.exists() else None
