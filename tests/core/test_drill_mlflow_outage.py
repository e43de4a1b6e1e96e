"""Drill: the MLflow tracking server goes away mid-sweep: the sweep does not fail, results are
kept on disk, and MLflow ends up with every metric of every trial exactly once: when the server
comes back during the sweep, or later through `report.py --replay`. A real `mlflow server`,
really stopped. A server that hangs (accepts, never answers) costs the sweep little
(bench/hung_server.py measures it)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, free_port, job_env, run_job, start_job, sweep_state
from mlflow import MlflowClient

from tune_jobs import mlflow_server

STEPS = 2000
# The drill whose server comes back runs longer: a restarted server takes up to 20 s to answer
# on a loaded machine, and it must be back before the sweep ends.
BACK_STEPS = 4000
# The drill whose server never returns needs only its first results sent before the server stops.
NEVER_STEPS = 1200
ARGS = [
    "--quick",
    "space.n_components=[1,2]",
    "trainer.eval_every=50",
    "trainer.checkpoint_every=250",
    "trainer.eval_prompts=64",
    # Results every 5 s, not every 30: the outage must be met, and seen, while the sweep runs.
    "--mlflow-every",
    "5",
]


def expected_steps(steps: int) -> list[int]:
    return list(range(0, steps, 50)) + [steps - 1]


@pytest.fixture
def server(tmp_path):
    """Start/stop a real MLflow server on one port and one store, as often as a test likes."""
    store = tmp_path / "server"
    store.mkdir()
    port = free_port()
    procs = []

    class Server:
        uri = mlflow_server.url(port=port)

        def start(self):
            procs.append(
                mlflow_server.start(
                    backend_store_uri=f"sqlite:///{store / 'mlflow.db'}",
                    artifacts_destination=str(store / "artifacts"),
                    port=port,
                    log_file=store / "server.log",
                    timeout=120,
                )
            )

        def stop(self):
            mlflow_server.stop(procs[-1])

    yield Server()
    for proc in procs:
        mlflow_server.stop(proc)


def start_sweep(workdir: Path, uri: str, steps: int = STEPS) -> subprocess.Popen:
    return start_job(["phase1.py", *ARGS, f"trainer.steps={steps}", "--mlflow-uri", uri], workdir, output=True)


def wait_for(condition, what: str, driver: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert driver.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def sweep_dir(workdir: Path) -> Path | None:
    found = list((workdir / "results" / "ray").glob("phase1-*")) if (workdir / "results" / "ray").exists() else []
    return found[0] if found else None


def state(workdir: Path) -> dict:
    return sweep_state(sweep_dir(workdir))


def journal_lines(workdir: Path) -> int:
    d = sweep_dir(workdir)
    path = d / "mlflow_journal.jsonl" if d else None
    return len(path.read_bytes().splitlines()) if path and path.exists() else 0


def assert_everything_once(uri: str, steps: int = STEPS) -> MlflowClient:
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("phase1").experiment_id])
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert sorted(r.info.run_name for r in trials) == ["phase1/n_components=1", "phase1/n_components=2"]
    for r in trials:
        assert r.info.status == "FINISHED"
        for key in ("val/nmse", "train/loss", "val/nmse_rel_oracle"):
            logged = [m.step for m in client.get_metric_history(r.info.run_id, key)]
            assert sorted(logged) == expected_steps(steps), (r.info.run_name, key)  # none lost, none twice
        # A constant of the trial: at its first and last evaluation, once each.
        logged = [m.step for m in client.get_metric_history(r.info.run_id, "baseline/lstsq_nmse")]
        assert sorted(logged) == [0, expected_steps(steps)[-1]], r.info.run_name
        assert {"cfg.yaml", "checkpoint", "run.log"} <= {a.path for a in client.list_artifacts(r.info.run_id)}
    (parent,) = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert parent.info.status == "FINISHED"
    return client


@pytest.mark.soak
def test_server_down_mid_sweep_and_back_loses_nothing(workdir, server):
    server.start()
    driver = start_sweep(workdir, server.uri, BACK_STEPS)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: state(workdir).get("journal_offset", 0) > 0, "the first results were sent", driver)
        server.stop()
        down_at = journal_lines(workdir)
        # Results keep coming while MLflow is down: they are journalled, not lost. The server
        # comes back once the sweep has found it gone (a sync tried and failed).
        wait_for(
            lambda: journal_lines(workdir) >= down_at + 6 and "unreachable" in "".join(lines),
            "results journalled while down, and the outage seen",
            driver,
        )
        assert driver.poll() is None
        server.start()
        driver.wait(timeout=600)
        reader.join(timeout=10)
    finally:
        if driver.poll() is None:
            driver.kill()
    out = "".join(lines)
    assert driver.returncode == 0, out[-3000:]
    assert "MLflow at http://127.0.0.1" in out and "unreachable" in out  # it said so, once
    assert "reachable again" in out
    client = assert_everything_once(server.uri, BACK_STEPS)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("phase1").experiment_id], filter_string="tags.`sweep.role` = 'parent'"
    )
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.soak
def test_server_that_never_returns_is_replayed_later_with_one_command(workdir, server):
    server.start()
    driver = start_sweep(workdir, server.uri, NEVER_STEPS)
    try:
        wait_for(lambda: state(workdir).get("journal_offset", 0) > 0, "the first results were sent", driver)
        server.stop()
        out, _ = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out[-3000:]  # the sweep itself succeeded
    assert "still lacks" in out and "python tune_jobs/report.py --replay" in out, out[-2000:]
    assert not (workdir / "results" / "phase1").exists()  # no report from half the data

    replay_cmd = ["report.py", "--replay", str(sweep_dir(workdir))]
    down = run_job(replay_cmd, workdir, timeout=300)
    assert down.returncode == 1 and "still unreachable" in down.stderr and "nothing was lost" in down.stderr

    server.start()
    up = run_job(replay_cmd, workdir, timeout=300)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    assert_everything_once(server.uri, NEVER_STEPS)
    assert (next((workdir / "results" / "phase1").iterdir()) / "summary.json").exists()
    again = run_job(replay_cmd, workdir, timeout=300)  # a second replay sends nothing twice
    assert again.returncode == 0 and "nothing was pending" in again.stdout
    assert_everything_once(server.uri, NEVER_STEPS)


@pytest.mark.slow
@pytest.mark.serial  # it times the machine's pace: run alone
def test_a_hung_tracking_server_costs_the_sweep_at_most_ten_percent(workdir):
    """bench/hung_server.py: the same sweep into SQLite and into a socket that never answers."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hung_server.py")],
        cwd=workdir,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    ratio = float(re.search(r"ratio \(hung / SQLite\): ([0-9.]+)x", out.stdout).group(1))
    assert ratio <= 1.10, out.stdout
    assert "did not answer within 2 s at the end of the sweep" in out.stdout
