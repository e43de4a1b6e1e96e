"""Drill: three sweeps started at once in a new folder create one store between them, then a
fourth writes to it while report.py and a replay run; none waits on a locked database and
every metric reaches MLflow once. Real processes, real Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, job_env, sweep_runs, sweep_state
from tracking_helpers import assert_sweep_complete, find_sweep_dirs

TINY = [
    "--quick",
    "trainer.steps=60",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=20",
    "trainer.eval_prompts=64",
]


RAY_START_TIMEOUT = "The current node timed out during startup"


class Job:
    """`python tune_jobs/<script> ARGS` in the background, its output in a file (several at once
    must not wait on each other's pipes)."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.args, self.workdir, self.log = args, workdir, workdir.parent / f"{name}.log"
        self.start()

    def start(self) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tune_jobs" / self.args[0]), *self.args[1:]],
                cwd=self.workdir,
                env=job_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def finish(self, timeout: float = 900, tries: int = 3) -> str:
        """Wait for it; its output, checked: exit 0, no locked database, no traceback."""
        self.proc.wait(timeout)
        out = self.log.read_text()
        if self.proc.returncode != 0 and RAY_START_TIMEOUT in out and tries > 1:
            # Ray gives its own processes 30 s to start (not configurable): several local Rays
            # starting at once on a loaded 2-core machine can miss it. The store was opened
            # before Ray starts and nothing of the sweep was written yet: run it again.
            self.start()
            return self.finish(timeout, tries - 1)
        assert self.proc.returncode == 0, out[-4000:]
        assert "database is locked" not in out and "Traceback" not in out, out[-4000:]
        return out


@pytest.mark.slow
def test_three_sweeps_started_at_once_in_a_new_folder_then_report_and_replay_while_a_sweep_writes(workdir):
    jobs = [Job(["phase1.py", *TINY, f"space.n_components=[{k}]"], workdir, f"sweep{k}") for k in (1, 2, 3)]
    for job in jobs:
        job.finish()
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 3 and len(trials) == 3
    for parent in parents:
        mine = [t for t in trials if t.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 1
        assert_sweep_complete(client, parent, mine, [0, 10, 20, 30, 40, 50, 59])

    # On the existing store: a fourth sweep writes while report.py and a replay of the others run.
    first, second, third = find_sweep_dirs(workdir)
    sweep = Job(["phase1.py", *TINY, "space.n_components=[4]"], workdir, "sweep4")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and sweep.proc.poll() is None:
        fourth = [d for d in find_sweep_dirs(workdir) if d not in (first, second, third)]
        if any(sweep_state(d).get("journal_offset", 0) > 0 for d in fourth):
            break  # it is writing results
        time.sleep(0.5)
    report = Job(["report.py", json.loads((first / "sweep.json").read_text())["sweep_id"]], workdir, "report")
    replay = Job(["report.py", "--replay", str(second)], workdir, "replay")
    assert "nothing was pending" in replay.finish()
    report.finish()
    sweep.finish()
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 4 and len(trials) == 4
