"""Seeds as part of a sweep: `seeds: N` (or sweep.seeds=N) runs every grid point N times, each
seed its own trial and MLflow run, and the sweep summary gives each point's mean, spread,
interval and whether it differs from the next beyond the seeds' noise."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import job_env, sweep_runs, toy_command
from scipy import stats
from toy_study import STUDY as TOY

from trainables.common import section
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.plan import compose, plan
from tune_jobs.core.space import load_experiment

GRID = """\
study: toy
metric: val/score
mode: max
seeds: 3
fixed: {trainer.epochs: 3, trainer.first: 1, trainer.noise: 0.05}
space:
  trainer.quality: {grid: [0.5, 0.9]}
"""


def experiment(tmp_path: Path, text: str = GRID):
    (tmp_path / "seeded.yaml").write_text(text)
    return load_experiment(tmp_path / "seeded.yaml")


def test_each_point_runs_on_consecutive_seeds_from_the_configured_one_a_points_seeds_together(tmp_path):
    p = plan(compose(TOY, experiment(tmp_path)))
    assert [(t.point["trainer.quality"], t.point["seed"]) for t in p.trials] == [
        (0.5, 0), (0.5, 1), (0.5, 2), (0.9, 0), (0.9, 1), (0.9, 2),
    ]  # fmt: skip
    assert [t.cfg.seed for t in p.trials] == [0, 1, 2, 0, 1, 2]
    p = plan(compose(TOY, experiment(tmp_path), overrides=["sweep.seeds=2", "seed=7"]))
    assert [t.point["seed"] for t in p.trials] == [7, 8, 7, 8]
    one = plan(compose(TOY, experiment(tmp_path), overrides=["sweep.seeds=1"]))
    assert [t.point for t in one.trials] == [{"trainer.quality": 0.5}, {"trainer.quality": 0.9}]  # as before seeds


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seeds: 3": "seeds: 0"}, r"seeds: expected an integer >= 1, got 0$"),
        ({"seeds: 3": "seeds: two"}, r"seeds: expected an integer >= 1, got 'two'$"),
        (
            {"space:\n": "scheduler: {kind: asha, max_t: 3}\nspace:\n"},
            r"^seeds: 3: asha would stop a point's seeds one by one, on one seed's noise; use scheduler",
        ),
        (
            {"mode: max\n": "mode: max\nsearch: random\n", "grid: [0.5, 0.9]": "uniform: [0.5, 0.9]"},
            r"^seeds: 3: a random search draws each point once, so no point would run on several seeds; use search",
        ),
        ({"space:\n": "space:\n  seed: {grid: [0, 1]}\n"}, r"^seeds: 3: seeded.yaml already searches seed in space:"),
    ],
)
def test_a_seeds_setting_that_cannot_mean_what_it_says_is_one_line(tmp_path, change, message):
    text = GRID
    for old, new in change.items():
        text = text.replace(old, new)
    with pytest.raises(ConfigError, match=message):
        plan(compose(TOY, experiment(tmp_path, text)))


def test_seeds_on_a_study_without_a_seed_setting_is_refused(tmp_path):
    trainer = type(TOY.config().trainer)
    config = dataclasses.make_dataclass("Config", [("trainer", trainer, section(trainer, "training"))])
    with pytest.raises(ConfigError, match=r"^seeds: 3: study toy has no `seed` setting to vary"):
        compose(dataclasses.replace(TOY, config=config), experiment(tmp_path))


def test_a_grid_with_three_seeds_runs_three_trials_per_point_and_its_summary_gives_the_spread(tmp_path):
    (tmp_path / "seeded.yaml").write_text(GRID)
    workdir = tmp_path / "work"
    workdir.mkdir()
    out = subprocess.run(
        toy_command(tmp_path / "seeded.yaml"), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    client, parents, trials = sweep_runs(workdir, "seeded")
    assert len(parents) == 1 and parents[0].data.tags["sweep.seeds"] == "3"
    assert len(trials) == 6 and {r.info.status for r in trials} == {"FINISHED"}
    by_point: dict[str, list] = {}
    for r in trials:
        by_point.setdefault(r.data.tags["sweep.point_group"], []).append(r)
        assert r.data.params["seed"] == r.data.tags["sweep.seed"]
    assert sorted(by_point) == ['{"trainer.quality": 0.5}', '{"trainer.quality": 0.9}']
    for runs in by_point.values():
        assert sorted(r.data.tags["sweep.seed"] for r in runs) == ["0", "1", "2"]

    # The summary's numbers, recomputed here from what the toy reports (its last epoch is 3).
    (summary,) = (workdir / "results" / "toy").glob("seeded-*/sweep_summary.md")
    text = summary.read_text()
    assert "6 trials: 6 finished" in text
    offsets = [0.05 * random.Random(seed).gauss(0.0, 1.0) for seed in range(3)]
    finals = {q: [q * (1 - math.exp(-3 / 2)) + o for o in offsets] for q in (0.5, 0.9)}
    for q, values in finals.items():
        mean, std = np.mean(values), np.std(values, ddof=1)
        lo, hi = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(values))
        row = f"| quality={q} | 3 | {mean:.4g} | {std:.4g} | {lo:.4g} to {hi:.4g} |"
        assert row in text, (row, text)
    p = stats.ttest_ind(finals[0.9], finals[0.5], equal_var=False).pvalue
    assert f"Best point (by its mean over seeds): quality=0.9, val/score = {np.mean(finals[0.9]):.4g} ± " in text
    assert re.search(rf"quality=0.9 beats the runner-up quality=0.5 .* p = {p:.2g}\)", text), text
    with (summary.parent / "sweep_points.csv").open() as f:
        rows = {row["point"]: row for row in csv.DictReader(f)}
    assert float(rows["quality=0.9"]["mean"]) == pytest.approx(np.mean(finals[0.9]))
    assert float(rows["quality=0.9"]["p_vs_next"]) == pytest.approx(p)
    assert "best point quality=0.9: val/score = " in out.stdout  # the sweep's last line, by the mean


OPTUNA = """\
study: toy
metric: val/score
mode: max
search: optuna
num_samples: 3
seeds: 3
seed: 5
fixed: {trainer.epochs: 3, trainer.first: 1, trainer.noise: 0.05}
space:
  trainer.quality: {uniform: [0.1, 1.0]}
