"""What a search draws (a random search from its seed), and the link a finished Optuna search
prints: the Optuna dashboard on the sweep's own study.

The page itself is checked in headless Chromium by tests/cluster/test_cluster_mlflow_ui.py."""

import subprocess

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
