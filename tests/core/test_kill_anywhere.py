"""One sweep interrupted many times at seeded random moments, mixing a Ctrl-C of the whole
process group and a SIGKILL of the driver alone (during start-up, while trials run and sync,
while the report is built), resumed each time as a user would. At the end MLflow holds
exactly what an uninterrupted sweep holds, and no process of the sweep is left."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import processes_in, run_job, start_job, sweep_runs, sweep_state

ARGS = [
    "--quick",
    "space.n_components=[1,2]",
    "trainer.steps=300",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=50",
    "trainer.eval_prompts=64",
]
METRICS = ("val/nmse", "train/loss")


def _sweep_dir(workdir: Path) -> Path | None:
    ray_dir = workdir / "results" / "ray"
    found = sorted(ray_dir.glob("phase1-*")) if ray_dir.exists() else []
    return found[0] if found else None


def _histories(workdir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 1, [p.info.run_name for p in parents]
    assert parents[0].info.status == "FINISHED"
    out = {}
    for run in trials:
        assert run.info.status == "FINISHED", (run.info.run_name, run.info.status)
        out[run.info.run_name] = {
            key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) for key in METRICS
        }
    return out


def _wait(condition, driver: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait for `condition`; False when the driver ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if driver.poll() is not None:
            return False
        time.sleep(0.2)
    raise AssertionError("timed out")


def _results(workdir: Path) -> int:
    journal = (_sweep_dir(workdir) or workdir) / "mlflow_journal.jsonl"
    return len(journal.read_bytes().splitlines()) if journal.exists() else 0


def _report_building(workdir: Path, since_ns: int) -> bool:
    """A report is being built by a driver started at `since_ns` (a SIGKILLed earlier one may
    have left its half-built folder; the next build replaces it)."""
    reports = workdir / "results" / "phase1"
    for path in reports.glob(".*.building") if reports.exists() else []:
        try:
            if path.stat().st_ctime_ns >= since_ns:
                return True
        except OSError:
            continue  # swapped in as the report meanwhile
    return False


@pytest.mark.slow
def test_a_sweep_killed_anywhere_ends_with_exactly_what_an_uninterrupted_one_holds(tmp_path):
    reference, workdir = tmp_path / "reference", tmp_path / "work"
    reference.mkdir()
    workdir.mkdir()
    done = run_job(["phase1.py", *ARGS], reference, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    expected = _histories(reference)

    rng = random.Random(11)
    # (moment, signal): start-up, while trials run and results are synced, while the report is
    # built; the rest at random moments. SIGINT goes to the group (Ctrl-C), SIGKILL to the driver.
    plan = [
        ("start", signal.SIGKILL),
        ("results", signal.SIGINT),
        ("results", signal.SIGKILL),
        ("random", signal.SIGINT),
        ("random", signal.SIGKILL),
        ("report", signal.SIGINT),
    ]
    survived = []
    for moment, sig in plan:
        resume = ["--resume"] if _sweep_dir(workdir) else []
        started_ns = time.time_ns()
        driver = start_job(["phase1.py", *(resume or ARGS)], workdir, output=True)
        if moment == "start":
            time.sleep(rng.uniform(1, 4))
            hit = True
        elif moment == "results":
            before = _results(workdir)
            hit = _wait(lambda b=before: _results(workdir) >= b + rng.randint(2, 8), driver)
        elif moment == "report":
            hit = _wait(lambda s=started_ns: _report_building(workdir, s), driver)
        else:
            time.sleep(rng.uniform(2, 20))
            hit = driver.poll() is None
        if hit and driver.poll() is None:
            if sig == signal.SIGINT:
                os.killpg(driver.pid, sig)
            else:
                driver.send_signal(sig)
            survived.append((moment, sig.name))
        output, _ = driver.communicate(timeout=600)
        assert driver.returncode in (0, 130, -9), output[-3000:]
        assert "Traceback" not in output, output[-3000:]

    # Finish: resume until the sweep says it is done (a last interrupt may have hit its end).
    final = run_job(["phase1.py", "--resume"], workdir, timeout=1200)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    print(f"interruptions that hit the sweep: {len(survived)} of {len(plan)}: {survived}")
    assert len(survived) >= 5, survived
    assert _histories(workdir) == expected
    state = sweep_state(_sweep_dir(workdir))
    assert state["ended"] and all(t["ended"] for t in state["trials"].values())
    deadline = time.monotonic() + 30  # Ray's processes leave a moment after their driver
    while processes_in(workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_in(workdir) == []
