"""Build one `ray.tune.Tuner` from a planned sweep, run it (or resume it), then report.

The sweep's own description (sweep.json) is written beside Ray's experiment state before
the first trial starts; `--resume` reads it back, so a resumed sweep runs exactly the config
it started with, whatever has changed in the YAML since.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_jobs.core.adapter import POINT_KEY, make_trainable
from tune_jobs.core.errors import ConfigError
from tune_jobs.core.paths import artifact_location, git_commit, safe_name
from tune_jobs.core.plan import Composed, Plan
from tune_jobs.core.space import Experiment, ray_resources

log = logging.getLogger(__name__)
SWEEP_FILE = "sweep.json"


@dataclass
class SweepResult:
    sweep_id: str
    sweep_dir: Path
    parent_run_id: str | None
    tracking_uri: str
    trials: int
    errored: int
    report_dir: Path | None
    best: str = ""
    diverged: list[str] = field(default_factory=list)  # "trial: reason" per diverged trial
    pending: str = ""  # what MLflow could not be sent (the server was down), '' when none


def new_sweep_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def find_sweep(ray_dir: Path, experiment: str, sweep: str | None) -> Path:
    """The sweep to resume: the one named, or the newest of this experiment."""
    if sweep:
        candidates = [p for p in ray_dir.glob(f"*{safe_name(sweep)}*") if (p / SWEEP_FILE).exists()]
    else:
        candidates = [p for p in ray_dir.glob(f"{safe_name(experiment)}-*") if (p / SWEEP_FILE).exists()]
    if not candidates:
        what = f"named {sweep!r}" if sweep else f"of experiment {experiment!r}"
        raise ConfigError(f"--resume: no sweep {what} under {ray_dir}; run without --resume to start one")
    if sweep and len(candidates) > 1:
        raise ConfigError(f"--resume {sweep}: matches {len(candidates)} sweeps; give the full sweep id")
    return max(candidates, key=lambda p: (p / SWEEP_FILE).stat().st_mtime)


def _domain(dim: Any) -> Any:
    from ray import tune

    lo, hi = dim.values[0], dim.values[-1] if dim.kind != "quniform" else dim.values[1]
    return {
        "grid": lambda: tune.grid_search(list(dim.values)),
        "choice": lambda: tune.choice(list(dim.values)),
        "uniform": lambda: tune.uniform(lo, hi),
        "loguniform": lambda: tune.loguniform(lo, hi),
        "randint": lambda: tune.randint(lo, hi + 1),  # the YAML's high is inclusive
        "quniform": lambda: tune.quniform(lo, hi, dim.values[2]),
    }[dim.kind]()


def _param_space(experiment: Experiment, points: list[dict[str, Any]]) -> dict[str, Any]:
    from ray import tune

    if experiment.search == "grid":
        # One grid_search over the planned points keeps the plan's order and its slice.
        return {POINT_KEY: tune.grid_search(points)}
    return {dim.key: _domain(dim) for dim in experiment.space}


def _search_alg(experiment: Experiment, sweep_dir: Path, sweep_id: str) -> Any:
    if experiment.search != "optuna":
        return None
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # A persistent study in the sweep directory: the search keeps its history on resume.
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep_dir / 'optuna.db'}")
    return OptunaSearch(
        metric=experiment.metric,
        mode=experiment.mode,
        seed=experiment.seed,
        storage=storage,
        study_name=f"{experiment.name}-{sweep_id}",
    )


def _scheduler(experiment: Experiment, sweep_dir: Path, trials: int) -> Any:
    """The experiment's scheduler (tune_jobs/core/schedulers.py), in the wrapper that keeps a
    resumed sweep from running an ended trial again and has Tune save its state when
    something a resume needs has changed, at most every save_period(trials) seconds."""
    from tune_jobs.core.experiment_state import save_period
    from tune_jobs.core.schedulers import make_scheduler

    # An Optuna search draws new trial ids when it is restored: its trials must be in Tune's
    # saved state before they start. Grid and random searches recreate theirs identically.
    return make_scheduler(
        experiment.scheduler,
        sweep_dir=sweep_dir,
        save_on_add=experiment.search == "optuna",
        save_every=save_period(trials),
    )


def _bookkeeping() -> list[Any]:
    """Tune's experiment-state policy (tune_jobs/core/experiment_state.py): results go straight
    to each trial's result.json, checkpoints are pruned so that a resume always finds the one
    it restores from, and Tune's own save timer is only a backstop."""
    from tune_jobs.core.experiment_state import CheckpointPruner, ResultLog, configure_experiment_state

    configure_experiment_state()
    return [ResultLog(), CheckpointPruner()]


def _outcomes(mirror: Any) -> tuple[int, list[str]]:
    """(failed trials, 'trial: reason' of each diverged one) from the sweep's own record: a
    trial that ended before a resume is not in Tune's results as it ended."""
    failed, diverged = 0, []
    for entry in mirror.state.get("trials", {}).values():
        tags = entry.get("end_tags", {})
        if tags.get("sweep.status") == "error":
            failed += 1
        elif tags.get("sweep.status") == "diverged":
            diverged.append(f"{entry['name']}: {tags.get('sweep.error', '')}")
    return failed, diverged


def check_fits(per_trial: Mapping[str, float], cluster: Mapping[str, float]) -> None:
    """ConfigError when one trial asks for more than a local Ray has (it would wait forever)."""
    names = {"cpu": "CPU", "gpu": "GPU"}
    for key, amount in per_trial.items():
        have = cluster.get(names.get(key, key), 0)
        if amount > have:
            setting = f"resources.{key}" if key in names else f"resources.custom.{key}"
            fix = (
                "set resources.gpu=0 to train on CPU, or join a GPU cluster with --address"
                if key == "gpu"
                else f"lower {setting}, or join a cluster that has it with --address"
            )
            raise ConfigError(f"{setting}={amount} per trial, but this machine's Ray has {have:g}; {fix}")


