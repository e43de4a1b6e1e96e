"""The MLflow journal: what was journalled reaches MLflow exactly once, torn lines wait."""

import json
import os
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tracking_helpers import new_mirror, row

from tune_jobs.core.tracking import Outbox, open_client, replay
from tune_jobs.core.tracking.state import JOURNAL_FILE, STATE_FILE
from tune_jobs.core.tracking.sync import send_journal, sync


def journal_row(run, step, value):
    return json.dumps({"trial": "t1", "run": run, "step": step, "ts": 1000 + step, "metrics": {"val/nmse": value}})


def test_journal_is_sent_once_and_a_torn_last_line_waits(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("e")).info.run_id
    journal = tmp_path / JOURNAL_FILE
    journal.write_text("\n".join(journal_row(run, s, 1.0 / (s + 1)) for s in range(3)) + "\n" + '{"trial": "t1", "ru')
    offset = send_journal(client, journal, 0)
    assert offset == len(journal.read_bytes()) - len('{"trial": "t1", "ru')
    assert [(m.step, m.value) for m in client.get_metric_history(run, "val/nmse")] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]

    # Sending the same lines again (a crash before the offset was saved) adds nothing.
    assert send_journal(client, journal, 0) == offset
    assert len(client.get_metric_history(run, "val/nmse")) == 3

    # The torn line is completed later: only it goes out.
    with open(journal, "w") as f:
        f.write("\n".join(journal_row(run, s, 1.0 / (s + 1)) for s in range(4)) + "\n")
    new = send_journal(client, journal, offset)
    assert new == len(journal.read_bytes())
    assert [m.step for m in client.get_metric_history(run, "val/nmse")] == [0, 1, 2, 3]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mirror_keeps_everything_while_mlflow_is_down_and_sends_it_once_later(tmp_path):
    sweep = tmp_path / "sweep"
    mirror = Outbox.create(
        sweep,
        experiment_name="e",
        artifact_location=None,
        tags={"sweep.id": "s1", "sweep.study": "phase1"},
        base={"seed": 0, "trainer.lr": 0.001},
        run_prefix="e",
    )
    mirror.add_trial("t1", {"data.n_components": 1})
    mirror.add_trial("t2", {"data.n_components": 2})
    with open(mirror.journal, "w") as f:
        for step in range(4):
            for trial in ("t1", "t2"):
                f.write(
                    json.dumps({"trial": trial, "step": step, "ts": 1000 + step, "metrics": {"val/nmse": 1.0}}) + "\n"
                )
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "run.log").write_text("done\n")
    mirror.end_trial("t1", "FINISHED", {"sweep.status": "finished"}, [(str(artifacts), None)])
    mirror.end_sweep({"sweep.trials": "2"})

    # Nothing listens on this port: the sync fails, and the files still hold everything.
    down = open_client(f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(MlflowException, match="Max retries exceeded"):
        sync(mirror, down)
    assert Outbox(sweep).pending() == mirror.pending() != ""
    assert Outbox(sweep).state["journal_offset"] == 0

    store = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    assert replay(store, sweep) == ""
    state = json.loads((sweep / STATE_FILE).read_text())
    runs = {t: state["trials"][t]["run_id"] for t in ("t1", "t2")}
    for trial, run_id in runs.items():
        assert [m.step for m in store.get_metric_history(run_id, "val/nmse")] == [0, 1, 2, 3]
        run = store.get_run(run_id)
        assert run.data.params["data.n_components"] == trial[1]
        assert run.data.tags["mlflow.parentRunId"] == state["parent_run_id"]
    assert store.get_run(runs["t1"]).info.status == "FINISHED"
    assert {a.path for a in store.list_artifacts(runs["t1"])} == {"cfg.yaml", "run.log"}
    assert store.get_run(runs["t2"]).info.status == "RUNNING"  # it never ended
    assert store.get_run(state["parent_run_id"]).info.status == "FINISHED"

    # A second replay sends nothing twice and creates no run twice.
    assert replay(store, sweep) == ""
    assert len(store.search_runs([state["experiment_id"]])) == 3
    assert len(store.get_metric_history(runs["t2"], "val/nmse")) == 4


def test_the_record_and_its_replay_do_not_start_or_import_ray(tmp_path):
    # report.py --replay and the report read the record and send it without Ray.
    code = f"""
import sys
from tune_jobs.core.tracking import Outbox, open_client, replay
import tune_jobs.report  # noqa: F401
m = Outbox.create({str(tmp_path / "sweep")!r}, experiment_name="e", artifact_location=None,
                  tags={{"sweep.id": "s1"}}, base={{}}, run_prefix="e")
m.add_trial("t1", {{"data.n_components": 1}})
m.append({{"trial": "t1", "step": 0, "ts": 1000, "metrics": {{"val/nmse": 0.5}}}})
m.end_trial("t1", "FINISHED", {{"sweep.status": "finished"}}, [])
m.save()
print(replay(open_client({f"sqlite:///{tmp_path / 'm.db'}"!r}), m.dir) == "", "ray" in sys.modules)
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stdout + out.stderr[-3000:]


class _Calls:
    """A real MLflow client that counts its calls, and can fail one create after the store
    made the run (a server whose answer was lost)."""

    def __init__(self, client, lose_create_answer=False):
        self.client, self.calls, self.lose = client, [], lose_create_answer

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            self.calls.append(name)
            out = method(*args, **kwargs)
            if name == "create_run" and self.lose and kwargs.get("tags", {}).get("sweep.role") == "trial":
                self.lose = False
                raise MlflowException("Read timed out after the run was made")
            return out

        return call


def _sweep(tmp_path, trials):
    mirror = Outbox.create(
        tmp_path / "sweep",
        experiment_name="e",
        artifact_location=None,
        tags={"sweep.id": "s1", "sweep.study": "phase1"},
        base={"seed": 0},
        run_prefix="e",
    )
    for t in trials:
        mirror.add_trial(t, {"data.n_components": int(t[1:])})
        mirror.set_node(t, {"ray.node_id": "n1", "ray.node_ip": "10.0.0.1", "ray.hostname": "h"})
    return mirror


def test_runs_of_new_trials_are_made_without_searching_and_tags_go_in_one_call(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    mirror = _sweep(tmp_path, ["t1", "t2", "t3"])
    counted = _Calls(client)
    sync(mirror, counted)
    # One search, for the sweep's parent run; none for the three trials this driver started.
    assert counted.calls.count("search_runs") == 1
    assert counted.calls.count("create_run") == 4 and "set_tag" not in counted.calls
    # Each trial's params and where it runs go in one call.
    assert counted.calls.count("log_batch") == 3
    for t in ("t1", "t2", "t3"):
        mirror.end_trial(t, "FINISHED", {"sweep.status": "finished", "sweep.reason": "done"}, [])
    many = {f"study.tag_{i:03d}": str(i) for i in range(150)}  # over MLflow's 100 tags per call
    mirror.end_trial("t1", "FINISHED", {"sweep.status": "finished", "sweep.reason": "done", **many}, [])
    mirror.end_sweep({"sweep.status": "finished", "sweep.best": "t1"})
    counted.calls.clear()
    sync(mirror, counted)
    assert "set_tag" not in counted.calls and counted.calls.count("set_terminated") == 4
    runs = client.search_runs([mirror.state["experiment_id"]], filter_string="tags.`sweep.role` = 'trial'")
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {k: run.data.tags[k] for k in ("ray.node_id", "ray.node_ip", "ray.hostname", "sweep.reason")} == {
            "ray.node_id": "n1",
            "ray.node_ip": "10.0.0.1",
            "ray.hostname": "h",
            "sweep.reason": "done",
        }
        assert run.data.params["data.n_components"] in {"1", "2", "3"}
        if run.data.tags["sweep.trial_id"] == "t1":
            assert {k: run.data.tags[k] for k in many} == many


def test_a_trial_from_an_earlier_driver_or_a_lost_answer_is_searched_not_made_twice(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    mirror = _sweep(tmp_path, ["t1"])
    lossy = _Calls(client, lose_create_answer=True)
    with pytest.raises(MlflowException):
        sync(mirror, lossy)  # the store made t1's run; the answer never came
    sync(mirror, lossy)  # t1's run is searched for now, found, and not made again
    assert lossy.calls.count("create_run") == 2 and lossy.calls.count("search_runs") == 2
    mirror.save(now=True)

    # A trial the state holds from an earlier driver, its run made before the state said so.
    mirror.add_trial("t2", {"data.n_components": 2})
    sync(mirror, client)
    mirror.state["trials"]["t2"].update(run_id=None, params_logged=False)
    mirror.save(now=True)
    mirror.release()
    again = Outbox(tmp_path / "sweep", lock_s=0)
    counted = _Calls(client)
    sync(again, counted)
    assert counted.calls.count("search_runs") == 1 and "create_run" not in counted.calls
    runs = client.search_runs([again.state["experiment_id"]], filter_string="tags.`sweep.role` = 'trial'")
    assert sorted(r.data.tags["sweep.trial_id"] for r in runs) == ["t1", "t2"]


class _Retrying(_Calls):
    """A server's client that sent each create twice (the first answer came too late): the
    store holds two runs, the caller gets the second."""

    tracking_uri = "http://127.0.0.1:5000"

    def create_run(self, *args, **kwargs):
        self.client.create_run(*args, **kwargs)
        return self.client.create_run(*args, **kwargs)


def test_a_run_the_client_made_twice_through_a_server_keeps_no_empty_twin(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    mirror = _sweep(tmp_path, ["t1", "t2"])
    sync(mirror, _Retrying(client))
    exp = mirror.state["experiment_id"]
    trials = client.search_runs([exp], filter_string="tags.`sweep.role` = 'trial'")
    assert sorted(r.data.tags["sweep.trial_id"] for r in trials) == ["t1", "t2"]
    assert all(r.data.params["seed"] == "0" for r in trials)
    (parent,) = client.search_runs([exp], filter_string="tags.`sweep.role` = 'parent'")
    assert parent.info.run_id == mirror.state["parent_run_id"]


def _read_from_disk(path: Path) -> int:
    """The bytes this process had the disk read to read `path` whole (/proc/self/io)."""

    def read_bytes() -> int:
        return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["read_bytes"])

    before = read_bytes()
    path.read_bytes()
    return read_bytes() - before


def _file_system(path: Path) -> str:
    mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    return max((m for m in mounts if str(path).startswith(m[0])), key=lambda m: len(m[0]))[1]


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="Linux's per-process I/O counters")
def test_the_sync_drops_a_sqlite_stores_cached_pages_before_each_sync(tmp_path, monkeypatch):
    # The kernel may cache the store in folios of up to a few MB (measured with ext4 on Linux 6.18), and
    # writes a dirtied folio back whole: each 4 kB page a transaction rewrites then cost the disk
    # the folio around it (a copied store: ~480 kB per phase1 sync transaction instead of ~230).
    # Evicted before each sync, the pages SQLite reads back come in small folios.
    from tune_jobs.core.tracking import sync as record
    from tune_jobs.core.tracking.store import drop_cached_pages

    if _file_system(tmp_path) in ("tmpfs", "ramfs"):
        pytest.skip("a file system in memory: nothing is read from or written to a disk")
    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("e")
    os.sync()
    db.read_bytes()
    assert _read_from_disk(db) == 0  # in the page cache
    drop_cached_pages(db)
    assert _read_from_disk(db) >= db.stat().st_size  # read from the disk again: it was evicted
    drop_cached_pages(tmp_path / "absent.db")  # a store MLflow has not created yet: nothing to do

    dropped = []
    monkeypatch.setattr(record, "drop_cached_pages", lambda path: dropped.append(path))
    mirror = _sweep(tmp_path, ["t1"])
    syncer = record.Syncer(mirror, f"sqlite:///{db}", interval=60.0)
    syncer._attempt()
    syncer._attempt()
    assert dropped == [db, db] and syncer.failures == 0 and mirror.parent_run_id
    assert record.Syncer(mirror, "http://127.0.0.1:5000", interval=60.0)._db is None  # a server's store is its own


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
    from tune_jobs.core.tracking import sync as record

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
