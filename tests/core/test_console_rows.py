"""The sweep's rows (tune_jobs/core/console/rows.py): rows from Tune's own Trial objects, their
outcome and budget, the ETA, what a long sweep shows, and the parent run's note."""

from __future__ import annotations

import pytest
from console_trials import PHASE1, SEARCH, k_trial, trial
from ray.tune.experiment import Trial

from tune_jobs.core.adapter import DIVERGED_KEY, STOP_REASON_KEY
from tune_jobs.core.console.rows import (
    SweepFacts,
    eta_seconds,
    note_markdown,
    row_of,
    study_budget,
    visible_rows,
)
from tune_jobs.core.space import slots


def test_rows_name_trials_as_mlflow_does_and_say_how_they_ended():
    finished = k_trial(1, 301, Trial.TERMINATED)
    assert finished.last_result["step"] == 300
    row = row_of(finished, PHASE1)
    assert (row.name, row.status, row.done, row.budget, row.outcome) == (
        "phase1/n_components=1",
        "done",
        301,
        301,
        "finished",
    )
    assert row_of(k_trial(2, 201, Trial.TERMINATED), PHASE1).outcome == "stopped early"
    assert row_of(k_trial(3, 101), PHASE1).outcome == "" and row_of(k_trial(3, 101), PHASE1).status == "running"
    assert row_of(k_trial(4, 101, Trial.ERROR), PHASE1).outcome == "failed"
    blown = trial(5, {"data.n_components": 5}, [{"step": 0, "val/nmse": 1.0}, {"step": 99, "val/nmse": float("nan"),
                  DIVERGED_KEY: 1, STOP_REASON_KEY: "val/nmse became nan at step 99"}], Trial.TERMINATED)  # fmt: skip
    row = row_of(blown, PHASE1)
    assert row.outcome == "diverged" and row.reason.startswith("val/nmse became nan")
    # Tune calls on_trial_complete before it sets TERMINATED: the callback passes the status.
    assert row_of(k_trial(6, 301, Trial.RUNNING), PHASE1, "TERMINATED").outcome == "finished"
    waiting = trial(7, {"data.n_components": 7}, [], Trial.PENDING)
    assert row_of(waiting, PHASE1).done is None and row_of(waiting, PHASE1).latest is None

    epochs = trial(1, {"trainer.lr": 0.01}, [{"step": e, "blob/score": 0.1 * e} for e in (1, 2)], Trial.TERMINATED)
    row = row_of(epochs, SEARCH)
    assert (row.done, row.budget, row.outcome, row.best, row.latest) == (2, 9, "stopped early", 0.2, 0.2)
    searched_budget = trial(2, {"trainer.epochs": 2}, [{"step": e, "blob/score": 0.1} for e in (1, 2)], "TERMINATED")
    assert row_of(searched_budget, SEARCH).outcome == "finished"  # its own budget, from its point


def test_budget_comes_from_the_study():
    from trainables import denoising, phase1
    from trainables.denoising.study import STUDY as DENOISING
    from trainables.phase1.study import STUDY as PHASE1_STUDY
    from tune_jobs.core.config import to_flat

    def params(cfg):
        return {k: str(v) for k, v in to_flat(cfg).items()}

    assert study_budget(PHASE1_STUDY.budget, params(phase1.Config())) == ("step", 5001)
    assert study_budget(DENOISING.budget, params(denoising.Config())) == ("epoch", denoising.Config().trainer.epochs)
    assert study_budget(None, {}) == ("report", None)
    assert PHASE1.trial_budget({}) == 301 and SEARCH.trial_budget({"trainer.epochs": 2}) == 2
    assert SweepFacts("e", "s", "m", "min", "optimize", 1, "uri").trial_budget({}) is None


