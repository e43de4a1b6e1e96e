"""A sweep across two Ray nodes on this machine: a custom resource makes the trials spread.

Each node holds one `worker_slot`; every trial asks for one (`resources.custom.worker_slot=1`),
so at most one trial runs per node and the 8 trials of phase1 --quick land on both nodes.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from cluster_helpers import (
    free_port,
    own_ray_token,
    processes_mentioning,
    start_ray_node,
    stop_ray_node,
    wait_for_nodes,
)
from helpers import run_job, sweep_runs


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    own_ray_token(monkeypatch)
    # Ray's socket paths live under the temp dir and must stay short (108 bytes on Linux).
    temp = Path(tempfile.mkdtemp(prefix="rt2n-", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    slot = '{"worker_slot": 1}'
    procs = []
    try:
        procs.append(start_ray_node(tmp_path / "head.log", temp_dir=temp, head_port=port, num_cpus="1", resources=slot))
        procs.append(
            start_ray_node(tmp_path / "worker.log", temp_dir=temp, address=address, num_cpus="1", resources=slot)
        )
        nodes = wait_for_nodes(address, 2, procs)
        yield address, nodes
    finally:
        for p in reversed(procs):
            stop_ray_node(p)
        deadline = time.monotonic() + 30
        while processes_mentioning(str(temp)) and time.monotonic() < deadline:
            time.sleep(1)
        left = processes_mentioning(str(temp))
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


@pytest.mark.slow  # about 2 minutes on 2 shared cores
def test_quick_sweep_spreads_over_two_nodes(two_nodes, workdir):
    address, nodes = two_nodes
    assert len(nodes) == 2 and all(n["resources"].get("worker_slot") == 1 for n in nodes)

    out = run_job(["phase1.py", "--quick", "--address", address, "resources.custom.worker_slot=1"], workdir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "resources per trial: cpu=1, gpu=0, worker_slot=1;" in out.stdout

    _, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 1 and len(trials) == 8
    assert sorted(int(r.data.params["data.n_components"]) for r in trials) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all("val/nmse" in r.data.metrics for r in trials)
    used = {r.data.tags["ray.node_id"] for r in trials}
    assert used == {n["id"] for n in nodes}, "the trials did not run on both nodes"

    # Tune's own results agree: every trial folder holds results naming one of the two nodes.
    (sweep_dir,) = (workdir / "results" / "ray").iterdir()
    trial_dirs = [d for d in sweep_dir.iterdir() if (d / "result.json").exists()]
    assert len(trial_dirs) == 8
    seen = {json.loads(d.joinpath("result.json").read_text().splitlines()[-1])["node_id"] for d in trial_dirs}
    assert seen == used
