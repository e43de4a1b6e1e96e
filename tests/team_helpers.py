"""A team's tracking server for the tests, for real: a throwaway PostgreSQL cluster (initdb and
pg_ctl on a loopback port in a temp folder, run as the `postgres` user when the tests run as
root, as PostgreSQL requires) and `python -m tune_jobs.mlflow_server --auth` on it.

Needs Debian's postgresql package; without it the tests are skipped, except in CI (CI=1), where
they fail (.ci/run installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import free_port, job_env

ADMIN_PASSWORD = "admin-secret-7f3a9c"  # the tests look for it everywhere it must not be
DB_USER, DB_PASSWORD = "mlflow", "db-secret-41b8e2"


def postgres_bin() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    if os.environ.get("CI"):
        pytest.fail("CI must run the team server tests: PostgreSQL is not installed (.ci/run installs it)")
    pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")


class Postgres:
    """A PostgreSQL cluster of its own in `root`, on a free loopback port."""

    def __init__(self, root: Path) -> None:
        import tempfile

        self.bin, self.port = postgres_bin(), free_port()
        # Its own folder outside pytest's (private to root): PostgreSQL runs as its own user.
        self.root = Path(tempfile.mkdtemp(prefix="tune-jobs-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self._pg("initdb", "-D", str(self.data), "-A", "scram-sha-256", "-U", "postgres", "--pwfile", self._pwfile())
        self.start()
        for sql in (
            f"CREATE USER {DB_USER} PASSWORD '{DB_PASSWORD}'",
            f"CREATE DATABASE mlflow OWNER {DB_USER}",
            f"CREATE DATABASE mlflow_auth OWNER {DB_USER}",
        ):
            self.psql(sql)
        root.mkdir(parents=True, exist_ok=True)
        self.pgpass = root / "pgpass"
        self.pgpass.write_text(f"127.0.0.1:{self.port}:*:{DB_USER}:{DB_PASSWORD}\n")
        self.pgpass.chmod(0o600)

    def _pwfile(self) -> str:
        pw = self.root / "superuser_pw"
        pw.write_text(DB_PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pw, "postgres")
        return str(pw)

    def _pg(self, tool: str, *args: str) -> str:
        out = subprocess.run(
            [*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120, cwd=self.root
        )
        assert out.returncode == 0, f"{tool}: {out.stdout}{out.stderr}"
        return out.stdout

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._pg("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop it if it runs, and delete its folder."""
        subprocess.run(
            [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def psql(self, sql: str, db: str = "postgres", user: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": DB_PASSWORD}
        cmd = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", db, "-tAc", sql]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def uri(self, db: str = "mlflow") -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{db}"

    def env(self) -> dict[str, str]:
        """What a process reaching this database needs: libpq's password file, no password."""
        return {"PGPASSFILE": str(self.pgpass)}


class TeamServer:
    """`python -m tune_jobs.mlflow_server --auth` on `pg`, its output in server.log."""

    def __init__(self, root: Path, pg: Postgres, *, workers: int = 2) -> None:
        self.root, self.pg, self.port, self.workers = root, pg, free_port(), workers
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tune_jobs.mlflow_server",
            "--backend-store-uri",
            self.pg.uri(),
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--auth",
            "--auth-dir",
            str(self.root / "auth"),
        ]

    def start(self, admin_password: str | None = ADMIN_PASSWORD, timeout: float = 300) -> None:
        from tune_jobs import mlflow_server

        env = {**job_env(), **self.pg.env()}
        if admin_password is not None:
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.command(), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        mlflow_server.wait_until_up(self.uri, timeout=timeout, proc=self.proc)

    def stop(self) -> None:
        from tune_jobs import mlflow_server

        if self.proc is not None:
            mlflow_server.stop(self.proc)

    def kill(self) -> None:
        """SIGKILL the server and its workers, as a crash would."""
        import signal

        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


def login(user: str, password: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


def add_users(server: TeamServer, users: dict[str, str], experiments: list[str]) -> None:
    """Users who may log runs to `experiments`, made in this process as mlflow_users makes them
    (the command itself is run by tests/core/tracking/test_login.py; this spares its start-up)."""
    from tune_jobs.core.tracking.users import admin_client, experiment_id

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(login("admin", ADMIN_PASSWORD))
    try:
        client = admin_client(server.uri)
        ids = [experiment_id(server.uri, name) for name in experiments]
        for name, password in users.items():
            client.create_user(name, password)
            for found in ids:
                client.grant_user_permission(name, "experiment", found, "EDIT")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
