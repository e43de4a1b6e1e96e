"""`ray up cluster/onprem.yaml` for real: a head and a worker machine, real SSH, on this one machine.

The machines are namespaces of the test's own (tests/cluster_helpers.py: Lan, Machine): each
has its own network (an address on a LAN that exists only between the test's namespaces), its
own PIDs (so the YAML's `ray stop` stops only that machine's Ray), its own /tmp and /run, a
root whose home is the machine's folder, and Debian's sshd. A third namespace on the LAN is
"the laptop": `ray up`, `ray dashboard`, `ray job submit` and `ray down` run there, as the README
tells a user, with this repository as the folder the YAML's file mount copies.

What the test's copy of onprem.yaml changes, and why (test_the_rendered_yaml_changes_only...):
- provider.head_ip, provider.worker_ips, auth.ssh_user, auth.ssh_private_key: the REPLACE_MEs,
  filled with the machines' addresses, root, and a key the test made;
- setup_commands[3] and head_start_ray_commands[2:5] (the team server's database, the guard
  that dumps it, the MLflow server): /shared/ becomes the test's folder, which both machines
  see at the same path (a real cluster mounts NFS there).
Everything else runs as written: PostgreSQL (Debian's, installed on this machine, so the YAML's
apt-get is skipped) in ~/mlflow-db on the head's own disk, the MLflow server with logins on it. The machines' ~/venv exists before `ray up` (a machine image
with the packages installed: cluster_helpers.provision_python), so the YAML's
`test -d ~/venv || python3 -m venv ~/venv` keeps it, and its `pip install -r
cluster/requirements.txt -e ~/tune-sweeps` runs for real, offline, on the rsynced copy.

Needs root and Debian's openssh-server, rsync, iproute2 and curl; without them the test is
skipped, except in CI (CI=1), where it fails (.ci/run installs them).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from cluster_helpers import LAN, RAY, Lan, Machine, die_with_test, namespace_tools, provision_python
from helpers import ROOT, job_env
from team_helpers import postgres_bin

ONPREM = ROOT / "cluster" / "onprem.yaml"
HEAD, WORKER = f"{LAN}.10", f"{LAN}.11"
COMMANDS = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
# The lines of the YAML the test changes (see the module docstring).
CHANGED = {
    "provider.head_ip",
    "provider.worker_ips",
    "auth.ssh_user",
    "auth.ssh_private_key",
    "setup_commands[3]",
    "head_start_ray_commands[2]",
    "head_start_ray_commands[3]",
    "head_start_ray_commands[4]",
}
ADMIN_PASSWORD = "rayup-admin-pw-51c0a7"
ALICE = ("alice", "rayup-alice-pw-9e14d2")
TRIALS = [1, 2, 3, 4, 5, 6, 8, 10]  # phase1 --quick
QUERY_MLFLOW = """
import json, sys
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.get_experiment_by_name("phase1")
runs = client.search_runs([exp.experiment_id], max_results=100)
print(json.dumps([
    {"id": r.info.run_id, "name": r.info.run_name, "status": r.info.status, "tags": r.data.tags, "params": r.data.params,
     "metrics": sorted(r.data.metrics), "artifacts": [a.path for a in client.list_artifacts(r.info.run_id)]}
    for r in runs
]))
"""


def render(shared: Path, key: Path) -> dict:
    """onprem.yaml with the REPLACE_MEs filled and /shared/ pointed at the test's folder."""
    config = yaml.safe_load(ONPREM.read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[WORKER])
    config["auth"].update(ssh_user="root", ssh_private_key=str(key))
    for name in COMMANDS:
        config[name] = [command.replace("/shared/", f"{shared}/") for command in config[name]]
    return config


def changes(before, after, where: str = "") -> list[str]:
    """The paths (a.b[2]) at which two YAML trees differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = sorted(set(before) | set(after))
        return [p for k in keys for p in changes(before.get(k), after.get(k), f"{where}.{k}".lstrip("."))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        if all(not isinstance(v, (dict, list)) for v in before) and where.startswith("provider"):
            return [] if before == after else [where]  # an address list is one setting
        return [p for i, (b, a) in enumerate(zip(before, after)) for p in changes(b, a, f"{where}[{i}]")]
    return [] if before == after else [where]


def test_the_rendered_yaml_changes_only_the_replace_mes_and_the_shared_folder(tmp_path):
    original = yaml.safe_load(ONPREM.read_text())
    rendered = render(tmp_path / "shared", tmp_path / "key")
    assert set(changes(original, rendered)) == CHANGED
    for name in COMMANDS:
        for before, after in zip(original[name], rendered[name]):
            assert after == before.replace("/shared/", f"{tmp_path / 'shared'}/")
    assert "REPLACE_ME" in ONPREM.read_text() and "REPLACE_ME" not in yaml.safe_dump(rendered)


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the ray up test: {reason} (.ci/run installs openssh-server, rsync, iproute2, curl)")
    pytest.skip(reason)


class Cluster:
    """The LAN, the two machines, and the laptop's side: its environment and its commands."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.key = base / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        shutil.copy(f"{self.key}.pub", base / "authorized_keys")
        self.shared = base / "shared"  # what every machine would mount at /shared
        self.shared.mkdir()
        laptop = base / "laptop"
        for sub in ("home", "tmp", "ray"):
            (laptop / sub).mkdir(parents=True)
        # The laptop's own home and temp folders (ray up keeps its cluster state there); no Ray
        # auth token or address of this machine's; no usage statistics (there is no network).
        self.env = {k: v for k, v in job_env().items() if not k.startswith("RAY_")}
        self.env.update(
            HOME=str(laptop / "home"),
            TMPDIR=str(laptop / "tmp"),
            RAY_TMPDIR=str(laptop / "ray"),
            RAY_USAGE_STATS_ENABLED="0",
        )
        self.config = base / "onprem.yaml"
        self.config.write_text(yaml.safe_dump(render(self.shared, self.key), sort_keys=False))
        self.lan = Lan()
        self.machines: list[Machine] = []
        for name, address in (("rayup-head", HEAD), ("rayup-worker", WORKER)):
            self.machines.append(Machine(self.lan, name, address, base / name, base / "authorized_keys"))
            provision_python(self.machines[-1].home)
        self.head, self.worker = self.machines

    def ray(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """`ray ARGS` on the laptop, from the project folder (the YAML's file mount copies it)."""
        out = self.lan.run([RAY, *args], cwd=ROOT, env=self.env, timeout=timeout)
        (self.base / "laptop" / f"ray-{args[0]}-{time.monotonic_ns()}.log").write_text(out.stdout + out.stderr)
        return out

    def curl(self, url: str) -> str | None:
        out = self.lan.run(["curl", "-sf", "--max-time", "20", url])
        return out.stdout if out.returncode == 0 else None

    def status(self, url: str, login: tuple[str, str] | None = None) -> str:
        """The HTTP status of GET url from the laptop, with a login or without."""
        auth = ["-u", f"{login[0]}:{login[1]}"] if login else []
        out = self.lan.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", *auth, url])
        return out.stdout

    def ssh_head(self, command: str, stdin: str) -> None:
        """A command on the head over SSH from the laptop, as its operator would run it."""
        ssh = ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        out = self.lan.run([*ssh, f"root@{HEAD}", command], input=stdin, env=self.env)
        assert out.returncode == 0, out.stderr

    def python(self, *args: str, stdin: str = "", login: tuple[str, str] | None = None):
        """Python on the laptop (the project's venv), with an MLflow login or without."""
        env = {**self.env, "MLFLOW_TRACKING_URI": f"http://{HEAD}:5000"}
        if login:
            env.update(MLFLOW_TRACKING_USERNAME=login[0], MLFLOW_TRACKING_PASSWORD=login[1])
        return self.lan.run([sys.executable, *args], input=stdin, env=env, cwd=ROOT)

    def close(self) -> None:
        for machine in self.machines:
            machine.close()
        self.lan.close()


@pytest.fixture
def cluster():
    if os.geteuid() != 0:
        unavailable("namespaces, mounts and sshd need root")
    if missing := namespace_tools():
        unavailable(f"{', '.join(missing)} not installed (apt-get install openssh-server rsync iproute2 curl)")
    postgres_bin()  # the head's database (skipped without it, failed in CI)
    # Not under /tmp: every machine has a /tmp of its own, and must see this folder. The user
    # postgres passes through it to the head's home (the database is in ~/mlflow-db there).
    base = Path(tempfile.mkdtemp(prefix="rayup-", dir="/var/tmp"))
    base.chmod(0o711)
    cluster = None
    try:
        cluster = Cluster(base)
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(base, ignore_errors=True)


def wait_for(what: str, probe, timeout: float, every: float = 3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_the_worker(cluster: Cluster, timings: dict, retries: int = 1) -> list[dict]:
    """The autoscaler on the head sets up the worker over SSH (rsync, setup commands, `ray stop`,
    `ray start --address`): wait until it joins. Ray gives a starting node 30 s to register
    (ray/_private/node.py, not configurable); on a 2-core machine loaded by others that can
    pass, the update fails and Ray's autoscaler does not retry it. Then, as a user would,
    run `ray up` again (once), and say so."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        nodes = alive_nodes(cluster)
        if nodes and len(nodes) == 2:
            return nodes
        if "New status: update-failed" in autoscaler_log(cluster, lines=10_000):
            if not retries:
                break
            retries -= 1
            print(f"the worker's setup failed; ray up again:\n{autoscaler_log(cluster, lines=12)}")
            timings["ray up again"] = timings.get("ray up again", 0) + 1
            up = cluster.ray("up", "-y", str(cluster.config))
            assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]
            continue
        time.sleep(3)
    pytest.fail(f"the worker did not join; the head's autoscaler said:\n{autoscaler_log(cluster)}")


def autoscaler_log(cluster: Cluster, lines: int = 60) -> str:
    """The end of the head's autoscaler output (its NodeUpdater runs the worker's setup)."""
    logs = sorted(cluster.head.dir.glob("tmp/ray/session_2*/logs/monitor.out"))
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:]) if logs else "(no monitor.out)"


def alive_nodes(cluster: Cluster) -> list[dict] | None:
    """The cluster's alive nodes, from the state API behind the dashboard tunnel."""
    text = cluster.curl("http://127.0.0.1:8265/api/v0/nodes?limit=100")
    if text is None:
        return None
    return [n for n in json.loads(text)["data"]["result"]["result"] if n["state"] == "ALIVE"]


@pytest.mark.slow
def test_ray_up_then_the_readme_on_a_head_and_a_worker(cluster):
    timings = {}
    # The README, before the first `ray up` on machines you have: the admin's first password.
    cluster.ssh_head("umask 077 && cat > ~/.mlflow-admin-password", ADMIN_PASSWORD + "\n")
    started = time.monotonic()

    up = cluster.ray("up", "-y", str(cluster.config))
    timings["ray up"] = time.monotonic() - started
    assert up.returncode == 0, (up.stdout + up.stderr)[-5000:]

    # The MLflow server the head started (in the background) answers on the head's address.
    wait_for("the head's MLflow server", lambda: cluster.curl(f"http://{HEAD}:5000/health") == "OK", 300)
    timings["server up"] = time.monotonic() - started
    # It asks for a login; the admin adds alice and lets her log runs to phase1 (README).
    search = f"http://{HEAD}:5000/api/2.0/mlflow/experiments/search?max_results=1"
    assert cluster.status(search) == "401"
    add = cluster.python(
        "-m", "tune_jobs.mlflow_users", "add", "alice", stdin=ALICE[1] + "\n", login=("admin", ADMIN_PASSWORD)
    )
    assert add.returncode == 0, add.stdout + add.stderr
    grant = cluster.python("-m", "tune_jobs.mlflow_users", "grant", "alice", "phase1", login=("admin", ADMIN_PASSWORD))
    assert grant.returncode == 0, grant.stdout + grant.stderr
    assert cluster.status(search, ALICE) == "200" and cluster.status(search, ("alice", "wrong-password-123")) == "401"
    # Sweeps started on the head log in with the head's ~/.mlflow/credentials (README).
    credentials = cluster.base / "laptop" / "credentials"
    credentials.write_text(f"[mlflow]\nmlflow_tracking_username = {ALICE[0]}\nmlflow_tracking_password = {ALICE[1]}\n")
    credentials.chmod(0o600)
    sync = cluster.ray("rsync-up", str(cluster.config), str(credentials), ".mlflow/credentials")
    assert sync.returncode == 0, (sync.stdout + sync.stderr)[-3000:]
    timings["logins"] = time.monotonic() - started

    # `ray dashboard`: the Jobs API, tunnelled to the laptop's 127.0.0.1:8265.
    tunnel_log = open(cluster.base / "laptop" / "ray-dashboard.log", "wb")  # noqa: SIM115 (the child owns it)
    tunnel = subprocess.Popen(
        cluster.lan.command([RAY, "dashboard", str(cluster.config)]),
        cwd=ROOT,
        env=cluster.env,
        stdout=tunnel_log,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_test,
    )
    try:
        wait_for("the dashboard tunnel", lambda: cluster.curl("http://127.0.0.1:8265/api/version"), 180)
        nodes = wait_for_the_worker(cluster, timings)
        timings["worker joined"] = time.monotonic() - started
        assert {n["node_ip"] for n in nodes} == {HEAD, WORKER}
        node_ids = {n["node_ip"]: n["node_id"] for n in nodes}

        # The README's command: `ray job submit` quotes each word it is given (shlex.join), so
        # a command line with `&&` and `$(...)` goes to the head as `bash -c '...'`. Each trial
        # asks for 2 CPUs, a whole machine here, so two trials at once run on both machines
        # (Ray's default scheduling may otherwise keep them all on the head).
        entrypoint = (
            f"cd ~/tune-sweeps && python tune_jobs/phase1.py --quick --address auto --results-dir {cluster.shared}/results"
            ' --mlflow-uri http://$(hostname -I | cut -d" " -f1):5000 resources.cpu=2'
        )
        job_started = time.monotonic()
        job = cluster.ray("job", "submit", "--address", "http://127.0.0.1:8265", "--", "bash", "-c", entrypoint)
        timings["ray job submit"] = time.monotonic() - job_started
        assert job.returncode == 0 and "succeeded" in job.stdout, (job.stdout + job.stderr)[-5000:]
    finally:
        os.killpg(tunnel.pid, signal.SIGTERM)
        tunnel.wait(30)

    # Every trial's run is in the head's MLflow server, nested under the sweep's parent run.
    query = cluster.python("-c", QUERY_MLFLOW, f"http://{HEAD}:5000", login=ALICE)
    assert query.returncode == 0, query.stderr[-3000:]
    runs = json.loads(query.stdout)
    (parent,) = [r for r in runs if r["tags"].get("sweep.role") == "parent"]
    trials = [r for r in runs if r["tags"].get("sweep.role") == "trial"]
    assert sorted(int(r["params"]["data.n_components"]) for r in trials) == TRIALS
    assert all(
        r["status"] == "FINISHED" and "val/nmse" in r["metrics"] and "cfg.yaml" in r["artifacts"] for r in trials
    )
    assert parent["status"] == "FINISHED"
    # Trials ran on both machines; each run names the node, its address and its host name.
    assert {r["tags"]["ray.node_ip"] for r in trials} == {HEAD, WORKER}
    assert all(r["tags"]["ray.node_id"] == node_ids[r["tags"]["ray.node_ip"]] for r in trials)
    assert {r["tags"]["ray.hostname"] for r in trials} == {"rayup-head", "rayup-worker"}
    # The artifacts are on the shared folder, the database on the head's own disk: no SQLite
    # file, nor any of PostgreSQL's, on the shared folder.
    assert list((cluster.shared / "mlflow" / "artifacts").rglob("cfg.yaml"))
    assert (cluster.head.home / "mlflow-db" / "data" / "PG_VERSION").exists()
    assert not [p for p in cluster.shared.rglob("*") if p.suffix == ".db" or p.name == "PG_VERSION"]

    # Checkpoints from both machines reached the storage path (shared, as Ray 2.7+ requires).
    (sweep,) = (cluster.shared / "results" / "ray").iterdir()
    trial_dirs = [d for d in sweep.iterdir() if (d / "result.json").exists()]
    assert len(trial_dirs) == len(TRIALS)
    for d in trial_dirs:
        assert list(d.glob("checkpoint_*/state.pt")), f"no checkpoint of {d.name} in the storage path"
    where = {json.loads(d.joinpath("result.json").read_text().splitlines()[-1])["node_ip"] for d in trial_dirs}
    assert where == {HEAD, WORKER}
    (report,) = (cluster.shared / "results" / "phase1").iterdir()
    assert (report / "summary.json").exists()

    # `ray down`: nothing the cluster started is left on either machine (sshd is the machine's).
    down_started = time.monotonic()
    down = cluster.ray("down", "-y", str(cluster.config), timeout=600)
    assert down.returncode == 0, (down.stdout + down.stderr)[-5000:]
    for machine in cluster.machines:
        try:
            wait_for(f"{machine.name} to be empty", lambda m=machine: not m.processes(), 300, every=1)
        except TimeoutError:
            pytest.fail(f"left on {machine.name} after ray down: {machine.processes()}")
        timings[f"{machine.name} empty after ray down"] = time.monotonic() - down_started
    # PostgreSQL stopped with the head, after a last dump to the shared folder, which holds
    # every run of the sweep.
    guard_log = (cluster.head.dir / "tmp" / "team-db-guard.log").read_text()
    assert "is gone: a last dump, then PostgreSQL stops" in guard_log, guard_log
    backups = cluster.shared / "mlflow" / "backups"
    newest = sorted(backups.glob("mlflow-*.dump"))[-1]
    assert newest.with_name(newest.name.replace("mlflow-", "mlflow_auth-")).exists()
    restore = [str(postgres_bin() / "pg_restore"), "--data-only", "--table=runs", "-f", "-", str(newest)]
    rows = subprocess.run(restore, capture_output=True, text=True, check=True).stdout
    assert all(r["id"] in rows for r in runs)
    timings["total"] = time.monotonic() - started
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
