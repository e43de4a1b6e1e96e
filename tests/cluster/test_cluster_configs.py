"""The cluster files: every `ray up` YAML passes Ray's own config checks and opens nothing to the world.

Ray's checks are the ones `ray up` runs before it calls a cloud (prepare_config, then the
JSON-schema validate_config); nothing here talks to AWS or SSH.
"""

import copy
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAMLS = sorted((ROOT / "cluster").glob("*.yaml"))
SBATCH = ROOT / "cluster" / "slurm" / "ray_sweep.sbatch"
TEAM_DB = ROOT / "cluster" / "team_db.sh"
WORLD = ("0.0.0.0/0", "::/0")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def strings(node):
    """Every string in a YAML tree, keys included."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node


def commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in config.get(k, [])]


def test_there_is_a_cloud_and_an_onprem_cluster():
    assert {p.stem for p in CLUSTER_YAMLS} >= {"aws", "onprem"}
    assert {load(p)["provider"]["type"] for p in CLUSTER_YAMLS} >= {"aws", "local"}


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=[p.stem for p in CLUSTER_YAMLS])
def test_ray_accepts_the_cluster_yaml(path):
    assert path.read_text().startswith(f"# ray up cluster/{path.name}")  # the command that uses it
    prepared = prepare_config(copy.deepcopy(load(path)))
    validate_config(prepared)  # raises on any schema error
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=[p.stem for p in CLUSTER_YAMLS])
def test_no_port_is_opened_to_the_world(path):
    config = load(path)
    found = [s for s in strings(config) if any(w in s for w in WORLD)]
    assert not found, f"{path.name} opens something to the world: {found}"
    for cmd in commands(config):
        assert "0.0.0.0" not in cmd and "--dashboard-host" not in cmd, cmd
        if "mlflow_server" in cmd:
            assert "--host $HEAD" in cmd and "HEAD=$(hostname -I" in cmd  # the private address


def test_aws_nodes_bring_their_own_security_group():
    # Without SecurityGroupIds, Ray creates a group whose SSH rule is open to the world
    # (ray/autoscaler/_private/aws/config.py, _create_default_ssh_inbound_rules, ray 2.60),
    # whatever provider.security_group says.
    config = load(ROOT / "cluster" / "aws.yaml")
    assert "security_group" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        assert node_type["node_config"].get("SecurityGroupIds"), f"{name} would get Ray's default security group"


def test_aws_gpu_workers_are_spot_and_the_head_runs_no_trials():
    config = load(ROOT / "cluster" / "aws.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and "InstanceMarketOptions" not in head["node_config"]
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot" for t in workers)


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=[p.stem for p in CLUSTER_YAMLS])
def test_nodes_install_the_project_pinned_and_the_head_serves_mlflow_with_logins(path):
    config = load(path)
    cmds = commands(config)
    assert any("pip install" in c and "cluster/requirements.txt -e" in c for c in cmds)
    starts = config["head_start_ray_commands"]
    (server,) = [c for c in starts if "mlflow_server" in c]
    # PostgreSQL on the head (team_db.sh's port), logins, the admin's first password from a
    # file on the head; only the artifacts on the shared storage.
    port = re.search(r"TEAM_DB_PORT:-(\d+)", TEAM_DB.read_text()).group(1)
    assert f"--backend-store-uri postgresql://mlflow@127.0.0.1:{port}/mlflow --auth --auth-dir ~/" in server
    assert "--artifacts-destination /shared/" in server
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=$(cat ~/.mlflow-admin-password 2> /dev/null)" in server
    # It stops with the head's Ray (ray down on an on-prem cluster only runs `ray stop` there).
    assert "--stop-with-ray $HEAD:6379" in server and "--port=6379" in starts[1]
    # No SQLite store anywhere, and nothing of a database on the shared storage but dumps.
    assert not [c for c in cmds if "sqlite" in c]


@pytest.mark.parametrize("path", CLUSTER_YAMLS, ids=[p.stem for p in CLUSTER_YAMLS])
def test_the_head_keeps_the_database_on_its_own_disk_and_dumps_it_to_shared_storage(path):
    config = load(path)
    starts = config["head_start_ray_commands"]
    calls = [m for c in starts for m in re.findall(r"bash (\S*team_db\.sh) (\w+) (.*?)(?= &&| >|$)", c)]
    assert {script for script, _, _ in calls} == {"~/tune-sweeps/cluster/team_db.sh"}
    by_command = {command: args.split(" ", 2) for _, command, args in calls}
    assert set(by_command) == {"init", "start", "guard"}
    folder = by_command["start"][0]
    assert folder.startswith("~/") and "shared" not in folder  # the head's home, not /shared
    # A new head's database comes from the newest dumps; the guard dumps to the same folder
    # and stops PostgreSQL when the head's Ray (port 6379) stops.
    assert by_command["init"] == [folder, "/shared/mlflow/backups"]
    assert by_command["guard"][:2] == [folder, "/shared/mlflow/backups"] and by_command["guard"][2].endswith(":6379")
    (guard,) = [c for c in starts if " guard " in c]
    assert guard.startswith("(nohup bash ") and guard.endswith("< /dev/null &)")
    # In that order: Ray, the database, its guard, then the server (on the database).
    order = [
        next(i for i, c in enumerate(starts) if key in c) for key in ("--head", " init ", " guard ", "mlflow_server")
    ]
    assert order == sorted(order)
    (server,) = [c for c in starts if "mlflow_server" in c]
    assert f"--auth-dir {folder}/" in server
    # The head installs PostgreSQL when it is missing; ~/.mlflow is private (a login goes there).
    setup = " ".join(config["head_setup_commands"])
    assert "apt-get install -y -qq postgresql" in setup and "mkdir -p -m 700 ~/.mlflow" in setup
    assert "/shared/mlflow/backups" in " ".join(config["setup_commands"])


def test_team_db_script_is_bash_and_says_how_to_use_it():
    assert subprocess.run(["bash", "-n", str(TEAM_DB)]).returncode == 0
    assert TEAM_DB.read_text().splitlines()[1:] and "set -euo pipefail" in TEAM_DB.read_text()
    out = subprocess.run(["bash", str(TEAM_DB)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("usage:\n  team_db.sh init DIR")
    out = subprocess.run(["bash", str(TEAM_DB), "dump", "/nonexistent"], capture_output=True, text=True)
    assert out.returncode == 2


def test_sbatch_keeps_sqlite_off_the_shared_folder():
    text = SBATCH.read_text()
    code = "\n".join(line.split("  #", 1)[0] for line in text.splitlines() if not line.lstrip().startswith("#"))
    # The team server when there is one; otherwise a store on the node's disk, copied back.
    assert "mlflow_uri=$MLFLOW_TRACKING_URI" in code
    assert 'local_store=$(readlink -m "${SWEEP_LOCAL_DIR:-/tmp}")/' in code
    assert "mlflow_uri=sqlite:///$local_store/mlflow.db" in code
    assert not re.search(r"sqlite:///\$\{?shared", code)
    assert "MLFLOW_TRACKING_URI=http://" not in code and "http://team-server:5000" in text  # documented


def test_sbatch_script_is_bash_and_never_stops_other_rays():
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    code = [line.split("#", 1)[0] for line in SBATCH.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any("ray stop" in line for line in code)
    assert any("--address" in line for line in code)


def test_sbatch_script_without_a_job_says_how_to_use_it(tmp_path):
    out = subprocess.run(["bash", str(SBATCH)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("usage: sbatch cluster/slurm/ray_sweep.sbatch tune_jobs/<study>.py")
    assert list(tmp_path.iterdir()) == []


def test_cluster_requirements_add_rays_dashboard_at_the_pinned_version():
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    lines = (ROOT / "cluster" / "requirements.txt").read_text().splitlines()
    assert "-r ../requirements.txt" in lines
    assert f"ray[default]=={pins['ray[tune]']}" in lines


def test_the_onprem_head_runs_the_autoscaler_that_starts_its_workers():
    # Ray 2.60's default autoscaler (v2) never marks an on-prem head as running (only v1 does,
    # in StandardAutoscaler.reset), so it never starts the worker_ips (tests/cluster/test_cluster_ray_up.py).
    (start,) = [c for c in load(ROOT / "cluster" / "onprem.yaml")["head_start_ray_commands"] if "--head" in c]
    assert "RAY_enable_autoscaler_v2=0 ray start --head" in start


def test_onprem_workers_stop_their_ray_when_the_head_is_gone():
    # `ray down` on machines you have only runs `ray stop` on the head (tests/cluster/test_cluster_ray_up.py
    # checks that nothing is left on the worker).
    script = ROOT / "cluster" / "stop_with_head.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    (watch,) = [c for c in load(ROOT / "cluster" / "onprem.yaml")["worker_start_ray_commands"] if "stop_with_head" in c]
    assert "nohup bash ~/tune-sweeps/cluster/stop_with_head.sh $RAY_HEAD_IP:6379" in watch
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == "usage: stop_with_head.sh HEAD_IP:PORT\n"
