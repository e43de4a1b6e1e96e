"""The cluster's MLflow server stops with its Ray head (`--stop-with-ray HOST:PORT`).

The cluster YAMLs start `python -m tune_jobs.mlflow_server ... --stop-with-ray $HEAD:6379` after
`ray start --head`, so that `ray down` (which only runs `ray stop` on an on-prem head) leaves no
server behind. The server watches the head's GCS port; here a plain listening socket stands in
for it (tests/cluster/test_cluster_ray_up.py runs the real head).
"""

import socket
import subprocess
import sys
import time

import psutil
from cluster_helpers import processes_mentioning
from helpers import free_port, job_env

from tune_jobs import mlflow_server


def server(tmp_path, *args: str, log=subprocess.PIPE) -> subprocess.Popen:
    """`python -m tune_jobs.mlflow_server` on a free port; stdout and stderr to `log` (a file, for
    a server that runs: nobody reads a pipe while it does)."""
    cmd = [sys.executable, "-m", "tune_jobs.mlflow_server", "--port", str(free_port())]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination", str(tmp_path)]
    return subprocess.Popen([*cmd, *args], env=job_env(), stdout=log, stderr=log, text=True, start_new_session=True)


def test_without_a_ray_head_it_says_so_and_starts_nothing(tmp_path):
    proc = server(tmp_path, "--stop-with-ray", f"127.0.0.1:{free_port()}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.startswith("error: --stop-with-ray: no Ray head answers at 127.0.0.1:") and err.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_a_malformed_address_is_one_line(tmp_path):
    proc = server(tmp_path, "--stop-with-ray", "10.0.0.10")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert (
        err == "error: --stop-with-ray '10.0.0.10' is not HOST:PORT; use the Ray head's address, e.g. 10.0.0.10:6379\n"
    )


def test_the_server_stops_when_the_ray_head_stops(tmp_path):
    head = socket.create_server(("127.0.0.1", 0))  # the head's GCS port
    address = f"127.0.0.1:{head.getsockname()[1]}"
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = server(tmp_path, "--stop-with-ray", address, log=out)
    try:
        deadline = time.monotonic() + 60
        while "--mlflow-uri" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        uri = log.read_text().split("--mlflow-uri ")[1].split()[0]
        mlflow_server.wait_until_up(uri, timeout=300, proc=proc)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers  # the `mlflow server` it started, and its uvicorn workers

        head.close()  # `ray stop`
        started = time.monotonic()
        assert proc.wait(60) == 0
        print(f"the server stopped {time.monotonic() - started:.1f} s after the head")
        assert f"the Ray head at {address} stopped: stopping the MLflow server" in log.read_text()
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive and not processes_mentioning(str(tmp_path / "mlflow.db"))
    finally:
        head.close()
        if proc.poll() is None:
            proc.kill()


def test_workers_still_starting_on_a_busy_node_are_not_killed(tmp_path):
    # uvicorn kills a worker that does not answer its health check within 5 s by default: on a
    # loaded head, workers importing MLflow were killed and restarted for minutes.
    cmd = mlflow_server.server_command(backend_store_uri=f"sqlite:///{tmp_path / 'm.db'}")
    assert cmd[cmd.index("--uvicorn-opts") + 1] == f"--timeout-worker-healthcheck {mlflow_server.WORKER_HEALTHCHECK_S}"
    assert mlflow_server.WORKER_HEALTHCHECK_S >= 60
