"""Helpers for the cluster tests: free ports, Ray nodes started (and stopped) by the test itself.

Nothing here runs `ray stop`: that would stop every Ray on the machine, other users' included.
Each node is one `ray start --block` process in its own session; SIGTERM makes it stop the
processes it started, and only those.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import job_env

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray_node(
    log: Path, *, temp_dir: Path, head_port: int | None = None, address: str | None = None, **options: str
) -> subprocess.Popen:
    """`ray start --block` as a head (head_port) or a worker joining `address`, on 127.0.0.1."""
    cmd = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    if head_port is not None:
        cmd += ["--head", f"--port={head_port}", "--include-dashboard=false"]
    else:
        cmd += [f"--address={address}"]
    cmd += [f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    out = open(log, "ab")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=job_env(), start_new_session=True)


def stop_ray_node(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its own processes
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def alive_nodes(address: str) -> list[dict]:
    """The alive nodes of the cluster at `address`, asked by a short-lived driver."""
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False);"
        "print(json.dumps([{'id': n['NodeID'], 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=job_env(), timeout=60)
    except subprocess.TimeoutExpired:
        return []
    if out.returncode != 0:
        return []
    return json.loads(out.stdout.strip().splitlines()[-1])


def wait_for_nodes(address: str, count: int, procs: list[subprocess.Popen], timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited with code {p.returncode}; see its log")
        nodes = alive_nodes(address)
        if len(nodes) >= count:
            return nodes
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes in {timeout:.0f} s")


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (to check a test left nothing behind)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids
