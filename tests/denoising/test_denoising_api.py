"""The seed's Python API: create_config, quick_run in-process, run_experiment through the
service, load_results and compare_experiments from MLflow."""

import pytest

from trainables.denoising import PROFILES, Config
from tune_jobs.core.errors import ConfigError
from tune_jobs.denoising_api import compare_experiments, create_config, load_results, quick_run, run_experiment

SMALL = {k: v for k, v in PROFILES["quick"].items() if k != "trainer.epochs"} | {"trainer.device": "cpu"}


def test_create_config_from_an_experiment_profile_and_overrides():
    cfg = create_config("reference_3blob")
    assert isinstance(cfg, Config)
    assert (cfg.data.d, cfg.model.hidden_size) == (512, 256)  # the local profile
    assert (cfg.loss.lambda_on, cfg.loss.decoder_reg, cfg.trainer.lr) == (16.0, 0.03, 0.02)
    full = create_config("reference_3blob", profile="full", encoder_initialization_scale=0.05, lr=0.01)
    assert (full.data.d, full.model.encoder_init_scale, full.trainer.lr) == (1024, 0.05, 0.01)
    dotted = create_config("reference_3blob", **{"loss.lambda_on": 8.0})
    assert dotted.loss.lambda_on == 8.0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lamda_on": 3}, "unknown key 'lamda_on'; did you mean 'loss.lambda_on'?"),
        ({"noise_variance": -1}, "data.noise_variance: must be >= 0"),
        ({"hidden_size": 0}, "model.hidden_size: must be >= 1"),
        ({"optimizer": "sgd"}, "trainer.optimizer: 'sgd' is not one of ['adam']"),
    ],
)
def test_create_config_mistakes_raise_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        create_config("reference_3blob", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="nosuch.yaml not found"):
        create_config("nosuch")


def test_quick_run_trains_in_process_with_reduced_epochs_and_data(tmp_path):
    cfg = create_config("reference_3blob", **SMALL)
    result = quick_run(cfg, "tiny", out_dir=tmp_path)
    assert cfg.trainer.epochs == 9  # the config itself is left alone
    assert list(result["history"]["step"]) == [1, 2, 3]
    assert result["config"].data.n_train == cfg.data.n_train == 32_768
    assert result["final"]["val/loss"] < 32.0
    assert result["scatter"].name == "epoch_003.png" and result["scatter"].exists()
    again = quick_run(cfg, "tiny", out_dir=tmp_path)  # the same name starts afresh, not a resume
    assert list(again["history"]["step"]) == [1, 2, 3]


def test_run_experiment_then_load_and_compare_from_mlflow(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = create_config("reference_3blob", **SMALL, **{"trainer.epochs": 2})
    res = run_experiment(cfg, "api run", results_dir=tmp_path / "results", mlflow_uri=uri)
    assert res.experiment == "api_run" and len(res.trials) == 1
    assert res.best["data.d"] == "256" and res.best["trainer.epochs"] == "2" and res.best["status"] == "FINISHED"
    assert sorted(res.history.metric.unique()) == sorted(
        ["blob/score", "blob/silhouette", "blob/n_clusters", "blob/correlation", "val/loss_vs_zero"]
    )
    assert list(res.history[res.history.metric == "blob/score"].step) == [1, 2]
    first = (tmp_path / "results" / "api" / "api_run.yaml").read_text().splitlines()[0]
    assert first.startswith("# python tune_jobs/denoising.py --experiment ")
    again = load_results("api_run", mlflow_uri=uri)
    assert again.sweep_id == res.sweep_id
    table = compare_experiments(["api_run"], mlflow_uri=uri)
    assert list(table.experiment) == ["api_run"] and table["blob/score"].notna().all()
    with pytest.raises(ConfigError, match="no sweep matches 'nosuch'"):
        load_results("nosuch", mlflow_uri=uri)
