"""The sweep summary every sweep gets (tune_jobs/core/summary.py), on sweeps as MLflow returns
them: ranked trials, outcomes from the study's budget, importances, the two plots."""

from __future__ import annotations

import math

from tune_jobs.core.study import Study
from tune_jobs.core.summary import importances, outcome, write_sweep_summary
from tune_jobs.core.sweep_data import SweepData, TrialRun


class Sweep(SweepData):
    """SweepData with its runs given, not read from MLflow."""

    def __init__(self, trials, histories, **tags):
        self.trials, self._histories = trials, histories
        self.tags = {"sweep.id": "s1", "sweep.experiment": "e", "sweep.metric": "val/loss", "sweep.mode": "min", **tags}

    def history(self, run_id, key):
        return self._histories[run_id]


def trial(i, lr, wd, steps, status="finished"):
    final = (lr - 0.03) ** 2 * 100 + wd + 0.1
    history = [(s, final + 1.0 / (s + 1)) for s in [*range(0, steps - 1, 10), steps - 1]]
    run = TrialRun(
        run_id=f"r{i}",
        name=f"e/lr={lr},wd={wd}",
        status="FINISHED" if status == "finished" else "FAILED",
        point={"trainer.lr": lr, "trainer.wd": wd},
        params={"trainer.steps": "100"},
        metrics={"val/loss": history[-1][1]},
        tags={"sweep.status": status},
    )
    return run, history


def study(**kw) -> Study:
    kw.setdefault("units_run", lambda steps: max(steps) + 1)  # the trials above report 0-based steps
    return Study(
        name="e", train=lambda cfg, ctx: None, config=object, metrics=("val/loss",), default_experiment="e", **kw
    )


def test_a_search_gets_its_trials_ranked_the_best_named_and_importances(tmp_path):
    made = [trial(i, lr, wd, 100) for i, (lr, wd) in enumerate([(a, b) for a in (0.003, 0.03, 0.3) for b in (0, 1)])]
    made.append(trial(9, 0.3, 1, 30))  # stopped at step 29 of its 100
    sweep = Sweep([t for t, _ in made], {t.run_id: h for t, h in made})
    files = write_sweep_summary(sweep, tmp_path, study(budget=lambda p: (int(p["trainer.steps"]), "steps")))
    names = {p.name for p in files}
    assert {"sweep_summary.md", "sweep_curves.png", "sweep_parallel.png", "sweep_curves.pdf"} <= names
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "7 trials: 6 finished, 1 stopped early; metric val/loss (min)." in text
    assert "Best trial: e/lr=0.03,wd=0" in text
    assert "Each point ran on one seed, so this ranking rests on one seed each (`sweep.seeds=3` runs" in text
    assert "over their seeds" not in text
    rows = [line for line in text.splitlines() if line.startswith("| e/")]
    assert rows[0].startswith("| e/lr=0.03,wd=0 | finished |")  # ranked by the metric
    found = importances(sweep.trials, ["trainer.lr", "trainer.wd"], "val/loss", "min")
    assert set(found) == {"trainer.lr", "trainer.wd"} and math.isclose(sum(found.values()), 1.0)
    assert found["trainer.lr"] > found["trainer.wd"]  # lr moves the loss by up to 7.3, wd by 1
    assert found == importances(sweep.trials, ["trainer.lr", "trainer.wd"], "val/loss", "min")  # seeded


def test_a_measurement_names_no_best_and_a_failed_trial_keeps_its_outcome(tmp_path):
    ok, ok_h = trial(1, 0.03, 0, 100)
    bad, bad_h = trial(2, 0.3, 0, 40, status="diverged")
    bad.metrics = {}
    sweep = Sweep([ok, bad], {"r1": ok_h, "r2": bad_h}, **{"sweep.goal": "measure"})
    write_sweep_summary(sweep, tmp_path, study())
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "Best trial" not in text and "no trial is best" in text
    assert "| e/lr=0.3,wd=0 | diverged |" in text and "Importances need 4 trials" in text
    assert outcome(ok, 100, 99) == "finished" and outcome(ok, 100, 50) == "stopped early"
    assert outcome(ok, None, 50) == "finished"


def test_an_epoch_study_trial_stopped_before_its_budget_is_stopped_early(tmp_path):
    # Epoch studies report step = epoch (1-based) and count units as Study.units_run's default,
    # as the live view does: a trial ASHA stopped at epoch 2 of 3 did not finish its budget.
    def epochs(i, last):
        run, _ = trial(i, 0.03 * i, 0, 3)
        run.params = {"trainer.epochs": "3"}
        return run, [(e, 1.0 / e) for e in range(1, last + 1)]

    (full, full_h), (cut, cut_h) = epochs(1, 3), epochs(2, 2)
    sweep = Sweep([full, cut], {"r1": full_h, "r2": cut_h})
    write_sweep_summary(sweep, tmp_path, study(budget=lambda p: (int(p["trainer.epochs"]), "epochs"), units_run=max))
    text = (tmp_path / "sweep_summary.md").read_text()
    assert "2 trials: 1 finished, 1 stopped early" in text
    assert "| e/lr=0.06,wd=0 | stopped early |" in text
