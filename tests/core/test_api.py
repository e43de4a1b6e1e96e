"""tune_jobs.api, the service from Python for any study: the one-trial experiment it writes and
a store that is not there. A run through Ray and MLflow: tests/denoising/test_denoising_api.py."""

import pytest
import yaml

from trainables.autoencoder.study import STUDY
from tune_jobs.api import _write_experiment, open_store
from tune_jobs.core.config import build_config, to_flat
from tune_jobs.core.errors import ConfigError


def test_a_config_becomes_a_one_trial_experiment_that_runs_from_the_study_entry_script(tmp_path):
    cfg = build_config(STUDY.config, {})
    path = _write_experiment(
        STUDY, cfg, "my run", tmp_path, metric="val/loss", mode="min", description="one trial", cpus=2, gpus=0
    )
    assert path == tmp_path / "my_run.yaml"
    first, *_ = path.read_text().splitlines()
    assert first == f"# python tune_jobs/autoencoder.py --experiment {path}"
    spec = yaml.safe_load(path.read_text())
    assert (spec["study"], spec["metric"], spec["mode"], spec["search"]) == ("autoencoder", "val/loss", "min", "grid")
    assert spec["resources"] == {"cpu": 2, "gpu": 0} and spec["fixed"] == to_flat(cfg)


def test_a_missing_store_is_a_config_error_naming_it_and_the_fix(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(ConfigError, match=r"no MLflow store at .*mlflow\.db; .* or pass --mlflow-uri$"):
        open_store(uri, hint="pass --mlflow-uri")
    with pytest.raises(ConfigError, match="or pass mlflow_uri=$"):
        open_store(uri)
    assert not (tmp_path / "mlflow.db").exists()
