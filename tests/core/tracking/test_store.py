"""The SQLite store: created once under its lock by processes that open it at once, never half
there when its creator is killed; a store left half-created is recreated if it held nothing,
else named in one line; an older schema is named with its upgrade command. Real processes,
real MLflow."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import job_env, run_job
from mlflow import MlflowClient

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking import open_client

OPENER = """
import sys, time
from pathlib import Path
from tune_jobs.core.tracking import open_client
go, uri, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(go.parent / f"ready-{name}").touch()
while not go.exists():
    time.sleep(0.01)
client = open_client(uri)
run = client.create_run(client.create_experiment(name)).info.run_id
client.log_metric(run, "m", 1.0, step=0)
client.set_terminated(run)
print("done", name)
"""


def open_at_once(workdir: Path, uri: str, names: list[str]) -> list[subprocess.CompletedProcess]:
    """One process per name, released at the same moment once all have imported MLflow."""
    go = workdir / f"go-{names[0]}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(go), uri, name],
            cwd=workdir,
            env=job_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not all((workdir / f"ready-{n}").exists() for n in names):
        assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
        time.sleep(0.1)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return results


def schema(db: Path) -> tuple[set[str], str]:
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return tables, conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def test_processes_opening_a_new_store_at_once_create_it_once(workdir):
    db = workdir / "mlflow.db"
    uri = f"sqlite:///{db}"
    new = open_at_once(workdir, uri, ["a", "b", "c"])
    for p in new:
        assert p.returncode == 0 and "done" in p.stdout, p.stderr[-3000:]
        assert "database is locked" not in p.stderr
    tables, revision = schema(db)
    assert revision == head_revision() and not [t for t in tables if t.startswith("_alembic_tmp_")]
    client = MlflowClient(uri)
    for name in "abc":
        (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert run.info.status == "FINISHED" and run.data.metrics == {"m": 1.0}


def half_created_store(db: Path, *, data: bool, scratch: bool = True) -> str:
    """A store as two processes creating it at once leave it: one died at a revision whose next
    migration rebuilds `tags`, the other left Alembic's scratch copy of it (`_alembic_tmp_tags`,
    with `scratch`), so that migration can never run again; returns that revision."""
    import sqlalchemy
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base

    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    config = _get_alembic_config(str(engine.url))
    middle = next(
        r.down_revision
        for r in ScriptDirectory.from_config(config).walk_revisions()
        if 'batch_alter_table("tags")' in Path(r.module.__file__).read_text()
    )
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, middle)
    engine.dispose()
    with sqlite3.connect(db) as conn:
        if scratch:
            conn.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250), value VARCHAR(5000))")
        if data:
            conn.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('mine', 'active')")
    return middle


CREATOR = """
import sys
from tune_jobs.core.tracking.store import prepare_store
prepare_store(sys.argv[1])
print("created")
"""


def test_a_new_store_appears_whole_even_when_its_creator_is_killed_and_writes_a_tenth(workdir):
    # MLflow's schema migrations run on a temporary file without a sync per transaction, which
    # is synced once and renamed: the store is never half there (bench/driver_cost.py prints
    # what the creation writes: ~1 MB, ~10 MB with a sync per migration).
    db, uri = workdir / "mlflow.db", f"sqlite:///{workdir / 'mlflow.db'}"
    killed = subprocess.Popen([sys.executable, "-c", CREATOR, uri], cwd=workdir, env=job_env())
    deadline = time.monotonic() + 120
    while not list(workdir.glob(".mlflow.db.creating-*")) and time.monotonic() < deadline:
        assert killed.poll() is None
        time.sleep(0.02)
    killed.kill()  # SIGKILL, half-way through the migrations
    killed.wait()
    assert not db.exists() and list(workdir.glob(".mlflow.db.creating-*"))  # only the temporary file

    from mlflow import MlflowClient

    from tune_jobs.core.tracking.store import prepare_store

    prepare_store(uri)
    assert schema(db)[1] == head_revision()
    assert sorted(p.name for p in workdir.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # the leftover is gone
    # The store's own connections sync as SQLite's default does (FULL): only creation skips it.
    client = MlflowClient(uri)
    with client._tracking_client.store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    run = client.create_run(client.create_experiment("e")).info.run_id
    client.log_metric(run, "m", 1.0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_half_created_store_is_recreated_when_empty_and_named_in_one_line_when_not(workdir):
    # Empty: kept aside, created afresh, usable at once (report.py then finds no sweep: exit 2).
    half_created_store(workdir / "mlflow.db", data=False)
    out = run_job(["report.py", "phase1"], workdir, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("error: no sweep matches 'phase1' in the MLflow store")
    assert "half-created" in out.stderr and "Traceback" not in out.stderr
    assert len(list(workdir.glob("mlflow.db.unusable-*"))) == 1
    assert schema(workdir / "mlflow.db")[1] == head_revision()

    # Holding data: one line naming the file, exit 2, before Ray starts, nothing written.
    other = workdir / "other"
    other.mkdir()
    half_created_store(other / "mlflow.db", data=True)
    before = (other / "mlflow.db").read_bytes()
    out = run_job(["phase1.py", "--quick"], other, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-3000:]
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow store {other / 'mlflow.db'} holds runs but was left half-migrated")
    assert (other / "mlflow.db").read_bytes() == before and not (other / "results").exists()


def test_older_schemas_and_migration_leftovers(tmp_path):
    old = tmp_path / "old.db"
    revision = half_created_store(old, data=True, scratch=False)
    with pytest.raises(ConfigError, match=f"older MLflow \\(revision {revision}.*mlflow db upgrade sqlite:///{old}"):
        open_client(f"sqlite:///{old}")

    # A complete store with a scratch table left by a migration: the leftover is dropped.
    done = tmp_path / "done.db"
    MlflowClient(f"sqlite:///{done}").search_experiments()
    with sqlite3.connect(done) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_runs (run_uuid VARCHAR(32))")
    open_client(f"sqlite:///{done}").search_experiments()
    assert "_alembic_tmp_runs" not in schema(done)[0]
