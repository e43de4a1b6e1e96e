"""Several people's sweeps into one team server, side by side in one run.

    python bench/team_server.py                 # 25 trials a sweep (~6 min on 2 cores)
    python bench/team_server.py --trials 10

Starts what README's "Share results with a team" starts: PostgreSQL on this machine's disk
(cluster/team_db.sh, in a temporary folder, its own port) and `python -m tune_jobs.mlflow_server
--auth` on it, with users alice and bob. Then, one after the other, with the same trivial
trials (the tests' toy study: two reports, no sleep) and a fresh local Ray per sweep:
  (a) one sweep of alice alone on the server;
  (b) four sweeps at once, two of alice and two of bob, on the server;
  (c) the same four sweeps at once into one SQLite file on a local disk, no server.
Each sweep's wall time ends when its command returns, after its records reached MLflow. It
prints the wall times, the ratios, and the runs each store holds (every trial and each sweep's
parent: none lost, none twice). Needs Debian's postgresql package.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tune_jobs import mlflow_server

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = """\
study: toy
metric: val/score
mode: max
fixed: {{trainer.epochs: 2, trainer.first: 1}}
space:
  trainer.quality: {{grid: {grid}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweeps_at_once(work: Path, uri: str, logins: list[tuple[str, str]], experiments: list[str], grid: list) -> float:
    """Seconds until every sweep's command returned (each checked: exit 0)."""
    procs = []
    start = time.monotonic()
    for i, ((user, password), name) in enumerate(zip(logins, experiments, strict=True)):
        folder = work / f"sweep{i}-{user}"
        folder.mkdir(parents=True)
        (folder / f"{name}.yaml").write_text(EXPERIMENT.format(grid=json.dumps(grid)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        if user:
            env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
        cmd = [sys.executable, str(ROOT / "tests" / "toy_study.py"), "--experiment", f"{name}.yaml"]
        log = open(folder / "out.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append((subprocess.Popen([*cmd, "--mlflow-uri", uri], cwd=folder, env=env, stdout=log, stderr=log), log))
    for proc, log in procs:
        proc.wait()
        log.close()
        if proc.returncode != 0:
            raise SystemExit(f"a sweep failed: see {log.name}")
    return time.monotonic() - start


def runs_in(uri: str, login: tuple[str, str] | None) -> int:
    from mlflow import MlflowClient

    if login:
        os.environ |= {"MLFLOW_TRACKING_USERNAME": login[0], "MLFLOW_TRACKING_PASSWORD": login[1]}
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, max_results=5000))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=25, help="trials per sweep (default 25)")
    args = p.parse_args()
    grid = [round(0.1 + i / (args.trials * 1.1), 4) for i in range(args.trials)]
    work = Path(tempfile.mkdtemp(prefix="bench-team-"))
    os.chmod(work, 0o755)  # PostgreSQL's own user passes through it when this runs as root
    db_dir = work / "db"
    admin = ("admin", secrets.token_urlsafe(16))
    alice, bob = ("alice", secrets.token_urlsafe(16)), ("bob", secrets.token_urlsafe(16))
    env = {**os.environ, "TEAM_DB_PORT": str(free_port()), "PGPASSFILE": str(work / "pgpass")}
    team_db = ["bash", str(ROOT / "cluster" / "team_db.sh")]
    server = None
    try:
        subprocess.run([*team_db, "init", str(db_dir)], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*team_db, "start", str(db_dir)], env=env, check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server_env = {**env, "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1]}
        cmd = [sys.executable, "-m", "tune_jobs.mlflow_server", "--auth", "--auth-dir", str(work / "auth")]
        cmd += ["--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{env['TEAM_DB_PORT']}/mlflow"]
        cmd += ["--artifacts-destination", str(work / "artifacts"), "--port", str(port)]
        with open(work / "server.log", "w") as log:
            server = subprocess.Popen(cmd, env=server_env, stdout=log, stderr=log, start_new_session=True)
        mlflow_server.wait_until_up(uri, timeout=300, proc=server)
        users_env = {**env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": admin[0]}
        users_env["MLFLOW_TRACKING_PASSWORD"] = admin[1]
        users = [sys.executable, "-m", "tune_jobs.mlflow_users"]
        for name, password in (alice, bob):
            subprocess.run([*users, "add", name], input=password + "\n", text=True, env=users_env, check=True)
            subprocess.run([*users, "grant", name, "team_a", "team_b", "alone"], env=users_env, check=True)

        four = [alice, alice, bob, bob]
        names = ["team_a", "team_b", "team_a", "team_b"]
        alone = sweeps_at_once(work / "alone", uri, [alice], ["alone"], grid)
        together = sweeps_at_once(work / "four", uri, four, names, grid)
        sqlite_uri = f"sqlite:///{work / 'sqlite' / 'mlflow.db'}"
        (work / "sqlite").mkdir()
        on_sqlite = sweeps_at_once(work / "four_sqlite", sqlite_uri, [("", "")] * 4, names, grid)

        n = args.trials
        print(f"\n{n} trials a sweep (toy study, 2 reports each), 2 CPUs, {os.cpu_count()} cores here")
        print(f"{'what':<52} {'wall s':>7} {'ratio':>6}")
        print(f"{'(a) 1 sweep alone, team server (PostgreSQL, logins)':<52} {alone:7.1f} {1:6.2f}")
        print(f"{'(b) 4 sweeps of 2 users at once, team server':<52} {together:7.1f} {together / alone:6.2f}")
        print(f"{'(c) the same 4 at once, one SQLite file, local disk':<52} {on_sqlite:7.1f} {on_sqlite / alone:6.2f}")
        print(f"(b) / (c): {together / on_sqlite:.2f}")
        expected = 5 * (n + 1)  # (a) + (b): five sweeps, each its trials and a parent run
        print(f"runs on the team server: {runs_in(uri, admin)} (expected {expected})")
        print(f"runs in the SQLite file: {runs_in(sqlite_uri, None)} (expected {4 * (n + 1)})")
    finally:
        if server is not None:
            mlflow_server.stop(server)
        subprocess.run([*team_db, "stop", str(db_dir)], env=env, stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
