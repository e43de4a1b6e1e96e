"""Quick sweeps seen in a browser: the MLflow UI (through a real `mlflow server`, and as README
opens it with `mlflow ui`) and the Optuna dashboard of an Optuna search.

Pages are rendered by headless Chromium in a fresh profile, their DOM checked and a screenshot
kept in $TEST_ARTIFACTS_DIR (default tests/artifacts/). Without Chromium the tests are skipped,
except in CI (CI=1), where they fail.
"""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from cluster_helpers import chromium, mlflow_server_at, render
from helpers import ROOT, free_port, job_env, run_job
from mlflow import MlflowClient

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "tests" / "artifacts"))
TRIALS = [f"phase1/n_components={k}" for k in (1, 2, 3, 4, 5, 6, 8, 10)]
README = (ROOT / "README.md").read_text()


@pytest.fixture
def server(tmp_path):
    with mlflow_server_at(tmp_path) as (uri, port):
        yield uri, port, tmp_path / "artifacts"


def listening(port: int) -> list[str]:
    return [c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]


@pytest.mark.slow
def test_quick_sweep_through_an_mlflow_server_shows_every_trial_in_the_ui(server, workdir, tmp_path):
    browser = chromium()
    uri, port, artifact_root = server
    assert listening(port) and set(listening(port)) == {"127.0.0.1"}, listening(port)

    out = run_job(["phase1.py", "--quick", "--mlflow-uri", uri], workdir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlartifacts").exists()

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("phase1")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server
    runs = client.search_runs([exp.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("sweep.role") == "trial"]
    assert sorted(r.info.run_name for r in trials) == sorted(TRIALS)
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    assert all("cfg.yaml" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in trials)
    assert list(artifact_root.rglob("cfg.yaml")), "the artifacts did not reach the server's artifact folder"

    # The sweep saved its comparison view on the experiment and printed the link that opens it.
    (page,) = re.findall(r"^  browse:      (\S+)$", out.stdout, re.M)
    assert (
        page == f"{uri}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=sweeps"
    )
    assert "mlflow.sharedViewState.sweeps" in client.get_experiment(exp.experiment_id).tags
    assert "| phase1/n_components=10 | finished | step 301/301 |" in parent.data.tags["mlflow.note.content"]

    dom = render(browser, page, tmp_path / "chromium", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    missing = [name for name in TRIALS if name not in dom.stdout]
    assert not missing, f"trial runs not in the UI page: {missing}"
    assert parent.info.run_name in dom.stdout and "val/nmse" in dom.stdout and "data.n_components" in dom.stdout

    shot = screenshot(browser, page, tmp_path / "chromium", "mlflow_ui_phase1_trials.png")
    print(f"MLflow UI screenshot: {shot}")


def serve(cmd: list[str], cwd: Path, url: str, log: Path, timeout: float = 420) -> subprocess.Popen:
    """Start a web server as a user would (its own process group) and wait until `url` answers."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=job_env(), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + timeout  # a loaded 2-core machine takes minutes to import mlflow
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(1)
    stop(proc)
    pytest.fail(f"{cmd[0]} did not answer at {url}: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def screenshot(browser: str, url: str, profile: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    png = render(browser, url, profile, f"--screenshot={shot}")
    assert png.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    return shot


@pytest.mark.slow
def test_default_quick_sweep_piped_then_the_readme_mlflow_link_shows_the_trials(phase1_quick, tmp_path):
    browser = chromium()
    workdir, out = phase1_quick
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    # Piped, the sweep is one line per trial event: no Ray tables, no cut-off point.
    assert out.stderr == "", out.stderr[-3000:]
    lines = out.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("/ray.log") and " sweep phase1 " in line)
    events = lines[start + 1 : lines.index("", start)]
    assert 17 <= len(events) <= 19, "\n".join(events)  # 8 x started + 8 x finished + the end (+ progress)
    for name in TRIALS:
        assert sum(f" {name}  " in e for e in events) == 2, (name, events)
        assert any(re.search(rf"finished\s+{name}  step 301/301  val/nmse=\S+", e) for e in events), name
    assert not any("..." in line or "\u2026" in line for line in lines)
    shown = out.stdout.replace(str(workdir), "<folder>")  # the folder's own name may hold anything
    assert not any(text in shown for text in ("Trial status", "Checkpoint successfully created", "phase1_"))
    (log,) = (workdir / "results" / "ray").glob("phase1-*/ray.log")
    assert lines[start].endswith(f"Ray's output: {log}")
    assert "Trial status" in log.read_text()  # Ray's own output, kept

    # README: `mlflow ui` in the folder holding mlflow.db, then its link, in a fresh browser profile.
    (command,) = re.findall(r"^(mlflow ui --backend-store-uri sqlite:///mlflow\.db --port 5000)$", README, re.M)
    (link,) = re.findall(r"^then open (http://127\.0\.0\.1:5000/#/\S+)$", README, re.M)
    (printed,) = re.findall(r"^  browse:      (.*)$", out.stdout, re.M)
    db = f"sqlite:///{workdir / 'mlflow.db'}"
    assert printed == command.replace("sqlite:///mlflow.db", db) + f"   then open {link}"
    port = free_port()
    exe, *args = command.replace("5000", str(port)).split()
    exe = str(Path(sys.executable).parent / exe)  # the venv's console script, activated or not
    ui = serve([exe, *args], workdir, f"http://127.0.0.1:{port}/", tmp_path / "ui.log")
    page = link.replace(":5000/", f":{port}/")
    try:
        dom = render(browser, page, tmp_path / "fresh-profile", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        missing = [name for name in TRIALS if name not in dom.stdout]
        assert not missing, f"trial runs not on README's page: {missing}"
        # The comparable view: the sweep metric and the searched value as columns.
        assert "val/nmse" in dom.stdout and "data.n_components" in dom.stdout
        shot = screenshot(browser, page, tmp_path / "fresh-profile-2", "mlflow_ui_readme_link.png")
        print(f"MLflow UI screenshot: {shot}")
    finally:
        stop(ui)


@pytest.mark.slow
def test_optuna_dashboard_lists_the_trials_of_a_quick_denoising_sweep(workdir, tmp_path):
    browser = chromium()
    out = run_job(["denoising.py", "--quick", "sweep.num_samples=6"], workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (db,) = (workdir / "results" / "ray").glob("denoising_search-*/optuna.db")

    (command, link) = re.findall(
        r"^(optuna-dashboard sqlite:///results/ray/denoising_search-<sweep id>/optuna\.db)\s+# then open (\S+)$",
        README,
        re.M,
    )[0]
    (printed,) = re.findall(r"^  optuna:      (.*)$", out.stdout, re.M)
    assert printed == f"optuna-dashboard sqlite:///{db}   then open {link}"
    port = free_port()
    args = command.replace("results/ray/denoising_search-<sweep id>", str(db.parent.relative_to(workdir))).split()
    exe = str(Path(sys.executable).parent / args[0])  # the venv's console script
    dashboard = serve([exe, *args[1:], "--port", str(port)], workdir, f"http://127.0.0.1:{port}/", tmp_path / "d.log")
    page = link.replace(":8080/", f":{port}/")
    try:
        import optuna

        (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
        numbers = [
            str(t.number) for t in optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}").trials
        ]
        assert len(numbers) == 6
        dom = render(browser, page, tmp_path / "fresh-profile", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert summary.study_name in dom.stdout, dom.stdout[-3000:]
        assert all(f"Trial {n}" in dom.stdout for n in numbers), dom.stdout[-3000:]
        shot = screenshot(browser, page, tmp_path / "fresh-profile-2", "optuna_dashboard_denoising.png")
        print(f"Optuna dashboard screenshot: {shot}")
    finally:
        stop(dashboard)


@pytest.mark.slow
def test_a_search_of_more_runs_than_the_ui_loads_opens_on_its_best_trials(server, tmp_path):
    """150 trials (the UI loads 100 at a time): the saved view lists them best first and the
    sweep's group row shows its best, not the best of the 100 that started first."""
    import random
    from types import SimpleNamespace

    from mlflow.entities import Metric

    from tune_jobs.core.tracking.view import runs_view

    browser = chromium()
    uri, _, _ = server
    client = MlflowClient(uri)
    exp_id = client.create_experiment("toy")
    rng = random.Random(0)
    scores = [rng.random() for _ in range(150)]
    scores[-1] = 1.5  # the last trial to start is the best: outside the first 100 by start time
    now_ms = int(time.time() * 1000)
    for i, score in enumerate(scores):
        tags = {"sweep.role": "trial", "sweep.id": "20261207-000000-abcd"}
        run = client.create_run(exp_id, start_time=now_ms - (150 - i) * 1000, tags=tags, run_name=f"toy/n={i:03d}")
        client.log_batch(run.info.run_id, metrics=[Metric("val/score", score, now_ms, 0)], params=[])
        client.set_terminated(run.info.run_id)
    search = SimpleNamespace(metric="val/score", mode="max", goal="optimize")
    page = runs_view(uri, exp_id, search, [{"n": i} for i in range(150)])

    dom = render(browser, page, tmp_path / "fresh-profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shown = sorted((dom.stdout.find(f"toy/n={i:03d}<"), i) for i in range(150) if f"toy/n={i:03d}<" in dom.stdout)
    best_first = sorted(range(150), key=lambda i: -scores[i])
    assert len(shown) >= 10, dom.stdout[-3000:]  # the rows the window has room for
    assert [i for _, i in shown] == best_first[: len(shown)]
    assert "1.5" in dom.stdout.split("toy/n=149<")[0]  # the group row, above the rows, shows the best
    shot = screenshot(browser, page, tmp_path / "fresh-profile-2", "mlflow_ui_best_first.png")
    print(f"MLflow UI screenshot: {shot}")
