"""python tune_jobs/rerun.py: a trial rerun from its MLflow run with exactly its settings, as a
new sweep of one, its metrics compared with the original's; a rerun of other code warns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import job_env, run_job, sweep_runs, toy_command

EXPERIMENT = """\
study: toy
metric: val/score
mode: max
seeds: 2
fixed: {trainer.epochs: 3, trainer.first: 1, trainer.noise: 0.1}
space:
  trainer.quality: {grid: [0.7]}
"""


def rerun(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_job(["rerun.py", *args], workdir)


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A finished toy sweep of one point on two seeds, in its own folder."""
    workdir = tmp_path_factory.mktemp("rerun")
    (workdir / "noisy.yaml").write_text(EXPERIMENT)
    out = subprocess.run(
        toy_command(workdir / "noisy.yaml"), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return workdir


def test_a_trial_rerun_by_its_run_id_gives_its_metrics_bit_for_bit_as_a_new_sweep_of_one(swept):
    client, _, trials = sweep_runs(swept, "noisy")
    (original,) = [r for r in trials if r.data.tags["sweep.seed"] == "1"]
    out = rerun(swept, original.info.run_id)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stderr == ""
    assert "ran at commit" not in out.stdout  # the same code
    assert f"rerunning noisy/quality=0.7,seed=1 (run {original.info.run_id}" in out.stdout
    assert "every value of every metric is the original's, bit for bit" in out.stdout
    assert (
        f"| val/score | {original.data.metrics['val/score']!r} | {original.data.metrics['val/score']!r} | equal |"
        in (out.stdout)
    )
    # What a rerun needs to know of where the trial first ran, on the original's parent run.
    (parent,) = sweep_runs(swept, "noisy")[1]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"environment.json", "cfg.yaml"}
    assert parent.data.tags["env.python"] == ".".join(map(str, sys.version_info[:3]))
    assert parent.data.tags["env.torch"].startswith("2.13.0") and parent.data.tags["env.cpu"]
    _, parents, again = sweep_runs(swept, "rerun-noisy")
    assert parents[-1].data.tags["sweep.rerun_of"] == original.info.run_id
    (new,) = [r for r in again if r.data.tags["mlflow.parentRunId"] == parents[-1].info.run_id]
    assert new.data.params["seed"] == "1" and new.data.params["trainer.noise"] == "0.1"
    history = lambda run: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/score")]  # noqa: E731
    assert sorted(history(new)) == sorted(history(original))


def test_a_trial_named_by_its_sweep_and_name_reruns_and_another_commit_is_said_first(swept):
    client, parents, trials = sweep_runs(swept, "noisy")
    (parent,) = parents
    client.set_tag(parent.info.run_id, "git.commit", "0123456789abcdef0123456789abcdef01234567")
    try:
        out = rerun(swept, parent.data.tags["sweep.id"], "quality=0.7,seed=0")
    finally:
        client.set_tag(parent.info.run_id, "git.commit", parent.data.tags["git.commit"])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("warning: the trial ran at commit 0123456789ab, this checkout is at "), first
    assert first.endswith("(git checkout 0123456789ab reruns the trial's code)")
    assert "rerunning noisy/quality=0.7,seed=0" in out.stdout and "bit for bit" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0" * 32], "error: no run '00000000000000000000000000000000' in the store; give a trial's run id"),
        (["noisy", "quality=0.9"], "error: sweep noisy has no trial 'quality=0.9'; its trials include noisy/quality"),
    ],
)
def test_a_run_that_is_not_there_is_one_line(swept, args, message):
    out = rerun(swept, *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr


def test_a_sweeps_parent_run_is_not_a_trial(swept):
    _, parents, _ = sweep_runs(swept, "noisy")
    out = rerun(swept, parents[0].info.run_id)
    assert out.returncode == 2
    assert (
        out.stderr
        == f"error: run {parents[0].info.run_id} is not a trial of a sweep; give a trial's run id (the nested runs)\n"
    )


def test_a_folder_without_a_store_says_where_to_point(tmp_path):
    out = rerun(tmp_path, "0" * 32)
    assert out.returncode == 2
    assert out.stderr == (
        f"error: no MLflow store at sqlite:///{tmp_path}/mlflow.db; run from the folder holding mlflow.db "
        "or pass --mlflow-uri\n"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_ctrl_c_during_a_rerun_is_one_line_that_starts_it_again(tmp_path):
    import os
    import signal

    from helpers import ROOT

    (tmp_path / "slow.yaml").write_text(EXPERIMENT.replace("seeds: 2\n", "").replace("noise: 0.1", "seconds: 3"))
    out = subprocess.run(
        toy_command(tmp_path / "slow.yaml"), cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (trial,) = sweep_runs(tmp_path, "slow")[2]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tune_jobs" / "rerun.py"), trial.info.run_id],
        cwd=tmp_path,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    for line in proc.stdout:  # the trial runs 9 s: the Ctrl-C comes while it runs
        if " started " in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == (
        f"interrupted: the rerun stopped; start it again with: python tune_jobs/rerun.py {trial.info.run_id}"
    )
