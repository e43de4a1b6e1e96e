"""The seed's 11-configuration sweep at --quick size, for real: Ray, ASHA, MLflow, the report."""

import json

import pytest
from conftest import run_job, sweep_runs


@pytest.mark.slow
def test_quick_sweep_logs_eleven_configs_their_artifacts_and_the_report(workdir):
    out = run_job(["phase1a_lora.py", "--quick"], workdir, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client, (parent,), trials = sweep_runs(workdir, "phase1a_lora")
    assert len(trials) == 11 and all(r.info.status == "FINISHED" for r in trials)
    baseline = [r for r in trials if r.data.params["lora.enabled"] == "False"]
    assert len(baseline) == 1 and baseline[0].data.metrics["lora/trainable_params"] == 0
    for r in trials:
        assert r.data.params["data.samples"] == "128"  # the quick profile
        assert {"val/f1", "val/em", "val/collapsed", "baseline/text_f1"} <= set(r.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"cfg.yaml", "diagnostics.jsonl", "predictions.jsonl"} <= artifacts

    report = workdir / "results" / "phase1a_lora" / f"phase1a_lora-{parent.data.tags['sweep.id']}"
    assert (report / "f1_by_config.png").stat().st_size > 20_000 and (report / "f1_by_config.pdf").exists()
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary["trials"]) == 11 and "band" in summary and "gain_points" in summary
    text = (report / "sweep_summary.txt").read_text()
    assert "baseline (no LoRA)" in text and "Best LoRA:" in text
    assert "| config | f1 | em |" in (report / "summary.md").read_text()
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
