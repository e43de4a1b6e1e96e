"""Ordinary accidents never break a sweep's MLflow record, nor the store. Real processes,
real MLflow (SQLite, and a socket that accepts and never answers), real kills.

- Several processes open a new SQLite store at once (sweeps in two terminals, a SLURM array):
  it is created once, under a lock; a store left half-created is recreated if it held nothing,
  else named in one line.
- A journal line torn by a killed driver, a damaged mlflow_runs.json: skipped or rebuilt, with
  a warning naming the file; never "MLflow unreachable"; MLflow ends as if nothing happened.
- A tracking server that hangs costs the sweep little (bench/hung_server.py measures it).
- Temp files left in a trial's artifacts never reach its MLflow run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ROOT, job_env, run_job, start_job, sweep_runs, sweep_state
from mlflow import MlflowClient

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.record import BACKUP_FILE, JOURNAL_FILE, STATE_FILE, Mirror
from tune_jobs.core.store import open_client

# -- many processes open one new store ------------------------------------------------------------

OPENER = """
import sys, time
from pathlib import Path
from tune_jobs.core.record import client_for
go, uri, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(go.parent / f"ready-{name}").touch()
while not go.exists():
    time.sleep(0.01)
client = client_for(uri)
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
from tune_jobs.core.store import prepare_store
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

    from tune_jobs.core.store import prepare_store

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


# -- the mirror's own files -------------------------------------------------------------------------


def new_mirror(sweep: Path) -> Mirror:
    return Mirror.create(
        sweep,
        experiment_name="e",
        artifact_location=None,
        tags={"sweep.id": "s1", "sweep.study": "phase1"},
        base={"seed": 0, "data.n_components": 1},  # the study's default of what the trials vary
        run_prefix="e",
    )


def row(trial: str, step: int) -> dict:
    return {"trial": trial, "step": step, "ts": 1000 + step, "metrics": {"val/nmse": 1.0 / (step + 1)}}


def test_a_torn_journal_line_is_skipped_with_its_offset_and_nothing_glues_onto_it(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    for step in range(3):
        mirror.append(row("t1", step))
    size = mirror.journal.stat().st_size
    with open(mirror.journal, "ab") as f:
        f.write(json.dumps(row("t1", 3)).encode()[:25])  # the driver died while appending

    resumed = Mirror(sweep, hold_s=0)  # as a resumed driver or a replay opens it
    with caplog.at_level(logging.WARNING):
        resumed.repair_journal_tail()
    assert f"{sweep / JOURNAL_FILE}: the last line (byte {size}, 25 bytes) was torn" in caplog.text
    assert resumed.last_steps() == {"t1": 2}
    resumed.append(row("t1", 3))  # the trial reports step 3 again from its checkpoint
    resumed.append(row("t1", 4))
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    resumed.sync(store)
    run = resumed.state["trials"]["t1"]["run_id"]
    assert [m.step for m in store.get_metric_history(run, "val/nmse")] == [0, 1, 2, 3, 4]
    assert resumed.pending() == ""


def test_a_damaged_state_file_falls_back_to_its_previous_version_then_is_rebuilt(tmp_path, caplog):
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    for trial in ("t1", "t2"):
        mirror.add_trial(trial, {"data.n_components": int(trial[1])})
        for step in range(3):
            mirror.append(row(trial, step))
    mirror.sync(store)
    runs = {t: mirror.state["trials"][t]["run_id"] for t in ("t1", "t2")}
    mirror.end_trial("t1", "FINISHED", {"sweep.status": "finished"}, [])
    mirror.release()

    # Torn in half: its previous version is used. That version may be some changes behind
    # (the file is rewritten now and then, not per change): the trials' starts and ends come
    # from the trials file, their runs are found again by their tags, nothing is made twice.
    text = (sweep / STATE_FILE).read_text()
    (sweep / STATE_FILE).write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING):
        again = Mirror(sweep, hold_s=0)
    assert f"{sweep / STATE_FILE} is damaged (not JSON" in caplog.text and "using its previous version" in caplog.text
    assert set(again.state["trials"]) == {"t1", "t2"} and again.state["trials"]["t1"]["status"] == "FINISHED"
    assert list(sweep.glob(f"{STATE_FILE}.damaged-*"))  # kept as evidence
    again.sync(store)
    assert {t: e["run_id"] for t, e in again.state["trials"].items()} == runs
    again.release()

    # Both damaged (empty, garbage): rebuilt from the settings and the journal; the runs are
    # found by their tags in MLflow, the journal is sent again: nothing twice.
    (sweep / STATE_FILE).write_text("")
    (sweep / BACKUP_FILE).write_text('{"trials": 3}')
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = new_mirror(sweep)
    assert rebuilt.recovered and "is rebuilt from the sweep's settings" in caplog.text
    # Each trial's point comes back from the trials file (Ray's trial folders hold no params.json):
    # t2's run is still open, so its params are logged again, and must be its own (n_components=2,
    # not the sweep's default 1, which MLflow refuses as a changed param).
    assert {t: (e["point"], e["name"]) for t, e in rebuilt.state["trials"].items()} == {
        "t1": ({"data.n_components": 1}, "n_components=1"),
        "t2": ({"data.n_components": 2}, "n_components=2"),
    }
    rebuilt.append(row("t2", 3))
    rebuilt.end_trial("t2", "FINISHED", {"sweep.status": "finished"}, [])
    rebuilt.end_sweep({})
    rebuilt.sync(store)
    assert rebuilt.pending() == ""
    assert {t: e["run_id"] for t, e in rebuilt.state["trials"].items()} == runs
    exp = store.get_experiment_by_name("e").experiment_id
    assert len(store.search_runs([exp])) == 3  # no run created twice
    assert [m.step for m in store.get_metric_history(runs["t1"], "val/nmse")] == [0, 1, 2]
    assert [m.step for m in store.get_metric_history(runs["t2"], "val/nmse")] == [0, 1, 2, 3]
    assert store.get_run(runs["t2"]).info.status == "FINISHED"
    assert store.get_run(runs["t2"]).data.params["data.n_components"] == "2"


