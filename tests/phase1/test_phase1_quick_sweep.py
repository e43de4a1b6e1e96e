"""The whole study at smoke size, exactly as the README's users run it."""

import json

import pytest
from mlflow import MlflowClient


@pytest.mark.slow
def test_quick_runs_all_8_trials_and_the_report(phase1_quick):
    workdir, out = phase1_quick
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("phase1")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`sweep.role` = 'trial'")
    assert sorted(int(r.data.params["data.n_components"]) for r in runs) == [1, 2, 3, 4, 5, 6, 8, 10]
    assert all(r.info.status == "FINISHED" for r in runs)
    (report,) = (workdir / "results" / "phase1").iterdir()
    summary = json.loads((report / "summary.json").read_text())
    assert [t["x"] for t in summary["trials"]] == [1, 2, 3, 4, 5, 6, 8, 10]
    assert summary["findings"]
    for name in ("loss_vs_components", "capacity_analysis", "convergence_steps"):
        assert (report / f"{name}.png").exists() and (report / f"{name}.pdf").exists()
