"""The driver-side MLflow callback: one parent run per sweep, one nested run per trial.

Runs live on the driver only, so trials never talk to the tracking server. Every result is
first appended to a journal file beside the Ray experiment (one JSON line, no server
involved), then sent to MLflow in batches with `log_batch` a few times a minute; the state
file records how far the journal has been sent. So:
- a driver killed mid-sweep loses nothing: `--resume` sends what was journalled but not sent;
- a tracking server that is down only delays the writes: they stay in the journal and go
  out when it is back (or later with `python tune_jobs/report.py --replay SWEEP_DIR`);
- a resumed trial replays from its last checkpoint, and the steps already journalled are
  skipped, so no step appears twice in a run's history.
The trial-to-run map is saved with the experiment, so `--resume` continues the same runs.
Each trial run is tagged with where it ran (`ray.node_id`, `ray.node_ip`, `ray.hostname`),
updated if a restarted trial lands on another node.
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

from trainables.common.context import ARTIFACTS
from tune_jobs.core.adapter import NODE_KEY, trial_point
from tune_jobs.core.config import to_nested
from tune_jobs.core.plan import trial_label

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_runs.json"
JOURNAL_FILE = "mlflow_journal.jsonl"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
NODE_TAGS = {"ray.node_id": NODE_KEY, "ray.node_ip": "node_ip", "ray.hostname": "hostname"}


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: the file is either the old one or the new one, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def send_journal(client: Any, journal: Path, offset: int) -> int:
    """Send the journal's lines from byte `offset` on to MLflow; returns the new offset.

    Raises whatever the client raises when the server is unreachable; the caller keeps the
    old offset then. A batch sent twice is harmless: MLflow stores one row per identical
    (key, value, timestamp, step).
    """
    from mlflow.entities import Metric

    if not journal.exists():
        return offset
    with open(journal, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next send
    by_run: dict[str, list[Metric]] = defaultdict(list)
    for line in data[:end].splitlines():
        if line.strip():
            row = json.loads(line)
            by_run[row["run"]].extend(Metric(k, v, row["ts"], row["step"]) for k, v in row["metrics"].items())
    for run_id, metrics in by_run.items():
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    return offset + end


def replay(client: Any, sweep_dir: Path) -> int:
    """Send what a sweep journalled but never sent (the server was down to the end)."""
    state_path = sweep_dir / STATE_FILE
    state = json.loads(state_path.read_text())
    before = state.get("journal_offset", 0)
    state["journal_offset"] = send_journal(client, sweep_dir / JOURNAL_FILE, before)
    write_json(state_path, state)
    return state["journal_offset"] - before


class MlflowTracker(Callback):
    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment_name: str,
        sweep_dir: str,
        tags: Mapping[str, str],
        base: Mapping[str, Any],
        metrics: Sequence[str],
        run_prefix: str,
        artifact_location: str | None = None,
        flush_seconds: float = 5.0,
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

    # -- state -------------------------------------------------------------------------
    @property
    def _state_path(self) -> Path:
        return Path(self.sweep_dir) / STATE_FILE

    @property
    def _journal(self) -> Path:
        return Path(self.sweep_dir) / JOURNAL_FILE

    def _save_state(self) -> None:
        write_json(self._state_path, self._state)

    @property
    def parent_run_id(self) -> str:
        return self._state["parent_run_id"]

    def setup(self, **info: Any) -> None:
        from mlflow import MlflowClient

        self._client = MlflowClient(self.tracking_uri)
        self._next_flush = 0.0
        self._failing_since: float | None = None
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        if self._state_path.exists():
            self._state = json.loads(self._state_path.read_text())
        else:
            self._state = {"parent_run_id": None, "experiment_id": None, "trials": {}, "journal_offset": 0}
        if self._state["experiment_id"] is None:
            exp = self._client.get_experiment_by_name(self.experiment_name)
            self._state["experiment_id"] = (
                exp.experiment_id
                if exp
                else self._client.create_experiment(self.experiment_name, artifact_location=self.artifact_location)
            )
        if self._state["parent_run_id"] is None:
            run = self._client.create_run(
                self._state["experiment_id"],
                run_name=f"{self.run_prefix} sweep {self.tags['sweep.id']}",
                tags={**self.tags, "sweep.role": "parent"},
            )
            self._state["parent_run_id"] = run.info.run_id
            self._save_state()
            self._log_dict(run.info.run_id, to_nested(self.base), "cfg.yaml")
        else:
            self._client.update_run(self._state["parent_run_id"], status="RUNNING")
        # The last step journalled per trial: a resumed trial's replayed steps are skipped.
        self._last_step: dict[str, int] = {}
        self._nodes: dict[str, dict[str, str]] = {}  # the node tags last set per trial
        if self._journal.exists():
            for line in self._journal.read_bytes().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash; it was never sent either
                self._last_step[row["trial"]] = max(row["step"], self._last_step.get(row["trial"], -1))
        self.flush(force=True)  # what a killed driver journalled but did not send

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
            **self.tags,
            "sweep.role": "trial",
            "sweep.trial_id": trial.trial_id,
            "mlflow.parentRunId": self.parent_run_id,
            "sweep.seed": str(flat.get("seed", "")),
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
        self._save_state()
        return run_id

    # -- metrics -----------------------------------------------------------------------
    def flush(self, force: bool = False) -> None:
        """Send the journal's unsent tail; on failure keep it and try again later."""
        now = time.monotonic()
        if not force and now < self._next_flush:
            return
        try:
            offset = send_journal(self._client, self._journal, self._state["journal_offset"])
        except Exception as exc:  # server down: the journal keeps everything
            if self._failing_since is None:
                self._failing_since = now
                log.warning("MLflow unreachable (%s); results stay in %s until it is back", exc, self._journal)
            self._next_flush = now + min(60.0, self.flush_seconds * 4)
            return
        if self._failing_since is not None:
            log.warning("MLflow reachable again after %.0f s; journalled results sent", now - self._failing_since)
            self._failing_since = None
        self._next_flush = now + self.flush_seconds
        if offset != self._state["journal_offset"]:
            self._state["journal_offset"] = offset
            self._save_state()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._client.update_run(self._run_for(trial), status="RUNNING")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._run_for(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # journalled already (a resumed trial replays from its last checkpoint)
        self._last_step[trial.trial_id] = step
        self._tag_node(trial, run_id, result)
        metrics = {
            key: float(result[key])
            for key in self.metrics
            if isinstance(result.get(key), (int, float)) and not isinstance(result.get(key), bool)
        }
        row = {"trial": trial.trial_id, "run": run_id, "step": step, "ts": int(time.time() * 1000), "metrics": metrics}
        with open(self._journal, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.flush()

    def _tag_node(self, trial: Any, run_id: str, result: Mapping[str, Any]) -> None:
        node = {tag: str(result[key]) for tag, key in NODE_TAGS.items() if result.get(key) is not None}
        if node and self._nodes.get(trial.trial_id) != node:
            self._nodes[trial.trial_id] = node
            try:
                for tag, value in node.items():
                    self._client.set_tag(run_id, tag, value)
            except Exception as exc:  # a tag is not worth stopping the sweep for
                log.warning("could not tag %s with its node: %s", trial, exc)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.flush()

    def _finish(self, trial: Any, status: str, tags: Mapping[str, str] = ()) -> None:
        run_id = self._run_for(trial)
        self.flush(force=True)
        artifacts = Path(trial.path) / ARTIFACTS
        if artifacts.is_dir() and any(artifacts.iterdir()):
            try:
                self._client.log_artifacts(run_id, str(artifacts))
            except Exception as exc:  # they stay in the trial folder either way
                log.warning("could not log the artifacts of %s to MLflow: %s", trial, exc)
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
        self.flush(force=True)
        failed = sum(1 for t in trials if t.status == "ERROR")
        self._client.set_tag(self.parent_run_id, "sweep.trials", str(len(trials)))
        self._client.set_tag(self.parent_run_id, "sweep.failed_trials", str(failed))
        self._client.set_terminated(self.parent_run_id, status="FINISHED")

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state: keep only the settings, the
        # runtime state is rebuilt from the files in setup().
        keep = (
            "tracking_uri",
            "experiment_name",
            "sweep_dir",
            "tags",
            "base",
            "metrics",
            "run_prefix",
            "artifact_location",
            "flush_seconds",
        )
        return {k: self.__dict__[k] for k in keep}
