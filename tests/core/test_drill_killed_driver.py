"""Drill: the sweep's driver is SIGKILLed mid-sweep, then the sweep is resumed (and replayed);
it ends as if never killed, no trial run twice, every metric in MLflow once.

- A resume trusts the sweep's own record over Ray Tune's saved experiment state. Tune saves it
  now and then (at least 10 s apart), not after every step; here only at the start
  (TUNE_GLOBAL_CHECKPOINT_S is huge), so when the driver is SIGKILLed, Tune's saved state says
  that trials which have finished are still running. The resumed sweep must not run them again:
  mlflow_runs.json recorded their end as it happened.
- The driver killed while appending a journal line leaves it torn: the replay and the resume
  skip it with a warning naming the file, never "MLflow unreachable".
- The state file torn and its previous version empty: the resume rebuilds it, no run made twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import crash_when, job_env, run_job, start_job, sweep_runs, sweep_state, toy_command
from tracking_helpers import assert_sweep_complete, find_sweep_dirs

from tune_jobs.core.tracking import Outbox
from tune_jobs.core.tracking.state import BACKUP_FILE, JOURNAL_FILE, STATE_FILE

EXPERIMENT = """\
# python tests/toy_study.py --experiment steps.yaml
study: toy
metric: val/score
mode: max
search: grid
resources: {cpu: 1}
fixed: {trainer.epochs: 6}
space:
  trainer.seconds: {grid: [0.2, 1.5, 1.6, 1.7]}
"""
STEPS = 6


def command(tmp_path: Path, *args: str) -> list[str]:
    (tmp_path / "steps.yaml").write_text(EXPERIMENT)
    return toy_command(tmp_path / "steps.yaml", *args)


def tune_statuses(sweep_dir: Path) -> dict[str, str]:
    """What Tune's saved experiment state says of each trial."""
    (state_file,) = sweep_dir.glob("experiment_state-*.json")
    trial_data = json.loads(state_file.read_text())["trial_data"]
    return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in trial_data}


