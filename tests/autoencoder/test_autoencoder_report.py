"""The autoencoder report on a 3 x 3 sweep with known numbers: files, patterns, decisions."""

import json

import matplotlib
import pytest

from trainables.autoencoder import report
from tune_jobs.core.sweep_data import TrialRun

matplotlib.use("Agg")

# (latent, beta) -> (rec_tokens, rec_globals, code_usage) at every epoch's end: the numbers a
# sweep would leave in MLflow. rec_globals falls with beta everywhere; linear trades tokens
# for globals; vq is worst everywhere.
CELLS = {
    ("none", 0.0): (0.010, 0.99, None),
    ("linear", 0.0): (0.020, 1.00, None),
    ("vq", 0.0): (0.100, 1.05, 0.90),
    ("none", 1.0): (0.011, 0.50, None),
    ("linear", 1.0): (0.030, 0.45, None),
    ("vq", 1.0): (0.120, 0.60, 0.85),
    ("none", 10.0): (0.012, 0.30, None),
    ("linear", 10.0): (0.090, 0.35, None),
    ("vq", 10.0): (0.200, 0.40, 0.20),
}


class FakeSweep:
    """What the report reads from MLflow: trials with their point, params and histories."""

    sweep_id, experiment = "20260101-000000-abcd", "compare_globals_heads"

    def __init__(self, cells):
        self.trials, self._hist = [], {}
        for i, ((latent, beta), (tok, glob, used)) in enumerate(cells.items()):
            run_id = f"run{i}"
            # three epochs; the best (lowest total) is epoch 2, epoch 3 got a little worse
            scale = {1: 2.0, 2: 1.0, 3: 1.1}
            hist = {
                "val/rec_tokens": [(e, tok * s) for e, s in scale.items()],
                "val/rec_globals": [(e, glob * s) for e, s in scale.items()],
            }
            hist["val/loss"] = [(e, (tok + glob) * s) for e, s in scale.items()]
            hist["val/total_loss"] = [(e, (tok + beta * glob) * s) for e, s in scale.items()]
            metrics = {k: v[-1][1] for k, v in hist.items()}
            if used is not None:
                hist["vq/code_usage"] = [(e, used) for e in scale]
                metrics |= {"vq/code_usage": used, "vq/perplexity": 100 * used}
            self._hist[run_id] = hist
            point = {"model.globals_beta": beta, "model.latent_space": latent}
            name = f"compare_globals_heads/globals_beta={beta:g},latent_space={latent}"
            self.trials.append(TrialRun(run_id, name, "FINISHED", point, {}, metrics, {}))

    def history(self, run_id, key):
        return self._hist[run_id].get(key, [])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    files = report.build(FakeSweep(CELLS), out)
    return out, files, json.loads((out / "summary.json").read_text())


def test_files_and_best_losses_per_run(built):
    out, files, summary = built
    for stem in ("heatmaps", "loss_curves"):
        assert (out / f"{stem}.png").stat().st_size > 20_000 and (out / f"{stem}.pdf").exists()
    assert {p.name for p in files} >= {"summary.csv", "summary.json", "summary.md", "heatmaps.png"}
    trials = summary["trials"]
    # the seed's run numbers: beta outer, latent space inner
    assert [(t["run"], t["latent_space"], t["globals_beta"]) for t in trials[:4]] == [
        (0, "none", 0.0),
        (1, "linear", 0.0),
        (2, "vq", 0.0),
        (3, "none", 1.0),
    ]
    run4 = trials[4]
    assert run4["best_epoch"] == 2  # the epoch with the lowest val/total_loss
    assert run4["rec_tokens"] == pytest.approx(0.030) and run4["rec_globals"] == pytest.approx(0.45)
    assert run4["final_rec_globals"] == pytest.approx(0.495) and run4["min_rec_globals"] == pytest.approx(0.45)