def test_replay_names_our_damaged_file_not_the_store(tmp_path):
    sweep = tmp_path / "results" / "ray" / "phase1-x"
    new_mirror(sweep).release()
    settings = {"experiment_file": "search_spaces/phase1.yaml", "profile": "local", "quick": False}
    settings |= {"overrides": [], "base": {}, "points": []}  # what the resume that rebuilds the record needs
    (sweep / "sweep.json").write_text(
        json.dumps({"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "study": "phase1", "sweep_id": "x", **settings})
    )
    (sweep / STATE_FILE).write_text("{")
    (sweep / BACKUP_FILE).write_text("")
    out = run_job(["report.py", "--replay", str(sweep)], tmp_path, timeout=300)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"error: {sweep / STATE_FILE} is damaged (not JSON")
    assert f"{sweep / BACKUP_FILE} is damaged (empty)" in line
    assert "python tune_jobs/phase1.py --resume x" in line and "unreachable" not in out.stderr


def test_a_replay_of_a_sweep_whose_driver_runs_says_so_and_sends_nothing(tmp_path):
    sweep = tmp_path / "results" / "ray" / "phase1-x"
    driver = new_mirror(sweep)
    driver.release()
    (sweep / "sweep.json").write_text(
        json.dumps({"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "study": "phase1", "sweep_id": "x"})
    )
    holder = Mirror(sweep, hold_s=0)  # as the running driver holds it
    try:
        out = run_job(["report.py", "--replay", str(sweep)], tmp_path, timeout=300)
    finally:
        holder.release()
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: the sweep {sweep} is being written by process {os.getpid()} (its driver, or a replay); "
        "its records reach MLflow from there: wait for it to end"
    )
    assert not (tmp_path / "m.db").exists()


def test_temp_files_never_reach_a_runs_artifacts(tmp_path):
    sweep = tmp_path / "sweep"
    artifacts = tmp_path / "trial" / "artifacts"
    (artifacts / "figures").mkdir(parents=True)
    (artifacts / "run.log").write_text("done\n")
    (artifacts / "model.pt").write_bytes(b"weights")
    (artifacts / ".model.pt.k2j3h4g5.tmp").write_bytes(b"")  # atomic_file's, its writer killed
    (artifacts / "figures" / "loss.png").write_bytes(b"png")
    (artifacts / "figures" / ".loss.png.a1b2c3d4.png").write_bytes(b"p")
    (artifacts / "figures" / "big.bin.partial").write_bytes(b"half")
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.end_trial("t1", "FINISHED", {}, [(str(artifacts), None)])
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    mirror.sync(store)
    run = mirror.state["trials"]["t1"]["run_id"]

    def files(path: str | None = None) -> set[str]:
        out = set()
        for a in store.list_artifacts(run, path):
            out |= files(a.path) if a.is_dir else {a.path}
        return out

    assert files() == {"cfg.yaml", "run.log", "model.pt", "figures/loss.png"}


# -- real sweeps ------------------------------------------------------------------------------------

TINY = [
    "--quick",
    "trainer.steps=60",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=20",
    "trainer.eval_prompts=64",
]


def find_sweep_dirs(workdir: Path) -> list[Path]:
    ray_dir = workdir / "results" / "ray"
    return sorted(ray_dir.glob("phase1-*")) if ray_dir.exists() else []


def assert_sweep_complete(client: MlflowClient, parent, trials, expected_steps: list[int]) -> None:
    assert parent.info.status == "FINISHED"
    for r in trials:
        assert r.info.status == "FINISHED", r.info.run_name
        for key in ("val/nmse", "train/loss"):
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, key))
            assert steps == expected_steps, (r.info.run_name, key, steps)  # none lost, none twice


