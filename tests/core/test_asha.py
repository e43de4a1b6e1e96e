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
from scheduler_fakes import CONTINUE, PAUSE, STOP, Controller, asha, report

from tune_jobs.core.asha import PromotionASHA, rung_milestones
from tune_jobs.core.schedulers import make_scheduler


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
