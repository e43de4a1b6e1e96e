"""`sbatch cluster/slurm/ray_sweep.sbatch` for real: a one-node SLURM cluster on this machine.

The fixture starts munged (with a key of its own), slurmctld and slurmd from a generated
slurm.conf (free ports, state under a temp folder, no cgroup plugins), and stops them after.
Needs Debian's slurm-wlm and munge and root; without them the test is skipped, except in CI
(CI=1), where it fails.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster_helpers import processes_mentioning
from helpers import ROOT, free_port, job_env, sweep_runs

SBATCH_SCRIPT = ROOT / "cluster" / "slurm" / "ray_sweep.sbatch"
TOOLS = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the SLURM test: {reason} (.ci/run installs slurm-wlm and munge as root)")
    pytest.skip(reason)


@dataclass
class Slurm:
    dir: Path
    env: dict[str, str]
    cpus: int

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=60, **kw)


def _wait(predicate, what: str, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}")
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def _slurm_conf(d: Path, munge_socket: Path, node_line: str, host: str) -> str:
    return f"""# A one-node cluster for the tests: every path under {d}, free ports, no cgroups.
ClusterName=tunesweeps
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d}/ctld
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture
def slurm():
    missing = [t for t in TOOLS if shutil.which(t, path=SEARCH_PATH) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        unavailable("slurmd must run as root to start jobs")
    tool = {t: shutil.which(t, path=SEARCH_PATH) for t in TOOLS}

    d = Path(tempfile.mkdtemp(prefix="tsl-", dir="/tmp"))  # short: socket paths live here
    d.chmod(0o755)
    for sub in ("munge", "ctld", "spool", "shared"):
        (d / sub).mkdir(mode=0o755)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    socket_path = d / "munge" / "munge.sock"
    host = subprocess.run([tool["slurmd"], "-C"], capture_output=True, text=True).stdout
    node_line = host.splitlines()[0]  # NodeName=<host> CPUs=.. RealMemory=.. of this machine
    name = node_line.split()[0].split("=", 1)[1]
    cpus = int(next(f.split("=")[1] for f in node_line.split() if f.startswith("CPUs=")))
    conf = d / "slurm.conf"
    conf.write_text(_slurm_conf(d, socket_path, node_line, name))
    env = {
        **job_env(),
        "SLURM_CONF": str(conf),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), SEARCH_PATH]),
    }

    procs: list[subprocess.Popen] = []

    def daemon(*cmd: str) -> None:
        log = open(d / f"{Path(cmd[0]).name}.out", "ab")  # noqa: SIM115 (the child owns it)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True))

    cluster = Slurm(dir=d, env=env, cpus=cpus)
    try:
        daemon(
            tool["munged"], "--foreground", "--force", f"--key-file={key}", f"--socket={socket_path}",
            f"--pid-file={d}/munge/munged.pid", f"--log-file={d}/munge/munged.log", f"--seed-file={d}/munge/seed",
        )  # fmt: skip
        _wait(socket_path.exists, "munged's socket", procs)
        daemon(tool["slurmctld"], "-D", "-f", str(conf))
        daemon(tool["slurmd"], "-D", "-f", str(conf), "-N", name)

        def idle() -> bool:
            out = cluster.run(tool["sinfo"], "-h", "-N", "-o", "%T")
            return out.returncode == 0 and out.stdout.strip() == "idle"

        _wait(idle, "the SLURM node to be idle", procs)
        yield cluster
    finally:
        for p in reversed(procs):  # slurmd, slurmctld, munged
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        deadline = time.monotonic() + 30
        while processes_mentioning(str(d)) and time.monotonic() < deadline:
            time.sleep(1)
        left = processes_mentioning(str(d))
        for log in ("slurmctld.log", "slurmd.log"):
            if (d / log).exists():
                print(f"--- {log} (tail)\n" + "\n".join((d / log).read_text().splitlines()[-15:]))
        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"processes left behind: {left}"


@pytest.mark.slow
def test_sbatch_runs_the_quick_sweep_on_ray_and_logs_every_trial(slurm):
    shared = slurm.dir / "shared"  # the "shared filesystem": results/ and mlflow.db go here
    started = time.monotonic()
    out = subprocess.run(
        [
            "sbatch", "--wait", "--parsable", f"--chdir={shared}", f"--output={shared}/slurm-%j.out",
            f"--cpus-per-task={slurm.cpus}", str(SBATCH_SCRIPT), str(ROOT / "tune_jobs" / "phase1.py"), "--quick",
        ],
        env={**slurm.env, "RAY_TMPDIR": str(slurm.dir), "SWEEP_LOCAL_DIR": str(slurm.dir / "local")},
        cwd=shared,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    job_id = out.stdout.strip().split(";")[0]
    log_file = shared / f"slurm-{job_id}.out"
    log = log_file.read_text() if job_id and log_file.exists() else "(no job output)"
    print(f"sbatch --wait: exit {out.returncode} after {time.monotonic() - started:.0f} s; job {job_id}")
    assert out.returncode == 0, out.stderr + log[-4000:]

    job = slurm.run("scontrol", "show", "job", job_id).stdout
    assert "JobState=COMPLETED" in job and "ExitCode=0:0" in job, job
    assert "tune-sweep: Ray head" in log and "exited with 0" in log, log[-4000:]
    # The store was on the node's disk (SWEEP_LOCAL_DIR, default /tmp) and was copied to the
    # shared folder when the job ended, its artifacts there too.
    assert f"MLflow at sqlite:///{slurm.dir}/local/tune-sweeps-" in log
    assert f"MLflow store copied to {shared}/mlflow.db" in log

    client, parents, trials = sweep_runs(shared, "phase1")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.params["data.n_components"]) for r in trials) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert all(r.info.status == "FINISHED" and "val/nmse" in r.data.metrics for r in trials)
    for run in (*parents, *trials):  # the artifacts where the shared copy says they are
        assert run.info.artifact_uri.startswith((shared / "mlartifacts").as_uri())
    assert all("cfg.yaml" in [a.path for a in client.list_artifacts(r.info.run_id)] for r in trials)
    # The trials ran on the Ray head the script started (its session under RAY_TMPDIR/ray-JOBID
    # names its node id), not on a Ray the driver started itself.
    (node,) = {r.data.tags["ray.node_id"] for r in trials}
    assert (slurm.dir / f"ray-{job_id}" / "session_latest" / f"gcs_server_port_{node}").exists()
    (report,) = (shared / "results" / "phase1").iterdir()
    assert (report / "summary.json").exists()
    assert len(list((shared / "results" / "ray").iterdir())) == 1


