"""The state file (mlflow_runs.json), its backup and the trials file: a damaged state falls back to
its previous version, else is rebuilt without a run made twice; a damaged one is kept aside and
named with the resume that rebuilds it; it is rewritten now and then, not per change, and a
trial's end survives a kill."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from helpers import ROOT, job_env, run_job
from mlflow import MlflowClient
from tracking_helpers import SWEEP_ID, new_mirror, new_sweep, refused_twice, row

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.tracking import Outbox
from tune_jobs.core.tracking.shapes import state_problem
from tune_jobs.core.tracking.state import BACKUP_FILE, STATE_FILE, TRIALS_FILE
from tune_jobs.core.tracking.sync import sync


def test_a_damaged_state_file_falls_back_to_its_previous_version_then_is_rebuilt(tmp_path, caplog):
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    for trial in ("t1", "t2"):
        mirror.add_trial(trial, {"data.n_components": int(trial[1])})
        for step in range(3):
            mirror.append(row(trial, step))
    sync(mirror, store)
    runs = {t: mirror.state["trials"][t]["run_id"] for t in ("t1", "t2")}
    mirror.end_trial("t1", "FINISHED", {"sweep.status": "finished"}, [])
    mirror.release()

    # Torn in half: its previous version is used. That version may be some changes behind
    # (the file is rewritten now and then, not per change): the trials' starts and ends come
    # from the trials file, their runs are found again by their tags, nothing is made twice.
    text = (sweep / STATE_FILE).read_text()
    (sweep / STATE_FILE).write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING):
        again = Outbox(sweep, lock_s=0)
    assert f"{sweep / STATE_FILE} is damaged (not JSON" in caplog.text and "using its previous version" in caplog.text
    assert set(again.state["trials"]) == {"t1", "t2"} and again.state["trials"]["t1"]["status"] == "FINISHED"
    assert list(sweep.glob(f"{STATE_FILE}.damaged-*"))  # kept as evidence
    sync(again, store)
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
    sync(rebuilt, store)
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


def test_the_state_file_is_not_rewritten_per_change_and_a_trials_end_survives_a_kill(tmp_path, monkeypatch):
    import tune_jobs.core.tracking.state as record

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
    again = Outbox(sweep)
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


def test_a_replay_of_an_empty_object_as_mlflow_runs_json_names_the_resume_that_rebuilds_it(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("{}")
    line = refused_twice(["report.py", "--replay", str(sweep)], tmp_path)
    resume = f"python tune_jobs/phase1.py --resume {SWEEP_ID} --results-dir {tmp_path / 'results'}"
    assert line == (
        f"error: {sweep / STATE_FILE} is damaged ('experiment' is missing or not a str); the sweep's resume "
        f"rebuilds its record from its settings, its journal and MLflow: {resume}"
    )
    # That resume gets past everything it checks before Ray starts (--dry-run stops there).
    out = subprocess.run(
        [sys.executable, *resume.split()[1:], "--dry-run"],
        cwd=ROOT,
        env={**job_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and not out.stderr, out.stderr[-3000:]


def test_a_damaged_mlflow_runs_json_is_kept_aside_once_however_often_it_is_loaded(tmp_path):
    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("[]")
    for _ in range(3):  # as the resume's scheduler and tracker load it, resume after resume
        assert Outbox(sweep).recovered
    assert [p.read_text() for p in sweep.glob(f"{STATE_FILE}.damaged-*")] == ["[]"]
    (sweep / STATE_FILE).write_text('{"trials": 1}')  # damaged otherwise: kept too
    assert Outbox(sweep).recovered
    assert sorted(p.read_text() for p in sweep.glob(f"{STATE_FILE}.damaged-*")) == ["[]", '{"trials": 1}']


def test_fields_of_mlflow_runs_json_of_the_wrong_type_make_it_damaged_not_a_crash(tmp_path):
    sweep = new_sweep(tmp_path)
    good = json.loads((sweep / STATE_FILE).read_text())
    trial = {"name": "t", "point": {}, "start_ms": 0, "params_logged": False, "ended": False}
    assert state_problem({**good, "trials": {"t1": trial}}) is None
    assert state_problem({**good, "trials_offset": "abc"}) == "'trials_offset' is a str, not int"
    assert (
        state_problem({**good, "end": {"status": "FINISHED"}}) == "'end' lacks its 'tags' object or its 'end_ms' number"
    )
    bad_trial = {**good, "trials": {"t1": {**trial, "status": "FINISHED", "end_ms": None}}}
    assert state_problem(bad_trial) == "trial t1: 'end_ms' is null, not int"
    (sweep / STATE_FILE).write_text(json.dumps({**good, "trials_offset": "abc"}))
    (sweep / TRIALS_FILE).write_text('[]\n{"event": "start"}\n')
    assert Outbox(sweep).recovered  # no traceback: the resume rebuilds it (no backup here)


def test_start_over_with_a_damaged_mlflow_runs_json_lists_the_trials_the_trials_file_knows(tmp_path):
    from tune_jobs.core.cli import check_start_over

    sweep = new_sweep(tmp_path)
    (sweep / STATE_FILE).write_text("[]")
    (sweep / BACKUP_FILE).write_text('{"trials": [1]}')
    start = {"event": "start", "trial": "a_00000", "point": {"n": 1}, "name": "n=1", "start_ms": 1}
    (sweep / TRIALS_FILE).write_text("[]\n" + json.dumps(start) + "\n")
    check_start_over(sweep, ["n=1"])
    with pytest.raises(ConfigError, match=r"--start-over n=2: no such trial in .*; its trials: a_00000 \(n=1\)"):
        check_start_over(sweep, ["n=2"])
