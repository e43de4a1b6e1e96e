"""`python -m tune_jobs.publish SWEEP --to URI`: a real sweep of the toy study, interrupted with
Ctrl-C and resumed, published into a second SQLite store and into a real MLflow server, and
compared run by run with its source (params, tags, every metric point, status, times, artifact
files, nesting); published again, nothing is copied twice and what changed is brought up to
date; a publish stopped half-way is finished by the next; what cannot be used is one line."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import free_port, job_env, sweep_state, toy_command
from mlflow import MlflowClient

from tune_jobs import mlflow_server
from tune_jobs import publish as cli
from tune_jobs.core.tracking import publish as pub

EXPERIMENT = """\
study: toy
metric: val/score
mode: max
fixed: {trainer.epochs: 6, trainer.first: 1, trainer.seconds: 0.4}
space:
  trainer.quality: {grid: [0.5, 0.9]}
"""
REWRITTEN = {"mlflow.parentRunId", "sweep.best_run_id"}  # run ids: the copies' on the destination


def files(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in client.list_artifacts(run_id, path):
        out.update(files(client, run_id, item.path) if item.is_dir else {item.path: item.file_size})
    return out


def picture(uri: str, experiment: str) -> dict[str, dict]:
    """Every run of `experiment` in the store at `uri`, by the id of the source run it is (its
    own id in the source; PUBLISHED_FROM's in a copy), as plain data to compare."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    own = {r.info.run_id: r.data.tags.get(pub.PUBLISHED_FROM, "#" + r.info.run_id).rpartition("#")[2] for r in runs}
    out = {}
    for run in runs:
        tags = dict(run.data.tags)
        links = {k: own.get(tags.pop(k)) for k in REWRITTEN if k in tags}  # the id, as the source's
        fingerprint = tags.pop(pub.PUBLISHED_FINGERPRINT, None)
        tags.pop(pub.PUBLISHED_FROM, None)
        out[own[run.info.run_id]] = {
            "info": (run.info.run_name, run.info.status, run.info.start_time, run.info.end_time),
            "params": dict(run.data.params),
            "tags": tags,
            "links": links,
            "metrics": {
                key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key))
                for key in run.data.metrics
            },
            "files": files(client, run.info.run_id),
            "complete": fingerprint is not None,
        }
    return out


def assert_same(source: dict, copy: dict) -> None:
    assert sorted(copy) == sorted(source)  # one copy per run, none twice
    for run_id, want in source.items():
        got = copy[run_id]
        assert got["complete"], f"copy of {want['info'][0]} not marked complete"
        for part in ("info", "params", "tags", "links", "metrics", "files"):
            assert got[part] == want[part], (want["info"][0], part)


