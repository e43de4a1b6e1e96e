"""What the tests share: running an entry script as a user would, reading the sweep it left
(MLflow runs, the sweep's record), and a context that dies on cue to test resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from trainables.common import LocalContext

ROOT = Path(__file__).resolve().parents[1]


def job_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_ADDRESS"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_job(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python tune_jobs/<script> ARGS` from `cwd`, as a user would type it."""
    script, *rest = args
    return subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / script), *rest],
        cwd=cwd,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sweep_runs(workdir: Path, experiment: str):
    """The MLflow client, parent runs and trial runs of `experiment` in workdir's store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    return client, parents, trials


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*"))


class Interrupt(Exception):
    """Raised by StopAfter: the trial dies as a killed worker would."""


class StopAfter(LocalContext):
    """Dies right after the n-th checkpoint (or the n-th report) has been written, to test resume."""

    def __init__(self, path, *, checkpoints=None, reports=None):
        super().__init__(path)
        self.after_checkpoints, self.after_reports = checkpoints, reports

    def report(self, metrics, state=None):
        super().report(metrics, state)
        if self.checkpoints == self.after_checkpoints or len(self.history) == self.after_reports:
            raise Interrupt


def free_port() -> int:
    """A TCP port nothing listens on right now (for servers a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_job(args: list[str], cwd: Path, output: bool = False) -> subprocess.Popen:
    """`python tune_jobs/<script> ARGS` in the background, in its own process group (so a
    test can kill the driver as a crash would). With `output`, stdout+stderr are readable."""
    script, *rest = args
    pipe = subprocess.PIPE if output else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tune_jobs" / script), *rest],
        cwd=cwd,
        env=job_env(),
        stdout=pipe,
        stderr=subprocess.STDOUT if output else subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


T = TypeVar("T")


def crash_when(
    driver: subprocess.Popen,
    ready: Callable[[], T | None],
    *,
    within: float = 600,
    settle: float = 0,
    log: Path | None = None,
) -> T:
    """SIGKILL `driver` and all it started (its process group), as a crash would, `settle`
    seconds after `ready()` first returns something; returns that. Fails if the sweep ends
    first (quoting `log`, where the driver's output went) or the moment never comes."""
    try:
        deadline = time.monotonic() + within
        while (found := ready()) is None:
            why = "the sweep ended before the moment came" if driver.poll() is not None else None
            if why is None and time.monotonic() > deadline:
                why = f"the moment never came in {within:.0f} s"
            assert why is None, why + (": " + log.read_text()[-3000:] if log else "")
            time.sleep(0.2)
        time.sleep(settle)
        return found
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def sweep_state(sweep_dir: Path | None) -> dict:
    """A sweep's record as a resume reads it now: mlflow_runs.json (written at most every second
    or so) and the trials' starts and ends appended to mlflow_trials.jsonl since. Empty while it
    does not exist yet."""
    from tune_jobs.core.tracking import STATE_FILE, Outbox, SweepFileError

    if sweep_dir is None or not (sweep_dir / STATE_FILE).exists():
        return {"trials": {}}
    try:
        return Outbox(sweep_dir).state or {"trials": {}}
    except SweepFileError:
        return {"trials": {}}


def processes_in(folder: Path) -> list[str]:
    """Processes whose working folder lies in `folder` (a driver, Ray's node and agents), as
    "pid: command line"."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(str(folder)):
                title = (proc / "cmdline").read_bytes()[:80].replace(b"\0", b" ").decode(errors="replace").strip()
                found.append(f"{proc.name}: {title}")
        except OSError:
            continue
    return found


def toy_command(experiment: Path, *args: str) -> list[str]:
    """`python tests/toy_study.py --experiment EXPERIMENT ARGS`: the tests' own study, run as a
    user runs an entry script."""
    return [sys.executable, str(ROOT / "tests" / "toy_study.py"), "--experiment", str(experiment), *args]
