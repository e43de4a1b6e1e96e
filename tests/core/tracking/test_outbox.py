"""The outbox: a torn journal line is skipped with its offset and nothing glues onto it; the
sweep's lock keeps a replay off a sweep its driver writes; a failed trial started over reopens
its run."""

from __future__ import annotations

import json
import logging
import os

from helpers import run_job
from mlflow import MlflowClient
from tracking_helpers import new_mirror, row

from tune_jobs.core.tracking import Outbox, open_client
from tune_jobs.core.tracking.state import JOURNAL_FILE
from tune_jobs.core.tracking.sync import sync


def test_a_torn_journal_line_is_skipped_with_its_offset_and_nothing_glues_onto_it(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    for step in range(3):
        mirror.append(row("t1", step))
    size = mirror.journal.stat().st_size
    with open(mirror.journal, "ab") as f:
        f.write(json.dumps(row("t1", 3)).encode()[:25])  # the driver died while appending

    resumed = Outbox(sweep, lock_s=0)  # as a resumed driver or a replay opens it
    with caplog.at_level(logging.WARNING):
        resumed.repair_journal_tail()
    assert f"{sweep / JOURNAL_FILE}: the last line (byte {size}, 25 bytes) was torn" in caplog.text
    assert resumed.last_steps() == {"t1": 2}
    resumed.append(row("t1", 3))  # the trial reports step 3 again from its checkpoint
    resumed.append(row("t1", 4))
    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    sync(resumed, store)
    run = resumed.state["trials"]["t1"]["run_id"]
    assert [m.step for m in store.get_metric_history(run, "val/nmse")] == [0, 1, 2, 3, 4]
    assert resumed.pending() == ""


def test_a_replay_of_a_sweep_whose_driver_runs_says_so_and_sends_nothing(tmp_path):
    sweep = tmp_path / "results" / "ray" / "phase1-x"
    driver = new_mirror(sweep)
    driver.release()
    (sweep / "sweep.json").write_text(
        json.dumps({"tracking_uri": f"sqlite:///{tmp_path / 'm.db'}", "study": "phase1", "sweep_id": "x"})
    )
    holder = Outbox(sweep, lock_s=0)  # as the running driver holds it
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
    sync(mirror, client)
    run_id = mirror.state["trials"]["t1"]["run_id"]
    assert client.get_run(run_id).info.status == "FAILED" and set(ended_trials(sweep)) == {"t1", "t2"}

    # --start-over names it by its label; a resumed sweep runs it and reopens its run.
    assert mirror.start_over(["n_components=1"]) == ["t1"]
    assert set(ended_trials(sweep)) == {"t2"}  # the scheduler does not file it as ended
    mirror.reopen()
    sync(mirror, client)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["sweep.status"] == "running"
    assert "sweep.error" not in run.data.tags
    assert client.get_run(mirror.state["trials"]["t2"]["run_id"]).info.status == "FINISHED"  # untouched


def test_a_trial_that_ends_after_a_ctrl_c_filed_it_interrupted_is_ended_on_resume(tmp_path):
    """The Ctrl-C came as the trial was finishing: the sweep filed it as interrupted, then its
    end arrived. Tune's state says it ended, so a resume that reopened it would wait forever."""
    from tune_jobs.core.schedulers import ended_trials

    sweep = tmp_path / "sweep"
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.interrupt(["t1"], {})
    mirror.end_trial("t1", "FINISHED", {"sweep.status": "finished"}, [])
    mirror.save(now=True)
    mirror.release()
    resumed = Outbox(sweep, lock_s=0)
    resumed.reopen()
    assert resumed.state["trials"]["t1"]["status"] == "FINISHED"
    assert set(ended_trials(sweep)) == {"t1"}
    resumed.release()

    # The same when the end reached only the trials file (the driver died before the state
    # file was written again).
    sweep = tmp_path / "sweep2"
    mirror = new_mirror(sweep)
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.interrupt(["t1"], {})
    mirror.save(now=True)
    mirror._log_trial("t1", "end", status="FINISHED", end_tags={"sweep.status": "finished"}, artifacts=[], end_ms=1)
    mirror.release()
    resumed = Outbox(sweep, lock_s=0)
    resumed.reopen()
    assert resumed.state["trials"]["t1"]["status"] == "FINISHED"
    resumed.release()
