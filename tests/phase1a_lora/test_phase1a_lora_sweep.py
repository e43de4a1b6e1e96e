"""The seed's 11-configuration sweep at --quick size, for real: Ray, ASHA, MLflow, the report."""

import json

import pytest
from helpers import run_job, sweep_runs


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
    assert len(summary["trials"]) == 11 and "gain_points" in summary
    # A --quick sweep is a smoke run: the numbers are given, no verdict is drawn from them.
    assert summary["band"] is None and summary["best_config"]
    text = (report / "sweep_summary.txt").read_text()
    assert "baseline (no LoRA)" in text and "Smoke run (--quick)" in text and "Best LoRA:" not in text
    assert f"best LoRA {summary['best_config']} F1" in text
    assert "| config | f1 | em |" in (report / "summary.md").read_text()
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow
def test_a_two_config_slice_runs_for_real_and_reports_the_gain(workdir):
    out = run_job(["phase1a_lora.py", "--quick", "--stop-at", "2"], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "phase1a_lora")
    assert sorted(r.data.params["lora.enabled"] for r in trials) == ["False", "True"]
    report = workdir / "results" / "phase1a_lora" / f"phase1a_lora-{parent.data.tags['sweep.id']}"
    summary = json.loads((report / "summary.json").read_text())
    assert summary["best_config"] == "r=4 a=8 L=8" and summary["band"] is None  # a smoke run: no verdict
    assert "Numbers only: baseline F1" in (report / "sweep_summary.txt").read_text()
    (diag,) = (workdir / "results" / "ray").glob("*/r=4*/artifacts/diagnostics.jsonl")
    lines = [json.loads(line) for line in diag.read_text().splitlines()]
    assert [r["step"] for r in lines if not r.get("eval")] == list(range(1, 5))  # 128 questions / batch 32
    assert lines[-1]["eval"] and "text_f1" in lines[-1]
