"""The Tune callback that keeps a sweep's MLflow record (tune_jobs/core/record.py): it
appends each trial's start, results and end to the record on disk and wakes the sync thread;
Tune's loop never waits on MLflow.

A trial's start and end reach MLflow at once; its results every `flush_seconds` (30 s), in
one batch per run. Each batch is one transaction of the store, and a SQLite store writes about
90 kB per transaction whatever its size (the pages its indexes touch, twice with the rollback
journal): sent one by one, a phase1 sweep's results (one every ~10 s per trial) cost more bytes
than every checkpoint the sweep keeps. `--mlflow-every SECONDS` changes the period (it reaches
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
from tune_jobs.core.adapter import DIVERGED_KEY, STOP_REASON_KEY, trial_point
from tune_jobs.core.errors import one_line
from tune_jobs.core.paths import mlflow_every
from tune_jobs.core.record import NODE_TAGS, Mirror, Syncer, _metric_values, now_ms

log = logging.getLogger(__name__)


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
        end_note: Callable[[list], str] | None = None,
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

    @property
    def parent_run_id(self) -> str | None:
        return self._mirror.parent_run_id

    def setup(self, **info: Any) -> None:
        self._mirror = Mirror.create(
            self.sweep_dir,
            experiment_name=self.experiment_name,
            artifact_location=self.artifact_location,
            tags=self.tags,
            base=self.base,
            run_prefix=self.run_prefix,
            hold_s=60.0,  # a replay of this sweep may be finishing
        )
        self._total = int(info.get("total_num_samples") or 0)  # the trials this sweep runs
        self._mirror.reopen()  # a sweep resumed after a Ctrl-C: its KILLED runs go on
        # The last step journalled per trial: a resumed trial's replayed steps are skipped.
        self._last_step = self._mirror.last_steps()
        self._started = time.monotonic()
        self._syncer = Syncer(self._mirror, self.tracking_uri, mlflow_every() or self.flush_seconds)
        self._syncer.start()  # first: what a killed driver recorded but did not send

    def flush(self, force: bool = False) -> None:
        """Ask the sync thread to bring MLflow up to date (at once with `force`); never blocks."""
        self._syncer.wake(now=force)

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
        self._mirror.append(
            {"trial": trial.trial_id, "step": step, "ts": now_ms(), "metrics": _metric_values(result, self.metrics)}
        )

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
        tags = {
            "sweep.trials": str(len(trials)),
            "sweep.failed_trials": str(failed),
            "sweep.diverged_trials": str(diverged),
            **self._note(trials),
        }
        # Every trial that ran to its end (or failed) passed on_trial_complete/on_trial_error.
        # Fewer of those than the sweep's trials means it was stopped from outside (Ctrl-C,
        # SIGTERM); Tune's own statuses do not say so, it marks stopped trials TERMINATED.
        with self._mirror.lock:
            ended = {tid for tid, entry in self._mirror.state["trials"].items() if "status" in entry}
        unfinished = [t.trial_id for t in trials if t.trial_id not in ended]
        if unfinished or len(ended) < self._total:
            self._mirror.interrupt(unfinished, tags)
        else:
            self._mirror.end_sweep({**tags, "sweep.status": "finished"})
        why = self._syncer.finish(elapsed=time.monotonic() - self._started)
        self._mirror.flush()  # what the sync recorded, for the report and the summary
        if self._syncer.stop():
            self._mirror.release()  # else the thread is stuck in a call; the lock goes with the process
        pending = self._mirror.pending()
        if pending:
            log.warning(
                "%s; it still lacks %s; nothing is lost, send it with: python tune_jobs/report.py --replay %s",
                why or f"MLflow at {self.tracking_uri} did not take everything",
                pending,
                self._mirror.dir,
            )

    def _note(self, trials: list) -> dict[str, str]:
        note = getattr(self, "end_note", None)  # absent in the state of sweeps started before it
        try:
            return {"mlflow.note.content": note(trials)} if note else {}
        except Exception as exc:  # a description must never cost the sweep its end
            log.warning("the sweep's description was not written: %s", one_line(exc)[:200])
            return {}

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
            "end_note",
        )
        return {k: self.__dict__[k] for k in keep if k in self.__dict__}
