"""Real Ray Tune sweeps with a real MLflow SQLite store, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import run_job, start_job, sweep_runs, sweep_state
from mlflow import MlflowClient

TINY = ["trainer.steps=60", "trainer.eval_every=10", "trainer.checkpoint_every=20", "trainer.eval_prompts=64"]


def steps_of(client, run, key="val/nmse"):
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def test_two_trial_sweep_logs_parent_and_nested_runs_and_builds_the_report(workdir):
    out = run_job(["phase1.py", "--quick", "space.n_components=[1,2]", *TINY], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 1 and len(trials) == 2, out.stdout[-2000:]
    parent = parents[0]
    assert sorted(r.info.run_name for r in trials) == ["phase1/n_components=1", "phase1/n_components=2"]
    for r in trials:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        for tag in ("sweep.id", "sweep.study", "sweep.experiment", "sweep.trial_id", "git.commit", "sweep.seed"):
            assert r.data.tags.get(tag), tag
        assert r.data.params["data.n_components"] in ("1", "2")
        assert r.data.params["trainer.steps"] == "60"
        assert steps_of(client, r) == [0, 10, 20, 30, 40, 50, 59]
        assert set(r.data.metrics) >= {"val/nmse", "train/loss", "baseline/lstsq_nmse", "baseline/oracle_nmse"}
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"cfg.yaml", "checkpoint", "run.log"} <= artifacts
    sweep_id = parent.data.tags["sweep.id"]
    report = workdir / "results" / "phase1" / f"phase1-{sweep_id}"
    for name in ("loss_vs_components", "capacity_analysis", "convergence_steps"):
        assert (report / f"{name}.png").stat().st_size > 10_000
        assert (report / f"{name}.pdf").exists()
    summary = json.loads((report / "summary.json").read_text())
    assert [t["x"] for t in summary["trials"]] == [1, 2]
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.info.status == "FINISHED"
    best = min(trials, key=lambda r: r.data.metrics["val/nmse"])
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id

    # The report is rebuilt from MLflow alone.
    (report / "summary.json").unlink()
    again = run_job(["report.py", sweep_id], workdir, timeout=300)
    assert again.returncode == 0, again.stderr
    assert (report / "summary.json").exists()


def _result_rows(sweep_dir: Path) -> dict[str, int]:
    return {p.parent.name: len(p.read_text().splitlines()) for p in sweep_dir.glob("*/result.json")}


@pytest.mark.slow
def test_driver_killed_mid_sweep_then_resume_finishes_without_reruns_or_duplicate_runs(workdir):
    args = [
        "--quick",
        "space.n_components=[1,2,3,4]",
        "trainer.steps=200",
        "trainer.eval_every=20",
        "trainer.checkpoint_every=40",
        "trainer.eval_prompts=64",
    ]
    driver = start_job(["phase1.py", *args], workdir)
    try:
        deadline = time.monotonic() + 400
        sweep_dir = None
        while time.monotonic() < deadline and driver.poll() is None:
            dirs = (
                list((workdir / "results" / "ray").glob("phase1-*")) if (workdir / "results" / "ray").exists() else []
            )
            if dirs:
                sweep_dir = dirs[0]
                trials = sweep_state(sweep_dir)["trials"].values()
                finished = [t for t in trials if t.get("status") == "FINISHED"]
                running = [t for t in trials if "status" not in t]
                if finished and running:
                    break
            time.sleep(0.3)
        assert driver.poll() is None, "the sweep ended before it could be interrupted"
        # No wait for Tune to save its state: the resume learns of the ended trial from mlflow_runs.json.
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies as in a crash or preemption
        driver.wait()
        before = sweep_state(sweep_dir)
        done_before = {tid for tid, t in before["trials"].items() if t.get("status") == "FINISHED"}
        rows_before = _result_rows(sweep_dir)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    time.sleep(2)

    out = run_job(["phase1.py", "--resume"], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 1
    assert len(trials) == 4, [r.info.run_name for r in trials]  # no second run for any trial
    after = sweep_state(sweep_dir)
    for tid, entry in before["trials"].items():
        # Runs are created by the sync thread: a trial may not have had its run yet when killed.
        if entry.get("run_id"):
            assert after["trials"][tid]["run_id"] == entry["run_id"]
    expected = list(range(0, 200, 20)) + [199]
    for r in trials:
        assert r.info.status == "FINISHED"
        assert steps_of(client, r) == expected, r.info.run_name  # no gap, no duplicate step
    rows_after = _result_rows(sweep_dir)
    for tid in done_before:
        name = next(n for n in rows_before if n.endswith(tid))
        assert rows_after[name] == rows_before[name], "a finished trial ran again"


OPTUNA_ASHA = """\
# python tune_jobs/phase1.py --experiment {path}
study: phase1
metric: val/nmse
mode: min
search: optuna
num_samples: 4
seed: 3
scheduler: {{kind: asha, max_t: 6, grace_period: 2, reduction_factor: 2}}
fixed:
  data.n_components: 2
space:
  trainer.lr: {{loguniform: [0.0001, 0.01]}}
  model.n_layer: {{choice: [1, 2]}}
"""


@pytest.mark.slow
def test_optuna_search_with_asha_runs_and_keeps_its_study(workdir, tmp_path):
    path = tmp_path / "lr_search.yaml"
    path.write_text(OPTUNA_ASHA.format(path=path))
    out = run_job(["phase1.py", "--quick", "--experiment", str(path), *TINY], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("lr_search")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.role` = 'trial'")
    assert len(trials) == 4
    for r in trials:
        lr = float(r.data.params["trainer.lr"])
        assert 1e-4 <= lr <= 1e-2 and r.data.params["model.n_layer"] in ("1", "2")
        assert r.info.run_name.startswith("lr_search/")
    # ASHA stopped some trials early: they have fewer evaluations than the full 7.
    lengths = sorted(len(client.get_metric_history(r.info.run_id, "val/nmse")) for r in trials)
    assert lengths[0] < lengths[-1]
    # The Optuna study lives in the sweep folder with every trial's outcome.
    import optuna

    (db,) = (workdir / "results" / "ray").glob("lr_search-*/optuna.db")
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    assert summary.n_trials == 4
