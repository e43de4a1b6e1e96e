"""Logins to a team's tracking server (tune_jobs/core/tracking/login.py, server_auth.py and
tune_jobs/mlflow_users.py): a real `mlflow_server --auth` (MLflow's basic-auth app, here on
SQLite: tests/cluster/test_cluster_team_server.py runs it on PostgreSQL), real sweeps. Each
refusal is one line and exit 2 before Ray starts; the password is nowhere in what a sweep
leaves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, free_port, job_env, toy_command
from mlflow import MlflowClient
from team_helpers import ADMIN_PASSWORD, login

from tune_jobs import mlflow_server
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking.login import secrets_withheld
from tune_jobs.core.tracking.uri import check_uri_has_no_password

ALICE, BOB = ("alice", "alice-secret-93c1d7e"), ("bob", "bob-secret-5e2a8f01")
TOY = """\
study: toy
metric: val/score
mode: max
fixed: {trainer.epochs: 2, trainer.first: 1}
space:
  trainer.quality: {grid: [0.5]}
"""


def users(uri: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**job_env(), **login("admin", ADMIN_PASSWORD), "MLFLOW_TRACKING_URI": uri}
    cmd = [sys.executable, "-m", "tune_jobs.mlflow_users", *args]
    return subprocess.run(cmd, input=stdin, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with logins: alice may log runs to experiment `login`, bob may only read it."""
    root = tmp_path_factory.mktemp("auth_server")
    port = free_port()
    import os

    os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"] = ADMIN_PASSWORD  # read at the server's first start
    try:
        proc = mlflow_server.start(
            backend_store_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifacts_destination=str(root / "artifacts"),
            port=port,
            auth_dir=root / "auth",
            log_file=root / "server.log",
            timeout=300,
        )
    finally:
        del os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    uri = mlflow_server.url(port=port)
    try:
        for name, password in (ALICE, BOB):
            assert users(uri, "add", name, stdin=password + "\n").returncode == 0
        assert users(uri, "grant", "alice", "login").returncode == 0
        out = users(uri, "grant", "bob", "login", "--permission", "READ")
        assert out.returncode == 0 and out.stdout.startswith("bob has READ on experiment login"), out.stderr
        yield uri
    finally:
        mlflow_server.stop(proc)


def sweep(workdir: Path, uri: str, who: tuple[str, str] | None, *args: str) -> subprocess.CompletedProcess:
    (workdir / "login.yaml").write_text(TOY)
    env = {**job_env(), **(login(*who) if who else {})}
    cmd = toy_command(workdir / "login.yaml", "--mlflow-uri", uri, *args)
    return subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


def refused(out: subprocess.CompletedProcess, workdir: Path) -> str:
    """The one line a refused sweep prints; nothing of a sweep was written, Ray never started."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert not (workdir / "results").exists()
    return out.stderr


@pytest.mark.slow  # the server and its users take half a minute to set up
def test_a_wrong_password_is_one_line_before_ray_starts(server, workdir):
    err = refused(sweep(workdir, server, ("alice", "not-her-password")), workdir)
    assert f"the MLflow server at {server} refused the login of user 'alice' (wrong password" in err
    assert "not-her-password" not in err


@pytest.mark.slow  # the server and its users take half a minute to set up
def test_no_login_is_one_line_naming_mlflows_variables(server, workdir):
    err = refused(sweep(workdir, server, None), workdir)
    assert err == (
        f"error: the MLflow server at {server} asks for a login; set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD (or write them to ~/.mlflow/credentials)\n"
    )


@pytest.mark.slow  # the server and its users take half a minute to set up
def test_a_user_who_may_only_read_the_experiment_is_told_who_grants_edit(server, workdir):
    err = refused(sweep(workdir, server, BOB), workdir)
    assert err == (
        f"error: user 'bob' may only READ experiment 'login' on {server}, not log runs to it; "
        "ask the server's admin to run: python -m tune_jobs.mlflow_users grant bob login\n"
    )


@pytest.mark.slow  # the server and its users take half a minute to set up
def test_an_unauthenticated_request_is_refused(server):
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert refused.value.code == 401


@pytest.mark.slow  # the server and its users take half a minute to set up
def test_a_sweep_with_a_login_logs_and_leaves_its_password_nowhere(server, workdir):
    out = sweep(workdir, server, ALICE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    password = ALICE[1]
    assert password not in out.stdout + out.stderr
    for path in (workdir / "results").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    import os

    os.environ.update(login(*ALICE))
    try:
        client = MlflowClient(server)
        experiment = client.get_experiment_by_name("login")
        runs = client.search_runs([experiment.experiment_id])
    finally:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(key)
    assert {r.data.tags.get("sweep.role") for r in runs} == {"parent", "trial"}
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        recorded = " ".join([*r.data.params.values(), *r.data.tags.values(), *map(str, r.data.metrics)])
        assert password not in recorded

    # A replay of the sweep by someone who may only read the experiment sends nothing.
    (sweep_dir,) = [p.parent for p in (workdir / "results" / "ray").glob("*/sweep.json")]
    replay = subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / "report.py"), "--replay", str(sweep_dir)],
        env={**job_env(), **login(*BOB)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 2 and replay.stderr.count("\n") == 1, replay.stderr
    assert replay.stderr.startswith("error: user 'bob' may only READ experiment 'login'"), replay.stderr


def test_a_password_in_the_tracking_uri_is_refused_without_echoing_it(workdir):
    err = refused(sweep(workdir, "http://alice:hunter2-secret@127.0.0.1:5000", None, "--dry-run"), workdir)
    assert "hunter2-secret" not in err
    assert err.startswith("error: --mlflow-uri http://alice:***@127.0.0.1:5000 holds a password; leave it out")
    with pytest.raises(ConfigError, match=r"PGPASSWORD or ~/.pgpass") as exc:
        check_uri_has_no_password("postgresql://mlflow:pw-secret@db:5432/mlflow", "--backend-store-uri")
    assert "pw-secret" not in str(exc.value)


def test_processes_started_while_secrets_are_withheld_do_not_inherit_them(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "child-must-not-see")
    with secrets_withheld():
        child = subprocess.run(["env"], capture_output=True, text=True).stdout
    assert "child-must-not-see" not in child
    import os

    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "child-must-not-see"  # the driver keeps it


def server_start(tmp_path: Path, admin_password: str | None) -> subprocess.CompletedProcess:
    env = job_env()
    if admin_password is not None:
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin_password
    cmd = [sys.executable, "-m", "tune_jobs.mlflow_server", "--auth", "--port", str(free_port())]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--auth-dir", str(tmp_path / "auth")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("password", "says"),
    [
        (None, "error: first start with logins: the admin needs a password; set MLFLOW_AUTH_ADMIN_PASSWORD"),
        ("password1234", "error: MLFLOW_AUTH_ADMIN_PASSWORD: 'password1234' is MLflow's old published default;"),
        ("short", "error: MLFLOW_AUTH_ADMIN_PASSWORD is shorter than 12 characters;"),
    ],
)
def test_a_server_with_logins_refuses_to_start_without_a_sound_admin_password(tmp_path, password, says):
    out = server_start(tmp_path, password)
    assert out.returncode == 2 and out.stderr.startswith(says) and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing served, no store made


def test_the_users_command_against_a_server_that_does_not_answer_is_one_line():
    uri = f"http://127.0.0.1:{free_port()}"
    out = users(uri, "add", "carol", stdin="carol-secret-0a1b2c3d\n")
    assert out.returncode == 2 and out.stderr == (
        f"error: the MLflow server at {uri} does not answer; start it, or check --mlflow-uri\n"
    )
