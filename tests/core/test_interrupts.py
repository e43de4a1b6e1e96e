"""Ctrl-C, a second Ctrl-C and SIGTERM against a real sweep, sent as a terminal sends them (to
the whole process group), then `--resume` with the command the sweep printed."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers import job_env, start_job, sweep_runs, sweep_state

# Long enough that a trial is still running when the signal comes, short enough for a test.
ARGS = [
    "--quick",
    "space.n_components=[1,2,3]",
    "trainer.steps=200",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=40",
    "trainer.eval_prompts=64",
]
EXPECTED_STEPS = list(range(0, 200, 20)) + [199]
NOISE = ("Traceback", "Tuner.restore", "Failed to fetch metrics", "KeyboardInterrupt")


def _sweep_dir(workdir: Path) -> Path | None:
    found = list((workdir / "results" / "ray").glob("phase1-*")) if (workdir / "results" / "ray").exists() else []
    return found[0] if found else None


def _wait_for_running_trials(workdir: Path, driver, n: int = 2, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = sweep_state(_sweep_dir(workdir))["trials"].values()
        if sum(1 for t in trials if t.get("params_logged")) >= n:
            return
        assert driver.poll() is None, driver.stdout.read()[-3000:]
        time.sleep(0.5)
    raise AssertionError("no trial started in time")


def _interrupted_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def _resume_command(output: str) -> list[str]:
    """The command the sweep printed, as the user would paste it (python = this one)."""
    line = _interrupted_line(output)
    assert line.startswith("interrupted: sweep "), line
    command = shlex.split(line.split("finish it with: ", 1)[1])
    assert command[0] == "python" and "--resume" in command
    return [sys.executable, *command[1:]]


def _resume(workdir: Path, output: str) -> None:
    import subprocess

    done = subprocess.run(
        _resume_command(output), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _assert_complete(workdir: Path) -> None:
    """One parent and one run per trial, all FINISHED, every step once."""
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["sweep.status"] == "finished"
    assert sorted(r.info.run_name for r in trials) == [f"phase1/n_components={k}" for k in (1, 2, 3)]
    for run in trials:
        assert run.info.status == "FINISHED" and run.data.tags["sweep.status"] == "finished"
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/nmse"))
        assert steps == EXPECTED_STEPS, (run.info.run_name, steps)


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_with_one_line_and_resume_finishes_it(workdir):
    driver = start_job(["phase1.py", *ARGS], workdir, output=True)
    _wait_for_running_trials(workdir, driver)
    os.killpg(driver.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    output, _ = driver.communicate(timeout=300)

    assert driver.returncode == 130, output[-3000:]
    assert not any(word in output for word in NOISE), output[-3000:]
    sweep_dir = _sweep_dir(workdir)
    sweep_id = sweep_dir.name.removeprefix("phase1-")
    assert f"--resume {sweep_id}" in _interrupted_line(output)
    assert not (workdir / "results" / "phase1").exists(), "no report of half-trained trials"

    client, parents, trials = sweep_runs(workdir, "phase1")
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["sweep.status"] == "interrupted"
    unfinished = [r for r in trials if r.data.tags.get("sweep.status") != "finished"]
    assert unfinished, "the signal came while trials ran"
    for run in unfinished:
        assert run.info.status == "KILLED" and run.data.tags["sweep.status"] == "interrupted"

    _resume(workdir, output)
    _assert_complete(workdir)
    assert list((workdir / "results" / "phase1").glob(f"*{sweep_id}/summary.json"))


@pytest.mark.slow
@pytest.mark.serial  # it times the machine's pace: run alone
def test_a_second_ctrl_c_exits_at_once_and_the_sweep_still_resumes(workdir):
    driver = start_job(["phase1.py", *ARGS], workdir, output=True)
    _wait_for_running_trials(workdir, driver)
    os.killpg(driver.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGINT)
    second = time.monotonic()
    output, _ = driver.communicate(timeout=300)
    waited = time.monotonic() - second

    assert driver.returncode == 130, output[-3000:]
    assert waited < 20, f"the second Ctrl-C took {waited:.0f} s to stop the sweep"
    assert not any(word in output for word in NOISE), output[-3000:]
    _resume(workdir, output)
    _assert_complete(workdir)


@pytest.mark.slow
def test_sigterm_is_a_clean_stop_like_ctrl_c(workdir):
    driver = start_job(["phase1.py", *ARGS], workdir, output=True)
    _wait_for_running_trials(workdir, driver, n=1)
    driver.send_signal(signal.SIGTERM)  # kill, a job scheduler's first word: the driver only
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, output[-3000:]
    _, parents, _ = sweep_runs(workdir, "phase1")
    assert parents[0].info.status == "KILLED"
    _resume(workdir, output)
    _assert_complete(workdir)