def test_eta_uses_the_trials_own_speeds_and_the_slots():
    rows = [row_of(k_trial(k, 101), PHASE1) for k in (1, 2)]  # 2 s per 100 steps... (101 steps in 4 s)
    speed = 4.0 / 101
    # Two running, each with 200 steps left; 6 more trials waiting, each as long as these will take.
    expected = (2 * 200 * speed + 6 * 301 * speed) / 2
    assert eta_seconds(rows, 8, 2) == pytest.approx(expected)
    assert eta_seconds([row_of(k_trial(1, 301, Trial.TERMINATED), PHASE1)], 1, 2) == 0.0
    assert eta_seconds([row_of(trial(1, {}, [], Trial.PENDING), PHASE1)], 8, 2) is None  # nothing measured yet
    assert eta_seconds([row_of(k_trial(1, 1), PHASE1)], 8, 2) is None  # one report: its start, not its speed
    assert slots({"cpu": 1, "gpu": 0.25}, {"CPU": 16, "GPU": 2}) == 8
    assert slots({"cpu": 2, "gpu": 0}, {"CPU": 2}, max_concurrent=4) == 1
    assert slots({"cpu": 1, "worker_slot": 1}, {"CPU": 8, "worker_slot": 3}, max_concurrent=2) == 2


def test_a_long_search_shows_the_running_and_the_best_trials():
    done = [
        trial(i, {"trainer.lr": i / 1000}, [{"step": 1, "blob/score": i / 100}], Trial.TERMINATED) for i in range(60)
    ]
    running = [trial(100 + i, {"trainer.lr": 1.0 + i}, [{"step": 1, "blob/score": 0.0}]) for i in range(2)]
    rows = [row_of(t, SEARCH) for t in done + running]
    shown, rest = visible_rows(rows, SEARCH, 10)
    assert len(shown) == 10 and [r.status for r in shown[:2]] == ["running", "running"]
    assert [r.best for r in shown[2:5]] == [0.59, 0.58, 0.57]  # the best first (mode max)
    assert rest == "52 more trials not shown (52 stopped early)"  # 1 epoch of 9
    # A measurement grid has no best: the latest ended trials fill the room instead.
    grid = [row_of(k_trial(k, 301, Trial.TERMINATED, nmse=k), PHASE1) for k in range(1, 21)]
    shown, rest = visible_rows(grid, PHASE1, 5)
    assert [r.name for r in shown] == [f"phase1/n_components={k}" for k in (20, 19, 18, 17, 16)]


def test_the_parent_runs_description_is_the_final_table_and_fits_in_a_tag():
    rows = [row_of(k_trial(k, 301, Trial.TERMINATED, nmse=k / 10), PHASE1) for k in (1, 2, 4)]
    note = note_markdown(PHASE1, rows)
    assert "**phase1 sweep 20261201-000000-abcd**: 3 of 8 trials ended (3 finished)" in note
    assert "| phase1/n_components=4 | finished | step 301/301 | 0.4 |" in note
    assert "Best" not in note and "none is called best" in note
    many = [row_of(trial(i, {"trainer.lr": i / 1e4}, [{"step": 1, "blob/score": i}], "TERMINATED"), SEARCH) for i in range(400)]  # fmt: skip
    note = note_markdown(SEARCH, many)
    assert len(note) <= 8000 and "Best trial: **denoising_search/lr=0.0399**" in note
    assert "| denoising_search/lr=0.0399 | stopped early | epoch 1/9 | 399 | 399 |" in note
    assert "more trials: see the runs of this sweep" in note


def test_a_searchs_eta_counts_the_trials_it_has_not_sampled_yet(tmp_path):
    # Tune creates a search's trials as it samples them: with 2 of 40 sampled, 38 are still to come.
    from toy_study import STUDY as TOY

    from tune_jobs.core.console.rows import facts_for
    from tune_jobs.core.plan import compose, plan
    from tune_jobs.core.space import load_experiment

    spec = "study: toy\nmetric: val/score\nmode: max\nsearch: optuna\nnum_samples: 40\nspace:\n  trainer.quality: {uniform: [0.1, 1.0]}\n"
    (tmp_path / "s.yaml").write_text(spec)
    facts = facts_for(plan(compose(TOY, load_experiment(tmp_path / "s.yaml"))), "20990101-000000-abcd", "sqlite://")
    assert facts.total == 40
    rows = [row_of(k_trial(k, 101), PHASE1) for k in (1, 2)]
    speed = 4.0 / 101
    assert eta_seconds(rows, facts.total, 2) == pytest.approx((2 * 200 * speed + 38 * 301 * speed) / 2)
