"""No process of a sweep outlives its driver.

`ray.init()` ties the Ray node it starts (GCS, raylet) to the driver, so they die with it even
on `kill -9`. The agents the raylet starts (the dashboard agent, the runtime-env agent), and a
trial worker caught while it starts, do not: a driver killed at any moment (kill -9, an
out-of-memory kill, a SLURM job cut at its limit) left them running for the rest of the
machine's life, holding memory and the sweep's folder.

So before it starts Ray the driver starts a watcher (this module; standard library and psutil)
that waits on a pipe whose write end only the driver holds, and meanwhile notes the driver's
descendants (every POLL_S; every FIRST_POLL_S during the first FIRST_S, when Ray starts its
processes). The driver also marks its environment with a token that the processes Ray starts
inherit. However the driver ends, the pipe reads end-of-file; the watcher gives Ray's processes
GRACE_S to leave by themselves, then ends those still there that it saw descend from the driver
or that carry the token: SIGTERM, and SIGKILL after TERM_WAIT_S. A Ray cluster the driver joins
(`--address`, `ray up`, SLURM) is not started here and is never touched.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

TOKEN_ENV = "TUNE_JOBS_DRIVER_TOKEN"
GRACE_S = 1.0
TERM_WAIT_S = 3.0
FIRST_S, FIRST_POLL_S, POLL_S = 60.0, 0.2, 2.0

_writer: int | None = None  # the pipe's write end, held by the driver for its whole life


def watch() -> str:
    """Start the watcher once per driver process; returns the token its Ray processes carry."""
    global _writer
    token = os.environ.get(TOKEN_ENV)
    if _writer is not None and token:
        return token
    token = uuid.uuid4().hex
    reader, writer = os.pipe()  # not inherited by anything the driver starts later
    subprocess.Popen(
        [sys.executable, "-m", "tune_jobs.core.reaper", token, str(os.getpid())],
        stdin=reader,
        stdout=subprocess.DEVNULL,
        cwd="/",  # holds no user folder busy
        close_fds=True,
    )
    os.close(reader)
    _writer = writer
    os.environ[TOKEN_ENV] = token  # after the watcher started: it does not carry the token
    return token


def _carries(proc: psutil.Process, token: str) -> bool:
    try:
        # Ray's processes retitle themselves (`ray::DashboardAgent`), which zeroes the start of
        # the environment block where psutil stops reading; the entries after it are intact.
        raw = (Path("/proc") / str(proc.pid) / "environ").read_bytes()
    except FileNotFoundError:
        return proc.environ().get(TOKEN_ENV) == token  # no /proc (macOS)
    return f"{TOKEN_ENV}={token}".encode() in raw.split(b"\0")


def carriers(token: str, *, exclude: int | None = None) -> list[psutil.Process]:
    """This user's processes whose environment holds `token`."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == exclude:
            continue
        try:
            if _carries(proc, token):
                found.append(proc)
        except (psutil.Error, OSError):
            continue  # gone, or another user's
    return found


def end(token: str, seen: dict[int, float], *, grace_s: float = GRACE_S, term_wait_s: float = TERM_WAIT_S) -> int:
    """End the processes carrying `token` or seen as the driver's descendants (pid: start time);
    returns how many were still there after the grace."""
    time.sleep(grace_s)
    left = {proc.pid: proc for proc in carriers(token, exclude=os.getpid())}
    for pid, started in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started:  # not a new process that got the same pid
                left.setdefault(pid, proc)
        except psutil.Error:
            continue
    for proc in left.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(list(left.values()), timeout=term_wait_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=term_wait_s)
    return len(left)


def _note(driver: psutil.Process, seen: dict[int, float]) -> None:
    try:
        for proc in driver.children(recursive=True):
            if proc.pid != os.getpid() and proc.pid not in seen:
                seen[proc.pid] = proc.create_time()
    except psutil.Error:
        pass  # the driver is gone; the pipe says so next


def _main(token: str, driver_pid: int) -> None:
    # Ctrl-C reaches the whole process group and SLURM signals the whole job: the watcher stays
    # to clean up after the driver has handled them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seen: dict[int, float] = {}
    started = time.monotonic()
    pipe = sys.stdin.buffer.raw
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        driver = None  # gone before the watcher looked: the pipe is closed already
    while driver is not None:
        poll = FIRST_POLL_S if time.monotonic() - started < FIRST_S else POLL_S
        readable, _, _ = select.select([pipe], [], [], poll)
        if readable and not pipe.read(65536):
            break  # end-of-file: the driver is gone (nothing is ever written)
        _note(driver, seen)
    end(token, seen)


if __name__ == "__main__":
    try:
        _main(sys.argv[1], int(sys.argv[2]))
    except Exception:  # the driver's terminal is the user's: a watcher that fails stays quiet
        sys.exit(1)
