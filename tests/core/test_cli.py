"""The entry script as a user types it: dry-run, and every bad input is one line + exit 2."""

import re

import pytest
from helpers import files_under, run_job


def test_dry_run_lists_the_8_trials_without_starting_ray(workdir):
    out = run_job(["phase1.py", "--dry-run"], workdir, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if re.match(r"\s+\d+\s+n_components=", line)]
    assert [int(r[0]) for r in rows] == list(range(1, 9))
    # columns: #, trial, K, contexts/component, target points, ...
    assert [(int(r[2]), int(r[3]), int(r[4])) for r in rows] == [
        (1, 24, 3),
        (2, 12, 3),
        (3, 8, 3),
        (4, 6, 3),
        (5, 5, 3),
        (6, 4, 3),
        (8, 3, 3),
        (10, 2, 3),
    ]
    assert "8 trials" in out.stdout and "compute estimate" in out.stdout
    assert files_under(workdir) == [], "a dry run writes nothing"
    assert "ray" not in out.stderr.lower()


def test_dry_run_slice_and_other_experiments(workdir):
    out = run_job(["phase1.py", "--dry-run", "--start-from", "2", "--stop-at", "4"], workdir, timeout=120)
    assert out.returncode == 0 and "3 trials" in out.stdout
    out = run_job(["phase1.py", "--dry-run", "--experiment", "phase3", "profile=full"], workdir, timeout=120)
    assert out.returncode == 0 and "profile full" in out.stdout and "n_dims=10" in out.stdout


def test_overrides_may_stand_on_both_sides_of_an_option(workdir):
    out = run_job(
        ["phase1.py", "trainer.steps=10", "--dry-run", "--mlflow-every", "5", "trainer.eval_every=5"],
        workdir,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "overrides: trainer.steps=10 trainer.eval_every=5" in out.stdout


BAD = [
    (["trainer.stpes=10"], "unknown key 'trainer.stpes'; did you mean 'trainer.steps'?"),
    (["trainer.steps=abc"], "trainer.steps: expected an integer, got 'abc'"),
    (["space.n_components=[0]"], "data.n_components: must be >= 1, got 0"),
    (["--experiment", "nosuch"], "nosuch.yaml not found"),
    (["--experiment", "{tmp}/broken.yaml"], "malformed YAML at line"),
    (["--start-from", "5", "--stop-at", "2"], "the grid has trials 1..8"),
    (["--mlflow-uri", "ftp://x"], "MLflow tracking URI 'ftp://x' is not understood"),
    (["--resume"], "--resume: no sweep of experiment 'phase1' under"),
    (["--mlflow-every", "0.1"], "--mlflow-every '0.1' is not a number of seconds from 1 to 3600"),
    (["--mlflow-every", "often"], "--mlflow-every 'often' is not a number of seconds"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a[0]) for a in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workdir, tmp_path, args, message):
    (tmp_path / "broken.yaml").write_text("study: phase1\nspace: [unclosed\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = run_job(["phase1.py", *args], workdir, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in out.stderr
    assert files_under(workdir) == [], "nothing is written on bad input"


def test_a_bad_sync_period_in_the_environment_is_named_too(workdir, monkeypatch):
    monkeypatch.setenv("TUNE_JOBS_MLFLOW_EVERY_S", "nan")
    out = run_job(["phase1.py", "--quick"], workdir, timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip() == (
        "error: TUNE_JOBS_MLFLOW_EVERY_S 'nan' is not a number of seconds from 1 to 3600; use e.g. --mlflow-every 10"
    )
    assert files_under(workdir) == []


def test_help_config_lists_the_studys_keys_and_the_sweeps_settings(workdir):
    out = run_job(["phase1.py", "--help-config"], workdir, timeout=120)
    assert out.returncode == 0 and "trainer.steps (int, default 5001)" in out.stdout
    for setting in ("sweep.num_samples=N", "sweep.max_concurrent=N", "sweep.max_failures=N", "sweep.scheduler.SETTING"):
        assert setting in out.stdout
    for setting in ("resources.cpu=N", "resources.gpu=N", "resources.custom.NAME=N", "space.KEY=[a,b,c]"):
        assert setting in out.stdout
    (profiles,) = [line for line in out.stdout.splitlines() if line.strip().startswith("profile=NAME")]
    assert profiles.endswith(": local, full")  # --quick's profile is not one to name
    assert "asha: time_attr, max_t, grace_period, reduction_factor, promote, rank_by, rank_mode" in out.stdout
    # What it names, as it names it, is taken.
    dry = run_job(
        ["phase1.py", "--dry-run", "profile=full", "space.n_components=[1]", "sweep.max_concurrent=1"]
        + ["sweep.max_failures=1", "resources.cpu=1", "resources.gpu=0"],
        workdir,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert files_under(workdir) == []


def test_report_of_an_unknown_sweep_is_one_line(workdir):
    out = run_job(["report.py", "nosuch"], workdir, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: no MLflow store at sqlite:///")
    assert files_under(workdir) == []
