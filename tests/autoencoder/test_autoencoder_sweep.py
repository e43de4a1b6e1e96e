"""A tiny real autoencoder sweep (real Ray, real MLflow), its trial files and its report."""

import json
import re
from pathlib import Path

from helpers import run_job, sweep_runs

TINY = ["data.n_train=300", "data.n_val=100", "model.hidden=16", "trainer.epochs=2", "trainer.batch_size=64"]


def test_three_run_comparison_logs_trial_files_and_the_report(workdir, tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    args = ["autoencoder.py", "--experiment", "compare_latent_spaces", "--quick", cache, *TINY]
    out = run_job(args, workdir, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    client, (parent,), trials = sweep_runs(workdir, "compare_latent_spaces")
    assert sorted(r.data.params["model.latent_space"] for r in trials) == ["linear", "none", "vq"]
    for r in trials:
        assert r.info.status == "FINISHED"
        assert r.data.params["model.globals_beta"] == "1.0"
        history = client.get_metric_history(r.info.run_id, "val/rec_globals")
        assert sorted(m.step for m in history) == [1, 2]
        assert {"val/loss", "val/rec_tokens", "train/total_loss"} <= set(r.data.metrics)
        assert ("vq/code_usage" in r.data.metrics) == (r.data.params["model.latent_space"] == "vq")
        top = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"cfg.yaml", "model.pt", "run.log", "facts", "figures"} <= top
        assert "figures/loss_curves.png" in {a.path for a in client.list_artifacts(r.info.run_id, "figures")}
        log = client.download_artifacts(r.info.run_id, "run.log", str(tmp_path / r.info.run_id))
        last = Path(log).read_text().splitlines()[-1]
        assert re.match(r"^\[2/2\] val_loss=\d+\.\d{3} rec_tokens=\d+\.\d{3} rec_globals=\d+\.\d{3} ", last)

    report = workdir / "results" / "autoencoder" / f"compare_latent_spaces-{parent.data.tags['sweep.id']}"
    summary = json.loads((report / "summary.json").read_text())
    assert [(t["run"], t["latent_space"]) for t in summary["trials"]] == [(0, "none"), (1, "linear"), (2, "vq")]
    assert {p["pattern"] for p in summary["patterns"]} >= {"Pattern 4: vq underperforms", "vq codebook in use"}
    assert len(summary["decision_matrix"]) == 5
    for stem in ("heatmaps", "loss_curves"):
        assert (report / f"{stem}.png").exists() and (report / f"{stem}.pdf").exists()
    assert "## Decision matrix" in (report / "summary.md").read_text()
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {
        "report/summary.md",
        "report/heatmaps.png",
    }
