"""ASHA with promotion (Li et al. 2020, Algorithm 2) as a Tune scheduler, checked against the
paper's rules: first on a scripted sequence of results, decision by decision, then against an
independent implementation of the paper's get_job in a simulated cluster with few slots.

The cluster here drives the scheduler as Tune's controller does (results, PAUSE/STOP/CONTINUE,
choose_trial_to_run for a free slot before any new trial, stop_trial); real Ray runs are in
test_asha_sweep.py."""

from __future__ import annotations

import json
import math
import pickle
import random
from collections.abc import Callable

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

from tune_jobs.core.asha import PromotionASHA, rung_milestones
from tune_jobs.core.experiment_state import SweepScheduler
from tune_jobs.core.schedulers import ended_trials, make_scheduler

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


def test_rungs_are_grace_period_times_powers_of_eta_below_max_t():
    assert rung_milestones(1, 3, 9) == [1, 3]
    assert rung_milestones(2, 3, 20) == [2, 6, 18]
    assert rung_milestones(4, 2, 16) == [4, 8]
    assert rung_milestones(5, 3, 5) == []


def test_a_scripted_sequence_follows_the_papers_rules_decision_by_decision():
    s = asha()  # rungs at 1 and 3, max_t 9, eta 3
    ctl = Controller(s, finished=False)
    a, b, c, d, e, f = ctl.add("a", "b", "c", "d", "e", "f")

    # Rung 1 has 1, then 2 trials: floor(n/3) = 0, nobody is promotable, each waits.
    assert report(ctl, a, 1, 0.5) == PAUSE
    assert report(ctl, b, 1, 0.2) == PAUSE
    assert s.choose_trial_to_run(ctl) is None  # the free slot goes to a new trial
    # The third: top 1 of 3 is c itself, which goes on (promoted without a pause).
    assert report(ctl, c, 1, 0.9) == CONTINUE
    assert s.top(0) == ["c"]
    # d is worse than c; the only top slot is c's, already promoted: d waits.
    assert report(ctl, d, 1, 0.1) == PAUSE
    # e is second best of 5: top is still 1 trial (c).
    assert report(ctl, e, 1, 0.6) == PAUSE
    # f makes 6 at rung 1: the top 2 are c and e; e is promotable, f's slot goes to e.
    assert report(ctl, f, 1, 0.3) == PAUSE
    assert s.choose_trial_to_run(ctl) is e
    assert s.choose_trial_to_run(ctl) is e  # idempotent until it runs
    e.set_status(Trial.RUNNING)
    assert s.choose_trial_to_run(ctl) is None

    # c reaches rung 3 first: 1 trial there, nothing promotable anywhere: c waits.
    assert report(ctl, c, 3, 0.95) == PAUSE
    # e reaches rung 3 as well (2 there): still nothing; it waits too.
    assert report(ctl, e, 3, 0.7) == PAUSE
    # New trial g: rung 1 now has 7, top 2 = c, e, both promoted: g (third) waits.
    (g,) = ctl.add("g")
    assert report(ctl, g, 1, 0.55) == PAUSE
    (h,) = ctl.add("h")
    # h: 8 at rung 1, top 2 = h, c: h goes on.
    assert report(ctl, h, 1, 0.99) == CONTINUE
    # h at rung 3 makes 3 there: the top 1 is c (0.95 > 0.9 > 0.7): h waits, c takes the slot
    # (rung 3 before rung 1: g would be promotable at rung 1 only with 9 trials there).
    assert report(ctl, h, 3, 0.9) == PAUSE
    assert s.choose_trial_to_run(ctl) is c
    c.set_status(Trial.RUNNING)
    # c runs to max_t: STOP; its slot goes to the best promotable trial, if any.
    assert report(ctl, c, 9, 0.97) == STOP
    s.on_trial_complete(ctl, c, {})
    assert s.promotable() is None

    # A result past two rungs at once is recorded at both, and decided at each.
    (i,) = ctl.add("i")
    assert report(ctl, i, 4, 2.0) == CONTINUE  # best at rung 1 (9 there, top 3) and at rung 3 (4 there, top 1)
    assert "i" in s.top(0) and s.top(1) == ["i"]


