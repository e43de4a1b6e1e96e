"""The driver-side MLflow callback: one parent run per sweep, one nested run per trial.

Runs live on the driver only, so trials never talk to the tracking server. Metrics are
buffered and written with `log_batch` a few times a minute. The trial-to-run map (and the
parent run) are saved beside the Ray experiment, so a `--resume` continues the same runs, and
steps MLflow already holds are not written twice. When the server cannot be reached, the
batch goes to a spool file on disk and is replayed before the next write (or later with
`python tune_jobs/report.py --replay-spool SWEEP_DIR`); nothing is lost.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from tune_jobs.core.adapter import trial_point
from tune_jobs.core.config import to_nested
from tune_jobs.core.plan import trial_label

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_runs.json"
SPOOL_FILE = "mlflow_spool.jsonl"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: the file is either the old one or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def replay_spool(client: Any, spool: Path) -> int:
    """Send every spooled batch to MLflow; returns how many metric values were sent.

    The spool file is removed only after every batch in it went through, so a failure
    mid-way leaves it for the next try (MLflow keeps one value per (key, step, timestamp),
    so a batch sent twice is not doubled in the run's history).
    """
    from mlflow.entities import Metric

    if not spool.exists():
        return 0
    sent = 0
    for line in spool.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in record["metrics"]]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(record["run_id"], metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
        sent += len(metrics)
    spool.unlink()
    return sent


class MlflowTracker(Callback):
    def __init__(
        self, *, tracking_uri: str, experiment_name: str, sweep_dir: str, tags: Mapping[str, str],
        base: Mapping[str, Any], metrics: Sequence[str], run_prefix: str,
        artifact_location: str | None = None, flush_seconds: float = 5.0,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.sweep_dir = sweep_dir
        self.tags = dict(tags)
        self.base = dict(base)
        self.metrics = tuple(m for m in metrics if m != "step")
        self.run_prefix = run_prefix
        self.artifact_location = artifact_location
        self.flush_seconds = flush_seconds
        self._client: Any = None

    # -- state -------------------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return Path(self.sweep_dir) / STATE_FILE

    @property
    def _spool_path(self) -> Path:
        return Path(self.sweep_dir) / SPOOL_FILE

    def _save_state(self) -> None:
        write_json(self._state_path, self._state)

    def setup(self, **info: Any) -> None:
        from mlflow import MlflowClient

        self._client = MlflowClient(self.tracking_uri)
        self._buffer: dict[str, list[Any]] = defaultdict(list)
        self._last_flush = time.monotonic()
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        if self._state_path.exists():
            self._state = json.loads(self._state_path.read_text())
        else:
            self._state = {"parent_run_id": None, "experiment_id": None, "trials": {}}
        if self._state["experiment_id"] is None:
            exp = self._client.get_experiment_by_name(self.experiment_name)
            self._state["experiment_id"] = exp.experiment_id if exp else self._client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        if self._state["parent_run_id"] is None:
            run = self._client.create_run(
                self._state["experiment_id"], run_name=f"{self.run_prefix} sweep {self.tags['sweep.id']}",
                tags={**self.tags, "sweep.role": "parent"},
            )
            self._state["parent_run_id"] = run.info.run_id
            self._save_state()
            self._log_dict(run.info.run_id, to_nested(self.base), "cfg.yaml")
        else:
            self._client.update_run(self._state["parent_run_id"], status="RUNNING")
        # A resumed sweep: skip the steps MLflow already holds for each trial run.
        self._last_step: dict[str, int] = {}
        key = self.metrics[0] if self.metrics else None
        for trial_id, entry in self._state["trials"].items():
            history = self._client.get_metric_history(entry["run_id"], key) if key else []
            self._last_step[trial_id] = max((m.step for m in history), default=-1)
        self._flush_spool()

    @property
    def parent_run_id(self) -> str:
        return self._state["parent_run_id"]

    # -- runs --------------------------------------------------------------------------
    def _log_dict(self, run_id: str, data: Mapping[str, Any], name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
            self._client.log_artifact(run_id, str(path))

    def _run_for(self, trial: Any) -> str:
        entry = self._state["trials"].get(trial.trial_id)
        if entry is not None:
            return entry["run_id"]
        from mlflow.entities import Param

        point = trial_point(trial.config)
        flat = {**self.base, **point}
        tags = {
            **self.tags, "sweep.role": "trial", "sweep.trial_id": trial.trial_id,
            "mlflow.parentRunId": self.parent_run_id, "sweep.seed": str(flat.get("seed", "")),
            "sweep.point": json.dumps(point, sort_keys=True),
        }
        run = self._client.create_run(
            self._state["experiment_id"], run_name=f"{self.run_prefix}/{trial_label(point)}", tags=tags
        )
        run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in sorted(flat.items())]
        for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=params[i : i + MAX_PARAMS_PER_BATCH])
        self._log_dict(run_id, to_nested(flat), "cfg.yaml")
        self._state["trials"][trial.trial_id] = {"run_id": run_id, "name": trial_label(point)}
        self._last_step[trial.trial_id] = -1
        self._save_state()
        return run_id

    # -- metrics -----------------------------------------------------------------------
    def _flush_spool(self) -> None:
        if not self._spool_path.exists():
            return
        try:
            sent = replay_spool(self._client, self._spool_path)
            log.warning("MLflow is reachable again: replayed %d spooled metric values", sent)
        except Exception as exc:  # still unreachable: keep the spool for the next flush
            log.debug("spool replay deferred: %s", exc)

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        self._flush_spool()
        buffer, self._buffer = self._buffer, defaultdict(list)
        for run_id, metrics in buffer.items():
            try:
                for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                    self._client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
            except Exception as exc:
                log.warning("MLflow write failed (%s); spooling %d values to %s", exc, len(metrics), self._spool_path)
                with open(self._spool_path, "a") as f:
                    rows = [[m.key, m.value, m.timestamp, m.step] for m in metrics[i:]]
                    f.write(json.dumps({"run_id": run_id, "metrics": rows}) + "\n")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        self._client.update_run(run_id, status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        run_id = self._run_for(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # already in MLflow (a resumed trial replays from its last checkpoint)
        self._last_step[trial.trial_id] = step
        ts = int(time.time() * 1000)
        for key in self.metrics:
            value = result.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._buffer[run_id].append(Metric(key, float(value), ts, step))
        if time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def _finish(self, trial: Any, status: str, tags: Mapping[str, str] = ()) -> None:
        run_id = self._run_for(trial)
        self.flush()
        for key, value in dict(tags).items():
            self._client.set_tag(run_id, key, value)
        self._client.set_terminated(run_id, status=status)
        self._state["trials"][trial.trial_id]["status"] = status
        self._save_state()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._run_for(trial)
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is not None and Path(checkpoint.path).is_dir():
            try:
                self._client.log_artifacts(run_id, checkpoint.path, "checkpoint")
            except Exception as exc:  # the checkpoint stays in the Ray results either way
                log.warning("could not log the checkpoint of %s to MLflow: %s", trial, exc)
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = ""
        try:
            error = trial.get_error()
            reason = str(error).strip().splitlines()[-1] if error else ""
        except Exception:
            pass
        self._finish(trial, "FAILED", {"sweep.error": reason[:500] or "see the trial's error.txt"})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()
        failed = sum(1 for t in trials if t.status == "ERROR")
        self._client.set_tag(self.parent_run_id, "sweep.trials", str(len(trials)))
        self._client.set_tag(self.parent_run_id, "sweep.failed_trials", str(failed))
        self._client.set_terminated(self.parent_run_id, status="FINISHED")

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = self.__dict__.copy()
        for key in ("_client", "_buffer", "_state", "_last_step", "_last_flush"):
            state.pop(key, None)
        state["_client"] = None
        return state