def trainable_for(composed: Composed) -> Any:
    """The study's trainable as Tune runs it: the adapter, asking Ray for one trial's resources."""
    from ray import tune

    study, resources = composed.study, composed.experiment.resources
    threads = max(1, int(resources.get("cpu", 1)))
    return tune.with_resources(
        make_trainable(
            study.name, study.train, study.config, composed.base, threads, watch=(composed.experiment.metric,)
        ),
        ray_resources(resources),
    )


def _trial_dirname(trial: Any) -> str:
    from tune_jobs.core.adapter import trial_point
    from tune_jobs.core.plan import trial_label

    return safe_name(f"{trial_label(trial_point(trial.config))}_{trial.trial_id}")[:100]


def run_sweep(
    plan: Plan,
    *,
    results_dir: Path,
    tracking_uri: str,
    address: str | None,
    resume_dir: Path | None = None,
    verbose: int = 1,
) -> SweepResult:
    composed = plan.composed
    study, experiment = composed.study, composed.experiment
    ray_dir = (results_dir / "ray").resolve()
    points = [t.point for t in plan.trials]
    per_trial = ray_resources(experiment.resources)

    bookkeeping = _bookkeeping()
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            configure_logging=True,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
        if address is None and not os.environ.get("RAY_ADDRESS"):
            # A Ray started here never grows: a trial asking for more than it has would wait
            # forever. Checked before anything is written.
            check_fits(per_trial, ray.cluster_resources())

    if resume_dir is None:
        sweep_id = new_sweep_id()
        sweep_dir = ray_dir / f"{safe_name(experiment.name)}-{sweep_id}"
        sweep_dir.mkdir(parents=True)
        description = {
            "study": study.name,
            "experiment": experiment.name,
            "experiment_file": str(experiment.path),
            "sweep_id": sweep_id,
            "profile": composed.profile,
            "quick": composed.quick,
            "overrides": composed.overrides,
            "base": composed.base,
            "points": points,
            "tracking_uri": tracking_uri,
            "git_commit": git_commit(),
            "created": time.time(),
        }
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(description, indent=1, default=str))
    else:
        sweep_dir = resume_dir
        description = json.loads((sweep_dir / SWEEP_FILE).read_text())
        sweep_id = description["sweep_id"]
        tracking_uri = description["tracking_uri"]  # the runs live where the sweep started them

    from ray import tune

    from tune_jobs.core.tracking import Mirror, MlflowTracker

    trainable = trainable_for(composed)

    if resume_dir is not None and (sweep_dir / "tuner.pkl").exists():
        tuner = tune.Tuner.restore(
            str(sweep_dir),
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=False,
            param_space=_param_space(experiment, points),
        )
    else:
        tracker = MlflowTracker(
            tracking_uri=tracking_uri,
            experiment_name=experiment.name,
            sweep_dir=str(sweep_dir),
            tags={
                "sweep.id": sweep_id,
                "sweep.study": study.name,
                "sweep.experiment": experiment.name,
                "sweep.profile": description["profile"],
                "sweep.space_file": str(experiment.path),
                "sweep.metric": experiment.metric,
                "sweep.mode": experiment.mode,
                "git.commit": description["git_commit"],
                "mlflow.source.git.commit": description["git_commit"].removesuffix("-dirty"),
            },
            base=composed.base_flat,
            metrics=study.metrics,
            run_prefix=experiment.name,
            artifact_location=artifact_location(tracking_uri),
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(experiment, points),
            tune_config=tune.TuneConfig(
                metric=experiment.metric,
                mode=experiment.mode,
                search_alg=_search_alg(experiment, sweep_dir, sweep_id),
                scheduler=_scheduler(experiment, sweep_dir, plan.count),
                num_samples=experiment.num_samples if plan.sampled else 1,
                max_concurrent_trials=experiment.max_concurrent or None,
                trial_dirname_creator=_trial_dirname,
                reuse_actors=True,  # one worker process per slot, not per trial: imports once
            ),
            run_config=tune.RunConfig(
                name=sweep_dir.name,
                storage_path=str(ray_dir),
                failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
                # Checkpoints are pruned by the CheckpointPruner in `bookkeeping` (the newest two
                # and those Tune's saved state points to), not by num_to_keep.
                checkpoint_config=tune.CheckpointConfig(),
                # Trial folders (their artifacts/ included) reach the storage path from every node.
                sync_config=tune.SyncConfig(sync_artifacts=True),
                callbacks=[tracker, *bookkeeping],
                verbose=verbose,
            ),
        )
    grid = tuner.fit()
    mirror = Mirror(sweep_dir)
    errored, diverged = _outcomes(mirror)

    report_dir, best = None, ""
    pending = mirror.pending()
    if study.report is not None and not pending:
        from tune_jobs.core.reporting import build_report

        report_dir, best = build_report(study, tracking_uri, mirror.parent_run_id, results_dir)
    return SweepResult(
        sweep_id=sweep_id,
        sweep_dir=sweep_dir,
        parent_run_id=mirror.parent_run_id,
        tracking_uri=tracking_uri,
        trials=len(grid),
        errored=errored,
        report_dir=report_dir,
        best=best,
        diverged=diverged,
        pending=pending,
    )