def test_get_job_promotes_from_the_highest_rung_first_then_the_best_of_its_top(tmp_path):
    # In a running sweep each record is decided at once, so two trials are promotable together
    # only after a resume (decisions recorded, the driver died before acting on them).
    journal = tmp_path / "asha_rungs.jsonl"
    first = {"a": 0.1, "b": 0.2, "c": 0.9, "d": 0.8, "e": 0.3, "f": 0.4, "g": 0.05, "h": 0.15, "x": 0.85}
    events = [{"event": "rung", "trial": t, "rung": 0, "score": v} for t, v in first.items()]
    for t, v in (("c", 0.5), ("d", 0.6), ("x", 0.7)):  # the top 3 of 9 went on to rung 3
        events += [{"event": "promote", "trial": t, "rung": 0}, {"event": "rung", "trial": t, "rung": 1, "score": v}]
    events.append({"event": "rung", "trial": "y", "rung": 0, "score": 0.95})  # then y: the best at rung 1
    journal.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = asha(max_t=27, journal=str(journal))  # rungs 1, 3, 9
    ctl = Controller(s)
    trials = dict(zip("abcdefghxy", ctl.add(*"abcdefghxy")))
    # Rung 1: 10 there, top 3 = y, c, x: y is promotable. Rung 3: 3 there, top 1 = x: promotable.
    assert s.top(0) == ["y", "c", "x"] and s.top(1) == ["x"]
    assert s.promotable() == ("x", 1)  # the highest rung first
    # Nothing runs: the free slot takes x; the next get_job names y.
    assert s.choose_trial_to_run(ctl) is trials["x"]
    assert s._next_rung["x"] == 2 and s.promotable() == ("y", 0)


def test_when_nothing_runs_and_no_new_trial_comes_the_worst_waiting_trial_makes_room():
    s = asha()
    ctl = Controller(s, finished=False)
    a, b = ctl.add("a", "b")
    report(ctl, a, 1, 0.5)
    report(ctl, b, 1, 0.7)
    # Both wait (2 at rung 1), nothing runs, the search gives nothing (held back by a
    # concurrency limit): the worst waiting trial is stopped so that a new one can start.
    assert s.choose_trial_to_run(ctl) is None
    assert ctl.stopped == ["a"] and a.status == Trial.TERMINATED and b.status == Trial.PAUSED
    # The search hears of it as of a trial Tune stopped: with the value it reached at its rung.
    assert ctl.search_alg.completed == [("a", False)] and ctl.search_alg.results["a"]["score"] == 0.5


def test_a_finished_search_trains_its_best_to_max_t_and_stops_the_rest_where_they_wait():
    s = asha()  # rungs 1, 3; max_t 9
    ctl = Controller(s, finished=True)
    a, b = ctl.add("a", "b")
    report(ctl, a, 1, 0.5)
    report(ctl, b, 1, 0.7)
    # Two trials only: rung 1 never has a top third. Nothing runs, the search is done: the
    # best trial of the highest rung with waiting trials goes on, since none went past it.
    assert s.choose_trial_to_run(ctl) is b and not ctl.stopped
    assert report(ctl, b, 3, 0.8) == PAUSE  # alone at rung 3
    assert s.choose_trial_to_run(ctl) is b  # ... and again: nobody went past rung 3
    assert report(ctl, b, 9, 0.9) == STOP
    b.set_status(Trial.TERMINATED)
    s.on_trial_complete(ctl, b, {})
    # b went past rung 1: a, waiting there, is stopped.
    assert s.choose_trial_to_run(ctl) is None and ctl.stopped == ["a"]


def test_a_trial_that_finishes_hands_its_slot_to_get_jobs_pick(tmp_path):
    # A resumed sweep: z was recorded at rung 1 (the best there), and the driver died before
    # acting on it; c had been promoted and runs on.
    journal = tmp_path / "asha_rungs.jsonl"
    events = [{"event": "rung", "trial": t, "rung": 0, "score": v} for t, v in (("a", 0.9), ("b", 0.1), ("c", 0.95))]
    events += [{"event": "promote", "trial": "c", "rung": 0}, {"event": "rung", "trial": "z", "rung": 0, "score": 0.99}]
    journal.write_text("".join(json.dumps(e) + "\n" for e in events))
    s = asha(journal=str(journal))
    ctl = Controller(s)
    a, b, c, z = ctl.add("a", "b", "c", "z")
    assert [t.status for t in (a, b, c, z)] == [Trial.PAUSED, Trial.PAUSED, Trial.PENDING, Trial.PAUSED]
    c.set_status(Trial.RUNNING)
    assert s.choose_trial_to_run(ctl) is None  # c holds the slot; nobody waits for one
    assert report(ctl, c, 9, 0.97) == STOP
    c.set_status(Trial.TERMINATED)
    s.on_trial_complete(ctl, c, {})
    assert s.choose_trial_to_run(ctl) is z  # 4 at rung 1, top 1 = z: c's slot is z's
    assert not ctl.stopped


