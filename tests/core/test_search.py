"""What a search draws (a random search from its seed), and the link a finished Optuna search
prints: the Optuna dashboard on the sweep's own study.

The page itself is checked in headless Chromium by tests/cluster/test_cluster_mlflow_ui.py."""

import subprocess

import pytest
from helpers import job_env, sweep_runs, toy_command

from tune_jobs.core.search import dashboard_command


def test_dashboard_command_names_the_sweeps_own_study(tmp_path):
    assert dashboard_command(tmp_path) == ""
    (tmp_path / "optuna.db").touch()
    assert dashboard_command(tmp_path) == (
        f"optuna-dashboard sqlite:///{tmp_path}/optuna.db   then open http://127.0.0.1:8080/dashboard/studies/1/trials"
    )


RANDOM = """\
study: toy
metric: val/score
mode: max
search: random
num_samples: 3
seed: {seed}
fixed: {{trainer.epochs: 1}}
space:
  trainer.quality: {{uniform: [0.1, 1.0]}}
"""


def test_a_random_search_draws_the_same_trials_from_the_same_seed(tmp_path):
    drawn = []
    for run in range(2):
        workdir = tmp_path / f"run{run}"
        workdir.mkdir()
        (workdir / "drawn.yaml").write_text(RANDOM.format(seed=3))
        out = subprocess.run(
            toy_command(workdir / "drawn.yaml"), cwd=workdir, env=job_env(), capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        trials = sweep_runs(workdir, "drawn")[2]
        drawn.append(sorted(float(r.data.params["trainer.quality"]) for r in trials))
    assert len(set(drawn[0])) == 3 and drawn[0] == drawn[1]  # Tune's own draws differ from run to run


SHORT_OPTUNA = """\
study: toy
metric: val/score
mode: max
search: optuna
num_samples: 8
resources: {cpu: 0.5}
fixed: {trainer.epochs: 1, trainer.first: 1, trainer.seconds: 1.0}
space:
  trainer.quality: {uniform: [0.1, 1.0]}
"""


def test_tune_may_ask_an_optuna_search_for_a_trial_per_slot(tmp_path):
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import SearchGenerator
    from toy_study import STUDY as TOY

    from tune_jobs.core.plan import compose
    from tune_jobs.core.search import search_alg
    from tune_jobs.core.space import load_experiment

    (tmp_path / "short.yaml").write_text(SHORT_OPTUNA)
    composed = compose(TOY, load_experiment(tmp_path / "short.yaml"), overrides=["sweep.max_concurrent=6"])
    searcher = search_alg(composed, tmp_path, "20990101-000000-abcd")
    assert _get_max_pending_trials(SearchGenerator(searcher)) == 6  # Tune's own reading; 1 before


@pytest.mark.serial  # it reads how many trials overlap: beside other tests, a starved driver starts them late
def test_an_optuna_search_of_short_trials_fills_every_slot(tmp_path):
    # Tune asks a searcher outside a ConcurrencyLimiter for one pending trial at a time: trials
    # shorter than a controller round then ran one by one. 0.5 CPU a trial: 4 slots on 2 CPUs.
    (tmp_path / "short.yaml").write_text(SHORT_OPTUNA)
    out = subprocess.run(
        toy_command(tmp_path / "short.yaml"), cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    trials = sweep_runs(tmp_path, "short")[2]
    assert len(trials) == 8
    spans = [(r.info.start_time, r.info.end_time) for r in trials]
    most = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert most >= 3, f"at most {most} trials ran at once: {sorted(spans)}"
    values = {round(float(r.data.params["trainer.quality"]), 6) for r in trials}
    assert len(values) == 8  # the constant liar keeps parallel asks apart
