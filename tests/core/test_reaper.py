"""No process of a sweep outlives its driver: a driver SIGKILLed while Ray starts or while trials
run leaves no Ray agent or worker behind (they used to run on for good), and the watcher ends
only what the driver started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
from helpers import job_env, processes_in, start_job

# A driver that starts the watcher, then a process that escapes its parent as Ray's agents do
# (its own session, so nothing ties it to the driver), prints its pid and waits to be killed.
DRIVER = """
import subprocess, sys, time
from tune_jobs.core import reaper
reaper.watch()
time.sleep(0.5)  # the watcher notes the driver's descendants
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
print(escaped.pid, flush=True)
time.sleep(600)
"""


def _gone(check, timeout: float = 20.0) -> list:
    """`check()` until it returns nothing or `timeout` passes; the last answer."""
    deadline = time.monotonic() + timeout
    while (left := check()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_what_the_driver_started_ends_with_it_and_nothing_else_does(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=tmp_path)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], cwd=tmp_path, env=job_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        escaped = psutil.Process(int(driver.stdout.readline()))
        time.sleep(0.5)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        psutil.wait_procs([escaped], timeout=15)
        assert not escaped.is_running(), "the escaped child outlived its driver"
        assert bystander.poll() is None, "the watcher ended a process the driver did not start"
    finally:
        bystander.kill()
        if psutil.pid_exists(escaped.pid):
            escaped.kill()


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())[:60]
    except psutil.Error:
        return ""  # gone meanwhile


def test_a_driver_killed_while_ray_starts_or_trials_run_leaves_no_process(tmp_path):
    for moment, wanted in (("Ray starts", "ray::DashboardAgent"), ("trials run", "ray::ImplicitFunc")):
        workdir = tmp_path / moment.replace(" ", "_")
        workdir.mkdir()
        driver = start_job(["phase1.py", "--quick", "space.n_components=[1,2]", "trainer.steps=2000"], workdir)
        deadline = time.monotonic() + 300
        started: list[psutil.Process] = []
        while not any(wanted in _title(p) for p in started):
            assert driver.poll() is None and time.monotonic() < deadline, f"no {wanted} seen"
            time.sleep(0.1)
            try:
                started = psutil.Process(driver.pid).children(recursive=True)
            except psutil.Error:
                started = []
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        _, left = psutil.wait_procs(started, timeout=20)
        titles = [_title(p) for p in left]
        assert titles == [], f"driver killed while {moment}; still running: {titles}"
        assert _gone(lambda w=workdir: processes_in(w), timeout=5) == []