def test_the_journal_brings_back_the_waiting_trials_on_resume(tmp_path):
    journal = tmp_path / "asha_rungs.jsonl"
    s = asha(journal=str(journal))
    ctl = Controller(s, finished=False)
    a, b, c, d = ctl.add("a", "b", "c", "d")
    report(ctl, a, 1, 0.5)  # waits
    report(ctl, b, 1, 0.2)  # waits
    report(ctl, c, 1, 0.9)  # promoted, runs on
    report(ctl, d, 1, 0.95)  # 4 at rung 1, top 1 = d: d goes on
    assert [json.loads(line)["event"] for line in journal.read_text().splitlines()] == [
        "rung", "rung", "rung", "promote", "rung", "promote",
    ]  # fmt: skip

    # The driver dies. Tune's saved state (maybe older) gives every unfinished trial back
    # as PENDING; the scheduler comes back from the Tuner's pickle, without its decisions.
    s2 = pickle.loads(pickle.dumps(s))
    assert not s2._recorded[0]
    ctl2 = Controller(s2, finished=True)
    restored = ctl2.add("a", "b", "c", "d")
    by_id = {t.trial_id: t for t in restored}
    # a and b wait at rung 1 again (paused, not started); c and d continue from their checkpoints.
    assert [by_id[x].status for x in "abcd"] == [Trial.PAUSED, Trial.PAUSED, Trial.PENDING, Trial.PENDING]
    assert s2.top(0) == ["d"] and s2._next_rung == {"c": 1, "d": 1}
    # c replays its rung-1 result after restoring from an older checkpoint: it goes on.
    assert report(ctl2, by_id["c"], 1, 0.9) == CONTINUE
    # A torn last line (the crash hit mid-write) is ignored.
    with open(journal, "a") as f:
        f.write('{"event": "promote", "trial": "a", "ru')
    s3 = pickle.loads(pickle.dumps(s))
    Controller(s3).add("a")
    assert s3._waiting == {"a": 0, "b": 0}


def test_a_stopped_trial_in_the_journal_is_stopped_again_on_resume(tmp_path):
    journal = tmp_path / "asha_rungs.jsonl"
    s = asha(journal=str(journal))
    ctl = Controller(s, finished=True)
    a, b, c = ctl.add("a", "b", "c")
    report(ctl, a, 1, 0.5)
    report(ctl, b, 1, 0.6)
    assert report(ctl, c, 1, 0.9) == CONTINUE
    assert report(ctl, c, 3, 0.9) == PAUSE
    assert s.choose_trial_to_run(ctl) is c  # alone at rung 3, the search is done: it goes on
    assert report(ctl, c, 9, 0.9) == STOP
    c.set_status(Trial.TERMINATED)
    s.on_trial_complete(ctl, c, {})
    s.choose_trial_to_run(ctl)  # a and b can never be promoted: stopped at rung 1
    assert sorted(ctl.stopped) == ["a", "b"]
    s2 = pickle.loads(pickle.dumps(s))
    ctl2 = Controller(s2)
    a2, b2 = ctl2.add("a", "b")  # Tune's older state had them unfinished
    assert a2.status == b2.status == Trial.PAUSED
    s2.choose_trial_to_run(ctl2)
    assert sorted(ctl2.stopped) == ["a", "b"]


