"""Checks of the outside world made before Ray starts: folders a sweep will write, and what a
local Ray would have to give each trial. Each failure is one ConfigError line, found in a
fraction of a second instead of after Ray's start-up, and nothing is left behind."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.store import readable_sqlite


def writable_dir(path: Path, what: str, fix: str) -> None:
    """ConfigError unless `path` is a folder this process can write in, or could be made one.

    Tried for real in the nearest folder that exists (a probe file written and removed), since
    permission bits say nothing for root, read-only mounts or /proc. Nothing is created: the
    sweep makes its folders itself once every check has passed."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a folder; {fix}")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be written ({exc.strerror or exc}); {fix}") from None


def store_path(uri: str) -> Path | None:
    """The file of a local SQLite tracking store, else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_paths(results_dir: Path, uri: str) -> None:
    """The results folder and a local MLflow store must be writable before anything starts."""
    db = store_path(uri)
    if db is not None:
        if db.exists() and not db.is_file():
            raise ConfigError(f"MLflow store {db} is not a file; point --mlflow-uri at sqlite:///path/to/mlflow.db")
        fix = "run from a folder you can write, or pass --mlflow-uri sqlite:////writable/path/mlflow.db"
        writable_dir(db.parent, "the MLflow store's folder", fix)
        if db.is_file() and db.stat().st_size > 0:
            readable_sqlite(db)  # read-only: before its lock file or anything else is made
    writable_dir(results_dir, "--results-dir", "pick a folder you can write, e.g. --results-dir ~/sweeps")


def local_gpus() -> int:
    """GPUs a Ray started on this machine would see, without starting it (nor importing torch):
    CUDA_VISIBLE_DEVICES when set, else the NVIDIA device files."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d for d in visible.split(",") if d.strip() and d.strip() not in ("-1", "NoDevFiles")]
        return len(ids)
    dev = Path("/dev")
    return sum(1 for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)) if dev.is_dir() else 0


def local_resources() -> dict[str, float]:
    """What `ray.init()` on this machine offers, in Ray's names."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(local_gpus())}


def check_fits(per_trial: Mapping[str, float], cluster: Mapping[str, float]) -> None:
    """ConfigError when one trial asks for more than a local Ray has (it would wait forever)."""
    names = {"cpu": "CPU", "gpu": "GPU"}
    for key, amount in per_trial.items():
        have = cluster.get(names.get(key, key), 0)
        if amount > have:
            setting = f"resources.{key}" if key in names else f"resources.custom.{key}"
            fix = (
                "set resources.gpu=0 to train on CPU, or join a GPU cluster with --address"
                if key == "gpu"
                else f"lower {setting}, or join a cluster that has it with --address"
            )
            raise ConfigError(f"{setting}={amount} per trial, but this machine's Ray has {have:g}; {fix}")
