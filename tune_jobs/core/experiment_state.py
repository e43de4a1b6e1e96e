"""What the driver writes for Tune's bookkeeping, and what a resume can rely on.

Ray Tune saves its experiment state (every trial's status, config, last result and checkpoint
list, the search's state) so that a killed driver can resume, and copies the driver's staging
folder (which, with Tune's default loggers, holds every result every trial reported) to the
sweep folder with it. One save therefore costs time and bytes in proportion to the number of
trials and results; saved after every controller step (TUNE_GLOBAL_CHECKPOINT_S=0), it grew to
most of a sweep's cost. Here Tune saves when something a resume restores from has changed: a
trial added, ended or paused, at most every `save_period(trials)` seconds (10 s, more for
sweeps of over 100 trials), and new checkpoints alone at most every 60 s (`SweepScheduler`
triggers it); every guarantee comes from records whose cost per event does not grow with the
sweep:

- a trial that ended after Tune's last save is known from `mlflow_runs.json` (the tracker
  writes each trial's end there, atomically, as it happens): `SweepScheduler` does not run it
  again on `--resume`;
- trials a grid or random search created after the last save are created again with the same
  ids and configs from the search's saved state (Tune's ids are a fixed prefix and a counter,
  its random state is saved); an Optuna search draws new ids, so its new trials are saved
  before they start (`SweepScheduler(save_on_add=True)`);
- results are appended to each trial's `result.json` in the sweep folder (`ResultLog`), not
  through the staging folder that every save copies (Tune's CSV and TensorBoard loggers are
  off: MLflow holds the metrics);
- checkpoints are pruned by `CheckpointPruner`: the newest two of each trial, plus the ones
  Tune's recent saves point to and the one before each of those, so a resume always finds the
  checkpoint it restores from, and an older one when that one turns out to be damaged.
  (Tune's own `num_to_keep` cannot promise that without saving its whole state each time a
  trial has written two checkpoints.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.train.constants import CHECKPOINT_DIR_NAME
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import TrialScheduler

from trainables.common.jsonl import append_line
from tune_jobs.core.asha import PromotionASHA
from tune_jobs.core.ray_compat import drop_running_means, forget_checkpoints, save_experiment_state

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
KEEP_CHECKPOINTS = 2
# Tune's saves whose checkpoints stay pinned: the one on disk, the one being copied there, the
# one being written.
PINNED_SAVES = 3
SAVE_SECONDS_PER_TRIAL = 0.1
CHECKPOINT_SAVE_S = 60.0  # the least seconds between Tune's saves for new checkpoints alone
BACKSTOP_SAVE_S = 600
_DEFAULTS_SET: dict[str, str] = {}  # what this process set (not the user), so a later sweep may change it


def save_period(trials: int) -> float:
    """The least seconds between Tune's saves of its experiment state, for `trials` trials.

    `SweepScheduler` has Tune save when something a resume restores from has changed (a trial
    added or ended or paused, a checkpoint), at most this often. A save writes every trial's
    state, so its bytes grow with the trials; spacing the saves in proportion keeps the bytes
    written per trial flat (a sweep of 1000 trials saves at most every 100 s; one of up to 100,
    every 10 s, Tune's own floor). A resume restores the unfinished trials from the checkpoints
    the last save points to; what they ran since is run again. A period the user set in
    TUNE_GLOBAL_CHECKPOINT_S (seconds) wins."""
    user = _user_period()
    return user if user is not None else max(10.0, SAVE_SECONDS_PER_TRIAL * trials)


def checkpoint_save_period(trials: int) -> float:
    """The least seconds between Tune's saves when trials have only reported new checkpoints:
    CHECKPOINT_SAVE_S, or save_period's when that is longer. A period the user set in
    TUNE_GLOBAL_CHECKPOINT_S wins here too."""
    user = _user_period()
    return user if user is not None else max(CHECKPOINT_SAVE_S, save_period(trials))


def _user_period() -> float | None:
    user = os.environ.get("TUNE_GLOBAL_CHECKPOINT_S")
    if user is not None and user != _DEFAULTS_SET.get("TUNE_GLOBAL_CHECKPOINT_S"):
        try:
            return float(user)
        except ValueError:
            pass  # "auto": Tune's own
    return None


def _default(key: str, value: str) -> None:
    """Set an environment default for Tune; a value the user set wins."""
    if key not in os.environ or os.environ[key] == _DEFAULTS_SET.get(key):
        os.environ[key] = _DEFAULTS_SET[key] = value


def configure_experiment_state() -> None:
    """Environment defaults for Tune's bookkeeping (read by Tune when the Tuner starts)."""
    # Tune's own timer is a backstop only: SweepScheduler has it save when something changed.
    _default("TUNE_GLOBAL_CHECKPOINT_S", str(BACKSTOP_SAVE_S))
    # ResultLog writes result.json; without this Tune adds JSON, CSV and TensorBoard loggers
    # whose files sit in the staging folder that every save copies whole.
    _default("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune's list of each trial's checkpoints (in every save) keeps no metrics; the newest
    # checkpoint, which a resume restores from, keeps its own.
    _default("TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE", "1")


class ResultLog(Callback):
    """Appends every result to `<trial folder>/result.json` in the sweep folder, one JSON line
    per result (Tune's format, without the trial's config, which sweep.json holds)."""

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from ray.tune.utils.util import SafeFallbackEncoder

        path = Path(trial.path) / RESULT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {k: v for k, v in result.items() if k != "config"}
        append_line(path, row, SafeFallbackEncoder)


def last_logged_result(trial: Any) -> dict[str, Any] | None:
    """The last result a trial reported, as ResultLog wrote it to the sweep folder; None when
    it has none. Tune's saved state may hold an older one."""
    try:
        data = (Path(trial.path) / RESULT_FILE).read_bytes()
    except (AttributeError, TypeError, OSError):  # no storage (a stub), or no result yet
        return None
    for line in reversed(data.splitlines()):
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # torn by a kill while it was appended
        if isinstance(row, dict):
            return row
    return None


class CheckpointPruner(Callback):
    """Keeps each trial's newest `keep` checkpoints, and every checkpoint one of Tune's last
    saves of its experiment state points to (a resume restores from those), with the one
    before it (the resume falls back to that one when the newest does not load)."""

    def __init__(self, keep: int = KEEP_CHECKPOINTS) -> None:
        self.keep = keep

    def setup(self, **info: Any) -> None:
        self._trials: dict[str, Any] = {}
        self._paths: dict[str, list[str]] = defaultdict(list)
        # One {trial: checkpoint path} per recent save; the first holds the checkpoints the
        # trials were restored from, which the save on disk points to.
        self._pins: deque[dict[str, str]] = deque([{}], maxlen=PINNED_SAVES)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        trial_id = trial.trial_id
        if trial_id not in self._trials:
            self._trials[trial_id] = trial
            restored = trial.checkpoint  # the newest one Tune knew before this one
            if restored is not None:
                self._pins[-1][trial_id] = restored.path
                self._paths[trial_id].append(restored.path)
        self._paths[trial_id].append(checkpoint.path)
        self._prune(trial_id, pinned=True)

    def get_state(self) -> dict | None:
        # Called by Tune each time it saves its experiment state, after it has written the
        # trials' part: the checkpoints the trials point to now are the ones that save holds.
        self._pins.append(
            {tid: t.checkpoint.path for tid, t in self._trials.items() if getattr(t, "checkpoint", None) is not None}
        )
        return None  # nothing of this callback's own to save

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Tune's last save (which points to each trial's newest checkpoint) is on disk now.
        for trial_id in list(self._paths):
            self._prune(trial_id, pinned=False)

    def _prune(self, trial_id: str, pinned: bool) -> None:
        paths = self._paths[trial_id]
        keep = set(paths[-self.keep :])
        if pinned:
            for pin in {pins[trial_id] for pins in self._pins if trial_id in pins}:
                keep.add(pin)
                if pin in paths and paths.index(pin) > 0:
                    keep.add(paths[paths.index(pin) - 1])  # its fallback
        gone = [p for p in paths if p not in keep]
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        self._paths[trial_id] = [p for p in paths if p in keep]
        if gone:
            # Tune's list of the trial's checkpoints (written whole at every save) names those on disk.
            forget_checkpoints(self._trials.get(trial_id), set(gone))


class SweepScheduler(TrialScheduler):
    """Runs a Tune scheduler, and keeps a resumed sweep from running an ended trial again.

    Tune saves its experiment state (which trials exist, which have ended, their checkpoints)
    now and then, not after every step: its cost grows with the number of trials. A trial that
    ended after the last save would run again on `--resume`; the sweep's own record
    (`mlflow_runs.json`, written as each trial ends) knows better, so such a trial is filed as
    ended when Tune adds it back, and the search hears of its end again.

    It also decides when Tune saves its state: when a trial was added, ended or paused, at most
    every `save_every` seconds; when trials only reported checkpoints, at most every
    `checkpoint_save_every` seconds (a resume restores a trial from the checkpoint the last save
    names, so a driver killed meanwhile costs each running trial at most that much of its work
    again; a phase1 sweep checkpoints every minute or so, and each save writes every trial's
    state twice, to Ray's staging folder and to the sweep folder). Results alone change nothing
    a resume needs. So a sweep's saves follow its trials and checkpoints, not the clock, however
    long it runs. Trials that a resumed search cannot give back identically (an Optuna search draws
    new trial ids) must be in Tune's saved state before they start: with `save_on_add`, Tune's
    state is saved in the controller step that adds them, before their worker starts.
    """

    def __init__(
        self,
        inner: TrialScheduler,
        *,
        sweep_dir: str | None = None,
        ended_trials: Callable[[Any], Mapping[str, str]] | None = None,
        outbox: Any = None,
        save_on_add: bool = False,
        save_every: float = 10.0,
        checkpoint_save_every: float = CHECKPOINT_SAVE_S,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.sweep_dir = sweep_dir
        self.ended_trials = ended_trials  # the sweep's record of ended trials (tune_jobs.core.schedulers)
        self.outbox = outbox  # that record, the sweep's one; else read from sweep_dir
        self.save_on_add = save_on_add
        self.save_every = save_every
        self.checkpoint_save_every = checkpoint_save_every
        self.__setstate__({})

    def __getstate__(self) -> dict[str, Any]:
        keep = ("inner", "sweep_dir", "ended_trials", "save_on_add", "save_every", "checkpoint_save_every")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("checkpoint_save_every", CHECKPOINT_SAVE_S)  # pickled before it existed
        self.__dict__.setdefault("ended_trials", None)
        self.__dict__.setdefault("outbox", None)  # not pickled: the runner hands it to a restored one
        self._ended: dict[str, str] | None = None
        self._added = False  # trials added since Tune last saved its state
        self._changed = False  # a trial added, ended or paused since Tune last saved
        self._checkpointed = False  # a checkpoint reported since Tune last saved
        self._last_save = -math.inf

    def use_outbox(self, outbox: Any) -> None:
        """Read the ended trials from the sweep's one outbox (a restored scheduler is handed it)."""
        self.outbox = outbox

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        # Tune's running means of every metric are written with each trial at every save; nothing
        # here reads them (MLflow holds every result), so `scope="last-5-avg"` is not available.
        drop_running_means(trial)
        if self._ended is None:  # read once, when Tune adds the (restored) trials
            source = self.outbox if self.outbox is not None else self.sweep_dir
            self._ended = dict(self.ended_trials(source)) if source and self.ended_trials else {}
        outcome = self._ended.get(trial.trial_id)
        if outcome is not None and not trial.is_finished():
            log.info("trial %s ended before the driver stopped (%s); it is not run again", trial.trial_id, outcome)
            trial.set_status(Trial.ERROR if outcome == "error" else Trial.TERMINATED)
            # Its last result, not the older one Tune's saved state may hold: the search hears
            # the value it ended with (a search told none files the trial as pruned).
            logged = last_logged_result(trial)
            last = trial.run_metadata.last_result or {}
            if logged and logged.get(TRAINING_ITERATION, 0) >= last.get(TRAINING_ITERATION, 0):
                trial.run_metadata.last_result = logged
            tune_controller.search_alg.on_trial_complete(
                trial.trial_id, result=dict(trial.run_metadata.last_result) or None, error=outcome == "error"
            )
            if isinstance(self.inner, PromotionASHA):
                self.inner.on_trial_remove(tune_controller, trial)  # its rung records may say it waits
            return
        self._added = self._changed = True
        self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        decision = self.inner.on_trial_result(tune_controller, trial, result)
        if decision != TrialScheduler.CONTINUE:
            self._changed = True
        elif result.get(CHECKPOINT_DIR_NAME):
            self._checkpointed = True
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._changed = True
        self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._changed = True
        self.inner.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._changed = True
        self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        # Tune calls this once per controller step: the place to save its state.
        if self.save_on_add and self._added:
            # The new trials are registered (add_trial has returned) and no worker runs them yet.
            self._save(tune_controller, wait=True)
        else:
            since = time.monotonic() - self._last_save
            if (self._changed and since >= self.save_every) or (
                self._checkpointed and since >= self.checkpoint_save_every
            ):
                self._save(tune_controller, wait=False)
        return self.inner.choose_trial_to_run(tune_controller)

    def _save(self, tune_controller: Any, wait: bool) -> None:
        save_experiment_state(tune_controller, wait)
        self._added = self._changed = self._checkpointed = False
        self._last_save = time.monotonic()

    def debug_string(self) -> str:
        return self.inner.debug_string()
