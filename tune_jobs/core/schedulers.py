"""The trial schedulers a sweep can use, and the one wrapper every sweep runs them in.

`scheduler:` in an experiment YAML picks one:
- `{kind: fifo}`: every trial runs to its end, in the order the search gives them.
- `{kind: asha, max_t, grace_period, reduction_factor}`: ASHA with promotion, as Li et al.
  define it ("A System for Massively Parallel Hyperparameter Tuning", MLSys 2020,
  Algorithm 2), `PromotionASHA` below. A trial that reaches a rung waits there, paused, until
  it is among the top 1/eta of that rung; a freed slot first promotes a waiting trial (the
  highest rung first), else starts a new trial. Pausing goes through Tune's checkpoints: the
  trial resumes from the checkpoint it reported at the rung. This saves compute however few
  the slots are.
- `{kind: asha, promote: false, ...}`: Ray Tune's `AsyncHyperBandScheduler`, which never
  pauses: it stops a trial that lags its rung's peers when it reaches the rung, and lets the
  others run on. With fewer slots than trials the first trials reach `max_t` before any rung
  has peers to compare with (ray issues 32634, 44256), so keep it for clusters with many slots.
- `{kind: hyperband, max_t, reduction_factor}`: Ray Tune's `HyperBandScheduler` (synchronous
  brackets; pauses trials too).

Every scheduler runs inside `SweepScheduler`, which makes a resumed sweep trust what the
sweep recorded after Tune last saved its experiment state (see `tune_jobs.core.experiment_state`):
a trial that `mlflow_runs.json` says has ended is not run again, whatever Tune's older
snapshot says.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.train.constants import CHECKPOINT_DIR_NAME
from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC, TRAINING_ITERATION
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

from tune_jobs.core.adapter import DIVERGED_KEY
from tune_jobs.core.experiment_state import CHECKPOINT_SAVE_S, last_logged_result, lean_run_metadata
from tune_jobs.core.tracking.journal import append_line, complete_lines
from tune_jobs.core.tracking.shapes import RUNG_JOURNAL, parse_rung_event

log = logging.getLogger(__name__)

LIVE = (Trial.RUNNING, Trial.PENDING)


def rung_milestones(grace_period: float, reduction_factor: float, max_t: float) -> list[float]:
    """The rungs below max_t: grace_period * eta^k (the top, max_t, ends a trial)."""
    rungs, r = [], float(grace_period)
    while r < max_t:
        rungs.append(r)
        r *= reduction_factor
    return rungs


class PromotionASHA(FIFOScheduler):
    """ASHA with promotion (Li et al. 2020, Algorithm 2) as a Tune `TrialScheduler`.

    Rung k is at `grace_period * reduction_factor**k` units of `time_attr` (below `max_t`).
    When a trial's result reaches its next rung, its metric is recorded there and its slot is
    handed out as the paper's `get_job` does: from the highest rung down, the best trial among
    the top floor(n_k / eta) of rung k that has not been promoted yet (n_k: trials recorded at
    rung k) is promoted; if none, a new trial starts. The trial that just reached the rung
    continues when it is the one promoted, and is PAUSEd (it waits at the rung) otherwise.
    A trial that finishes or fails frees its slot the same way. `choose_trial_to_run` gives
    Tune the promoted trials first, so they take the freed slot before any new trial.

    When nothing runs and no new trial comes, the paper (whose search never ends) has nothing
    to say. Held back by `max_concurrent` (which counts paused trials), the worst waiting trial
    is stopped so that a new one can start. When the search is done, the rungs are final: if no
    trial went past the highest rung that has waiting trials, its best is promoted (a search
    of few trials still ends with one trained to max_t); the other waiting trials are stopped.

    Rungs rank by the sweep's metric, or by `rank_by` (in `rank_mode`, min or max): a metric
    that separates the trials earlier than the one the sweep is judged by (a smooth validation
    loss against a score that only rises once training has found its features). The sweep's
    metric still picks the best trial and reaches the search.

    Every decision is appended to a journal (`asha_rungs.jsonl` in the sweep folder) before
    Tune acts on it; a resumed sweep replays it, so trials that waited at a rung when the
    driver died wait there again (paused) instead of running on.
    """

    _supports_buffered_results = False  # one decision per result: a rung is never skipped

    def __init__(
        self,
        *,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 3,
        rank_by: str | None = None,
        rank_mode: str | None = None,
        journal: str | None = None,
    ) -> None:
        if max_t <= 0 or grace_period <= 0 or reduction_factor <= 1:
            raise ValueError("PromotionASHA needs max_t > 0, grace_period > 0 and reduction_factor > 1")
        if bool(rank_by) != bool(rank_mode) or rank_mode not in (None, "min", "max"):
            raise ValueError("PromotionASHA's rank_by needs rank_mode 'min' or 'max', and rank_mode needs rank_by")
        super().__init__()
        self._time_attr = time_attr
        self._metric = metric
        self._mode = mode
        self._max_t = max_t
        self._eta = reduction_factor
        self._rungs = rung_milestones(grace_period, reduction_factor, max_t)
        self._rank_by = rank_by
        self._rank_mode = rank_mode
        self._journal = journal
        self._reset()

    def _reset(self) -> None:
        self._recorded: list[dict[str, float]] = [{} for _ in self._rungs]  # rung -> trial -> signed metric
        self._promoted: list[set[str]] = [set() for _ in self._rungs]
        self._next_rung: dict[str, int] = {}  # trial -> index of the next rung it will reach
        self._waiting: dict[str, int] = {}  # trial -> the rung it waits at (paused)
        self._at_rung: dict[str, dict[str, Any]] = {}  # trial -> its result at its last rung (metric, time)
        self._queued: list[str] = []  # promoted trials that wait for a slot
        self._ended: set[str] = set()
        self._to_stop: list[str] = []  # restored trials the journal says were stopped
        self._trials: dict[str, Trial] = {}
        self._replayed = False

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the scheduler with the Tuner: keep the settings only; the decisions are
        # in the journal, replayed on the first trial a (resumed) sweep adds.
        state = self.__dict__.copy()
        for key in (
            "_recorded", "_promoted", "_next_rung", "_waiting", "_at_rung", "_queued", "_ended", "_to_stop", "_trials",
        ):  # fmt: skip
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_rank_by": None, "_rank_mode": None, **state})  # pickled before rank_by
        self._reset()

    # -- settings ---------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        if (self._metric and metric) or (self._mode and mode):
            return False
        self._metric = metric or self._metric or (DEFAULT_METRIC if mode else None)
        self._mode = mode or self._mode
        return True

    @property
    def rungs(self) -> list[float]:
        return list(self._rungs)

    @property
    def ranking(self) -> tuple[str, str]:
        """(metric, mode) the rungs rank by: rank_by's, else the sweep's."""
        return (self._rank_by, self._rank_mode) if self._rank_by else (self._metric, self._mode)

    def _score(self, result: Mapping[str, Any]) -> float:
        """The result's ranking metric, larger is better; NaN (a diverged trial) ranks last."""
        metric, mode = self.ranking
        value = float(result[metric])
        if math.isnan(value):
            return -math.inf
        return value if mode == "max" else -value

    # -- the journal ----------------------------------------------------------------------------
    def _write(self, **event: Any) -> None:
        if self._journal is None:
            return
        append_line(Path(self._journal), event)

    def _replay(self) -> None:
        self._replayed = True
        if self._journal is None or not Path(self._journal).exists():
            return
        # A last line torn by a crash mid-write is not read: the decision never reached Tune either.
        for _, line in complete_lines(Path(self._journal)):
            event = parse_rung_event(line)
            if event is None or event.get("rung", 0) >= len(self._rungs):
                if line.strip():  # a resume checks the journal first (rung_journal_problem)
                    log.warning("%s: skipped a line that is not a rung decision: %r", self._journal, line[:80])
                continue
            trial_id = event["trial"]
            if event["event"] == "rung":
                self._record(trial_id, event["rung"], event["score"], event.get("result"), write=False)
            elif event["event"] == "promote":
                self._promote(trial_id, event["rung"], write=False)
            elif event["event"] == "end":
                self._end(trial_id, write=False)
        self._queued.clear()  # on resume Tune requeues the promoted ones itself (PENDING)

    # -- the rules ------------------------------------------------------------------------------
    def _record(
        self, trial_id: str, rung: int, score: float, result: dict[str, Any] | None, write: bool = True
    ) -> None:
        if write:
            self._write(event="rung", trial=trial_id, rung=rung, score=score, result=result)
        self._recorded[rung][trial_id] = score
        if result:
            self._at_rung[trial_id] = result
        self._waiting[trial_id] = rung  # until promoted, it waits here

    def _promote(self, trial_id: str, rung: int, write: bool = True) -> None:
        if write:
            self._write(event="promote", trial=trial_id, rung=rung)
        self._promoted[rung].add(trial_id)
        self._next_rung[trial_id] = rung + 1
        self._waiting.pop(trial_id, None)

    def _end(self, trial_id: str, write: bool = True) -> None:
        if trial_id in self._ended:
            return
        if write:
            self._write(event="end", trial=trial_id)
        self._ended.add(trial_id)
        self._waiting.pop(trial_id, None)
        if trial_id in self._queued:
            self._queued.remove(trial_id)

    def top(self, rung: int) -> list[str]:
        """The top floor(n / eta) trials recorded at `rung`, best first (ties: the earlier)."""
        recorded = self._recorded[rung]
        ranked = sorted(recorded, key=lambda t: -recorded[t])  # stable: the earlier record first
        return ranked[: int(len(recorded) // self._eta)]

    def promotable(self) -> tuple[str, int] | None:
        """The paper's get_job: (trial, rung) to promote, highest rung first; None = a new trial."""
        for rung in reversed(range(len(self._rungs))):
            for trial_id in self.top(rung):
                if trial_id not in self._promoted[rung] and self._waiting.get(trial_id) == rung:
                    return trial_id, rung
        return None

    def _hand_out_slot(self) -> str | None:
        """A slot is free: promote the trial get_job names (queued for that slot), if any."""
        job = self.promotable()
        if job is None:
            return None
        self._promote(*job)
        self._queued.append(job[0])
        return job[0]

    # -- Tune's hooks -----------------------------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if not self._metric or not self._mode:
            raise ValueError("PromotionASHA needs a metric and a mode (from tune.TuneConfig)")
        if not self._replayed:
            self._replay()
        trial_id = trial.trial_id
        self._trials[trial_id] = trial
        if trial.status != Trial.PENDING:
            return
        if trial_id in self._ended:
            # Stopped at its rung before the driver died, after Tune last saved its state.
            trial.set_status(Trial.PAUSED)
            self._restore_last_result(trial)
            self._to_stop.append(trial_id)
        elif trial_id in self._waiting:
            # Waited at a rung when the driver died: it waits there again, and is not started
            # until promoted. (Tune files the trial under the status it has after this hook.)
            trial.set_status(Trial.PAUSED)
            self._restore_last_result(trial)

    def _restore_last_result(self, trial: Trial) -> None:
        """Give a trial restored to wait at (or be stopped at) its rung the result it had there.
        Tune's saved state may be older than the rung: stopping the trial would then tell the
        search an older value, or none at all (an Optuna trial filed as pruned, not complete)."""
        at_rung = self._at_rung.get(trial.trial_id)
        last = trial.run_metadata.last_result or {}
        if at_rung and not last.get(self._time_attr, -math.inf) >= at_rung[self._time_attr]:
            trial.run_metadata.last_result = {**last, **at_rung}

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if result.get(DIVERGED_KEY) or self._time_attr not in result or self.ranking[0] not in result:
            return TrialScheduler.CONTINUE
        trial_id, t = trial.trial_id, result[self._time_attr]
        if trial_id in self._queued:
            self._queued.remove(trial_id)  # promoted, and running: it has its slot
        if trial_id in self._waiting:
            return TrialScheduler.PAUSE  # it waits at its rung (a result that raced the pause)
        if t >= self._max_t:
            return TrialScheduler.STOP
        rung = self._next_rung.get(trial_id, 0)
        # Results can be coarser than the rungs: a result may pass several at once.
        while rung < len(self._rungs) and t >= self._rungs[rung]:
            # What a trial stopped here tells the search: its sweep metric at the rung.
            at_rung = {self._time_attr: _plain(t)}
            at_rung.update({m: float(result[m]) for m in {self._metric, self.ranking[0]} if m in result})
            self._record(trial_id, rung, self._score(result), at_rung)
            job = self.promotable()
            if job != (trial_id, rung):
                # It waits at this rung; its slot goes to the promoted trial, or to a new one.
                self._hand_out_slot()
                return TrialScheduler.PAUSE
            self._promote(trial_id, rung)
            rung += 1
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict) -> None:
        self._end(trial.trial_id)
        self._hand_out_slot()

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._end(trial.trial_id)
        self._hand_out_slot()

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        # A paused or pending trial was stopped: it held no slot.
        self._end(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        while self._to_stop:
            trial = self._trials[self._to_stop.pop()]
            if trial.status in (Trial.PAUSED, Trial.PENDING):
                self._stop_waiting(tune_controller, trial)
        promoted = self._next_queued()
        if promoted is None and self._waiting and not any(t.status in LIVE for t in tune_controller.get_live_trials()):
            self._unblock(tune_controller)
            promoted = self._next_queued()
        return promoted  # None: Tune starts its pending (new) trials itself, in the search's order

    def _next_queued(self) -> Trial | None:
        """The first promoted trial still waiting for a slot (Tune asks every step until it runs)."""
        while self._queued:
            trial = self._trials.get(self._queued[0])
            if (
                trial is not None
                and trial.status in (Trial.PAUSED, Trial.PENDING)
                and trial.trial_id not in self._waiting
            ):
                return trial
            self._queued.pop(0)
        return None

    def _unblock(self, tune_controller: Any) -> None:
        """Nothing runs, nothing is pending, trials wait. Promote one if get_job can. Else, while
        the search may still give a new trial, stop the worst waiting trial to make room for it.
        Once the search is done, the rungs are final: if no trial went past the highest rung
        that has waiting trials (too few trials reached it for a top 1/eta), its best trial is
        promoted, so that the search ends with a trial trained to max_t; every other waiting
        trial is stopped where it waits."""
        if self._hand_out_slot() is not None:
            return
        finished = tune_controller.search_alg.is_finished()
        if finished:
            rung = max(self._waiting.values())
            if not self._promoted[rung]:
                best = max((t for t, r in self._waiting.items() if r == rung), key=lambda t: self._recorded[rung][t])
                self._promote(best, rung)
                self._queued.append(best)
                return
        waiting = sorted(self._waiting, key=lambda t: (self._waiting[t], self._recorded[self._waiting[t]][t]))
        for trial_id in waiting if finished else waiting[:1]:
            trial = self._trials.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                self._stop_waiting(tune_controller, trial)
            else:
                self._end(trial_id)

    def _stop_waiting(self, tune_controller: Any, trial: Trial) -> None:
        """Stop a trial where it waits, as Tune stops a running trial: the search is told its
        last result (an Optuna search learns the value it reached at its rung, as with Tune's
        stop-only ASHA), where stopping a paused trial would tell it no value at all."""
        if trial.status == Trial.PAUSED:
            tune_controller._set_trial_status(trial, Trial.RUNNING)
        tune_controller.stop_trial(trial)

    def debug_string(self) -> str:
        rungs = ", ".join(
            f"{r:g}: {len(rec)} in, {len(prom)} promoted"
            for r, rec, prom in zip(self._rungs, self._recorded, self._promoted)
        )
        return f"Using ASHA with promotion (eta={self._eta:g}, max_t={self._max_t:g}); rungs {rungs}; {len(self._waiting)} waiting"


def _plain(value: Any) -> Any:
    """A number as JSON writes it (a NumPy scalar becomes Python's)."""
    return value.item() if hasattr(value, "item") else value


def ended_trials(sweep_dir: str | Path) -> dict[str, str]:
    """Trials the sweep's record (mlflow_runs.json) says have ended: trial id -> outcome
    (finished, diverged or error). The tracker writes a trial's end there, atomically, in
    the same controller step as Tune learns of it."""
    from tune_jobs.core.tracking import Outbox

    trials = Outbox(sweep_dir).state.get("trials", {})
    return {
        trial_id: entry.get("end_tags", {}).get("sweep.status", "finished")
        for trial_id, entry in trials.items()
        if "status" in entry and not entry.get("interrupted")  # closed by a Ctrl-C: it goes on
    }


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
        save_on_add: bool = False,
        save_every: float = 10.0,
        checkpoint_save_every: float = CHECKPOINT_SAVE_S,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.sweep_dir = sweep_dir
        self.save_on_add = save_on_add
        self.save_every = save_every
        self.checkpoint_save_every = checkpoint_save_every
        self.__setstate__({})

    def __getstate__(self) -> dict[str, Any]:
        keep = ("inner", "sweep_dir", "save_on_add", "save_every", "checkpoint_save_every")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("checkpoint_save_every", CHECKPOINT_SAVE_S)  # pickled before it existed
        self._ended: dict[str, str] | None = None
        self._added = False  # trials added since Tune last saved its state
        self._changed = False  # a trial added, ended or paused since Tune last saved
        self._checkpointed = False  # a checkpoint reported since Tune last saved
        self._last_save = -math.inf

    @property
    def metric(self) -> str | None:
        return self.inner.metric

    @property
    def supports_buffered_results(self) -> bool:
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        lean_run_metadata(trial)
        if self._ended is None:  # read once, when Tune adds the (restored) trials
            self._ended = ended_trials(self.sweep_dir) if self.sweep_dir else {}
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
        controller = getattr(tune_controller, "_tune_controller", tune_controller)  # Tune's wrapper hides it
        controller.checkpoint(force=True, wait=wait)
        self._added = self._changed = self._checkpointed = False
        self._last_save = time.monotonic()

    def debug_string(self) -> str:
        return self.inner.debug_string()


def make_scheduler(
    settings: Mapping[str, Any],
    *,
    sweep_dir: str | Path | None = None,
    save_on_add: bool = False,
    save_every: float = 10.0,
    checkpoint_save_every: float = CHECKPOINT_SAVE_S,
) -> SweepScheduler:
    """The scheduler an experiment's `scheduler:` settings name, inside `SweepScheduler`."""
    settings = dict(settings)
    kind = settings.pop("kind")
    inner: TrialScheduler
    if kind == "fifo":
        inner = FIFOScheduler()
    elif kind == "asha" and settings.pop("promote", True):
        journal = str(Path(sweep_dir) / RUNG_JOURNAL) if sweep_dir else None
        inner = PromotionASHA(journal=journal, **settings)
    elif kind == "asha":
        inner = AsyncHyperBandScheduler(**settings)
    elif kind == "hyperband":
        inner = HyperBandScheduler(**settings)
    else:
        raise ValueError(f"unknown scheduler kind {kind!r}")
    return SweepScheduler(
        inner,
        sweep_dir=str(sweep_dir) if sweep_dir else None,
        save_on_add=save_on_add,
        save_every=save_every,
        checkpoint_save_every=checkpoint_save_every,
    )