"""


def test_an_optuna_search_with_seeds_runs_each_point_on_each_seed_and_the_study_hears_the_means(tmp_path):
    import optuna

    (tmp_path / "searched.yaml").write_text(OPTUNA)
    dry = subprocess.run(
        toy_command(tmp_path / "searched.yaml", "--dry-run"),
        cwd=tmp_path,
        env=job_env(),
        capture_output=True,
        text=True,
    )
    assert dry.returncode == 0, dry.stderr
    assert "9 trials sampled by optuna (3 points x 3 seeds) from:" in dry.stdout
    out = subprocess.run(
        toy_command(tmp_path / "searched.yaml"),
        cwd=tmp_path,
        env=job_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    _, parents, trials = sweep_runs(tmp_path, "searched")
    assert len(trials) == 9 and {r.info.status for r in trials} == {"FINISHED"}
    by_point: dict[str, list] = {}
    for r in trials:
        by_point.setdefault(r.data.tags["sweep.point_group"], []).append(r)
    assert len(by_point) == 3
    means = {}
    for group, runs in by_point.items():
        assert sorted(r.data.tags["sweep.seed"] for r in runs) == ["0", "1", "2"]  # the trials' seed, not the sampler's
        means[json.loads(group)["trainer.quality"]] = np.mean([r.data.metrics["val/score"] for r in runs])

    (db,) = (tmp_path / "results" / "ray").glob("searched-*/optuna.db")
    (study,) = optuna.get_all_study_names(f"sqlite:///{db}")
    told = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials
    assert [t.state.name for t in told] == ["COMPLETE"] * 3  # one Optuna trial per point, not per seed
    assert {t.params["trainer.quality"]: t.value for t in told} == pytest.approx(means)
    (summary,) = (tmp_path / "results" / "toy").glob("searched-*/sweep_summary.md")
    assert "9 trials: 9 finished" in summary.read_text()
    assert "Best point (by its mean over seeds): quality=" in summary.read_text()