def test_a_restored_trial_stopped_where_it_waits_tells_the_search_its_value_at_the_rung(tmp_path):
    # Tune's saved state can be older than a trial's rung: restored, it has no result at all. The
    # search must still hear the value the trial reached there (an Optuna trial told no value is
    # filed as pruned, not complete).
    journal = tmp_path / "asha_rungs.jsonl"
    s = asha(journal=str(journal))
    ctl = Controller(s, finished=False)
    a, b, c = ctl.add("a", "b", "c")
    report(ctl, a, 1, 0.5)  # waits at rung 1
    report(ctl, b, 1, 0.2)  # waits at rung 1
    assert report(ctl, c, 1, 0.9) == CONTINUE
    assert json.loads(journal.read_text().splitlines()[0])["result"] == {"training_iteration": 1, "score": 0.5}

    s2 = pickle.loads(pickle.dumps(s))
    ctl2 = Controller(s2, finished=True)
    restored = {t.trial_id: t for t in ctl2.add("a", "b", "c")}  # as Tune's older save gives them back
    assert restored["a"].status == restored["b"].status == Trial.PAUSED
    assert restored["a"].run_metadata.last_result == {"training_iteration": 1, "score": 0.5}
    restored["c"].set_status(Trial.TERMINATED)  # c went on and finished
    s2.on_trial_complete(ctl2, restored["c"], {})
    s2.choose_trial_to_run(ctl2)  # the search is done: a and b are stopped where they wait
    assert sorted(ctl2.stopped) == ["a", "b"]
    assert ctl2.search_alg.results["a"]["score"] == 0.5 and ctl2.search_alg.results["b"]["score"] == 0.2


# -- the paper's algorithm, independently, against the scheduler in a simulated cluster ---------


