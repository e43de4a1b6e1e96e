"""The denoising report survives a damaged artifact (artifacts are written whole or not at all)
and reads a sweep with seeds over them."""

import logging
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd

from trainables.denoising.report import SCORE, best_regimes_figure, collect, seed_findings
from trainables.denoising.train import PAIRS_FILE, _save_pairs


def test_a_torn_weight_pairs_file_costs_its_panel_not_the_report(tmp_path, caplog):
    good = tmp_path / "good"
    report = SimpleNamespace(
        pairs=np.random.default_rng(0).normal(size=(50, 2)),
        labels=np.zeros(50, dtype=int),
        score=0.9,
        n_blobs=3,
        silhouette=0.5,
        correlation=-0.1,
    )
    _save_pairs(SimpleNamespace(artifact_dir=good), report, 9, None)
    assert sorted(p.name for p in good.iterdir()) == [PAIRS_FILE]  # no temporary file left beside it
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / PAIRS_FILE).write_bytes(b"")  # a trial stopped while the file was being written

    def download_artifacts(run_id, name, dest):
        shutil.copytree(tmp_path / run_id, dest)
        return f"{dest}/{name}"

    sweep = SimpleNamespace(client=SimpleNamespace(download_artifacts=download_artifacts))
    df = pd.DataFrame(
        [
            {"run_id": "torn", SCORE: 0.95, "blob/n_clusters": 3, "trainer.lr": 0.02},
            {"run_id": "good", SCORE: 0.90, "blob/n_clusters": 3, "trainer.lr": 0.05},
        ]
    )
    with caplog.at_level(logging.WARNING):
        fig = best_regimes_figure(sweep, df, ["trainer.lr"], "t")
    assert fig is not None and len(fig.axes) == 1  # the good trial's panel
    assert f"run torn: its {PAIRS_FILE} is unreadable" in caplog.text


def test_a_sweep_with_seeds_gives_each_regime_its_mean_spread_and_3_blob_seeds():
    from tune_jobs.core.sweep_data import TrialRun

    def trial(lr: float, seed: int, score: float, blobs: int) -> TrialRun:
        metrics = {SCORE: score, "blob/n_clusters": blobs}
        return TrialRun(
            f"r{lr}{seed}", f"d/lr={lr},seed={seed}", "FINISHED", {"trainer.lr": lr, "seed": seed}, {}, metrics, {}
        )

    trials = [trial(0.02, s, v, b) for s, v, b in ((0, 0.90, 3), (1, 0.88, 3), (2, 0.86, 2))]
    trials += [trial(0.05, s, v, 2) for s, v in ((0, 0.40), (1, 0.42), (2, 0.38))]
    sweep = SimpleNamespace(trials=trials, history=lambda run_id, key: [])
    lines = seed_findings(sweep, collect(sweep))
    assert lines[0] == (
        "Over seeds (blob score mean ± std), best first: lr=0.02: 0.880 ± 0.02, 3 blobs on 2 of 3 seeds; "
        "lr=0.05: 0.400 ± 0.02, 3 blobs on 0 of 3 seeds."
    )
    assert lines[1].startswith("lr=0.02 beats the runner-up lr=0.05 on mean blob/score beyond the seeds' noise")
    one = SimpleNamespace(trials=trials[::3], history=lambda run_id, key: [])
    assert seed_findings(one, collect(one)) == []  # one seed per regime: nothing said over seeds
