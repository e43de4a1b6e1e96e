"""A resume trusts the sweep's own record over Ray Tune's saved experiment state.

Tune saves its experiment state now and then (at least 10 s apart), not after every step.
Here it saves it only at the start (TUNE_GLOBAL_CHECKPOINT_S is huge), so when the driver is
SIGKILLed, Tune's saved state says that trials which have finished are still running. The
resumed sweep must not run them again: mlflow_runs.json recorded their end as it happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import job_env, sweep_runs, sweep_state, toy_command

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
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (closed below)
    driver = subprocess.Popen(
        command(tmp_path), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    sweep_dir = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and driver.poll() is None:
            found = list((workdir / "results" / "ray").glob("steps-*")) if (workdir / "results").exists() else []
            if found:
                sweep_dir = found[0]
                trials = sweep_state(sweep_dir)["trials"].values()
                if any("status" in t for t in trials) and sum("status" not in t for t in trials) >= 2:
                    break
            time.sleep(0.2)
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        log.close()
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
