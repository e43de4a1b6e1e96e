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


@pytest.mark.slow
def test_a_trial_of_the_quick_sweep_reruns_from_mlflow_bit_for_bit(phase1_quick, tmp_path):
    """A GPT-2 trial (torch's init, data stream and evaluation on CPU) rerun from its run: every
    value of every metric at every step is the original's. Into a copy of the store, so the
    shared sweep's store stays as the sweep left it."""
    import shutil

    from helpers import run_job

    workdir, _ = phase1_quick
    shutil.copy(workdir / "mlflow.db", tmp_path / "mlflow.db")  # its artifacts stay where they are
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("phase1").experiment_id], filter_string="tags.`sweep.role` = 'parent'"
    )
    out = run_job(["rerun.py", parent.data.tags["sweep.id"], "n_components=2"], tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "every value of every metric is the original's, bit for bit" in out.stdout, out.stdout[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ") and " | equal |" in line]
    assert any(line.startswith("| val/nmse |") for line in table) and len(table) >= 3, out.stdout[-3000:]
