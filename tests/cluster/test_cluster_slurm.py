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
        env={**slurm.env, "RAY_TMPDIR": str(slurm.dir)},
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
    assert f"MLflow at sqlite:///{shared}/mlflow.db" in log

    _, parents, trials = sweep_runs(shared, "phase1")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(int(r.data.params["data.n_components"]) for r in trials) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert all(r.info.status == "FINISHED" and "val/nmse" in r.data.metrics for r in trials)
    # The trials ran on the Ray head the script started (its session under RAY_TMPDIR/ray-JOBID
    # names its node id), not on a Ray the driver started itself.
    (node,) = {r.data.tags["ray.node_id"] for r in trials}
    assert (slurm.dir / f"ray-{job_id}" / "session_latest" / f"gcs_server_port_{node}").exists()
    (report,) = (shared / "results" / "phase1").iterdir()
    assert (report / "summary.json").exists()
    assert len(list((shared / "results" / "ray").iterdir())) == 1
