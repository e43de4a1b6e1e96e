"""The report's compute line: the trial-epochs (or steps) a sweep ran against the full budget of
all its trials, read back from a real MLflow store."""

from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tune_jobs.core.reporting import Compute, add_compute_line, compute_used
from tune_jobs.core.study import Study
from tune_jobs.core.sweep_data import SweepData


def make_sweep(
    tmp_path, histories: dict[str, list[int]], epochs: int, failed: tuple[str, ...] = ()
) -> tuple[MlflowClient, SweepData]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, tags={"sweep.id": "s1", "sweep.experiment": "e", "sweep.metric": "val/x"})
    for name, steps in histories.items():
        run = client.create_run(
            exp,
            run_name=name,
            tags={"mlflow.parentRunId": parent.info.run_id, "sweep.point": json.dumps({"x": name})},
        )
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("val/x", 0.1 * s, 0, s) for s in steps],
            params=[Param("trainer.epochs", str(epochs))],
        )
        if name in failed:
            client.set_tag(run.info.run_id, "sweep.status", "error")
        client.set_terminated(run.info.run_id, "FAILED" if name in failed else "FINISHED")
    return client, SweepData(client, client.get_run(parent.info.run_id))


def study(**kw) -> Study:
    return Study(name="s", train=lambda cfg, ctx: None, config=object, metrics=("val/x",), default_experiment="e", **kw)


def test_the_compute_line_counts_what_each_trial_ran_against_every_trial_run_to_its_end(tmp_path):
    # 3 trials of 9 epochs: one ran to the end, one stopped at rung 3, one at rung 1.
    client, sweep = make_sweep(tmp_path, {"a": list(range(1, 10)), "b": [1, 2, 3], "c": [1]}, epochs=9)
    compute = compute_used(sweep, study(budget=lambda p: (int(p["trainer.epochs"]), "epochs")))
    assert compute == Compute(run=13, budget=27, unit="epochs", trials=3)
    assert compute.line() == (
        "compute: 13 of 27 trial-epochs run (48% of the full budget of its 3 trials); early stopping saved 52%"
    )
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.md").write_text("# Sweep s1\n\nfindings\n")
    add_compute_line(client, sweep.parent.info.run_id, out, compute)
    assert (out / "summary.md").read_text().endswith(f"## Compute\n\n{compute.line()}.\n")
    assert client.get_run(sweep.parent.info.run_id).data.tags["sweep.compute_run"] == "13"


def test_zero_based_steps_and_studies_without_a_budget(tmp_path):
    _, sweep = make_sweep(tmp_path, {"a": [0, 100, 199], "b": [0, 100]}, epochs=200)
    steps = study(budget=lambda p: (int(p["trainer.epochs"]), "steps"), units_run=lambda s: max(s) + 1)
    assert compute_used(sweep, steps) == Compute(run=301, budget=400, unit="steps", trials=2)
    assert compute_used(sweep, study()) is None


def test_what_a_failed_trial_did_not_run_is_not_counted_as_saved_by_early_stopping(tmp_path):
    # 2 trials of 9 epochs: one stopped at rung 3 by the scheduler, one failed at epoch 2.
    _, sweep = make_sweep(tmp_path, {"a": [1, 2, 3], "b": [1, 2]}, epochs=9, failed=("b",))
    compute = compute_used(sweep, study(budget=lambda p: (int(p["trainer.epochs"]), "epochs")))
    assert compute == Compute(run=5, budget=18, unit="epochs", trials=2, unfinished=1, not_run_unfinished=7)
    assert compute.line() == (
        "compute: 5 of 18 trial-epochs run (28% of the full budget of its 2 trials); early stopping saved 33%; "
        "7 trial-epochs not run by the 1 trial(s) that did not finish"
    )


def test_a_trial_run_whose_params_never_reached_mlflow_does_not_stop_the_report(tmp_path):
    client, sweep = make_sweep(tmp_path, {"a": list(range(1, 10)), "b": [1, 2, 3]}, epochs=9)
    parent = sweep.parent
    client.create_run(parent.info.experiment_id, run_name="c", tags={"mlflow.parentRunId": parent.info.run_id})
    sweep = SweepData(client, client.get_run(parent.info.run_id))
    assert len(sweep.trials) == 3
    compute = compute_used(sweep, study(budget=lambda p: (int(p["trainer.epochs"]), "epochs")))
    assert (compute.run, compute.budget) == (12, 18)  # the two trials whose budget is known
