"""Mistakes on the command lines of the tools beside the studies (the benches, the batch-size
profiler, the live monitor, the MLflow server): each is one `error: ` line naming the value
and the fix, exit code 2, found before any work starts, and nothing written."""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, free_port, job_env


def run_tool(cwd: Path, script: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` from `cwd`, importing this checkout's code. A tool that does not
    stop in time (it took the input and started its work) is stopped with all it started."""
    cmd = [sys.executable, str(ROOT / script), *args]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=job_env() | {"PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def assert_refused(cwd: Path, script: str, args: list[str], names: str) -> None:
    """The tool exits 2 with one `error: ` line that holds `names`, and leaves `cwd` as it was."""
    before = sorted(cwd.rglob("*"))
    out = run_tool(cwd, script, *args)
    lines = out.stderr.splitlines()
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert names in lines[0], lines[0]
    assert "Traceback" not in out.stdout
    assert sorted(cwd.rglob("*")) == before


def assert_whole_help(cwd: Path, script: str, *args: str) -> None:
    """--help prints the tool's whole description (no sentence cut at a line end), exit 0, nothing written."""
    out = run_tool(cwd, script, *args, "--help")
    assert out.returncode == 0 and not out.stderr, out.stderr[-2000:]
    doc = " ".join((ast.get_docstring(ast.parse((ROOT / script).read_text())) or "").split("\n\n")[0].split())
    assert doc in " ".join(out.stdout.split()), out.stdout
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ([], "required: script"),
        (["nosuch.py"], "'nosuch.py' is not a file"),
        (["tune_jobs/phase1.py", "trainer.stepz=1"], "'trainer.stepz'"),  # the entry script's own check
        (["tune_jobs/phase1.py", "--mlflow-uri"], "--mlflow-uri"),
    ],
)
def test_driver_cost(tmp_path, args, names):
    args = [str(ROOT / a) if a.startswith("tune_jobs/") else a for a in args]
    assert_refused(tmp_path, "bench/driver_cost.py", args, names)


@pytest.mark.parametrize(
    "script",
    [
        "bench/driver_cost.py",
        "bench/asha_vs_grid.py",
        "bench/hung_server.py",
        "bench/service_overhead.py",
        "bench/store_bytes.py",
    ],
)
def test_help_is_the_whole_description(tmp_path, script):
    assert_whole_help(tmp_path, script)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--syncs", "0"], "--syncs 0"),
        (["--syncs", "many"], "'many'"),
        (["--dir", "nosuch"], "--dir nosuch"),
    ],
)
def test_store_bytes(tmp_path, args, names):
    assert_refused(tmp_path, "bench/store_bytes.py", args, names)


def test_store_bytes_prints_each_case_and_leaves_no_store_behind(tmp_path):
    out = run_tool(tmp_path, "bench/store_bytes.py", "--syncs", "2", "--dir", str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cases = [line for line in out.stdout.splitlines() if line.startswith("  ") and " kB " in line]
    assert len(cases) == 5 and cases[0].split()[2] == "1.00x", out.stdout
    assert all(float(line.split()[0]) >= 0 for line in cases)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["noequals"], "'noequals' is not key=value"),
        (["profile=bogus"], "'bogus'"),
        (["trainer.bogus=1"], "'trainer.bogus'"),
        (["--threads", "0"], "--threads 0"),
        (["--rounds", "0"], "--rounds 0"),
        (["--rounds", "abc"], "'abc'"),
    ],
)
def test_phase1_backbone(tmp_path, args, names):
    assert_refused(tmp_path, "bench/phase1_backbone.py", args, names)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--out", "taken"], "--out taken: taken is a file"),  # checked before any training
        (["--epochs", "1"], "--epochs 1"),  # the first epoch is warm-up: nothing left to time
        (["--batch-sizes", "abc"], "'abc'"),
        (["--profile", "bogus"], "'bogus'"),
        (["--samples", "10"], "--samples 10"),
    ],
)
def test_denoising_profiler(tmp_path, args, names):
    (tmp_path / "taken").write_text("a file, not a folder")
    args = ["--batch-sizes", "512", "--samples", "1024", "--epochs", "2", *args]
    assert_refused(tmp_path, "tune_jobs/denoising_profiler.py", args, names)


def _foreign_address() -> str:
    """A documentation address (RFC 5737) this machine does not have, whatever its own is."""
    for address in ("198.51.100.254", "203.0.113.254", "192.0.2.254"):
        with socket.socket() as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                return address
    pytest.skip("this machine binds every documentation address")


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--host", "999.1.1.1"], "--host '999.1.1.1' is not an address of this machine"),
        (["--host", "FOREIGN"], "is not an address of this machine"),
        (["--port", "abc"], "'abc'"),
        (["--port", "LISTENING"], "already listens"),
        (["--backend-store-uri", "sqlite:///BROKEN"], "point --backend-store-uri at another store"),
    ],
)
def test_mlflow_server(tmp_path, args, names):
    work = tmp_path / "work"  # the working folder; a broken store lies beside it
    work.mkdir()
    broken = tmp_path / "store" / "mlflow.db"
    broken.parent.mkdir()
    broken.write_bytes(b"not a database, " * 256)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = [port if a == "LISTENING" else a.replace("BROKEN", str(broken)) for a in args]
        args = [_foreign_address() if a == "FOREIGN" else a for a in args]
        if "--port" not in args:
            args += ["--port", str(free_port())]
        assert_refused(work, "tune_jobs/mlflow_server.py", [*args, "--workers", "1"], names)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--minutes", "nan"], "--minutes nan"),
        (["--minutes", "inf"], "--minutes inf"),
        (["--minutes", "abc"], "'abc'"),
        (["--candidate", "nocolon"], "'nocolon'"),
    ],
)
def test_phase1_candidates(tmp_path, args, names):
    assert_refused(tmp_path, "bench/phase1_candidates.py", args, names)


@pytest.mark.parametrize(
    ("args", "names"),
    [(["--every", "abc"], "'abc'"), (["--every", "nan"], "--every nan"), (["--every", "inf"], "--every inf")],
)
def test_denoising_monitor(tmp_path, args, names):
    assert_refused(tmp_path, "tune_jobs/denoising_monitor.py", args, names)


@pytest.mark.parametrize(
    ("args", "names"),
    [  # each checked before the grid's minutes, not after them
        (["--reduction-factor", "1"], "--reduction-factor 1"),
        (["--max-t", "0"], "--max-t 0"),
        (["--grace-period", "10"], "--grace-period 10"),
        (["trainer.bogus=1"], "'trainer.bogus'"),
    ],
)
def test_asha_vs_grid(tmp_path, args, names):
    assert_refused(tmp_path, "bench/asha_vs_grid.py", args, names)
