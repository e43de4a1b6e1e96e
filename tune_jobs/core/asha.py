"""ASHA with promotion (Li et al., "A System for Massively Parallel Hyperparameter Tuning",
MLSys 2020, Algorithm 2) as a Tune `TrialScheduler`: `PromotionASHA`. What the experiment
YAML's `scheduler: {kind: asha, ...}` runs; tune_jobs/core/schedulers.py says how it compares
with Tune's own schedulers."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.result import DEFAULT_METRIC
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from trainables.common.jsonl import append_line, complete_lines
from tune_jobs.core.adapter import DIVERGED_KEY
from tune_jobs.core.ray_compat import mark_running
from tune_jobs.core.tracking.shapes import parse_rung_event

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
            mark_running(tune_controller, trial)
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
