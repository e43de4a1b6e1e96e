"""A stand-in for the part of Tune's controller a scheduler calls (results, PAUSE/STOP/CONTINUE,
choose_trial_to_run for a free slot before any new trial, stop_trial, saves of its state), for
the tests of PromotionASHA (test_asha.py) and SweepScheduler (test_experiment_state.py)."""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from tune_jobs.core.asha import PromotionASHA

CONTINUE, PAUSE, STOP = TrialScheduler.CONTINUE, TrialScheduler.PAUSE, TrialScheduler.STOP


def asha(**kw) -> PromotionASHA:
    s = PromotionASHA(max_t=kw.pop("max_t", 9), grace_period=kw.pop("grace_period", 1), reduction_factor=3, **kw)
    s.set_search_properties("score", "max")
    return s


def trial(name: str) -> Trial:
    return Trial("__fake", config={}, trial_id=name, stub=True)


class FakeSearch:
    def __init__(self, finished: bool = True) -> None:
        self.finished = finished
        self.completed: list[tuple[str, bool]] = []
        self.results: dict[str, dict | None] = {}

    def is_finished(self) -> bool:
        return self.finished

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.completed.append((trial_id, error))
        self.results[trial_id] = result


class Controller:
    """The part of Tune's controller a scheduler may call."""

    def __init__(self, scheduler: TrialScheduler, finished: bool = True) -> None:
        self.scheduler = scheduler
        self.search_alg = FakeSearch(finished)
        self.trials: list[Trial] = []
        self.stopped: list[str] = []
        self.saves: list[bool] = []  # Tune's saves of its state (True: waited for the copy)

    def add(self, *names: str) -> list[Trial]:
        added = []
        for name in names:
            t = trial(name)
            self.trials.append(t)
            self.scheduler.on_trial_add(self, t)
            added.append(t)
        return added

    def get_trials(self) -> list[Trial]:
        return self.trials

    def checkpoint(self, force: bool = False, wait: bool = False) -> None:  # Tune saves its state
        assert force
        self.saves.append(wait)

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self.trials if not t.is_finished()]

    def _set_trial_status(self, t: Trial, status: str) -> None:
        t.set_status(status)

    def stop_trial(self, t: Trial) -> None:  # as TuneController.stop_trial
        if t.status in (Trial.PAUSED, Trial.PENDING):
            self.scheduler.on_trial_remove(self, t)
            self.search_alg.on_trial_complete(t.trial_id)
        elif t.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, t, t.last_result)
            self.search_alg.on_trial_complete(t.trial_id, result=t.last_result)
        t.set_status(Trial.TERMINATED)
        self.stopped.append(t.trial_id)


def report(ctl: Controller, t: Trial, it: int, score: float) -> str:
    t.set_status(Trial.RUNNING)
    result = {"training_iteration": it, "score": score}
    t.run_metadata.last_result = result
    decision = ctl.scheduler.on_trial_result(ctl, t, result)
    if decision == PAUSE:
        t.set_status(Trial.PAUSED)
    return decision
