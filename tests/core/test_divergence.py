"""A trial whose loss becomes NaN or inf stops with a clear status and reason; the sweep goes on.

The study is the tests' toy study (tests/toy_study.py: a loss, 1 / (x - step), that blows up
at step x), run as a user runs any study: an entry script, a YAML, real Ray, real MLflow.
"""

from __future__ import annotations

import subprocess

import pytest
from helpers import job_env, sweep_runs, toy_command

EXPERIMENT = """\
# python tests/toy_study.py --experiment blowup.yaml
study: toy
metric: val/score
mode: max
search: grid
fixed:
  trainer.epochs: 8
space:
  trainer.x: {grid: [100.0, 3.0]}
"""


def run(tmp_path, workdir, *args):
    (tmp_path / "blowup.yaml").write_text(EXPERIMENT)
    return subprocess.run(
        toy_command(tmp_path / "blowup.yaml", *args),
        cwd=workdir,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_diverging_trial_stops_with_its_reason_and_the_sweep_goes_on(tmp_path, workdir):
    out = run(tmp_path, workdir, "sweep.max_failures=2")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 trials, 0 failed, 1 diverged" in out.stdout
    assert "diverged:    x=3: train/loss became inf at step 3" in out.stdout

    client, parents, trials = sweep_runs(workdir, "blowup")
    by_name = {r.info.run_name: r for r in trials}
    good, bad = by_name["blowup/x=100"], by_name["blowup/x=3"]
    assert good.info.status == "FINISHED" and good.data.tags["sweep.status"] == "finished"
    assert len(client.get_metric_history(good.info.run_id, "train/loss")) == 8
    assert bad.info.status == "FAILED" and bad.data.tags["sweep.status"] == "diverged"
    assert bad.data.tags["sweep.error"].startswith("train/loss became inf at step 3; trial stopped")
    # It stopped there, and ran once: max_failures does not rerun a diverged trial.
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "train/loss")] == [0, 1, 2, 3]
    assert parents[0].data.tags["sweep.diverged_trials"] == "1"
    assert parents[0].data.tags["sweep.best_run"] == "blowup/x=100"

    (report,) = (workdir / "results" / "toy").iterdir()
    status = (report / "trial_status.md").read_text()
    assert "| blowup/x=3 | diverged | FAILED | train/loss became inf at step 3;" in status
    assert "| blowup/x=100 | finished | FINISHED |" in status


@pytest.mark.slow
def test_a_floating_point_error_from_the_trainable_is_a_divergence_too(tmp_path, workdir):
    out = run(tmp_path, workdir, "trainer.raise_error=true")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client, _, trials = sweep_runs(workdir, "blowup")
    bad = next(r for r in trials if r.info.run_name == "blowup/x=3")
    assert bad.info.status == "FAILED" and bad.data.tags["sweep.status"] == "diverged"
    assert bad.data.tags["sweep.error"].startswith("train/loss became inf at step 3; trial stopped")
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "train/loss")] == [0, 1, 2]
