"""Study.validate: a study's own checks (data files) run for every planned trial before Ray."""

import dataclasses

import pytest

from tune_jobs.core.errors import ConfigError
from tune_jobs.core.plan import compose, plan
from tune_jobs.core.space import load_experiment
from tune_jobs.core.study import load_study

GRID = "study: phase1\nmetric: val/nmse\nspace:\n  data.n_components: {grid: [1, 2, 3]}\n"
OPTUNA = "study: phase1\nmetric: val/nmse\nsearch: optuna\nspace:\n  trainer.lr: {loguniform: [0.001, 0.01]}\n"


def study_checking(seen):
    def validate(cfg):
        seen.append(cfg.data.n_components)
        if cfg.data.n_components == 3:
            raise ValueError("data.n_components=3: no data file for K=3; generate it first")

    return dataclasses.replace(load_study("phase1"), validate=validate)


def test_every_planned_trial_is_validated_and_a_value_error_becomes_one_config_error(tmp_path):
    (tmp_path / "exp.yaml").write_text(GRID)
    exp = load_experiment(tmp_path / "exp.yaml")
    seen = []
    with pytest.raises(ConfigError, match="^data.n_components=3: no data file for K=3; generate it first$"):
        plan(compose(study_checking(seen), exp))
    assert seen == [1, 2, 3]
    seen.clear()
    p = plan(compose(study_checking(seen), exp), stop_at=2)  # only the selected slice is checked
    assert seen == [1, 2] and len(p.trials) == 2


def test_sampled_searches_validate_the_shared_config(tmp_path):
    (tmp_path / "exp.yaml").write_text(OPTUNA)
    seen = []
    plan(compose(study_checking(seen), load_experiment(tmp_path / "exp.yaml")))
    assert seen == [1]
