"""A trial's worker process is SIGKILLed mid-training: Tune restarts the trial from its last
checkpoint, and its final metrics equal, bit for bit, those of the same trial run without
interruption. Real Ray workers, a real kill."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import run_job, start_job, sweep_runs

STEPS = 600  # the kill comes after the 4th checkpoint (step 301): half the trial is left
ARGS = [
    "--quick",
    "space.n_components=[2]",
    f"trainer.steps={STEPS}",
    "trainer.eval_every=50",
    "trainer.checkpoint_every=100",
    "trainer.eval_prompts=64",
    "sweep.max_failures=1",
]
EXPECTED_STEPS = list(range(0, STEPS, 50)) + [STEPS - 1]


def trial_dir(workdir: Path) -> Path | None:
    found = list((workdir / "results" / "ray").glob("phase1-*/n_components=2_*"))
    return found[0] if found else None


def worker_pids(trial: Path) -> list[int]:
    """Ray worker processes running this trial: Tune runs each in a working dir named after it."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if cmd.startswith(b"ray::") and Path(cwd).name == trial.name:
            pids.append(int(proc.name))
    return pids


def last_result(workdir: Path) -> dict:
    lines = (trial_dir(workdir) / "result.json").read_text().splitlines()
    return json.loads(lines[-1])


def history(workdir: Path, key: str) -> list[tuple[int, float]]:
    client, _, (run,) = sweep_runs(workdir, "phase1")
    assert run.info.status == "FINISHED"
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))


@pytest.mark.soak
def test_worker_killed_mid_trial_restores_and_ends_bit_for_bit_equal(tmp_path):
    plain, killed = tmp_path / "plain", tmp_path / "killed"
    plain.mkdir()
    killed.mkdir()
    out = run_job(["phase1.py", *ARGS], plain, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    driver = start_job(["phase1.py", *ARGS], killed, output=True)
    try:
        deadline, victims = time.monotonic() + 400, []
        while time.monotonic() < deadline and driver.poll() is None:
            d = trial_dir(killed)
            if d is not None and (d / "checkpoint_000003").exists():  # 4 checkpoints, step 301
                victims = worker_pids(d)
                break
            time.sleep(0.2)
        assert victims, "no running trial worker was found to kill"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed_at = last_result(killed)["step"]
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]
    assert 300 <= killed_at < STEPS - 1, "the kill did not land mid-training"
    # Tune saw the worker die (in Ray's output, which goes to the sweep's ray.log), and the
    # trial went on from its checkpoint, not from scratch.
    ray_log = (trial_dir(killed).parent / "ray.log").read_text(errors="replace")
    assert "ActorDiedError" in ray_log or "died" in ray_log.lower(), ray_log[-3000:]
    steps = [json.loads(line)["step"] for line in (trial_dir(killed) / "result.json").read_text().splitlines()]
    assert steps.count(0) == 1 and steps[-1] == STEPS - 1

    a, b = last_result(plain), last_result(killed)
    for key in ("val/nmse", "train/loss", "val/nmse_rel_oracle", "baseline/lstsq_nmse"):
        assert a[key] == b[key], (key, a[key], b[key])  # bit for bit on CPU
    assert a["step"] == b["step"] == STEPS - 1
    # MLflow has one history with every evaluation once, equal to the uninterrupted one.
    assert history(killed, "val/nmse") == history(plain, "val/nmse")
    assert [s for s, _ in history(killed, "val/nmse")] == EXPECTED_STEPS