def test_patterns_are_checked_on_the_numbers(built):
    _, _, summary = built
    verdict = {p["pattern"]: p["holds"] for p in summary["patterns"]}
    assert verdict["Pattern 2 (expected): beta significantly affects globals"] is True
    assert verdict["Pattern 1: beta has no effect"] is False
    assert verdict["Expected outcomes: rec_tokens best at beta 0, rec_globals best at beta 10"] is True
    assert verdict["Pattern 3: token/globals trade-off"] is True
    assert verdict["token/globals trade-off (linear)"] is True
    assert verdict["token/globals trade-off (none)"] is False
    assert verdict["Pattern 4: vq underperforms"] is True
    assert verdict["vq codebook in use"] is False  # vq at beta 10 uses 20% of its codes
    text = {p["pattern"]: p["text"] for p in summary["patterns"]}
    assert "β=0: 0.99 vs β=1: 0.5 vs β=10: 0.3" in text["rec_globals falls as beta rises (none)"]


def test_decision_matrix_names_the_real_best_run(built):
    out, _, summary = built
    rows = {r["priority"]: r for r in summary["decision_matrix"]}
    assert rows["Pure reconstruction"]["best_here"] == "run 0 (none, beta=0)"
    assert rows["Pure reconstruction"]["agrees_with_seed"] is True
    assert rows["Pure reconstruction"]["within_25pct"] == "run 3, run 6"  # 0.011 and 0.012: no clear winner
    assert rows["Emphasize globals"]["best_here"] == "run 6 (none, beta=10)"
    assert rows["Emphasize globals"]["seed_pick"] == "run 7 (linear, beta=10)"
    assert rows["Balanced tokens+globals"]["best_here"] == "run 6 (none, beta=10)"  # 0.012 + 0.30
    assert rows["Interpretable (discrete)"]["best_here"] == "run 8 (vq, beta=10)"  # 0.2 + 0.4 < 0.12 + 0.6
    md = (out / "summary.md").read_text()
    assert "## Decision matrix" in md and "| Pure reconstruction |" in md
    assert "**Pattern 2 (expected): beta significantly affects globals**: holds." in md


def test_a_one_dimensional_grid_still_reports(tmp_path):
    cells = {(x, 1.0): CELLS[(x, 1.0)] for x in ("none", "linear", "vq")}
    report.build(FakeSweep(cells), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [t["run"] for t in summary["trials"]] == [0, 1, 2]
    assert "Pattern 4: vq underperforms" in {p["pattern"] for p in summary["patterns"]}
    assert (tmp_path / "heatmaps.png").exists()


def seeded_sweep(spread: dict) -> FakeSweep:
    """The 3 x 3 grid on three seeds: each cell's numbers times 1 + its spread x (-1, 0, 1)."""
    sweep = FakeSweep({})
    for seed in range(3):
        scaled = {
            cell: (tok * (1 + spread.get(cell, 0.02) * (seed - 1)), glob, used)
            for cell, (tok, glob, used) in CELLS.items()
        }
        one = FakeSweep(scaled)
        for t in one.trials:
            run_id = f"{t.run_id}-seed{seed}"
            sweep._hist[run_id] = one._hist[t.run_id]
            sweep.trials.append(
                TrialRun(run_id, f"{t.name},seed={seed}", t.status, {**t.point, "seed": seed}, {}, t.metrics, {})
            )
    return sweep


def test_a_sweep_with_seeds_is_read_over_them_and_ties_within_their_noise_are_named(tmp_path):
    report.build(seeded_sweep({("none", 1.0): 0.3}), tmp_path)  # run 3's seeds spread widely
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["trials"]) == 27
    rows = {r["priority"]: r for r in summary["decision_matrix"]}
    pure = rows["Pure reconstruction"]
    assert pure["best_here"] == "run 0 (none, beta=0)" and pure["value"] == pytest.approx(0.010)  # the mean
    assert pure["ties_within_noise"].startswith("run 3 (p = ")  # 0.011 ± 30% vs 0.010 ± 2%
    assert "run 6" not in pure["ties_within_noise"]  # 0.012 ± 2%: beyond the noise
    md = (tmp_path / "summary.md").read_text()
    assert "| ties_within_noise |" in md and "Every number is the mean over the seeds of its cell" in md
    assert "| run | latent_space | globals_beta | seeds |" in md
    assert (tmp_path / "heatmaps.png").exists()