def paper_asha(
    n: int, slots: int, score: Callable[[int, int], float], eta: float, rungs: list[float], max_t: int
) -> list[tuple]:
    """Algorithm 2 of Li et al. with n configurations and `slots` workers; every unit of
    resource takes one time step. Returns the events (time, trial, event, resource)."""
    recorded = [dict() for _ in rungs]
    promoted = [set() for _ in rungs]
    started, events = 0, []
    progress = [0] * n
    goal = [0.0] * n  # the resource the trial trains to in its current job
    workers: list[int | None] = [None] * slots

    def get_job() -> int | None:
        nonlocal started
        for k in reversed(range(len(rungs))):
            top = sorted(recorded[k], key=lambda i: -recorded[k][i])[: int(len(recorded[k]) // eta)]
            for i in top:
                if i not in promoted[k]:
                    promoted[k].add(i)
                    goal[i] = rungs[k + 1] if k + 1 < len(rungs) else max_t
                    return i
        if started < n:
            started += 1
            goal[started - 1] = rungs[0] if rungs else max_t
            return started - 1
        return None

    def fill(now: int) -> None:
        for w in range(slots):
            if workers[w] is None:
                workers[w] = get_job()

    fill(0)
    now = 0
    while any(w is not None for w in workers):
        now += 1
        for w in range(slots):
            i = workers[w]
            if i is None:
                continue
            progress[i] += 1
            if progress[i] < goal[i]:
                continue
            workers[w] = None
            if progress[i] >= max_t:
                events.append((now, i, "end", progress[i]))
            else:
                k = rungs.index(goal[i])
                recorded[k][i] = score(i, progress[i])
                events.append((now, i, "rung", progress[i]))
            fill(now)
    return events


def simulated_tune(
    scheduler: PromotionASHA, n: int, slots: int, score: Callable[[int, int], float], max_t: int
) -> list[tuple]:
    """The same cluster driven through the scheduler's Tune hooks."""
    ctl = Controller(scheduler, finished=True)
    trials = ctl.add(*(f"t{i:03d}" for i in range(n)))
    index = {t.trial_id: i for i, t in enumerate(trials)}
    progress = dict.fromkeys(index, 0)
    slot: list[Trial | None] = [None] * slots
    fresh = list(trials)
    events = []

    def fill() -> None:
        for w in range(slots):
            if slot[w] is None:
                t = scheduler.choose_trial_to_run(ctl)
                if t is None and fresh:
                    t = fresh.pop(0)
                if t is not None:
                    assert t.status in (Trial.PENDING, Trial.PAUSED)
                    if t in fresh:
                        fresh.remove(t)
                    t.set_status(Trial.RUNNING)
                    slot[w] = t

    fill()
    now = 0
    while any(slot) or any(t.status == Trial.PAUSED for t in trials):
        if not any(slot):
            assert scheduler.choose_trial_to_run(ctl) is None  # stops the trials nothing can promote
            continue
        now += 1
        for w in range(slots):
            t = slot[w]
            if t is None:
                continue
            progress[t.trial_id] += 1
            it = progress[t.trial_id]
            decision = scheduler.on_trial_result(
                ctl, t, {"training_iteration": it, "score": score(index[t.trial_id], it)}
            )
            if decision == STOP:
                t.set_status(Trial.TERMINATED)
                scheduler.on_trial_complete(ctl, t, {})
                events.append((now, index[t.trial_id], "end", it))
            elif decision == PAUSE:
                t.set_status(Trial.PAUSED)
                events.append((now, index[t.trial_id], "rung", it))
            elif it in scheduler.rungs:
                events.append((now, index[t.trial_id], "rung", it))
                continue
            else:
                continue
            slot[w] = None
            fill()
    return events


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("slots", [1, 2, 3])
def test_the_scheduler_makes_the_papers_decisions_in_a_cluster_with_few_slots(seed, slots):
    rng = random.Random(seed)
    n, max_t, eta, grace = 30, 27, 3, 1
    curves = [(rng.random(), rng.random() * 0.3) for _ in range(n)]

    def score(i: int, t: int) -> float:
        base, slope = curves[i]
        return base + slope * math.log(t)  # curves cross: early ranks are not final ranks

    rungs = rung_milestones(grace, eta, max_t)
    paper = paper_asha(n, slots, score, eta, rungs, max_t)
    ours = simulated_tune(asha(max_t=max_t, grace_period=grace), n, slots, score, max_t)
    assert ours == paper
    # ... and it saves what ASHA saves: far fewer trial-units than running every trial to max_t.
    used = {}
    for _, i, _, t in ours:
        used[i] = max(used.get(i, 0), t)
    assert sum(used.values()) < n * max_t / 3
    assert any(kind == "end" for _, _, kind, _ in ours)


# -- the wrapper every sweep's scheduler runs in ---------------------------------------------------


def write_mirror(sweep_dir, trials: dict) -> None:
    """A sweep record (mlflow_runs.json) as the tracker writes it, holding `trials`."""
    base = {"name": "t", "point": {}, "start_ms": 0, "params_logged": True, "ended": False}
    state = {
        "experiment": "e",
        "tags": {},
        "base": {},
        "run_prefix": "e",
        "start_ms": 0,
        "trials": {tid: {**base, **entry} for tid, entry in trials.items()},
        "journal_offset": 0,
        "parent_cfg_logged": True,
        "ended": False,
    }
    (sweep_dir / "mlflow_runs.json").write_text(json.dumps(state))


def test_a_resumed_sweep_files_the_trials_its_record_says_ended_as_ended(tmp_path):
    write_mirror(
        tmp_path,
        {
            "done": {"status": "FINISHED", "end_tags": {"sweep.status": "finished"}},
            "broke": {"status": "FAILED", "end_tags": {"sweep.status": "error"}},
            "nan": {"status": "FAILED", "end_tags": {"sweep.status": "diverged"}},
            "running": {"name": "x"},
        },
    )
    inner = asha(journal=str(tmp_path / "asha_rungs.jsonl"))
    s = SweepScheduler(inner, sweep_dir=str(tmp_path), ended_trials=ended_trials)
    ctl = Controller(s, finished=False)
    done, broke, nan, running, new = ctl.add("done", "broke", "nan", "running", "new")
    assert (done.status, broke.status, nan.status) == (Trial.TERMINATED, Trial.ERROR, Trial.TERMINATED)
    assert running.status == new.status == Trial.PENDING
    # The search hears of their end (a concurrency limit frees their places)...
    assert ctl.search_alg.completed == [("done", False), ("broke", True), ("nan", False)]
    # ... and the scheduler never sees them (nor counts one as waiting at a rung).
    assert set(inner._trials) == {"running", "new"}
    assert inner._ended == {"done", "broke", "nan"}


def test_a_trial_that_ended_after_tunes_last_save_tells_the_search_its_last_logged_result(tmp_path):
    write_mirror(tmp_path, {"done": {"status": "FINISHED", "end_tags": {"sweep.status": "finished"}}})
    trial_dir = tmp_path / "done_trial"
    trial_dir.mkdir()
    rows = [{"training_iteration": i, "score": s} for i, s in ((1, 0.1), (2, 0.7))]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (trial_dir / "result.json").write_text(lines + '{"training_iteration": 3, "sc')  # torn last line

    class Restored(Trial):  # as Tune restores it: the trial folder, and its result at the older save
        path = str(trial_dir)

    s = SweepScheduler(FIFOScheduler(), sweep_dir=str(tmp_path), ended_trials=ended_trials)
    ctl = Controller(s)
    done = Restored("__fake", config={}, trial_id="done", stub=True)
    done.run_metadata.last_result = {"training_iteration": 1, "score": 0.1}
    s.on_trial_add(ctl, done)
    assert done.status == Trial.TERMINATED
    assert ctl.search_alg.results["done"] == rows[-1] == done.run_metadata.last_result


def test_save_on_add_saves_tunes_state_once_per_step_that_added_trials():
    s = SweepScheduler(FIFOScheduler(), save_on_add=True)
    ctl = Controller(s)
    ctl.add("a", "b")
    s.choose_trial_to_run(ctl)
    s.choose_trial_to_run(ctl)
    assert ctl.saves == [True]  # before the trials' workers start, and waiting for the copy
    ctl.add("c")
    s.choose_trial_to_run(ctl)
    assert ctl.saves == [True, True]


def test_tune_saves_its_state_when_something_a_resume_needs_changed_at_most_every_period(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("tune_jobs.core.experiment_state.time.monotonic", lambda: clock[0])
    s = SweepScheduler(FIFOScheduler(), save_every=10)
    s.set_search_properties("score", "max")
    ctl = Controller(s)

    def step(advance: float, result: dict | None = None) -> None:
        clock[0] += advance
        if result is not None:
            a.set_status(Trial.RUNNING)
            s.on_trial_result(ctl, a, {"training_iteration": 1, "score": 1.0, **result})
        s.choose_trial_to_run(ctl)

    (a,) = ctl.add("a")
    step(0)
    assert ctl.saves == [False]  # a trial was added
    for _ in range(3):  # results without a checkpoint: nothing a resume restores from changed
        step(20, {"checkpoint_dir_name": None})
    assert ctl.saves == [False]
    step(1, {"checkpoint_dir_name": "checkpoint_000000"})
    assert ctl.saves == [False, False]  # a checkpoint, 61 s after the last save
    step(4, {"checkpoint_dir_name": "checkpoint_000001"})
    assert ctl.saves == [False, False]  # 4 s after the last save: later
    step(6)
    assert ctl.saves == [False, False]  # a checkpoint alone waits 60 s
    step(49)
    assert ctl.saves == [False, False]
    step(1)
    assert ctl.saves == [False, False, False]
    step(4, {"checkpoint_dir_name": "checkpoint_000002"})
    s.on_trial_complete(ctl, a, {})  # an end does not wait for the checkpoints' period
    step(1)
    assert len(ctl.saves) == 3
    step(5)
    assert len(ctl.saves) == 4  # the trial's end, 10 s after the last save
    step(60)
    assert len(ctl.saves) == 4  # nothing changed since


def test_the_yaml_kinds_make_their_schedulers(tmp_path):
    def inner(settings):
        return make_scheduler(settings, sweep_dir=tmp_path).inner

    assert isinstance(inner({"kind": "fifo"}), FIFOScheduler)
    promo = inner({"kind": "asha", "max_t": 20, "grace_period": 2, "reduction_factor": 3})
    assert isinstance(promo, PromotionASHA) and promo.rungs == [2, 6, 18]
    assert promo._journal == str(tmp_path / "asha_rungs.jsonl")
    assert isinstance(inner({"kind": "asha", "promote": False, "max_t": 9}), AsyncHyperBandScheduler)
    assert isinstance(inner({"kind": "hyperband", "max_t": 9, "reduction_factor": 3}), HyperBandScheduler)
    # Tune pickles the scheduler into tuner.pkl: settings only, no trials, no decisions.
    s = make_scheduler({"kind": "asha", "max_t": 9}, sweep_dir=tmp_path)
    s.set_search_properties("score", "max")
    s.on_trial_add(Controller(s), trial("a"))
    again = pickle.loads(pickle.dumps(s))
    assert again.inner.rungs == [1, 3] and again.inner._trials == {} and again._ended is None


def test_trials_keep_no_running_means_in_tunes_saved_state_so_each_save_is_smaller():
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    metrics = [f"m{i}" for i in range(30)]

    def fill(meta, steps: range) -> None:
        for step in steps:
            for i, m in enumerate(metrics):
                meta.update_metric(m, float(step * i), step=step + 1)

    plain = _TrainingRunMetadata()
    fill(plain, range(20))
    s = SweepScheduler(FIFOScheduler())
    ctl = Controller(s)
    (fresh,) = ctl.add("fresh")
    fill(fresh.run_metadata, range(20))
    assert not any(fresh.run_metadata.metric_n_steps.values())
    assert fresh.run_metadata.metric_analysis["m3"] == {"max": 57.0, "min": 0.0, "avg": 28.5, "last": 57.0}
    assert len(fresh.run_metadata.get_json_state()) < 0.45 * len(plain.get_json_state())

    # A trial restored from a save written before: its running means go at once.
    restored = Trial("__fake", config={}, trial_id="restored", stub=True)
    restored.restore_run_metadata(plain.get_json_state())
    s.on_trial_add(ctl, restored)
    fill(restored.run_metadata, range(20, 25))
    assert not any(restored.run_metadata.metric_n_steps.values())
    assert set(restored.run_metadata.metric_analysis["m3"]) == {"max", "min", "avg", "last"}
    assert restored.run_metadata.metric_analysis["m3"]["max"] == 72.0


def test_a_scheduler_pickled_before_the_checkpoint_period_existed_gets_the_default():
    s = SweepScheduler.__new__(SweepScheduler)
    s.__setstate__({"inner": FIFOScheduler(), "sweep_dir": None, "save_on_add": False, "save_every": 10.0})
    assert s.checkpoint_save_every == 60.0 and not s._checkpointed
    assert (
        pickle.loads(pickle.dumps(SweepScheduler(FIFOScheduler(), checkpoint_save_every=5))).checkpoint_save_every == 5
    )


def test_rungs_may_rank_by_another_metric_while_the_search_hears_the_sweeps_own():
    # The sweep is judged by `score` (max), which separates late; the rungs rank by `loss` (min).
    s = asha(rank_by="loss", rank_mode="min", journal=None)
    assert s.ranking == ("loss", "min")
    ctl = Controller(s, finished=False)
    a, b, c = ctl.add("a", "b", "c")

    def report2(t, it, score, loss):
        t.set_status(Trial.RUNNING)
        result = {"training_iteration": it, "score": score, "loss": loss}
        t.run_metadata.last_result = result
        decision = s.on_trial_result(ctl, t, result)
        if decision == PAUSE:
            t.set_status(Trial.PAUSED)
        return decision

    assert report2(a, 1, 0.9, 5.0) == PAUSE  # the best score, the worst loss
    assert report2(b, 1, 0.1, 1.0) == PAUSE
    assert report2(c, 1, 0.5, 3.0) == PAUSE  # top 1 of 3 by loss is b, not c (nor a)
    assert s.top(0) == ["b"] and s.choose_trial_to_run(ctl) is b
    # What a trial stopped at its rung tells the search is the sweep's metric there.
    assert s._at_rung["a"] == {"training_iteration": 1, "score": 0.9, "loss": 5.0}
    # A result without the ranking metric is no rung decision.
    assert s.on_trial_result(ctl, b, {"training_iteration": 3, "score": 0.2}) == CONTINUE
    # It survives Tune's pickle; a scheduler pickled before rank_by existed ranks by the metric.
    assert pickle.loads(pickle.dumps(s)).ranking == ("loss", "min")
    old = asha()
    state = old.__dict__.copy()
    del state["_rank_by"], state["_rank_mode"]
    fresh = PromotionASHA.__new__(PromotionASHA)
    fresh.__setstate__(state)
    assert fresh.ranking == ("score", "max")
    with pytest.raises(ValueError, match="rank_by needs rank_mode"):
        PromotionASHA(rank_by="loss")
    promo = make_scheduler({"kind": "asha", "max_t": 9, "rank_by": "loss", "rank_mode": "min"}).inner
    assert promo.ranking == ("loss", "min")