RAY_START_TIMEOUT = "The current node timed out during startup"


class Job:
    """`python tune_jobs/<script> ARGS` in the background, its output in a file (several at once
    must not wait on each other's pipes)."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.args, self.workdir, self.log = args, workdir, workdir.parent / f"{name}.log"
        self.start()

    def start(self) -> None:
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tune_jobs" / self.args[0]), *self.args[1:]],
                cwd=self.workdir,
                env=job_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def finish(self, timeout: float = 900, tries: int = 3) -> str:
        """Wait for it; its output, checked: exit 0, no locked database, no traceback."""
        self.proc.wait(timeout)
        out = self.log.read_text()
        if self.proc.returncode != 0 and RAY_START_TIMEOUT in out and tries > 1:
            # Ray gives its own processes 30 s to start (not configurable): several local Rays
            # starting at once on a loaded 2-core machine can miss it. The store was opened
            # before Ray starts and nothing of the sweep was written yet: run it again.
            self.start()
            return self.finish(timeout, tries - 1)
        assert self.proc.returncode == 0, out[-4000:]
        assert "database is locked" not in out and "Traceback" not in out, out[-4000:]
        return out


@pytest.mark.slow
def test_three_sweeps_started_at_once_in_a_new_folder_then_report_and_replay_while_a_sweep_writes(workdir):
    jobs = [Job(["phase1.py", *TINY, f"space.n_components=[{k}]"], workdir, f"sweep{k}") for k in (1, 2, 3)]
    for job in jobs:
        job.finish()
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 3 and len(trials) == 3
    for parent in parents:
        mine = [t for t in trials if t.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        assert len(mine) == 1
        assert_sweep_complete(client, parent, mine, [0, 10, 20, 30, 40, 50, 59])

    # On the existing store: a fourth sweep writes while report.py and a replay of the others run.
    first, second, third = find_sweep_dirs(workdir)
    sweep = Job(["phase1.py", *TINY, "space.n_components=[4]"], workdir, "sweep4")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and sweep.proc.poll() is None:
        fourth = [d for d in find_sweep_dirs(workdir) if d not in (first, second, third)]
        if any(sweep_state(d).get("journal_offset", 0) > 0 for d in fourth):
            break  # it is writing results
        time.sleep(0.5)
    report = Job(["report.py", json.loads((first / "sweep.json").read_text())["sweep_id"]], workdir, "report")
    replay = Job(["report.py", "--replay", str(second)], workdir, "replay")
    assert "nothing was pending" in replay.finish()
    report.finish()
    sweep.finish()
    client, parents, trials = sweep_runs(workdir, "phase1")
    assert len(parents) == 4 and len(trials) == 4


def freeze_when(driver: subprocess.Popen, condition, timeout: float = 600, poll: float = 0.3) -> None:
    """SIGSTOP the driver at a moment `condition()` holds (checked while it is stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before the moment came"
        os.killpg(driver.pid, signal.SIGSTOP)
        if condition():
            return
        os.killpg(driver.pid, signal.SIGCONT)
        time.sleep(poll)
    raise AssertionError("the moment never came")


def kill(driver: subprocess.Popen) -> None:
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


KILL_ARGS = [
    "--quick",
    "space.n_components=[1,2,3]",
    "trainer.steps=200",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=40",
    "trainer.eval_prompts=64",
]
KILL_STEPS = list(range(0, 200, 10)) + [199]


def last_line(journal: Path) -> tuple[int, dict | None]:
    data = journal.read_bytes() if journal.exists() else b""
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    try:
        return start, json.loads(data[start:])
    except ValueError:
        return start, None


@pytest.mark.slow
def test_a_journal_line_torn_by_a_killed_driver_then_replay_and_resume(workdir):
    driver = start_job(["phase1.py", *KILL_ARGS], workdir)

    def torn_moment() -> bool:
        # The driver is stopped after a result of a running trial, between its checkpoints,
        # once some trial has ended.
        (sweep,) = find_sweep_dirs(workdir) or [None]
        if sweep is None:
            return False
        _, last = last_line(sweep / JOURNAL_FILE)
        state = sweep_state(sweep)
        return (
            last is not None
            and last["step"] % 40 != 0
            and last["step"] != KILL_STEPS[-1]
            and "status" not in state["trials"].get(last["trial"], {"status": 1})
            and any("status" in t for t in state["trials"].values())
        )

    try:
        freeze_when(driver, torn_moment)
        kill(driver)
    finally:
        if driver.poll() is None:
            kill(driver)
    (sweep,) = find_sweep_dirs(workdir)
    journal = sweep / JOURNAL_FILE
    _, last = last_line(journal)
    # The driver died in the middle of appending that trial's next result: half of the line is
    # on disk, never sent (only whole lines are). Cutting a whole line instead could cut one the
    # sync had sent already, which no crash can do.
    step = min(last["step"] + 10, KILL_STEPS[-1])
    row = json.dumps({**last, "step": step, "ts": last["ts"] + 1}) + "\n"
    start = journal.stat().st_size
    with open(journal, "a") as f:
        f.write(row[: len(row) // 2])
    cut = journal.stat().st_size

    replay = run_job(["report.py", "--replay", str(sweep)], workdir, timeout=600)
    assert replay.returncode == 0, replay.stdout[-3000:] + replay.stderr[-3000:]
    assert f"{journal}: the last line (byte {start}, {cut - start} bytes) was torn" in replay.stderr
    assert "unreachable" not in replay.stdout + replay.stderr

    resumed = run_job(["phase1.py", "--resume"], workdir, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert "unreachable" not in out and "still lacks" not in out and "MLflow store" not in out, out[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "phase1")
    assert len(trials) == 3
    assert_sweep_complete(client, parent, trials, KILL_STEPS)  # as if never killed
    again = run_job(["report.py", "--replay", str(sweep)], workdir, timeout=600)
    assert again.returncode == 0 and "nothing was pending" in again.stdout, again.stderr[-3000:]


@pytest.mark.slow
def test_a_damaged_state_file_then_resume_rebuilds_it_without_a_second_run(workdir):
    driver = start_job(["phase1.py", *KILL_ARGS], workdir)

    def after_a_trial_ended() -> bool:
        # As a resume reads it: the state file, and the trials' starts and ends appended since.
        (sweep,) = find_sweep_dirs(workdir) or [None]
        if sweep is None or not (sweep / STATE_FILE).exists():
            return False
        trials = Mirror(sweep).state.get("trials", {}).values()
        return any("status" in t for t in trials) and any("status" not in t for t in trials)

    try:
        freeze_when(driver, after_a_trial_ended, poll=0.05)
        kill(driver)
    finally:
        if driver.poll() is None:
            kill(driver)
    (sweep,) = find_sweep_dirs(workdir)
    before = sweep_state(sweep)
    text = (sweep / STATE_FILE).read_text()
    (sweep / STATE_FILE).write_text(text[: len(text) // 2])  # torn
    (sweep / BACKUP_FILE).write_text("")  # and its previous version empty

    resumed = run_job(["phase1.py", "--resume"], workdir, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert f"{sweep / STATE_FILE} is damaged" in out and "unreachable" not in out, out[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "phase1")
    assert len(trials) == 3  # no second run for any trial
    after = sweep_state(sweep)
    for trial_id, entry in before["trials"].items():
        if entry["run_id"]:
            assert after["trials"][trial_id]["run_id"] == entry["run_id"]
    assert_sweep_complete(client, parent, trials, KILL_STEPS)


@pytest.mark.slow
def test_a_hung_tracking_server_costs_the_sweep_at_most_ten_percent(workdir):
    """bench/hung_server.py: the same sweep into SQLite and into a socket that never answers."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hung_server.py")],
        cwd=workdir,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    print(out.stdout)
    ratio = float(re.search(r"ratio \(hung / SQLite\): ([0-9.]+)x", out.stdout).group(1))
    assert ratio <= 1.10, out.stdout
    assert "did not answer within 2 s at the end of the sweep" in out.stdout


@contextlib.contextmanager
def hung_server():
    """http://127.0.0.1:PORT: a socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


class FakeTrial:
    """What the tracker reads from a Tune trial."""

    def __init__(self, trial_id: str, path: Path) -> None:
        self.trial_id, self.path, self.status = trial_id, str(path), "RUNNING"
        self.config = {"point": {"data.n_components": int(trial_id[-1])}}
        self.checkpoint, self.last_result = None, {}


def test_tune_callbacks_never_wait_for_a_hung_server_and_the_end_waits_a_bounded_time(tmp_path, caplog):
    from tune_jobs.core.record import END_PROBE_S
    from tune_jobs.core.tracking import MlflowTracker

    trials = [FakeTrial(f"t{i}", tmp_path / f"t{i}") for i in (1, 2)]
    with hung_server() as uri, caplog.at_level(logging.WARNING):
        tracker = MlflowTracker(
            tracking_uri=uri,
            experiment_name="e",
            sweep_dir=str(tmp_path / "sweep"),
            tags={"sweep.id": "s1"},
            base={"seed": 0},
            metrics=("step", "val/nmse"),
            run_prefix="e",
            flush_seconds=0.5,
        )
        hooks = []

        def timed(hook, **kwargs) -> None:
            t0 = time.perf_counter()
            hook(**kwargs)
            hooks.append(time.perf_counter() - t0)

        timed(tracker.setup)
        for i, trial in enumerate(trials):
            timed(tracker.on_trial_start, iteration=i, trials=trials, trial=trial)
        for step in range(20):
            for trial in trials:
                result = {"step": step, "val/nmse": 1.0 / (step + 1)}
                timed(tracker.on_trial_result, iteration=step, trials=trials, trial=trial, result=result)
            time.sleep(0.05)
        for trial in trials:
            trial.status = "TERMINATED"
            timed(tracker.on_trial_complete, iteration=20, trials=trials, trial=trial)
        t0 = time.perf_counter()
        tracker.on_experiment_end(trials=trials)
        end = time.perf_counter() - t0
    assert max(hooks) < 1.0, hooks  # file writes only, whatever the server does
    assert end < END_PROBE_S + 3.0, end
    assert f"MLflow at {uri} did not answer within 2 s at the end of the sweep; it still lacks" in caplog.text
    assert f"python tune_jobs/report.py --replay {tmp_path / 'sweep'}" in caplog.text
    rows = (tmp_path / "sweep" / JOURNAL_FILE).read_text().splitlines()
    assert len(rows) == 40  # everything kept for the replay


def test_a_failed_trial_started_over_is_run_again_and_its_run_reopened_without_its_error(tmp_path):
    from tune_jobs.core.schedulers import ended_trials

    sweep, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.add_trial("t2", {"data.n_components": 2})
    mirror.append(row("t1", 0))
    mirror.end_trial("t1", "FAILED", {"sweep.status": "error", "sweep.error": "no checkpoint of it loads"}, [])
    mirror.end_trial("t2", "FINISHED", {"sweep.status": "finished"}, [])
    client = open_client(uri)
    mirror.sync(client)
    run_id = mirror.state["trials"]["t1"]["run_id"]
    assert client.get_run(run_id).info.status == "FAILED" and set(ended_trials(sweep)) == {"t1", "t2"}

    # --start-over names it by its label; a resumed sweep runs it and reopens its run.
    assert mirror.start_over(["n_components=1"]) == ["t1"]
    assert set(ended_trials(sweep)) == {"t2"}  # the scheduler does not file it as ended
    mirror.reopen()
    mirror.sync(client)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["sweep.status"] == "running"
    assert "sweep.error" not in run.data.tags
    assert client.get_run(mirror.state["trials"]["t2"]["run_id"]).info.status == "FINISHED"  # untouched


def test_the_state_file_is_not_rewritten_per_change_and_a_trials_end_survives_a_kill(tmp_path, monkeypatch):
    import tune_jobs.core.record as record

    sweep = tmp_path / "sweep"
    writes = []
    real = record.write_json
    monkeypatch.setattr(record, "write_json", lambda path, data: (writes.append(path), real(path, data)))
    mirror = new_mirror(sweep)
    for i in range(300):  # a large sweep's trials start, report where they run, and end
        mirror.add_trial(f"t{i}", {"data.n_components": i})
        mirror.set_node(f"t{i}", {"ray.node_id": "n1"})
        mirror.end_trial(f"t{i}", "FINISHED", {"sweep.status": "finished"}, [])
    assert len(writes) < 20  # 900 changes; the whole file rewritten a few times, not per change

    # Killed now (no flush): every end is still known, from the ends file, to a resume.
    from tune_jobs.core.schedulers import ended_trials

    assert len(ended_trials(sweep)) == 300
    again = Mirror(sweep)
    assert len(again.state["trials"]) == 300
    assert all(e["status"] == "FINISHED" and e["name"] for e in again.state["trials"].values())

    # A torn last line (killed while appending) is skipped, and the next end does not glue onto it.
    with open(sweep / record.TRIALS_FILE, "ab") as f:
        f.write(b'{"trial": "t1", "sta')
    mirror.add_trial("late", {"data.n_components": 999})
    mirror.end_trial("late", "FAILED", {"sweep.status": "error"}, [])
    lines = (sweep / record.TRIALS_FILE).read_bytes().splitlines()
    assert lines[-3] == b'{"trial": "t1", "sta'
    assert [(e["event"], e["trial"]) for e in map(record.parse_trial_event, lines[-2:])] == [
        ("start", "late"),
        ("end", "late"),
    ]
    assert ended_trials(sweep)["late"] == "error"
    mirror.release()  # flushes: the state file itself then says so too
    assert json.loads((sweep / STATE_FILE).read_text())["trials"]["late"]["status"] == "FAILED"


class SlowClient:
    """A real MLflow client (a SQLite store) whose every call takes `delay` seconds, as a
    distant or busy tracking server's would."""

    def __init__(self, uri: str, delay: float) -> None:
        self._client, self.delay = open_client(uri), delay

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            time.sleep(self.delay)
            return method(*args, **kwargs)

        return call


@pytest.mark.parametrize("delay", [0.05, 5.0])
def test_the_end_waits_for_a_server_while_it_takes_the_records_and_not_for_one_that_stalls(
    tmp_path, monkeypatch, delay
):
    # The end of a sweep once cut a working server off after 5 s (a tenth of a short sweep),
    # leaving runs unclosed while it was still uploading their checkpoints. A server that makes
    # progress is waited for; one that makes none costs the stall limit only.
    from tune_jobs.core import record

    monkeypatch.setattr(record, "END_SERVER_MIN_S", 0.5)
    monkeypatch.setattr(record, "END_SERVER_SHARE", 0.0)
    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    for t in ("t1", "t2", "t3"):
        mirror.add_trial(t, {"data.n_components": int(t[1])})
        for step in range(3):
            mirror.append(row(t, step))
        mirror.end_trial(t, "FINISHED", {"sweep.status": "finished"}, [])
    mirror.end_sweep({"sweep.status": "finished"})
    # A server by its scheme (no health check for this one): the end's server rules apply.
    syncer = record.Syncer(mirror, "databricks://slow", interval=60.0)
    syncer._client = SlowClient(f"sqlite:///{tmp_path / 'mlflow.db'}", delay)
    syncer.start()
    t0 = time.monotonic()
    why = syncer.finish(elapsed=10.0)
    took = time.monotonic() - t0
    syncer.stop(wait_s=0.1)
    if delay < 0.5:  # each call answers within the stall limit: everything is taken
        assert why == "" and mirror.pending() == "" and took > 0.5, (why, took)
    else:  # no call answers within it: the end gives up after the stall limit, names what is left
        assert why.startswith("MLflow at databricks://slow made no progress for 0 s") and took < 2.0, (why, took)
        assert "runs to create" in mirror.pending()
