"""The Tune callback that turns Tune's events into the rows of the sweep's display."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ray.tune import Callback

from tune_jobs.core.console.displays import Snapshot
from tune_jobs.core.console.output import SweepOutput
from tune_jobs.core.console.rows import Row, SweepFacts, eta_seconds, row_of
from tune_jobs.core.space import slots

SNAPSHOT_S = 0.5  # the live rows are rebuilt at most this often (Tune calls on_step_end many times a second)
SLOTS_S = 30.0  # how often the slots are recounted (an autoscaler may add nodes)


def _unloadable(trial: Any) -> str | None:
    """The one line of a trial that failed because none of its checkpoints loads, else None.
    Such a failure repeats the same way on every retry, and its line already names the files
    and the command that starts the trial over; nothing is added to it."""
    from trainables.common import NoLoadableCheckpoint

    try:
        error = trial.get_pickled_error()
    except Exception:
        return None
    cause = getattr(error, "cause", error)  # Ray wraps what the trainable raised
    return str(cause).strip() if isinstance(cause, NoLoadableCheckpoint) else None


def _error_line(trial: Any) -> str:
    try:
        error = trial.get_error()
        lines = [line for line in str(error or "").strip().splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else ""
    except Exception:
        reason = ""
    where = getattr(trial, "error_file", None)
    return (reason[:300] or "see its error file") + (f" (traceback: {where})" if where else "")


def _reported(trial: Any) -> bool:
    """Whether the trial has a result (it ran before a resume); Ray fills in a trial_id anyway."""
    return "training_iteration" in (getattr(getattr(trial, "run_metadata", None), "last_result", None) or {})


class SweepView(Callback):
    """Tune's events, shown by the display of the sweep's output (see SweepOutput).

    Pickled with Tune's experiment state as its facts only; on --resume it shows in the
    display of the process that resumed it."""

    def __init__(self, facts: SweepFacts) -> None:
        self.facts = facts

    def __getstate__(self) -> dict[str, Any]:
        return {"facts": self.facts}

    def setup(self, **info: Any) -> None:
        output = SweepOutput.active
        self._display = output.open_display(self.facts) if output is not None else None
        self._snap = Snapshot()
        self._next_snapshot = 0.0
        self._rows: dict[str, Row] = {}  # the last row of each trial, by id
        self._made: dict[str, tuple[str, Any, Row]] = {}  # each row with the status and result it shows
        self._next_slots = 0.0
        self._slots = 1
        # Trials that ended: seen ending here, or ended before a resume (so at the first step).
        # Tune calls every other trial TERMINATED when a Ctrl-C stops the sweep.
        self._ended: set[str] = set()
        self._started: set[str] = set()
        self._stepped = False
        if self._display is not None:
            self._display.start()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._stepped:
            self._stepped = True
            self._ended.update(t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR"))

    def _snapshot(self, trials: Sequence[Any], force: bool = False, changed: tuple[Any, str] | None = None) -> None:
        now = time.monotonic()
        if self._display is None or (not force and now < self._next_snapshot):
            return
        if now < self._next_snapshot and changed is not None:
            # An event between two rebuilds: only its trial's row is made again, so a sweep of
            # many trials does not rebuild every row at each of its many events.
            trial, status = changed
            self._rows[trial.trial_id] = row_of(trial, self.facts, status)
            rows = tuple(self._rows.get(t.trial_id) or row_of(t, self.facts) for t in trials)
            self._snap = Snapshot(rows=rows, started=self._snap.started, slots=self._slots, eta=self._snap.eta)
            self._display.update(self._snap)
            return
        self._next_snapshot = now + SNAPSHOT_S
        if now >= self._next_slots:
            self._next_slots = now + SLOTS_S
            try:
                import ray

                self._slots = slots(self.facts.per_trial, ray.cluster_resources(), self.facts.max_concurrent)
            except Exception:  # a view detail: never let it stop the sweep
                pass
        rows = tuple(self._row(t, changed[1] if changed and t is changed[0] else None) for t in trials)
        self._rows = {row.trial_id: row for row in rows}
        self._snap = Snapshot(
            rows=rows,
            started=self._snap.started,
            slots=self._slots,
            eta=eta_seconds(rows, self.facts.total, self._slots),
        )
        self._display.update(self._snap)

    def _row(self, trial: Any, status: str | None = None) -> Row:
        """The trial's row, made again only when its status or its last result changed: a
        rebuild of a sweep's rows then costs per trial that moved, not per trial."""
        status = status or trial.status
        last = getattr(getattr(trial, "run_metadata", None), "last_result", None)
        made = self._made.get(trial.trial_id)
        if made is not None and last is not None and made[0] == status and made[1] is last:
            return made[2]
        row = row_of(trial, self.facts, status)
        self._made[trial.trial_id] = (status, last, row)
        return row

    def _event(self, trials: Sequence[Any], trial: Any, status: str, kind: str = "", detail: str = "") -> None:
        if self._display is None:
            return
        self._snapshot(trials, force=True, changed=(trial, status))
        row = row_of(trial, self.facts, status)
        self._display.event(kind or row.outcome, row, detail or row.reason)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._snapshot(trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from tune_jobs.core.adapter import WARNINGS_KEY

        output = SweepOutput.active
        if result.get(WARNINGS_KEY) and output is not None:
            for line in str(result[WARNINGS_KEY]).splitlines():
                output.message(f"warning: {line}", to_log=False)  # the trial's log has it already

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.add(trial.trial_id)
        self._event(trials, trial, "RUNNING", "started")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if _unloadable(trial) is not None:  # it fails the same way again; its failure says it once
            if self._display is not None:
                self._snapshot(trials, force=True, changed=(trial, "PENDING"))
            return
        self._event(trials, trial, "PENDING", "restarting", f"{_error_line(trial)}; from its last checkpoint")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended.add(trial.trial_id)
        self._event(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended.add(trial.trial_id)
        unloadable = _unloadable(trial)
        if unloadable is None:
            self._event(trials, trial, "ERROR", detail=_error_line(trial))
            return
        # Its line ends with the command to run, so it stands alone, not after the progress.
        self._event(trials, trial, "ERROR", detail="its checkpoints do not load:")
        if SweepOutput.active is not None and self._display is not None:
            SweepOutput.active.message(unloadable)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._display is None:
            return
        self._snapshot(trials, force=True)
        stopped = {  # a Ctrl-C: Tune calls TERMINATED the trials it stopped and those it never started
            t.trial_id: "INTERRUPTED" if t.trial_id in self._started or _reported(t) else "NOT_STARTED"
            for t in trials
            if t.trial_id not in self._ended and getattr(t, "status", "") == "TERMINATED"
        }
        if stopped:
            rows = tuple(self._row(t, stopped.get(t.trial_id)) for t in trials)
            self._snap = Snapshot(rows=rows, started=self._snap.started, slots=self._slots, eta=None)
        if SweepOutput.active is not None:
            SweepOutput.active.close_display(self._snap)
        self._display = None
