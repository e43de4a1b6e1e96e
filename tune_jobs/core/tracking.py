"""The driver-side MLflow callback: one parent run per sweep, one nested run per trial.

What a sweep tells MLflow is first written to disk beside the Ray experiment, then mirrored:
- `mlflow_runs.json` (the state) holds the sweep's runs as the driver knows them: each
  trial's name, searched point, start and end, status, tags and artifact folders, and the
  MLflow run ids once the runs exist;
- `mlflow_journal.jsonl` holds every result, one JSON line, appended before anything is sent.
`Mirror.sync` brings MLflow up to date with those two files: it creates the runs that do not
exist yet (with their real start times), sends the journal's unsent tail with `log_batch`,
and closes the runs that have ended. Every step is recorded in the state as it succeeds, so
a sync can stop anywhere and the next one carries on. Therefore:
- a driver killed mid-sweep loses nothing: `--resume` syncs what was recorded but not sent;
- a tracking server that is down (at the start, in the middle or at the end) only delays
  the writes; the sweep goes on, and they are sent when it is back, or later with
  `python tune_jobs/report.py --replay SWEEP_DIR`;
- a resumed trial replays from its last checkpoint, and the steps already journalled are
  skipped, so no step appears twice in a run's history.
Runs live on the driver only, so trials never talk to the tracking server. Each trial run
is tagged with where it ran (`ray.node_id`, `ray.node_ip`, `ray.hostname`; with GPUs also
`ray.gpu_ids` and `ray.cuda_visible_devices`), updated if a restarted trial lands elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from trainables.common.context import ARTIFACTS, atomic_file
from tune_jobs.core.adapter import CUDA_DEVICES_KEY, DIVERGED_KEY, GPU_IDS_KEY, NODE_KEY, STOP_REASON_KEY, trial_point
from tune_jobs.core.config import to_nested
from tune_jobs.core.errors import one_line
from tune_jobs.core.plan import trial_label

log = logging.getLogger(__name__)

STATE_FILE = "mlflow_runs.json"
JOURNAL_FILE = "mlflow_journal.jsonl"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
NODE_TAGS = {
    "ray.node_id": NODE_KEY,
    "ray.node_ip": "node_ip",
    "ray.hostname": "hostname",
    "ray.gpu_ids": GPU_IDS_KEY,
    "ray.cuda_visible_devices": CUDA_DEVICES_KEY,
}
# A tracking server that does not answer must not hold the sweep for minutes per call
# (MLflow's own defaults: 7 retries, 120 s timeout); the journal keeps what was not sent.
CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write: the file is either the old one or the new one, never half."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def now_ms() -> int:
    return int(time.time() * 1000)


def send_journal(client: Any, journal: Path, offset: int, run_of: Callable[[str], str | None] | None = None) -> int:
    """Send the journal's lines from byte `offset` on to MLflow; returns the new offset.

    `run_of` maps a trial id to its run id; the send stops before the first line of a trial
    whose run does not exist yet. Raises whatever the client raises when the server is
    unreachable; the caller keeps the old offset then. A batch sent twice is harmless: MLflow
    stores one row per identical (key, value, timestamp, step).
    """
    from mlflow.entities import Metric

    if not journal.exists():
        return offset
    with open(journal, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = 0
    by_run: dict[str, list[Metric]] = defaultdict(list)
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # a line still being written (or torn by a crash) waits for the next send
        if line.strip():
            row = json.loads(line)
            run_id = row.get("run") or (run_of(row["trial"]) if run_of else None)
            if run_id is None:
                break
            by_run[run_id].extend(Metric(k, v, row["ts"], row["step"]) for k, v in row["metrics"].items())
        end += len(line)
    for run_id, metrics in by_run.items():
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])
    return offset + end


def _log_dict(client: Any, run_id: str, data: Mapping[str, Any], name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        client.log_artifact(run_id, str(path))


class Mirror:
    """A sweep's MLflow record as kept on disk, and its sync to an MLflow store."""

    def __init__(self, sweep_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(sweep_dir)
        self.state_path = self.dir / STATE_FILE
        self.journal = self.dir / JOURNAL_FILE
        self.state: dict[str, Any] = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    @classmethod
    def create(
        cls,
        sweep_dir: str | os.PathLike[str],
        *,
        experiment_name: str,
        artifact_location: str | None,
        tags: Mapping[str, str],
        base: Mapping[str, Any],
        run_prefix: str,
    ) -> Mirror:
        mirror = cls(sweep_dir)
        if not mirror.state:
            mirror.dir.mkdir(parents=True, exist_ok=True)
            mirror.state = {
                "experiment": experiment_name,
                "artifact_location": artifact_location,
                "tags": dict(tags),
                "base": dict(base),
                "run_prefix": run_prefix,
                "start_ms": now_ms(),
                "experiment_id": None,
                "parent_run_id": None,
                "parent_cfg_logged": False,
                "end": None,
                "ended": False,
                "journal_offset": 0,
                "trials": {},
            }
            mirror.save()
        return mirror

    def save(self) -> None:
        write_json(self.state_path, self.state)

    @property
    def parent_run_id(self) -> str | None:
        return self.state.get("parent_run_id")

    # -- what the driver records -----------------------------------------------------------
    def add_trial(self, trial_id: str, point: Mapping[str, Any]) -> None:
        if trial_id in self.state["trials"]:
            return
        self.state["trials"][trial_id] = {
            "name": trial_label(point),
            "point": dict(point),
            "start_ms": now_ms(),
            "run_id": None,
            "params_logged": False,
            "ended": False,
        }
        self.save()

    def set_node(self, trial_id: str, node: Mapping[str, str]) -> None:
        """Record where a trial runs (tagged on its run at the next sync)."""
        entry = self.state["trials"][trial_id]
        if entry.get("node_tags") != dict(node):
            entry.update(node_tags=dict(node), node_tagged=False)
            self.save()

    def end_trial(
        self, trial_id: str, status: str, tags: Mapping[str, str], artifacts: Sequence[tuple[str, str | None]]
    ) -> None:
        entry = self.state["trials"][trial_id]
        entry.update(status=status, end_tags=dict(tags), artifacts=[list(a) for a in artifacts], end_ms=now_ms())
        entry["ended"] = False
        self.save()

    def end_sweep(self, tags: Mapping[str, str]) -> None:
        self.state.update(end={"tags": dict(tags), "end_ms": now_ms()}, ended=False)
        self.save()

    def pending(self) -> str:
        """What MLflow does not hold yet, in words ('' when it is up to date)."""
        st = self.state
        parts = []
        unsent = (self.journal.stat().st_size if self.journal.exists() else 0) - st.get("journal_offset", 0)
        if unsent > 0:
            parts.append(f"{unsent} bytes of results")
        missing = sum(1 for t in st["trials"].values() if not t.get("params_logged"))
        if st.get("parent_run_id") is None or not st.get("parent_cfg_logged"):
            missing += 1
        if missing:
            parts.append(f"{missing} runs to create")
        open_ = sum(1 for t in st["trials"].values() if "status" in t and not t.get("ended"))
        open_ += 1 if st.get("end") and not st.get("ended") else 0
        if open_:
            parts.append(f"{open_} runs to close")
        return ", ".join(parts)

    # -- the sync ---------------------------------------------------------------------------
    def sync(self, client: Any) -> None:
        """Bring MLflow up to date; raises (keeping what succeeded) when it is unreachable."""
        from mlflow.entities import Param

        st = self.state
        if st["experiment_id"] is None:
            exp = client.get_experiment_by_name(st["experiment"])
            st["experiment_id"] = (
                exp.experiment_id
                if exp
                else client.create_experiment(st["experiment"], artifact_location=st["artifact_location"])
            )
            self.save()
        if st["parent_run_id"] is None:
            run = client.create_run(
                st["experiment_id"],
                start_time=st["start_ms"],
                run_name=f"{st['run_prefix']} sweep {st['tags']['sweep.id']}",
                tags={**st["tags"], "sweep.role": "parent"},
            )
            st["parent_run_id"] = run.info.run_id
            self.save()
        if not st["parent_cfg_logged"]:
            _log_dict(client, st["parent_run_id"], to_nested(st["base"]), "cfg.yaml")
            st["parent_cfg_logged"] = True
            self.save()
        for trial_id, entry in st["trials"].items():
            if entry["run_id"] is None:
                flat = {**st["base"], **entry["point"]}
                tags = {
                    **st["tags"],
                    "sweep.role": "trial",
                    "sweep.trial_id": trial_id,
                    "mlflow.parentRunId": st["parent_run_id"],
                    "sweep.seed": str(flat.get("seed", "")),
                    "sweep.point": json.dumps(entry["point"], sort_keys=True),
                }
                run = client.create_run(
                    st["experiment_id"],
                    start_time=entry["start_ms"],
                    run_name=f"{st['run_prefix']}/{entry['name']}",
                    tags=tags,
                )
                entry["run_id"] = run.info.run_id
                self.save()
            if not entry["params_logged"]:
                flat = {**st["base"], **entry["point"]}
                params = [Param(k, str(v)[:MAX_PARAM_CHARS]) for k, v in sorted(flat.items())]
                for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
                    client.log_batch(entry["run_id"], params=params[i : i + MAX_PARAMS_PER_BATCH])
                _log_dict(client, entry["run_id"], to_nested(flat), "cfg.yaml")
                client.update_run(entry["run_id"], status="RUNNING")
                entry["params_logged"] = True
                self.save()
        for entry in st["trials"].values():
            if entry.get("node_tagged") is False and entry["params_logged"]:
                for key, value in entry["node_tags"].items():
                    client.set_tag(entry["run_id"], key, value)
                entry["node_tagged"] = True
                self.save()
        offset = send_journal(client, self.journal, st["journal_offset"], self._run_of)
        if offset != st["journal_offset"]:
            st["journal_offset"] = offset
            self.save()
        for entry in st["trials"].values():
            if "status" in entry and not entry["ended"]:
                self._close_trial(client, entry)
        if st["end"] and not st["ended"]:
            for key, value in st["end"]["tags"].items():
                client.set_tag(st["parent_run_id"], key, value)
            client.set_terminated(st["parent_run_id"], status="FINISHED", end_time=st["end"]["end_ms"])
            st["ended"] = True
            self.save()

    def _run_of(self, trial_id: str) -> str | None:
        entry = self.state["trials"].get(trial_id)
        return entry["run_id"] if entry and entry.get("params_logged") else None

    def _close_trial(self, client: Any, entry: dict[str, Any]) -> None:
        for path, subdir in entry.get("artifacts", []):
            if Path(path).is_dir() and any(Path(path).iterdir()):
                client.log_artifacts(entry["run_id"], path, subdir)
            elif subdir == "checkpoint" and not Path(path).exists():
                log.warning("checkpoint %s is gone; the run %s is closed without it", path, entry["name"])
        for key, value in entry.get("end_tags", {}).items():
            client.set_tag(entry["run_id"], key, value)
        client.set_terminated(entry["run_id"], status=entry["status"], end_time=entry["end_ms"])
        entry["ended"] = True
        self.save()


def replay(client: Any, sweep_dir: Path) -> str:
    """Send what a sweep recorded but could not send (the server was down to the end).

    Returns what is still pending ('' when MLflow now holds everything)."""
    mirror = Mirror(sweep_dir)
    mirror.sync(client)
    return mirror.pending()


def client_for(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    for key, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri)


def _metric_values(result: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
    """The declared metrics of a result as floats (NaN and inf kept: MLflow stores them)."""
    out = {}
    for key in keys:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


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

    @property
    def parent_run_id(self) -> str | None:
        return self._mirror.parent_run_id

    def setup(self, **info: Any) -> None:
        self._client = client_for(self.tracking_uri)
        self._mirror = Mirror.create(
            self.sweep_dir,
            experiment_name=self.experiment_name,
            artifact_location=self.artifact_location,
            tags=self.tags,
            base=self.base,
            run_prefix=self.run_prefix,
        )
        self._next_flush = 0.0
        self._next_retry = 0.0
        self._failures = 0  # failed syncs in a row: the back-off doubles with each
        self._failing_since: float | None = None
        # The last step journalled per trial: a resumed trial's replayed steps are skipped.
        self._last_step: dict[str, int] = {}
        if self._mirror.journal.exists():
            for line in self._mirror.journal.read_bytes().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash; it was never sent either
                self._last_step[row["trial"]] = max(row["step"], self._last_step.get(row["trial"], -1))
        self.flush(force=True)  # what a killed driver recorded but did not send

    def flush(self, force: bool = False) -> None:
        """Sync MLflow with the sweep's files; when it is unreachable, try again later."""
        now = time.monotonic()
        if now < self._next_retry or (not force and now < self._next_flush):
            return
        try:
            self._mirror.sync(self._client)
        except Exception as exc:  # server down or refusing: the files keep everything
            if self._failing_since is None:
                self._failing_since = now
                log.warning(
                    "MLflow at %s unreachable (%s); results are kept in %s and sent when it is back",
                    self.tracking_uri,
                    one_line(exc)[:200],
                    self._mirror.dir,
                )
            # A server that hangs costs a sync up to (retries + 1) x the timeout, all of it on
            # Tune's loop: doubling the wait bounds that share of the sweep's time.
            self._failures += 1
            self._next_retry = time.monotonic() + min(300.0, self.flush_seconds * 2**self._failures)
            return
        self._failures = 0
        if self._failing_since is not None:
            log.warning(
                "MLflow reachable again after %.0f s; everything kept meanwhile is sent", now - self._failing_since
            )
            self._failing_since = None
        self._next_flush = now + self.flush_seconds

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mirror.add_trial(trial.trial_id, trial_point(trial.config))
        self.flush(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._mirror.add_trial(trial.trial_id, trial_point(trial.config))
        step = int(result.get("step", result.get("training_iteration", 0)))
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # journalled already (a resumed trial replays from its last checkpoint)
        self._last_step[trial.trial_id] = step
        node = {tag: str(result[key]) for tag, key in NODE_TAGS.items() if result.get(key) is not None}
        if node:
            self._mirror.set_node(trial.trial_id, node)
        row = {"trial": trial.trial_id, "step": step, "ts": now_ms(), "metrics": _metric_values(result, self.metrics)}
        with open(self._mirror.journal, "a") as f:
            f.write(json.dumps(row) + "\n")
        self.flush()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.flush()

    def _finish(self, trial: Any, status: str, tags: Mapping[str, str], checkpoint: str | None = None) -> None:
        self._mirror.add_trial(trial.trial_id, trial_point(trial.config))
        artifacts = [(str(Path(trial.path) / ARTIFACTS), None)]
        if checkpoint:
            artifacts.insert(0, (checkpoint, "checkpoint"))
        self._mirror.end_trial(trial.trial_id, status, tags, artifacts)
        self.flush(force=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        path = checkpoint.path if checkpoint is not None and Path(checkpoint.path).is_dir() else None
        last = trial.last_result or {}
        if last.get(DIVERGED_KEY):
            reason = str(last.get(STOP_REASON_KEY, "a watched metric became NaN or infinite"))
            self._finish(trial, "FAILED", {"sweep.status": "diverged", "sweep.error": reason[:500]}, path)
        else:
            self._finish(trial, "FINISHED", {"sweep.status": "finished"}, path)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = ""
        try:
            error = trial.get_error()
            reason = str(error).strip().splitlines()[-1] if error else ""
        except Exception:
            pass
        self._finish(trial, "FAILED", {"sweep.status": "error", "sweep.error": reason[:500] or "see error.txt"})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        failed = sum(1 for t in trials if t.status == "ERROR")
        diverged = sum(1 for t in trials if (t.last_result or {}).get(DIVERGED_KEY))
        self._mirror.end_sweep(
            {
                "sweep.trials": str(len(trials)),
                "sweep.failed_trials": str(failed),
                "sweep.diverged_trials": str(diverged),
            }
        )
        self._next_retry = 0.0  # one more try, whatever the back-off
        self.flush(force=True)
        pending = self._mirror.pending()
        if pending:
            log.warning(
                "MLflow at %s still lacks %s; send it with: python tune_jobs/report.py --replay %s",
                self.tracking_uri,
                pending,
                self._mirror.dir,
            )

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
