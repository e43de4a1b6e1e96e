"""The sweep service from Python, for any study: run one config as a one-trial sweep, and read
a sweep back from MLflow by name. A study's notebook API builds on these
(trainables/denoising/api.py does).

Importing this module loads neither Ray nor MLflow: each function imports what it needs, so a
study package may import it and still pass the rule that its modules import no Ray and no MLflow.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from tune_jobs.core.config import to_flat
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import safe_name
from tune_jobs.core.reporting import SweepData, find_parent
from tune_jobs.core.study import FILE_MODULE, Study
from tune_jobs.core.tracking import open_client, tracking_uri

__all__ = ["SweepData", "find_sweep", "load_sweep", "open_store", "run_config"]


def run_config(
    study: Study,
    config: Any,
    name: str,
    *,
    metric: str,
    mode: str,
    description: str,
    cpus: int = 1,
    gpus: float = 0,
    results_dir: str | os.PathLike[str] = "results",
    mlflow_uri: str | None = None,
    verbose: int = 0,
) -> SweepData:
    """Run `config` (the study's typed config) as a one-trial sweep named `name` through the
    service (Ray, MLflow, report), as `python tune_jobs/<study>.py --experiment <the YAML it
    writes under results_dir/api/>` would, and return the sweep as MLflow holds it. `verbose`
    1 shows the sweep's live view (0: nothing on the terminal)."""
    import ray

    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.runner import run_sweep
    from tune_jobs.core.space import load_experiment

    results = Path(results_dir).resolve()
    uri = tracking_uri(mlflow_uri)
    path = _write_experiment(
        study, config, name, results / "api", metric=metric, mode=mode, description=description, cpus=cpus, gpus=gpus
    )
    composed = compose(study, load_experiment(path), profile="local")
    module = sys.modules.get(getattr(study.train, "__module__", ""))
    if module is not None and module.__name__.startswith(FILE_MODULE):
        # A study load_study imported from its file: Ray's workers get its code by value.
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    started_here = not ray.is_initialized()
    try:
        run_sweep(plan(composed), results_dir=results, tracking_uri=uri, address=None, verbose=verbose)
    finally:
        if started_here:
            ray.shutdown()
    return load_sweep(path.stem, mlflow_uri=uri)


def _write_experiment(
    study: Study,
    config: Any,
    name: str,
    folder: Path,
    *,
    metric: str,
    mode: str,
    description: str,
    cpus: int,
    gpus: float,
) -> Path:
    """A one-trial experiment file fixing every key of `config`."""
    path = folder / f"{safe_name(name)}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "study": study.name,
        "description": description,
        "metric": metric,
        "mode": mode,
        "search": "grid",
        "scheduler": {"kind": "fifo"},
        "resources": {"cpu": cpus, "gpu": gpus},
        "max_failures": 1,
        # Every key fixed: an experiment's `fixed:` wins over the study's profiles.
        "fixed": to_flat(config),
    }
    command = f"# python tune_jobs/{study.name}.py --experiment {path}\n"
    path.write_text(command + yaml.safe_dump(spec, sort_keys=False))
    return path


def open_store(mlflow_uri: str | None = None, *, hint: str = "pass mlflow_uri=") -> Any:
    """An MlflowClient on `mlflow_uri` (default $MLFLOW_TRACKING_URI or ./mlflow.db), opened
    under the store's lock as every process of ours opens it. A SQLite store that does not
    exist is a ConfigError ending in `hint`, rather than a new empty store."""
    uri = tracking_uri(mlflow_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        raise ConfigError(f"no MLflow store at {uri}; run from the folder holding mlflow.db or {hint}")
    return open_client(uri)


def find_sweep(client: Any, ref: str) -> Any:
    """A sweep's parent run: by sweep id, parent run id, or the newest of an experiment or study."""
    return find_parent(client, ref)


def load_sweep(ref: str, *, mlflow_uri: str | None = None) -> SweepData:
    """The sweep `ref` names (see find_sweep), its parent and trial runs, read from MLflow."""
    client = open_store(mlflow_uri)
    return SweepData(client, find_sweep(client, ref))
