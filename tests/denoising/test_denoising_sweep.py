"""A tiny real Optuna + ASHA denoising sweep (real Ray, real MLflow), its report and the monitor."""

import json

import optuna
from helpers import run_job, sweep_runs

SEARCH = """\
# python tune_jobs/denoising.py --experiment {path}
study: denoising
metric: blob/score
mode: max
search: optuna
num_samples: 6
seed: 1
scheduler: {{kind: asha, max_t: 3, grace_period: 1, reduction_factor: 2}}
space:
  model.encoder_init_scale: {{loguniform: [0.01, 0.3]}}
  trainer.lr: {{loguniform: [0.002, 0.05]}}
  data.noise_variance: {{loguniform: [0.001, 0.02]}}
"""


def test_optuna_asha_sweep_logs_trials_scatter_report_and_monitor(workdir, tmp_path):
    path = tmp_path / "tiny_hunt.yaml"
    path.write_text(SEARCH.format(path=path))
    out = run_job(["denoising.py", "--quick", "--experiment", str(path)], workdir, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client, (parent,), trials = sweep_runs(workdir, "tiny_hunt")
    assert len(trials) == 6 and all(r.info.status == "FINISHED" for r in trials)
    lengths = []
    for r in trials:
        assert 0.001 <= float(r.data.params["data.noise_variance"]) <= 0.02
        assert r.data.params["data.d"] == "256"  # the quick profile
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "blob/score")]
        assert steps == list(range(1, len(steps) + 1))
        lengths.append(len(steps))
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"cfg.yaml", "weight_pairs.npz"} <= artifacts
        if len(steps) == 3:  # the last epoch always draws the scatter (earlier ones when cheap)
            pngs = [a.path for a in client.list_artifacts(r.info.run_id, "weight_pairs")]
            assert "weight_pairs/epoch_003.png" in pngs
    assert min(lengths) < 3 == max(lengths), lengths  # ASHA stopped some trials after epoch 1 or 2

    (db,) = (workdir / "results" / "ray").glob("tiny_hunt-*/optuna.db")
    (summary,) = optuna.get_all_study_summaries(f"sqlite:///{db}")
    assert summary.n_trials == 6

    report = workdir / "results" / "denoising" / f"tiny_hunt-{parent.data.tags['sweep.id']}"
    for name in ("best_regimes", "blob_panels", "search_landscape"):
        assert (report / f"{name}.png").stat().st_size > 10_000 and (report / f"{name}.pdf").exists()
    data = json.loads((report / "summary.json").read_text())
    assert data["searched"] == ["encoder_init_scale", "lr", "noise_variance"]
    assert any(line.startswith("Best regime: encoder_init_scale=") for line in data["findings"])
    assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    mon = run_job(["denoising_monitor.py", "--once", "--out", "mon.png"], workdir, timeout=300)
    assert mon.returncode == 0, mon.stderr[-2000:]
    assert "6 trials, 0 running" in mon.stdout and (workdir / "mon.png").stat().st_size > 20_000
