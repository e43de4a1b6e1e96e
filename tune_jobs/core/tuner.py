"""The `ray.tune.Tuner` of a sweep: its trainable, search, scheduler, callbacks and Tune's
settings (failures, checkpoints, storage), new or restored from the sweep folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tune_jobs.core import provenance
from tune_jobs.core.adapter import make_trainable
from tune_jobs.core.paths import safe_name
from tune_jobs.core.plan import Composed, Plan
from tune_jobs.core.search import param_space, search_alg
from tune_jobs.core.space import Experiment, ray_resources
from tune_jobs.core.tracking import Outbox
from tune_jobs.core.tracking.sweep_file import SweepRecord


def trainable_for(composed: Composed, *, resume_command: str = "", start_over: Sequence[str] = ()) -> Any:
    """The study's trainable as Tune runs it: the adapter, asking Ray for one trial's resources.
    `resume_command` resumes the sweep (offered by a trial none of whose checkpoints loads)."""
    from ray import tune

    study, resources = composed.study, composed.experiment.resources
    threads = max(1, int(resources.get("cpu", 1)))
    return tune.with_resources(
        make_trainable(
            study.name,
            study.train,
            study.config,
            composed.base,
            threads,
            watch=(composed.experiment.metric,),
            resume_command=resume_command,
            start_over=start_over,
        ),
        ray_resources(resources),
    )


def bookkeeping() -> list[Any]:
    """Tune's experiment-state policy (tune_jobs/core/experiment_state.py): results go straight
    to each trial's result.json, checkpoints are pruned so that a resume always finds the one
    it restores from, and Tune's own save timer is only a backstop."""
    from tune_jobs.core.experiment_state import CheckpointPruner, ResultLog, configure_experiment_state

    configure_experiment_state()
    return [ResultLog(), CheckpointPruner()]


def _scheduler(experiment: Experiment, sweep_dir: Path, trials: int, outbox: Outbox) -> Any:
    """The experiment's scheduler (tune_jobs/core/schedulers.py), in the wrapper that keeps a
    resumed sweep from running an ended trial again and has Tune save its state when
    something a resume needs has changed, at most every save_period(trials) seconds."""
    from tune_jobs.core.experiment_state import checkpoint_save_period, save_period
    from tune_jobs.core.schedulers import make_scheduler

    # An Optuna search draws new trial ids when it is restored: its trials must be in Tune's
    # saved state before they start. Grid and random searches recreate theirs identically.
    return make_scheduler(
        experiment.scheduler,
        sweep_dir=sweep_dir,
        outbox=outbox,
        save_on_add=experiment.search == "optuna",
        save_every=save_period(trials),
        checkpoint_save_every=checkpoint_save_period(trials),
    )


def _trial_dirname(trial: Any) -> str:
    from tune_jobs.core.adapter import trial_point
    from tune_jobs.core.plan import trial_label

    return safe_name(f"{trial_label(trial_point(trial.config))}_{trial.trial_id}")[:100]


def new_tuner(
    plan: Plan, record: SweepRecord, sweep_dir: Path, *, trainable: Any, bookkeeping: Sequence[Any], outbox: Outbox
) -> Any:
    """The Tuner of a new sweep: its callbacks are the live view, the MLflow tracker, which fills
    the sweep's `outbox`, and Tune's `bookkeeping`."""
    from ray import tune

    from tune_jobs.core.console import SweepView, facts_for
    from tune_jobs.core.tracking import MlflowTracker, artifact_location, parent_tags

    composed = plan.composed
    study, experiment = composed.study, composed.experiment
    view = SweepView(facts_for(plan, record.sweep_id, record.tracking_uri))
    tracker = MlflowTracker(
        tracking_uri=record.tracking_uri,
        experiment_name=experiment.name,
        sweep_dir=str(sweep_dir),
        tags={**parent_tags(plan, record), **provenance.tags(sweep_dir)},
        base=composed.base_flat,
        metrics=study.metrics,
        run_prefix=experiment.name,
        artifact_location=artifact_location(record.tracking_uri),
        end_note=view.facts.note,
        outbox=outbox,
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(experiment, [t.point for t in plan.trials]),
        tune_config=tune.TuneConfig(
            metric=experiment.metric,
            mode=experiment.mode,
            search_alg=search_alg(composed, sweep_dir, record.sweep_id, drawn=record.extension.get("drawn", 0)),
            scheduler=_scheduler(experiment, sweep_dir, plan.count, outbox),
            num_samples=plan.count if plan.sampled else 1,  # a search's samples x seeds
            # A search's limit is its ConcurrencyLimiter's (search.py), which Tune refuses to be given twice.
            max_concurrent_trials=None if experiment.search == "optuna" else experiment.max_concurrent or None,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=True,  # one worker process per slot, not per trial: imports once
        ),
        run_config=tune.RunConfig(
            name=sweep_dir.name,
            storage_path=str(sweep_dir.parent),
            failure_config=tune.FailureConfig(max_failures=experiment.max_failures),
            # Checkpoints are pruned by the CheckpointPruner in `bookkeeping` (the newest two
            # and those Tune's saved state points to), not by num_to_keep.
            checkpoint_config=tune.CheckpointConfig(),
            # Trial folders (their artifacts/ included) reach the storage path from every node.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=[view, tracker, *bookkeeping],
            verbose=1,  # Tune's own tables: to ray.log (the terminal with --verbose)
        ),
    )


def restored_tuner(plan: Plan, sweep_dir: Path, *, trainable: Any, start_over: Sequence[str], outbox: Outbox) -> Any:
    """The Tuner of a resumed sweep, from its folder: its callbacks and scheduler are those it
    started with, unpickled without the sweep's outbox, which they are handed here."""
    from ray import tune

    from tune_jobs.core.ray_compat import restored_hooks

    tuner = tune.Tuner.restore(
        str(sweep_dir),
        trainable=trainable,
        resume_unfinished=True,
        # A trial that failed because none of its checkpoints loads is one Tune calls
        # errored: --start-over must bring it back.
        resume_errored=bool(start_over),
        param_space=param_space(plan.composed.experiment, [t.point for t in plan.trials]),
    )
    for hook in restored_hooks(tuner):
        if hasattr(hook, "use_outbox"):
            hook.use_outbox(outbox)
    return tuner
