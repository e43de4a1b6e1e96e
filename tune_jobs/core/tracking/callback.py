"""The Tune callback that keeps a sweep's MLflow outbox (outbox.py): it appends each trial's
start, results and end to the outbox on disk and wakes the sync thread (sync.py); Tune's loop
never waits on MLflow.

A trial's start and end reach MLflow at once; its results every `flush_seconds`, in one batch
per run: each batch is one transaction of the store, whose cost hardly depends on its size
(bench/mlflow_logging.py measures it). `--mlflow-every SECONDS` changes the period (it reaches
the tracker through $TUNE_JOBS_MLFLOW_EVERY_S, so a resumed sweep's restored tracker takes it
too)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.common.context import ARTIFACTS
from tune_jobs.core.adapter import CUDA_DEVICES_KEY, DIVERGED_KEY, GPU_IDS_KEY, NODE_KEY, STOP_REASON_KEY, trial_point
from tune_jobs.core.commands import command_line
from tune_jobs.core.errors import one_line
from tune_jobs.core.tracking.outbox import Outbox
from tune_jobs.core.tracking.state import now_ms
from tune_jobs.core.tracking.sync import Syncer
from tune_jobs.core.tracking.uri import mlflow_every

log = logging.getLogger(__name__)

NODE_TAGS = {
    "ray.node_id": NODE_KEY,
    "ray.node_ip": "node_ip",
    "ray.hostname": "hostname",
    "ray.gpu_ids": GPU_IDS_KEY,
    "ray.cuda_visible_devices": CUDA_DEVICES_KEY,
}


def parent_tags(plan: Any, record: Any) -> dict[str, str]:
    """The parent run's tags: what the sweep runs (the plan) and where it came from (sweep.json)."""
    study, experiment = plan.composed.study, plan.composed.experiment
    return {
        "sweep.id": record.sweep_id,
        "sweep.study": study.name,
        "sweep.study_module": record.study_module,
        "sweep.study_file": record.study_file,
        "sweep.experiment": experiment.name,
        "sweep.profile": record.profile,
        "sweep.quick": str(record.quick).lower(),
        "sweep.space_file": str(experiment.path),
        "sweep.metric": experiment.metric,
        "sweep.mode": experiment.mode,
        "sweep.goal": experiment.goal,
        "sweep.search": experiment.search,
        "sweep.seeds": str(experiment.seeds),
        "git.commit": record.git_commit,
        "mlflow.source.git.commit": record.git_commit.removesuffix("-dirty"),
    }


