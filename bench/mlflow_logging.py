"""Logging speed: the project's MLflow callback against Ray Tune's stock MLflowLoggerCallback.

    python bench/mlflow_logging.py                    # 8 trials x 100 steps x 4 metrics, SQLite stores
    python bench/mlflow_logging.py --store server     # the same into two real `mlflow server`s over HTTP

Both callbacks get the same stream of results through Tune's callback hooks (trial start,
one result per trial per step, interleaved as concurrent trials produce them, trial
complete, experiment end), each into a fresh store of the same kind. Printed: results per
second for each and their ratio, after checking that each store holds every metric of every
step of every trial exactly once (nothing lost, nothing twice).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("train/loss", "val/loss", "val/nmse", "lr")


@dataclass(eq=False)
class BenchTrial:
    """What both callbacks read from a Tune trial."""

    trial_id: str
    config: dict[str, Any]
    path: str
    status: str = "RUNNING"
    checkpoint: Any = None
    last_result: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"bench_{self.trial_id}"


def stream(trials: list[BenchTrial], steps: int):
    """(trial, result) in the order concurrent trials report them: step by step, trial by trial."""
    for step in range(steps):
        for i, trial in enumerate(trials):
            x = (step + 1) * (i + 1)
            yield (
                trial,
                {
                    "step": step,
                    "training_iteration": step + 1,
                    "train/loss": 1.0 / x,
                    "val/loss": 2.0 / x,
                    "val/nmse": 0.5 / x,
                    "lr": 1e-3,
                    "trial_id": trial.trial_id,
                },
            )


def drive(callback: Any, trials: list[BenchTrial], steps: int) -> float:
    """Feed the stream through Tune's callback hooks; seconds from the first hook to the last."""
    start = time.perf_counter()
    callback.setup()
    for i, trial in enumerate(trials):
        callback.on_trial_start(iteration=i, trials=trials, trial=trial)
    for n, (trial, result) in enumerate(stream(trials, steps)):
        trial.last_result = result
        callback.on_trial_result(iteration=n, trials=trials, trial=trial, result=result)
        callback.on_step_end(iteration=n, trials=trials)
    for i, trial in enumerate(trials):
        trial.status = "TERMINATED"
        callback.on_trial_complete(iteration=i, trials=trials, trial=trial)
    callback.on_experiment_end(trials=trials)
    return time.perf_counter() - start


def count(uri: str, experiment: str, n_trials: int, steps: int, first_step: int) -> str:
    """'' when the store holds each (run, metric, step) once for every trial, else what is wrong.

    Ray's callback logs result i at step training_iteration (1..steps), ours at `step` (0..)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") != "parent"]
    if len(runs) != n_trials:
        return f"{len(runs)} runs for {n_trials} trials"
    expected = list(range(first_step, first_step + steps))
    for run in runs:
        for key in METRICS:
            got = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            if got != expected:
                return f"run {run.info.run_name} {key}: {len(got)} points for {steps} steps"
    return ""


def ours(uri: str, work: Path, trials: list[BenchTrial]) -> Any:
    from tune_jobs.core.tracking import MlflowTracker

    return MlflowTracker(
        tracking_uri=uri,
        experiment_name="ours",
        sweep_dir=str(work / "sweep"),
        tags={"sweep.id": "bench"},
        base={"seed": 0, "trainer.lr": 1e-3},
        metrics=("step", *METRICS),
        run_prefix="ours",
    )


def rays(uri: str, work: Path, trials: list[BenchTrial]) -> Any:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(tracking_uri=uri, experiment_name="ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--store", choices=["sqlite", "server"], default="sqlite")
    args = p.parse_args()

    from tune_jobs import mlflow_server

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("ray MLflowLoggerCallback", rays), ("tune-sweeps MlflowTracker", ours)):
            work = Path(tmp) / name.split()[0]
            work.mkdir()
            server = None
            if args.store == "server":
                port = free_port()
                server = mlflow_server.start(
                    backend_store_uri=f"sqlite:///{work / 'mlflow.db'}",
                    artifacts_destination=str(work / "artifacts"),
                    port=port,
                    log_file=work / "server.log",
                )
                uri = mlflow_server.url(port=port)
            else:
                uri = f"sqlite:///{work / 'mlflow.db'}"
            try:
                trials = [
                    BenchTrial(f"{i:05d}", {"point": {"data.n_components": i + 1}}, str(work / f"t{i}"))
                    for i in range(args.trials)
                ]
                for t in trials:
                    Path(t.path).mkdir()
                seconds = drive(make(uri, work, trials), trials, args.steps)
                mine = name.startswith("tune")
                lost = count(uri, "ours" if mine else "ray", args.trials, args.steps, 0 if mine else 1)
            finally:
                if server is not None:
                    mlflow_server.stop(server)
            if lost:
                sys.exit(f"{name} lost results: {lost}")
            results = args.trials * args.steps
            rates[name] = results / seconds
            print(f"{name:26s} {results} results in {seconds:7.2f} s = {rates[name]:8.1f} results/s, none lost")
    ratio = rates["tune-sweeps MlflowTracker"] / rates["ray MLflowLoggerCallback"]
    print(f"ratio (ours / Ray's): {ratio:.1f}x  [{args.store} store, {args.trials} trials x {args.steps} steps]")


if __name__ == "__main__":
    main()
