"""The link a finished sweep prints to the MLflow UI, on its saved comparison view.

The pages themselves are checked in headless Chromium by tests/cluster/test_cluster_mlflow_ui.py."""

import json

from mlflow import MlflowClient

from tune_jobs.core.paths import SEARCH_SPACES
from tune_jobs.core.space import load_experiment
from tune_jobs.core.tracking.view import VIEW_TAG, runs_view, searched_keys, view_state


def test_the_view_shows_the_metric_and_every_searched_value_with_the_names_wide_enough():
    state = view_state(
        "val/nmse", ["data.n_components"], ["phase1/n_components=10", "phase1 sweep 20261201-232232-a62a"]
    )
    assert state["selectedColumns"] == ["metrics.`val/nmse`", "params.`data.n_components`"]
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "sweep.id"}]
    # The UI applies widths to the columns named in columnOrder only; the run name column first.
    assert state["columnOrder"][0] == "attributes.`Run Name`"
    assert set(state["columnWidths"]) == set(state["columnOrder"])
    assert state["columnWidths"]["attributes.`Run Name`"] >= 8 * len("phase1 sweep 20261201-232232-a62a")
    # A measurement grid has no best: its trials in the order they started, the sweep's average.
    assert (state["orderByKey"], state["orderByAsc"]) == ("attributes.start_time", True)
    assert state["groupBy"]["aggregateFunction"] == "average"


def test_a_search_opens_on_its_best_trials_and_its_group_row_shows_the_best():
    lowest = view_state("val/loss", ["lr"], best="min")
    assert (lowest["orderByKey"], lowest["orderByAsc"], lowest["groupBy"]["aggregateFunction"]) == (
        "metrics.`val/loss`",
        True,
        "min",
    )
    highest = view_state("val/acc", ["lr"], best="max")
    assert (highest["orderByKey"], highest["orderByAsc"], highest["groupBy"]["aggregateFunction"]) == (
        "metrics.`val/acc`",
        False,
        "max",
    )


def test_searched_keys_of_a_grid_and_of_a_search():
    lora = load_experiment(SEARCH_SPACES / "phase1a_lora.yaml")
    points = [{"lora.enabled": False}, {"lora.r": 4, "lora.alpha": 8, "lora.layers": 8}]
    assert searched_keys(lora, points) == ["lora.enabled", "lora.r", "lora.alpha", "lora.layers"]
    search = load_experiment(SEARCH_SPACES / "denoising_search.yaml")
    assert searched_keys(search, [])[:2] == ["model.encoder_init_scale", "model.decoder_init_scale"]


def test_runs_view_saves_the_view_on_the_experiment_and_gives_the_command_and_link(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("phase1")
    client.create_run(exp_id, run_name="phase1/n_components=4")
    phase1 = load_experiment(SEARCH_SPACES / "phase1.yaml")
    line = runs_view(uri, exp_id, phase1, [{"data.n_components": 4}])
    assert line == (
        f"mlflow ui --backend-store-uri {uri} --port 5000   then open "
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey=sweeps"
    )
    saved = json.loads(client.get_experiment(exp_id).tags[VIEW_TAG])
    assert saved["selectedColumns"] == ["metrics.`val/nmse`", "params.`data.n_components`"]
    assert saved["groupBy"]["aggregateFunction"] == "average"  # goal: measure, no min over K
    search = load_experiment(SEARCH_SPACES / "denoising_search.yaml")
    runs_view(uri, exp_id, search, [])
    saved = json.loads(client.get_experiment(exp_id).tags[VIEW_TAG])
    assert (saved["orderByKey"], saved["orderByAsc"]) == (f"metrics.`{search.metric}`", search.mode == "min")
    server = runs_view("http://127.0.0.1:1", exp_id, phase1, [])  # unreachable: a warning, the link still
    assert server.startswith("http://127.0.0.1:1/#/experiments/")
    assert runs_view(uri, None, phase1, []) == ""  # MLflow never got the sweep: no link to give