# The store handling of the script without a SLURM cluster or Ray: a `ray` that only says it
# started, and a job that logs one run (with an artifact) to the store it is given.
FAKE_RAY = """#!/bin/sh
echo "Ray runtime started."
trap 'exit 0' TERM
while :; do sleep 0.2; done
"""
FAKE_SCONTROL = '#!/bin/sh\necho "$3"\n'
FAKE_JOB = """
import argparse, pathlib, time
from mlflow import MlflowClient
from tune_jobs.core.tracking.uri import artifact_location
p = argparse.ArgumentParser()
for option in ("--address", "--results-dir", "--mlflow-uri", "--wait-for"):
    p.add_argument(option)
p.add_argument("name")
args = p.parse_args()
while args.wait_for and not pathlib.Path(args.wait_for).exists():
    time.sleep(0.1)
client = MlflowClient(args.mlflow_uri)
found = client.get_experiment_by_name("fake")
exp = found.experiment_id if found else client.create_experiment("fake", artifact_location(args.mlflow_uri))
run = client.create_run(exp, run_name=args.name)
client.log_text(run.info.run_id, args.name, "note.txt")
client.set_terminated(run.info.run_id)
"""


@pytest.mark.slow
def test_without_a_server_each_job_copies_its_node_local_store_back(tmp_path):
    from mlflow import MlflowClient

    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("ray", FAKE_RAY), ("scontrol", FAKE_SCONTROL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    job = tmp_path / "job.py"
    job.write_text(FAKE_JOB)
    shared = tmp_path / "shared"
    shared.mkdir()

    def submit(job_id: int, node: str, *args: str) -> subprocess.Popen:
        env = {k: v for k, v in job_env().items() if not k.startswith(("SLURM_", "MLFLOW_TRACKING"))}
        env.update(
            PATH=os.pathsep.join([str(fake), str(Path(sys.executable).parent), env["PATH"]]),
            SLURM_JOB_ID=str(job_id),
            SWEEP_SHARED_DIR=str(shared),
            SWEEP_LOCAL_DIR=str(tmp_path / node),  # each "node" its own disk
            RAY_TMPDIR=str(tmp_path / "ray"),
        )
        out = open(tmp_path / f"job-{job_id}.out", "w")  # noqa: SIM115 (the child owns it)
        return subprocess.Popen(["bash", str(SBATCH_SCRIPT), str(job), *args], env=env, stdout=out, stderr=out)

    def finish(proc: subprocess.Popen, job_id: int) -> str:
        assert proc.wait(300) == 0, (tmp_path / f"job-{job_id}.out").read_text()
        return (tmp_path / f"job-{job_id}.out").read_text()

    def runs(db: Path) -> dict[str, list[str]]:
        # Read from a copy: MLflow keeps one engine per store URI, open on the file a job replaced.
        copy = tmp_path / f"read-{time.monotonic_ns()}.db"
        shutil.copy(db, copy)
        client = MlflowClient(f"sqlite:///{copy}")
        found = client.search_runs([client.get_experiment_by_name("fake").experiment_id])
        for run in found:
            assert run.info.artifact_uri.startswith((shared / "mlartifacts").as_uri())
        return {r.info.run_name: [a.path for a in client.list_artifacts(r.info.run_id)] for r in found}

    log = finish(submit(1, "node-a", "first"), 1)
    assert f"MLflow at sqlite:///{tmp_path}/node-a/tune-sweeps-" in log and "this node's disk" in log
    assert not list(shared.glob("*.db-journal")) and not list(shared.glob(".mlflow.db*"))
    assert runs(shared / "mlflow.db") == {"first": ["note.txt"]}
    # Another node starts from the shared store and adds to it.
    finish(submit(2, "node-b", "second"), 2)
    assert runs(shared / "mlflow.db") == {"first": ["note.txt"], "second": ["note.txt"]}
    # Two jobs at once on two nodes: the one that ends last does not overwrite the other's runs.
    late = submit(3, "node-a", "late", "--wait-for", str(tmp_path / "go"))
    finish(submit(4, "node-b", "early"), 4)
    (tmp_path / "go").touch()
    log = finish(late, 3)
    assert f"this job's store goes beside it: {shared}/mlflow-3.db" in log
    assert set(runs(shared / "mlflow.db")) == {"first", "second", "early"}
    assert set(runs(shared / "mlflow-3.db")) == {"first", "second", "late"}
