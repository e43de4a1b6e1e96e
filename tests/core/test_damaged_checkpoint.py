"""A sweep's driver is SIGKILLed once its trial has two checkpoints, then the newest (or every)
checkpoint is damaged on disk before `--resume`. Real Ray, real MLflow, real kills.

- The newest is overwritten: the trial continues from the older one, one warning names the
  damaged file, the sweep exits 0 and MLflow's history equals an uninterrupted run's.
- None loads: one line names the files and the command that starts the trial over (no
  traceback, no advice to disable weights_only); that command finishes the sweep, with the
  trial's one MLflow run complete."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
from helpers import ROOT, crash_when, run_job, start_job, sweep_runs, sweep_state

from trainables.common.context import STATE_FILE

ARGS = [
    "--quick",
    "space.n_components=[2]",
    "trainer.steps=200",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=40",
    "trainer.eval_prompts=64",
]
EXPECTED_STEPS = list(range(0, 200, 20)) + [199]
KEYS = ("val/nmse", "train/loss", "val/nmse_rel_oracle")


def history(workdir: Path) -> dict[str, list[tuple[int, float]]]:
    client, _, trials = sweep_runs(workdir, "phase1")
    (run,) = trials  # one run for the trial, however often it was resumed
    assert run.info.status == "FINISHED", run.data.tags
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in KEYS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, list[tuple[int, float]]]:
    workdir = tmp_path_factory.mktemp("plain")
    out = run_job(["phase1.py", *ARGS], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    plain = history(workdir)
    assert [s for s, _ in plain["val/nmse"]] == EXPECTED_STEPS
    return plain


@pytest.fixture(autouse=True)
def save_often(monkeypatch):
    """Tune saves its state (and with it the checkpoints a resume restores from) at most every
    second here, not every 10 s as a sweep does by default, so that the kill below finds two
    registered checkpoints of a trial that runs for seconds. TUNE_GLOBAL_CHECKPOINT_S is the
    user's own knob for that period (tune_jobs/core/experiment_state.py)."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")


def sweep_dir(workdir: Path) -> Path | None:
    found = list((workdir / "results" / "ray").glob("phase1-*")) if (workdir / "results" / "ray").exists() else []
    return found[0] if found else None


def registered_checkpoints(sweep: Path) -> list[str]:
    """The checkpoint folders Tune's saved experiment state holds for the (one) trial: what
    `--resume` restores from. (Its checkpoint manager is stored pickled, as hex.)"""
    states = sorted(sweep.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return []
    try:
        data = json.loads(states[-1].read_text())
        manager = json.loads(data["trial_data"][0][1])["checkpoint_manager"]
        raw = bytes.fromhex(manager["value"]) if isinstance(manager, dict) else json.dumps(manager).encode()
    except (ValueError, KeyError, IndexError):
        return []  # being written
    return sorted({m.decode() for m in re.findall(rb"checkpoint_\d{6}", raw)})


def worker_pids(trial: Path) -> list[int]:
    """Ray worker processes running this trial (Tune runs each in a working dir named after it)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::") and Path(
                    os.readlink(proc / "cwd")
                ).name == trial:
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def killed_with_two_checkpoints(workdir: Path) -> tuple[Path, Path]:
    """Start the sweep, SIGKILL its driver (and all it started) once Tune has recorded two
    checkpoints of the trial; returns the sweep folder and the trial folder."""

    def two_checkpoints() -> Path | None:
        sweep = sweep_dir(workdir)
        return sweep if sweep and len(registered_checkpoints(sweep)) >= 2 else None

    sweep = crash_when(start_job(["phase1.py", *ARGS], workdir), two_checkpoints, within=500)
    (trial,) = [p for p in sweep.iterdir() if p.is_dir() and p.name.startswith("n_components=2_")]
    deadline = time.monotonic() + 120
    while worker_pids(trial.name) and time.monotonic() < deadline:  # nothing writes there any more
        time.sleep(0.5)
    assert not worker_pids(trial.name)
    return sweep, trial


def overwrite_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = os.urandom(256)
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_resumes_from_the_older_one(workdir, uninterrupted):
    sweep, trial = killed_with_two_checkpoints(workdir)
    older, newest = registered_checkpoints(sweep)[-2:]
    damaged = trial / newest / STATE_FILE
    overwrite_middle(damaged)

    out = run_job(["phase1.py", "--resume"], workdir, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    warnings = [line for line in text.splitlines() if "skipped the unreadable checkpoint" in line]
    assert len(warnings) == 1, text[-4000:]
    assert (
        f"{damaged}: damaged: " in warnings[0]
        and f"continuing from the older {trial / older / STATE_FILE}" in (warnings[0])
    )
    assert "weights_only" not in text and "Traceback" not in text
    # The trial went on from the older checkpoint: its first result after the resume is the
    # one after that checkpoint's step, which Tune had seen before the kill.
    assert history(workdir) == uninterrupted  # every step once, the values of a run never stopped


@pytest.mark.slow
def test_no_loadable_checkpoint_is_one_line_and_its_command_starts_the_trial_over(workdir, uninterrupted):
    sweep, trial = killed_with_two_checkpoints(workdir)
    older, newest = registered_checkpoints(sweep)[-2:]
    (trial / newest / STATE_FILE).write_bytes((trial / newest / STATE_FILE).read_bytes()[:1000])  # truncated
    (trial / older / STATE_FILE).write_bytes(b"")  # zero bytes

    out = run_job(["phase1.py", "--resume"], workdir, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-4000:]
    (line,) = [line for line in text.splitlines() if "no checkpoint of it loads" in line]
    assert f"{trial / newest / STATE_FILE}: damaged: its zip structure is broken" in line
    assert f"the older {older}: empty (0 bytes)" in line
    assert "Traceback" not in text and "weights_only" not in text, text[-4000:]
    command = shlex.split(line.split("to start it over from scratch: ", 1)[1])
    (trial_id,) = sweep_state(sweep)["trials"]
    sweep_id = sweep.name.removeprefix("phase1-")
    # The entry script as this sweep was started (run_job gives its full path), the same folder.
    assert command == ["python", str(ROOT / "tune_jobs" / "phase1.py"), "--resume", sweep_id, "--start-over", trial_id]

    again = run_job(["phase1.py", *command[2:]], workdir, timeout=600)  # as the user runs it
    text = again.stdout + again.stderr
    assert again.returncode == 0, text[-4000:]
    assert "no checkpoint loads" in text and "starting it over from scratch, as asked" in text
    assert history(workdir) == uninterrupted  # the same run, complete: started over, every step once


def test_start_over_goes_with_resume_and_names_a_trial_of_the_sweep(workdir, tmp_path):
    out = run_job(["phase1.py", "--quick", "--start-over", "n_components=2"], workdir, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: --start-over restarts trials of an interrupted sweep; use it with --resume"
    ]
    assert not (workdir / "results").exists() and not (workdir / "mlflow.db").exists()  # nothing written

    from tune_jobs.core.cli import check_start_over
    from tune_jobs.core.errors import ConfigError

    sweep = tmp_path / "phase1-20261201-000000-abcd"
    sweep.mkdir()
    (sweep / "mlflow_runs.json").write_text(json.dumps({"trials": {"a1_00000": {"name": "n_components=2"}}}))
    check_start_over(sweep, ["a1_00000", "n_components=2"])  # by id or by name
    with pytest.raises(
        ConfigError,
        match=r"--start-over n_components=3: no such trial in phase1-20261201-000000-abcd; its trials: a1_00000 \(n_components=2\)",
    ):
        check_start_over(sweep, ["n_components=3"])