def publish(*args: str) -> tuple[int, str, str]:
    """The CLI in this process (a subprocess costs seconds of imports): exit code, stdout, stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def counts(stdout: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith("sweep ")]
    return line.split(": ", 1)[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A toy sweep in a folder whose path has a space, stopped by Ctrl-C while its trials run,
    published (into a SQLite store), then resumed to its end and published again, twice.
    Yields what each step left: the outputs and pictures of source and copy at each step."""
    work = tmp_path_factory.mktemp("publish") / "my sweeps"
    work.mkdir()
    (work / "toy.yaml").write_text(EXPERIMENT)
    driver = subprocess.Popen(
        toy_command(work / "toy.yaml"),
        cwd=work,
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while True:  # both trials have reported twice or more: Ctrl-C then
        folders = list((work / "results" / "ray").glob("toy-*")) if (work / "results").exists() else []
        journal = folders[0] / "mlflow_journal.jsonl" if folders else None
        trials = sweep_state(folders[0] if folders else None)["trials"].values()
        if journal and journal.exists() and len(journal.read_bytes().splitlines()) >= 4 and len(trials) == 2:
            break
        assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()[-3000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGINT)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 130, output[-3000:]
    (folder,) = folders
    source = f"sqlite:///{work / 'mlflow.db'}"
    dest = f"sqlite:///{work / 'team store' / 'mlflow.db'}"
    (work / "team store").mkdir()
    steps = {"interrupted": (publish(str(folder), "--to", dest), picture(source, "toy"), picture(dest, "toy"))}

    resume = subprocess.run(
        toy_command(work / "toy.yaml", "--resume", folder.name.removeprefix("toy-")),
        cwd=work,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    steps["resumed"] = (publish(str(folder), "--to", dest), picture(source, "toy"), picture(dest, "toy"))
    steps["again"] = (publish(str(folder), "--to", dest), picture(source, "toy"), picture(dest, "toy"))
    yield {"work": work, "folder": folder, "source": source, "dest": dest, "steps": steps}


@pytest.mark.slow
def test_an_interrupted_sweep_is_published_as_it_is_and_brought_up_to_date_once_resumed(sweep):
    (code, out, err), interrupted, copy = sweep["steps"]["interrupted"]
    assert code == 0, out + err
    assert counts(out) == "3 runs copied, 0 already there, 0 updated"
    assert [r["info"][1] for r in interrupted.values()].count("KILLED") >= 2, "the Ctrl-C came while trials ran"
    assert_same(interrupted, copy)

    (code, out, err), finished, copy = sweep["steps"]["resumed"]
    assert code == 0, out + err
    assert {r["info"][1] for r in finished.values()} == {"FINISHED"}
    assert all(len(h) == 6 for r in finished.values() if r["params"] for h in r["metrics"].values())
    changed = sum(finished[k] != interrupted[k] for k in finished)  # the parent, the trials that went on
    assert counts(out) == f"0 runs copied, {3 - changed} already there, {changed} updated", out
    assert_same(finished, copy)

    (code, out, err), source, copy = sweep["steps"]["again"]
    assert code == 0 and counts(out) == "0 runs copied, 3 already there, 0 updated", out + err
    assert_same(source, copy)
    assert "browse:      mlflow ui --backend-store-uri" in out and "viewStateShareKey=sweeps" in out


@pytest.mark.slow
def test_published_to_a_real_server_twice_nothing_twice(sweep, tmp_path, request):
    port = free_port()
    server = mlflow_server.start(
        backend_store_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_destination=str(tmp_path / "artifacts"),
        port=port,
        workers=1,
        log_file=tmp_path / "server.log",
        timeout=180,
    )
    request.addfinalizer(lambda: mlflow_server.stop(server, timeout=5))
    uri = mlflow_server.url(port=port)
    code, out, err = publish(str(sweep["folder"]), "--to", uri)
    assert code == 0 and counts(out) == "3 runs copied, 0 already there, 0 updated", out + err
    assert f"browse:      {uri}/#/experiments/" in out and "View run" not in out
    code, out, err = publish(str(sweep["folder"]), "--to", uri)
    assert code == 0 and counts(out) == "0 runs copied, 3 already there, 0 updated", out + err
    assert_same(picture(sweep["source"], "toy"), picture(uri, "toy"))


@pytest.mark.slow
def test_a_publish_stopped_half_way_is_finished_by_the_next(sweep, tmp_path, monkeypatch):
    dest = f"sqlite:///{tmp_path / 'half.db'}"
    real, calls = pub.copy_artifacts, []

    def stopped(src, dst, source_id, copy_id, paths):  # Ctrl-C after the second run's first file
        calls.append(paths)
        real(src, dst, source_id, copy_id, paths[:1] if len(calls) == 2 else paths)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pub, "copy_artifacts", stopped)
    code, out, err = publish(str(sweep["folder"]), "--to", dest)
    assert code == 130 and "interrupted: publish again to finish" in err, out + err
    half = picture(dest, "toy")
    assert len(half) == 3 and sum(r["complete"] for r in half.values()) == 1
    assert sorted(len(r["files"]) for r in half.values()) == [0, 1, 2]  # one run whole, one begun, one not
    monkeypatch.setattr(pub, "copy_artifacts", real)
    code, out, err = publish(str(sweep["folder"]), "--to", dest)
    assert code == 0 and counts(out) == "2 runs copied, 1 already there, 0 updated", out + err
    assert_same(picture(sweep["source"], "toy"), picture(dest, "toy"))


@pytest.mark.slow
def test_by_sweep_id_from_the_folder_holding_the_store(sweep, tmp_path, monkeypatch):
    monkeypatch.chdir(sweep["work"])
    sweep_id = sweep["folder"].name.removeprefix("toy-")
    code, out, err = publish(sweep_id, "--to", f"sqlite:///{tmp_path / 'by_id.db'}")
    assert code == 0 and counts(out) == "3 runs copied, 0 already there, 0 updated", out + err


def refused(*args: str) -> str:
    code, out, err = publish(*args)
    assert code == 2 and not out, out + err
    (line,) = err.splitlines()
    assert line.startswith("error: ")
    return line


def test_a_path_that_is_no_sweep_folder_is_one_line(tmp_path):
    out = subprocess.run(  # once as a user types it
        [sys.executable, "-m", "tune_jobs.publish", str(tmp_path / "no such"), "--to", "sqlite:///x.db"],
        capture_output=True,
        text=True,
        timeout=120,
        env=job_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 2 and not out.stdout, out.stdout + out.stderr
    assert out.stderr == (
        f"error: no folder {tmp_path / 'no such'}; pass the sweep's folder (results/ray/<experiment>-<sweep id>, "
        "the one holding sweep.json) or its sweep id\n"
    )
    line = refused(str(tmp_path), "--to", "sqlite:///x.db")
    assert f"{tmp_path} is not a sweep folder (no sweep.json)" in line
    assert "error: the following arguments are required: --to" in refused(str(tmp_path))
    assert not list(tmp_path.iterdir())


class Refusing(http.server.BaseHTTPRequestHandler):
    """A server that answers its health check and refuses the rest with `status`, as MLflow's
    basic-auth app does; with 403, reads are allowed (its default permission, READ) and writes not."""

    status = 401
    EXPERIMENT = b'{"experiment": {"experiment_id": "7", "name": "toy", "lifecycle_stage": "active"}}'

    def _answer(self, body: bytes, status: int = 200):
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._answer(b"OK")
        elif self.status == 403 and "/experiments/get-by-name" in self.path:
            self._answer(self.EXPERIMENT)
        else:
            self.do_POST()

    def do_POST(self):
        self._answer(b"You are not authenticated" if self.status == 401 else b"Permission denied", self.status)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def folder_with_store(tmp_path_factory):
    """A sweep folder naming a store with the sweep's parent run, made by hand: the checks come first."""
    from tune_jobs.core.tracking import SweepRecord, open_client

    tmp = tmp_path_factory.mktemp("by_hand")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = open_client(uri)  # the store made as the project makes it: quicker than MLflow's own way
    exp = client.create_experiment("toy")
    client.create_run(exp, tags={"sweep.id": "s1", "sweep.role": "parent"}, run_name="toy sweep s1")
    folder = tmp / "results" / "ray" / "toy-s1"
    folder.mkdir(parents=True)
    SweepRecord(study="toy", sweep_id="s1", tracking_uri=uri, experiment_file="toy.yaml").write(folder)
    return folder


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "error: the MLflow server at URI asks for a login; set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_"),
        (403, "error: MLflow at URI refused the permission to write to experiment 'toy' (HTTP 403); ask an admin"),
        (None, "error: MLflow at URI does not answer; start it, or check --to"),
    ],
)
def test_a_server_down_or_refusing_is_one_line_before_anything_is_copied(folder_with_store, status, message):
    handler = type("Handler", (Refusing,), {"status": status or 401})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.server_address[1]
    if status is None:
        server.server_close()  # nothing listens there
    else:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        line = refused(str(folder_with_store), "--to", f"http://127.0.0.1:{port}")
    finally:
        if status is not None:
            server.shutdown()
            server.server_close()
    assert line.startswith(message.replace("URI", f"http://127.0.0.1:{port}")), line
