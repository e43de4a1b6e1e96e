"""The 3 x 3 autoencoder grid at smoke size, exactly as the README's users run it."""

import json

import pytest
from helpers import run_job
from mlflow import MlflowClient


@pytest.mark.slow
def test_quick_runs_the_9_trials_and_the_report(workdir, tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    out = run_job(["autoencoder.py", "--experiment", "compare_globals_heads", "--quick", cache], workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("compare_globals_heads")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.role` = 'trial'")
    assert len(runs) == 9 and all(r.info.status == "FINISHED" for r in runs)
    (report,) = (workdir / "results" / "autoencoder").iterdir()
    summary = json.loads((report / "summary.json").read_text())
    assert [t["run"] for t in summary["trials"]] == list(range(9))
    assert "Pattern 2 (expected): beta significantly affects globals" in {p["pattern"] for p in summary["patterns"]}
    assert len(summary["decision_matrix"]) == 5
    for name in ("heatmaps", "loss_curves"):
        assert (report / f"{name}.png").exists() and (report / f"{name}.pdf").exists()
