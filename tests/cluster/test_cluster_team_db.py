"""cluster/team_db.sh for real: the team server's PostgreSQL on a local disk, its dumps, and a
restore from them.

A cluster is made with `team_db.sh init` (as the user postgres when the tests run as root, as
on a head where root runs it), MLflow runs are logged into it through the PostgreSQL store URI
(the URI the cluster YAMLs give the server, the password read from the role's ~/.pgpass line
the script wrote), a user is added to the logins database, then `dump` to a folder (the shared
volume on a cluster), `restore` into new databases, and `init` of a new head from the dumps.
Every run, with its params and every metric point, is found in the restored databases.

Needs Debian's postgresql package; without it the tests are skipped, except in CI (CI=1), where
they fail.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from helpers import ROOT, free_port
from team_helpers import postgres_bin

SCRIPT = ROOT / "cluster" / "team_db.sh"
DUMP = re.compile(r"^(mlflow|mlflow_auth)-\d{8}T\d{6}Z\.dump$")


class TeamDb:
    """team_db.sh on a folder of its own (outside pytest's, which is private to root), with a
    port and a ~/.pgpass of its own."""

    def __init__(self, base: Path) -> None:
        self.base, self.dir, self.backups = base, base / "db", base / "backups"
        self.port = free_port()
        self.env = {
            **os.environ,
            "PGPASSFILE": str(base / "pgpass"),
            "TEAM_DB_PORT": str(self.port),
            "TEAM_DB_BIN": str(postgres_bin()),
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=180,
        )

    def ok(self, *args: str, **env: str) -> str:
        out = self.run(*args, **env)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def uri(self, db: str = "mlflow") -> str:
        return f"postgresql://mlflow@127.0.0.1:{self.port}/{db}"

    def dumps(self) -> dict[str, str]:
        """The whole dumps in the backup folder: name -> sha256 of the bytes."""
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.backups.iterdir())
            if DUMP.match(p.name)
        }


def new_base(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)  # the user postgres passes through it when the tests run as root
    return base


@pytest.fixture(scope="module")
def team_db():
    postgres_bin()  # skips (fails in CI) without PostgreSQL
    base = new_base("team-db-")
    db = TeamDb(base)
    try:
        db.ok("init", str(db.dir))
        db.ok("start", str(db.dir))
        yield db
    finally:
        db.run("stop", str(db.dir))
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pgpass(team_db, monkeypatch):
    """This process reaches the databases as the server does: libpq reads the password file."""
    monkeypatch.setenv("PGPASSFILE", team_db.env["PGPASSFILE"])
    return monkeypatch


def log_runs(uri: str, count: int = 3) -> dict[str, dict]:
    """`count` runs with params and metric histories, logged straight into the store at `uri`."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment(f"team-db-{time.monotonic_ns()}")
    runs = {}
    for i in range(count):
        run = client.create_run(experiment, run_name=f"trial-{i}", tags={"sweep.role": "trial"})
        client.log_param(run.info.run_id, "lr", str(0.1 * (i + 1)))
        for step in range(4):
            client.log_metric(run.info.run_id, "val/nmse", 1.0 / (step + i + 1), step=step)
        client.set_terminated(run.info.run_id)
        runs[run.info.run_id] = {"name": f"trial-{i}", "lr": str(0.1 * (i + 1))}
    return runs


def check_runs(uri: str, runs: dict[str, dict]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    for run_id, want in runs.items():
        run = client.get_run(run_id)
        assert run.info.run_name == want["name"] and run.info.status == "FINISHED"
        assert run.data.params == {"lr": want["lr"]}
        i = int(want["name"].rsplit("-", 1)[1])
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val/nmse"))
        assert history == [(step, 1.0 / (step + i + 1)) for step in range(4)]


def add_user(uri: str, name: str, password: str) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(uri)
    store.create_user(name, password)


def can_log_in(uri: str, name: str, password: str) -> bool:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(uri)
    return store.authenticate_user(name, password)


def test_init_refuses_a_folder_on_a_network_file_system(tmp_path):
    postgres_bin()
    # findmnt says what the kernel's mounts table says; here, that the folder is on NFS (EFS).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "findmnt").write_text("#!/bin/sh\necho nfs4\n")
    (fake / "findmnt").chmod(0o755)
    db = TeamDb(tmp_path)
    out = db.run("init", str(tmp_path / "db"), PATH=f"{fake}:{os.environ['PATH']}")
    assert out.returncode == 1
    assert out.stderr.startswith("team_db: error: ") and "network file system (nfs4)" in out.stderr
    assert len(out.stderr.splitlines()) == 1
    assert not (tmp_path / "db").exists() and not (tmp_path / "pgpass").exists()


@pytest.mark.slow
def test_init_and_start_twice_change_nothing(team_db):
    pgpass = Path(team_db.env["PGPASSFILE"])
    before = (pgpass.read_text(), (team_db.dir / "data" / "PG_VERSION").stat().st_mtime_ns)
    assert re.fullmatch(r"127\.0\.0\.1:\d+:\*:mlflow:[0-9a-f]{48}\n", pgpass.read_text())
    assert pgpass.stat().st_mode & 0o777 == 0o600
    assert "is initialised already" in team_db.ok("init", str(team_db.dir), str(team_db.backups))
    assert "runs already" in team_db.ok("start", str(team_db.dir))
    assert (pgpass.read_text(), (team_db.dir / "data" / "PG_VERSION").stat().st_mtime_ns) == before
    # The server listens on the loopback only.
    config = (team_db.dir / "data" / "postgresql.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in config and f"port = {team_db.port}" in config


@pytest.mark.slow
def test_runs_dumped_then_restored_into_new_databases_and_on_a_new_head(team_db, pgpass):
    runs = log_runs(team_db.uri())
    add_user(team_db.uri("mlflow_auth"), "alice", "alice-team-pw-6d2e91")

    out = team_db.ok("dump", str(team_db.dir), str(team_db.backups))
    dumps = team_db.dumps()
    assert sorted(name.split("-")[0] for name in dumps) == ["mlflow", "mlflow_auth"], out
    assert all((team_db.backups / name).stat().st_mode & 0o777 == 0o600 for name in dumps)  # password hashes
    assert sorted(p.name for p in team_db.backups.iterdir()) == sorted(dumps)  # no temporary file left
    (tracking,) = [team_db.backups / n for n in dumps if n.startswith("mlflow-")]
    (logins,) = [team_db.backups / n for n in dumps if n.startswith("mlflow_auth-")]

    # The documented command: a dump into a new database, beside the live one.
    out = team_db.ok("restore", str(team_db.dir), str(tracking), "mlflow_restored")
    assert f"into database mlflow_restored ({team_db.uri('mlflow_restored')})" in out
    check_runs(team_db.uri("mlflow_restored"), runs)
    team_db.ok("restore", str(team_db.dir), str(logins), "mlflow_auth_restored")
    assert can_log_in(team_db.uri("mlflow_auth_restored"), "alice", "alice-team-pw-6d2e91")
    # A database that holds tables already is left as it is.
    refused = team_db.run("restore", str(team_db.dir), str(tracking))  # into mlflow, its source
    assert refused.returncode == 1 and "database mlflow holds" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    check_runs(team_db.uri(), runs)

    # A new head (its disk empty): init from the backup folder restores the newest dumps.
    new = TeamDb(new_base("team-db-new-head-"))
    new.backups = team_db.backups
    try:
        out = new.ok("init", str(new.dir), str(new.backups))
        assert f"restored from {tracking.name} {logins.name}" in out
        new.ok("start", str(new.dir))
        pgpass.setenv("PGPASSFILE", new.env["PGPASSFILE"])  # the new head's role password
        check_runs(new.uri(), runs)
        assert can_log_in(new.uri("mlflow_auth"), "alice", "alice-team-pw-6d2e91")
    finally:
        new.run("stop", str(new.dir))
        shutil.rmtree(new.base, ignore_errors=True)


@pytest.mark.slow
def test_a_dump_killed_half_way_leaves_the_dumps_before_it(team_db, pgpass):
    import psycopg

    team_db.ok("dump", str(team_db.dir), str(team_db.backups))
    before = team_db.dumps()
    time.sleep(1.1)  # a new dump's time stamp differs
    # A table locked by another session keeps pg_dump waiting with its output file open: the
    # dump is then killed half-way, as a head terminated during a dump would be.
    with psycopg.connect(f"host=127.0.0.1 port={team_db.port} user=mlflow dbname=mlflow") as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS lock_probe (x int)")
        conn.commit()
        conn.execute("LOCK TABLE lock_probe IN ACCESS EXCLUSIVE MODE")
        dump = subprocess.Popen(
            ["bash", str(SCRIPT), "dump", str(team_db.dir), str(team_db.backups)],
            env=team_db.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not list(team_db.backups.glob(".mlflow-*.tmp")):
            assert dump.poll() is None and time.monotonic() < deadline, "the dump never started writing"
            time.sleep(0.05)
        os.killpg(dump.pid, signal.SIGKILL)
        dump.wait(30)
        conn.rollback()
    assert team_db.dumps() == before  # the dumps before it, byte for byte, and no half dump
    assert list(team_db.backups.glob(".mlflow-*.tmp"))  # what the kill left, under its temporary name
    for name in before:
        subprocess.run([str(postgres_bin() / "pg_restore"), "-l", str(team_db.backups / name)], check=True,
                       capture_output=True)  # fmt: skip

    # The next dump clears what the killed one left; only the newest TEAM_DB_KEEP are kept.
    team_db.ok("dump", str(team_db.dir), str(team_db.backups), TEAM_DB_KEEP="1")
    after = team_db.dumps()
    assert len(after) == 2 and not set(after) & set(before)
    assert not list(team_db.backups.glob(".*.tmp"))
