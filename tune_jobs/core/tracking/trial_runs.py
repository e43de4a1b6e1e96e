"""A finished trial read back from MLflow, for a rerun: its run (by run id, or by its sweep and
its name), every setting it ran with, and every metric's history."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tune_jobs.core.config import flatten_mapping
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.sweep_data import find_parent


def find_trial(client: Any, ref: str, name: str | None = None) -> Any:
    """A trial's run: `ref` its run id; or, with `name`, `ref` names the sweep (as find_parent
    takes it) and `name` the trial's run, with or without the experiment's prefix."""
    from mlflow.exceptions import MlflowException

    if name is None:
        try:
            run = client.get_run(ref)
        except MlflowException:
            raise ConfigError(
                f"no run {ref!r} in the store; give a trial's run id, or a sweep id and the trial's name"
            ) from None
        if run.data.tags.get("sweep.role") != "trial":
            raise ConfigError(f"run {ref} is not a trial of a sweep; give a trial's run id (the nested runs)")
        return run
    parent = find_parent(client, ref)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        max_results=10000,
    )
    prefix = f"{parent.data.tags['sweep.experiment']}/"
    found = [r for r in runs if r.info.run_name in (name, prefix + name)]
    if not found:
        names = ", ".join(sorted(r.info.run_name for r in runs)[:5])
        raise ConfigError(f"sweep {ref} has no trial {name!r}; its trials include {names}")
    return found[0]


def trial_settings(client: Any, run: Any) -> dict[str, Any]:
    """Every setting the trial ran with, as dotted keys: its cfg.yaml artifact (typed), or
    MLflow's params (strings) where the artifact is missing."""
    from mlflow.exceptions import MlflowException

    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one small file: no progress bar
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "cfg.yaml", tmp)
            return flatten_mapping(yaml.safe_load(Path(path).read_text()) or {})
        except (MlflowException, OSError):
            return dict(run.data.params)


def histories(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run: its (step, value) pairs in step order."""
    keys = client.get_run(run_id).data.metrics
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in keys}
