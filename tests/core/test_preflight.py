"""Folders a sweep cannot write and resources a local Ray lacks are found before Ray starts:
one line, exit 2, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import files_under, run_job

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.preflight import check_paths, local_gpus, writable_dir

RAY_STARTED = ("Token authentication", "Started a local Ray instance", "ray.init", "Traceback")


@pytest.mark.parametrize(
    "args",
    [
        ["--results-dir", "/proc/nope"],
        ["--results-dir", "afile/sub"],
        ["--mlflow-uri", "sqlite:////proc/nope/mlflow.db"],
        ["--mlflow-uri", "sqlite:///afile/mlflow.db"],
        ["resources.gpu=0.3"],
        ["resources.cpu=64"],
        ["resources.custom.worker_slot=1"],
    ],
)
def test_a_sweep_that_cannot_run_here_says_so_before_ray_starts(workdir, args):
    (workdir / "afile").write_text("not a folder")
    done = run_job(["phase1.py", "--quick", *args], workdir, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not any(word in done.stdout + done.stderr for word in RAY_STARTED)
    assert files_under(workdir) == [workdir / "afile"]


def test_paths_are_checked_without_creating_anything(tmp_path):
    check_paths(tmp_path / "a" / "results", f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_paths(tmp_path / "results", f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    with pytest.raises(ConfigError, match="the MLflow store's folder /proc/nope cannot be written"):
        check_paths(tmp_path / "results", "sqlite:////proc/nope/mlflow.db")
    with pytest.raises(ConfigError, match="--results-dir"):
        writable_dir(Path("/proc/nope"), "--results-dir", "fix")


def test_gpus_are_counted_as_ray_would_without_starting_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert local_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_gpus() == len([p for p in Path("/dev").glob("nvidia[0-9]*")])


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(workdir):
    """`--dry-run | head -1` (the reader stops): the command ends with SIGPIPE's code, no BrokenPipeError traceback."""
    import subprocess
    import sys

    from helpers import ROOT, job_env

    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tune_jobs" / "phase1a_lora.py"), "--dry-run"],
        cwd=workdir,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stdout.close()  # the reader is gone before the command prints (it is still importing)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_a_script_of_another_checkout_does_not_run_this_ones_code(tmp_path):
    """Two checkouts, one environment: the installed one's code would run under the other's
    script name. It stops with one line naming both and the install that fixes it; with that
    checkout's code on the path (as `pip install -e` of it puts it), the script runs."""
    from helpers import ROOT, job_env

    other = tmp_path / "other"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tune_jobs", "trainables", "search_spaces"):
        shutil.copytree(ROOT / name, other / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", other)
    script = other / "tune_jobs" / "phase1.py"
    env = {**job_env(), "PYTHONPATH": str(ROOT)}  # this checkout's code first, as its install puts it
    done = subprocess.run(
        [sys.executable, str(script), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(other) in lines[0] and f"pip install -e {other}" in lines[0], lines[0]
    assert not done.stdout

    fixed = subprocess.run(
        [sys.executable, str(script), "--dry-run"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(other)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fixed.returncode == 0, fixed.stdout[-2000:] + fixed.stderr[-2000:]
    assert "n_components=10" in fixed.stdout


def test_a_store_that_is_not_a_database_ends_the_command_in_one_line_with_nothing_made_beside_it(workdir):
    (workdir / "mlflow.db").write_bytes(b"not a database, only text " * 8)
    for args in (["--quick"], ["--dry-run"]):
        done = run_job(["phase1.py", *args], workdir, timeout=120)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert done.stdout == ""  # no plan shown before the error
        assert done.stderr.strip() == (
            f"error: {workdir / 'mlflow.db'} is not a usable SQLite database (file is not a database); "
            "restore it from a backup or point --mlflow-uri at another store"
        )
        assert files_under(workdir) == [workdir / "mlflow.db"]  # no lock file, no results folder


def test_a_dry_run_refuses_the_folders_the_real_run_would_refuse(workdir):
    done = run_job(["phase1.py", "--dry-run", "--results-dir", "/proc/nope"], workdir, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: --results-dir"), done.stderr
    assert files_under(workdir) == []