def metric_values(result: Mapping[str, Any], keys: Sequence[str]) -> dict[str, float]:
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
        flush_seconds: float = 30.0,
        end_note: Callable[[list, Mapping[str, str]], str] | None = None,
        outbox: Outbox | None = None,
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
        self.end_note = end_note  # the parent run's description (MLflow's note) from the final trials
        self.use_outbox(outbox)

    def use_outbox(self, outbox: Outbox | None) -> None:
        """Keep `outbox`, the sweep's one (its writer's lock held), rather than open one in setup;
        the runner hands it again to a tracker Tune restores, which is pickled without it."""
        self._outbox = outbox

    @property
    def parent_run_id(self) -> str | None:
        return self._outbox.parent_run_id

    def setup(self, **info: Any) -> None:
        if getattr(self, "_outbox", None) is None:  # a tracker on its own becomes the sweep's writer
            self._outbox = Outbox(self.sweep_dir, lock_s=60.0)  # a replay of this sweep may be finishing
        self._outbox.prepare(
            experiment_name=self.experiment_name,
            artifact_location=self.artifact_location,
            tags=self.tags,
            base=self.base,
            run_prefix=self.run_prefix,
        )
        self._total = int(info.get("total_num_samples") or 0)  # the trials this sweep runs
        self._outbox.reopen()  # a sweep resumed after a Ctrl-C: its KILLED runs go on
        # The last step journalled per trial: a resumed trial's replayed steps are skipped.
        self._last_step = self._outbox.last_steps()
        self._started = time.monotonic()
        self._syncer = Syncer(self._outbox, self.tracking_uri, mlflow_every() or self.flush_seconds)
        self._syncer.start()  # first: what a killed driver recorded but did not send

    def flush(self, force: bool = False) -> None:
        """Ask the sync thread to bring MLflow up to date (at once with `force`); never blocks."""
        self._syncer.wake(now=force)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._outbox.add_trial(trial.trial_id, trial_point(trial.config))
        self.flush(force=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._outbox.add_trial(trial.trial_id, trial_point(trial.config))
        step = int(result.get("step", result.get("training_iteration", 0)))
        if step <= self._last_step.get(trial.trial_id, -1):
            return  # journalled already (a resumed trial replays from its last checkpoint)
        self._last_step[trial.trial_id] = step
        node = {tag: str(result[key]) for tag, key in NODE_TAGS.items() if result.get(key) is not None}
        if node:
            self._outbox.set_node(trial.trial_id, node)
        self._outbox.append(
            {"trial": trial.trial_id, "step": step, "ts": now_ms(), "metrics": metric_values(result, self.metrics)}
        )

    def _finish(self, trial: Any, status: str, tags: Mapping[str, str], checkpoint: str | None = None) -> None:
        self._outbox.add_trial(trial.trial_id, trial_point(trial.config))
        artifacts = [(str(Path(trial.path) / ARTIFACTS), None)]
        if checkpoint:
            artifacts.insert(0, (checkpoint, "checkpoint"))
        self._outbox.end_trial(trial.trial_id, status, tags, artifacts)
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
        # Every trial that ran to its end (or failed) passed on_trial_complete/on_trial_error.
        # Fewer of those than the sweep's trials means it was stopped from outside (Ctrl-C,
        # SIGTERM); Tune's own statuses do not say so, it marks stopped trials TERMINATED.
        with self._outbox.lock:
            entries = self._outbox.state["trials"]
            ended = {tid for tid, entry in entries.items() if "status" in entry}
            recorded = len(entries)  # an extended sweep's Tune run holds its new trials only
            unfinished = [t.trial_id for t in trials if t.trial_id not in ended]
            # For the note: a trial the Ctrl-C stopped, or one that never started (no entry).
            stopped = {tid: "INTERRUPTED" if tid in entries else "NOT_STARTED" for tid in unfinished}
        tags = {
            "sweep.trials": str(max(len(trials), recorded)),
            "sweep.failed_trials": str(failed),
            "sweep.diverged_trials": str(diverged),
            **self._note(trials, stopped),
        }
        if unfinished or len(ended) < self._total:
            self._outbox.interrupt(unfinished, tags)
        else:
            self._outbox.end_sweep({**tags, "sweep.status": "finished"})
        why = self._syncer.finish(elapsed=time.monotonic() - self._started)
        self._outbox.flush()  # what the sync recorded, for the report and the summary
        if self._syncer.stop():
            self._outbox.release()  # else the thread is stuck in a call; the lock goes with the process
        pending = self._outbox.pending()
        if pending:
            log.warning(
                "%s; it still lacks %s; nothing is lost, send it with: %s",
                why or f"MLflow at {self.tracking_uri} did not take everything",
                pending,
                command_line("python", "tune_jobs/report.py", "--replay", self._outbox.dir),
            )

    def _note(self, trials: list, stopped: Mapping[str, str]) -> dict[str, str]:
        note = getattr(self, "end_note", None)  # absent in the state of sweeps started before it
        try:
            return {"mlflow.note.content": note(trials, stopped)} if note else {}
        except Exception as exc:  # a description must never cost the sweep its end
            log.warning("the sweep's description was not written: %s", one_line(exc)[:200])
            return {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks with its experiment state: keep only the settings, the
        # runtime state is rebuilt from the files in setup() (the outbox is handed again).
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
            "end_note",
        )
        return {k: self.__dict__[k] for k in keep if k in self.__dict__}
