"""A quick sweep logged to a real `mlflow server` over HTTP, then its trials seen in the MLflow UI.

The server is started with tune_jobs.mlflow_server (127.0.0.1, served artifacts); the UI page
is rendered by headless Chromium, its DOM checked for every trial run and a screenshot kept in
$TEST_ARTIFACTS_DIR (default tests/artifacts/). Without Chromium the test is skipped, except in
CI (CI=1), where it fails.
"""

import os
from pathlib import Path

import psutil
import pytest
from cluster_helpers import chromium, mlflow_server_at, render, shared_view
from conftest import ROOT, run_job
from mlflow import MlflowClient

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "tests" / "artifacts"))
TRIALS = [f"phase1/n_components={k}" for k in (1, 2, 3, 4, 5, 6, 8, 10)]


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

    # The runs page shows a sweep's trials nested under its parent, collapsed. A shared view
    # (the UI's own "share" feature: an experiment tag the URL names) groups them by sweep,
    # which lists every trial with its metric and searched value.
    view = {
        "searchFilter": "tags.`sweep.role` = 'trial'",
        "groupBy": {"aggregateFunction": "min", "groupByKeys": [{"mode": "tag", "groupByData": "sweep.id"}]},
        "selectedColumns": ["metrics.`val/nmse`", "params.`data.n_components`"],
    }
    page = uri + shared_view(client, exp.experiment_id, "trials", view)

    dom = render(browser, page, tmp_path / "chromium", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    missing = [name for name in TRIALS if name not in dom.stdout]
    assert not missing, f"trial runs not in the UI page: {missing}"
    assert parent.info.run_name in dom.stdout and "val/nmse" in dom.stdout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_phase1_trials.png"
    shot.unlink(missing_ok=True)
    png = render(browser, page, tmp_path / "chromium", f"--screenshot={shot}")
    assert png.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"MLflow UI screenshot: {shot}")
