"""Where a sweep's output goes (tune_jobs/core/console/output.py): Ray's to ray.log, the
warnings that matter to the terminal once."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT, job_env

CHILD = """
import logging, os, subprocess, sys
from pathlib import Path
from tune_jobs.core.console import SweepOutput

with SweepOutput(verbose={verbose}) as out:
    print("python print before the folder exists")
    log = Path(sys.argv[1])
    out.log_to(log)
    print("python print")
    os.write(1, b"fd 1 write\\n")
    os.write(2, b"fd 2 write\\n")
    subprocess.run([sys.executable, "-c", "print('child process print')"], check=True)
    for _ in range(3):
        logging.getLogger("tune_jobs.core.tracking.sync").warning("MLflow at http://x unreachable")
    logging.getLogger("ray.tune").error("Trial task failed for trial study_00000")
print("after the sweep")
"""


@pytest.mark.parametrize("verbose", [1, 2])
def test_ray_output_goes_to_the_log_and_warnings_reach_the_terminal_once(tmp_path, verbose):
    log = tmp_path / "ray.log"
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(verbose=verbose), str(log)],
        cwd=ROOT,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    terminal = out.stdout + out.stderr
    printed = ["python print", "fd 1 write", "fd 2 write", "child process print"]
    if verbose == 1:
        assert terminal.count("warning: MLflow at http://x unreachable") == 1, terminal
        assert not any(p in terminal for p in printed) and "Trial task failed" not in terminal, terminal
        assert terminal.rstrip().endswith("after the sweep")
        text = log.read_text()
        assert text.index("python print before the folder exists") < text.index("python print\n")
        assert all(p in text for p in printed) and "MLflow at http://x unreachable" in text
    else:  # --verbose: Ray's output stays on the terminal, nothing is redirected
        assert all(p in terminal for p in printed) and not log.exists()
