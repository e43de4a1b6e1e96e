"""The sweep facts and Tune trials the console's tests build their rows from."""

from __future__ import annotations

from ray.tune.experiment import Trial

from trainables.denoising.study import STUDY as DENOISING
from trainables.phase1.study import STUDY as PHASE1_STUDY
from tune_jobs.core.console.rows import SweepFacts

PHASE1 = SweepFacts(
    run_prefix="phase1",
    sweep_id="20261201-000000-abcd",
    metric="val/nmse",
    mode="min",
    goal="measure",
    total=8,
    tracking_uri="sqlite:////tmp/mlflow.db",
    unit="step",
    budget=PHASE1_STUDY.budget,
    params={"trainer.steps": "301"},
    per_trial={"cpu": 1, "gpu": 0},
)
SEARCH = SweepFacts(
    run_prefix="denoising_search",
    sweep_id="20261201-000000-ef01",
    metric="blob/score",
    mode="max",
    goal="optimize",
    total=80,
    tracking_uri="http://127.0.0.1:5000",
    unit="epoch",
    budget=DENOISING.budget,
    params={"trainer.epochs": "9"},
)


def trial(n: int, point: dict, results: list[dict], status: str = Trial.RUNNING) -> Trial:
    """A real Tune Trial (a stub: no Ray needed) that has reported `results`."""
    t = Trial("study", config={"point": point}, trial_id=f"abcd_{n:05d}", stub=True)
    for i, result in enumerate(results, start=1):
        t.update_last_result({"training_iteration": i, "time_total_s": 2.0 * i, **result})
    t.set_status(status)
    return t


def k_trial(k: int, steps: int, status: str = Trial.RUNNING, nmse: float = 0.8) -> Trial:
    return trial(k, {"data.n_components": k}, [{"step": s, "val/nmse": nmse} for s in range(0, steps, 100)], status)