@pytest.mark.slow
def test_a_trial_that_finished_after_tunes_last_save_is_not_run_again(tmp_path, workdir):
    env = {**job_env(), "TUNE_GLOBAL_CHECKPOINT_S": "1000000"}  # Tune saves at the start only

    def two_running_one_ended() -> Path | None:
        for sweep_dir in (workdir / "results" / "ray").glob("steps-*"):
            trials = sweep_state(sweep_dir)["trials"].values()
            if any("status" in t for t in trials) and sum("status" not in t for t in trials) >= 2:
                return sweep_dir
        return None

    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            command(tmp_path), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        sweep_dir = crash_when(driver, two_running_one_ended, log=tmp_path / "driver.log")
    before = sweep_state(sweep_dir)
    ended = {tid for tid, t in before["trials"].items() if "status" in t}
    # The case under test: Tune's saved state does not know that these trials ended.
    assert all(tune_statuses(sweep_dir).get(tid) != "TERMINATED" for tid in ended)
    rows_before = {p.parent.name: p.read_text() for p in sweep_dir.glob("*/result.json")}
    time.sleep(2)

    out = subprocess.run(
        command(tmp_path, "--resume"), cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "4 trials, 0 failed" in out.stdout

    for name, text in rows_before.items():
        if any(name.endswith(tid) for tid in ended):
            assert (sweep_dir / name / "result.json").read_text() == text, f"{name} ran again"
    client, parents, trials = sweep_runs(workdir, "steps")
    assert len(parents) == 1 and len(trials) == 4
    for r in trials:
        assert r.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/score")]
        assert sorted(steps) == list(range(STEPS)), (r.info.run_name, steps)
    after = sweep_state(sweep_dir)
    for tid, entry in before["trials"].items():  # each trial kept the one run it had
        if entry.get("run_id"):  # (runs are created by the sync thread: one may not exist yet)
            assert after["trials"][tid]["run_id"] == entry["run_id"]


def freeze_when(driver: subprocess.Popen, condition, timeout: float = 600, poll: float = 0.3) -> None:
    """SIGSTOP the driver at a moment `condition()` holds (checked while it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before the moment came"
        os.killpg(driver.pid, signal.SIGSTOP)
        if condition():
            return
        os.killpg(driver.pid, signal.SIGCONT)
        time.sleep(poll)
    raise AssertionError("the moment never came")


def kill(driver: subprocess.Popen) -> None:
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


KILL_ARGS = [
    "--quick",
    "space.n_components=[1,2,3]",
    "trainer.steps=200",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=40",
    "trainer.eval_prompts=64",
]


KILL_STEPS = list(range(0, 200, 10)) + [199]


def last_line(journal: Path) -> tuple[int, dict | None]:
    data = journal.read_bytes() if journal.exists() else b""
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    try:
        return start, json.loads(data[start:])
    except ValueError:
        return start, None


@pytest.mark.slow
def test_a_journal_line_torn_by_a_killed_driver_then_replay_and_resume(workdir):
    driver = start_job(["phase1.py", *KILL_ARGS], workdir)

    def torn_moment() -> bool:
        # The driver is stopped after a result of a running trial, between its checkpoints,
        # once some trial has ended.
        (sweep,) = find_sweep_dirs(workdir) or [None]
        if sweep is None:
            return False
        _, last = last_line(sweep / JOURNAL_FILE)
        state = sweep_state(sweep)
        return (
            last is not None
            and last["step"] % 40 != 0
            and last["step"] != KILL_STEPS[-1]
            and "status" not in state["trials"].get(last["trial"], {"status": 1})
            and any("status" in t for t in state["trials"].values())
        )

    try:
        freeze_when(driver, torn_moment)
        kill(driver)
    finally:
        if driver.poll() is None:
            kill(driver)
    (sweep,) = find_sweep_dirs(workdir)
    journal = sweep / JOURNAL_FILE
    _, last = last_line(journal)
    # The driver died in the middle of appending that trial's next result: half of the line is
    # on disk, never sent (only whole lines are). Cutting a whole line instead could cut one the
    # sync had sent already, which no crash can do.
    step = min(last["step"] + 10, KILL_STEPS[-1])
    row = json.dumps({**last, "step": step, "ts": last["ts"] + 1}) + "\n"
    start = journal.stat().st_size
    with open(journal, "a") as f:
        f.write(row[: len(row) // 2])
    cut = journal.stat().st_size

    replay = run_job(["report.py", "--replay", str(sweep)], workdir, timeout=600)
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    assert f"{journal}: the last line (byte {start}, {cut - start} bytes) was torn" in replay.stderr
    assert "unreachable" not in replay.stdout + replay.stderr

    resumed = run_job(["phase1.py", "--resume"], workdir, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert "unreachable" not in out and "still lacks" not in out and "MLflow store" not in out, out[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "phase1")
    assert len(trials) == 3
    assert_sweep_complete(client, parent, trials, KILL_STEPS)  # as if never killed
    again = run_job(["report.py", "--replay", str(sweep)], workdir, timeout=600)
    assert again.returncode == 0 and "nothing was pending" in again.stdout, again.stderr[-3000:]


@pytest.mark.slow
def test_a_damaged_state_file_then_resume_rebuilds_it_without_a_second_run(workdir):
    driver = start_job(["phase1.py", *KILL_ARGS], workdir)

    def after_a_trial_ended() -> bool:
        # As a resume reads it: the state file, and the trials' starts and ends appended since.
        (sweep,) = find_sweep_dirs(workdir) or [None]
        if sweep is None or not (sweep / STATE_FILE).exists():
            return False
        trials = Outbox(sweep).state.get("trials", {}).values()
        return any("status" in t for t in trials) and any("status" not in t for t in trials)

    try:
        freeze_when(driver, after_a_trial_ended, poll=0.05)
        kill(driver)
    finally:
        if driver.poll() is None:
            kill(driver)
    (sweep,) = find_sweep_dirs(workdir)
    before = sweep_state(sweep)
    text = (sweep / STATE_FILE).read_text()
    (sweep / STATE_FILE).write_text(text[: len(text) // 2])  # torn
    (sweep / BACKUP_FILE).write_text("")  # and its previous version empty

    resumed = run_job(["phase1.py", "--resume"], workdir, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert f"{sweep / STATE_FILE} is damaged" in out and "unreachable" not in out, out[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "phase1")
    assert len(trials) == 3  # no second run for any trial
    after = sweep_state(sweep)
    for trial_id, entry in before["trials"].items():
        if entry["run_id"]:
            assert after["trials"][trial_id]["run_id"] == entry["run_id"]
    assert_sweep_complete(client, parent, trials, KILL_STEPS)
