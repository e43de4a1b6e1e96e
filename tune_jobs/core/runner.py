"""Build one `ray.tune.Tuner` from a planned sweep, run it (or resume it), then report.

The sweep's own description (sweep.json) is written beside Ray's experiment state before
the first trial starts; `--resume` reads it back, so a resumed sweep runs exactly the config
it started with, whatever has changed in the YAML since.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_jobs.core import interrupts
from tune_jobs.core.adapter import POINT_KEY, make_trainable
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.paths import git_commit, safe_name
from tune_jobs.core.plan import Composed, Plan
from tune_jobs.core.preflight import check_fits
from tune_jobs.core.space import Experiment, ray_resources
from tune_jobs.core.study import declared_in
from tune_jobs.core.tracking import artifact_location
from tune_jobs.core.tracking.sweep_file import SWEEP_FILE, SweepRecord

log = logging.getLogger(__name__)
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # Tune's (TuneController.CKPT_FILE_TMPL)
__all__ = ["SWEEP_FILE", "SweepResult", "find_sweep", "run_sweep"]


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
    ray_log: Path | None = None  # Ray's own output (Tune's tables, the workers' logs)
    browse: str = ""  # how to look at the sweep in the MLflow UI, with its comparison view
    dashboard: str = ""  # the optuna-dashboard command of an Optuna search
    summary: Path | None = None  # the sweep summary every sweep gets (tune_jobs/core/summary.py)


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


def close_orphan_optuna_trials(sweep_dir: Path) -> int:
    """File as failed the Optuna trials still running once a sweep has ended; their number.

    The search asks Optuna for a trial (a RUNNING row in optuna.db) before Tune adds it and
    saves its state: a driver killed in between leaves that row, and the resumed search, which
    never heard of it, asks for another. Once the sweep has ended nothing runs, so the study
    (and its dashboard) must not show a trial running forever."""
    import optuna
    from optuna.trial import TrialState

    path = sweep_dir / "optuna.db"
    if not path.exists():
        return 0
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    closed = 0
    try:
        for study in storage.get_all_studies():
            for trial in storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                closed += 1
    finally:
        storage.engine.dispose()
    if closed:
        log.info("%d Optuna trial(s) asked for by a driver that stopped before they started: filed as failed", closed)
    return closed


def _scheduler(experiment: Experiment, sweep_dir: Path, trials: int) -> Any:
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
        save_on_add=experiment.search == "optuna",
        save_every=save_period(trials),
        checkpoint_save_every=checkpoint_save_period(trials),
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
    from tune_jobs.core.outcome import DIVERGED, ERROR, run_ended

    failed, diverged = 0, []
    for entry in mirror.state.get("trials", {}).values():
        tags = entry.get("end_tags", {})
        ended = run_ended(tags, entry.get("status", ""))
        if ended == ERROR:
            failed += 1
        elif ended == DIVERGED:
            diverged.append(f"{entry['name']}: {tags.get('sweep.error', '')}")
    return failed, diverged


def trainable_for(composed: Composed, *, sweep_id: str = "", start_over: Sequence[str] = ()) -> Any:
    """The study's trainable as Tune runs it: the adapter, asking Ray for one trial's resources."""
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
            sweep_id=sweep_id,
            start_over=start_over,
        ),
        ray_resources(resources),
    )


def check_resume_files(sweep_dir: Path) -> None:
    """ConfigError naming the file when one a resume restores from (inside Ray, where it would
    end in a traceback) is damaged: Tune's newest experiment state, the ASHA rungs journal.
    Reads only. A damaged mlflow_runs.json is no error: the resume rebuilds it; damaged lines of
    the journals that record results and trials are skipped with a warning."""
    import json

    from tune_jobs.core.tracking import DAMAGED_FIX, RUNG_JOURNAL, rung_journal_problem

    problem = rung_journal_problem(sweep_dir / RUNG_JOURNAL)
    if problem is not None:
        raise ConfigError(f"{sweep_dir / RUNG_JOURNAL} is damaged: {problem}; {DAMAGED_FIX}")
    states = list(sweep_dir.glob(EXPERIMENT_STATE_GLOB))
    if not states:
        return
    newest = max(states)  # the one Tune restores from (its name holds its session's start)
    try:
        state = json.loads(newest.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{newest} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{newest} is damaged (not JSON: {one_line(exc)[:80]}); {DAMAGED_FIX}") from None
    data = state.get("trial_data") if isinstance(state, dict) else None
    if not (
        isinstance(data, list)
        and all(isinstance(t, list) and len(t) == 2 for t in data)
        and isinstance(state.get("runner_data"), dict)
    ):
        raise ConfigError(
            f"{newest} is damaged: not the experiment state Tune wrote (a 'trial_data' list of pairs "
            f"and a 'runner_data' object); {DAMAGED_FIX}"
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
    start_over: Sequence[str] = (),
    verbose: int = 1,
) -> SweepResult:
    """Run the planned sweep, or resume the one in `resume_dir`.

    verbose 1: the live view (a line per event when stdout is not a terminal), Ray's output to
    ray.log in the sweep's folder; 0: nothing on the terminal; 2: Ray's output on the terminal.
    `start_over` names trials (ids or labels) of the resumed sweep that start from scratch if
    none of their checkpoints loads; failed trials are then resumed too (Tune cannot pick them
    one by one). A Ctrl-C or SIGTERM becomes `Interrupted`, naming the sweep and the stage it
    stopped in, after Tune saved what it could."""
    import ray

    from tune_jobs.core.console import SweepOutput

    progress = interrupts.progress = interrupts.Progress()
    started_here = not ray.is_initialized()
    with SweepOutput(verbose) as output:
        try:
            return _run_sweep(
                plan,
                progress,
                output,
                results_dir=results_dir,
                tracking_uri=tracking_uri,
                address=address,
                resume_dir=resume_dir,
                start_over=start_over,
            )
        except KeyboardInterrupt:
            raise interrupts.Interrupted(progress.sweep_id, progress.stage) from None
        finally:
            if started_here and output.redirect:
                # Ray's log thread prints the workers' last lines for a while after the sweep;
                # they belong in ray.log, not on the terminal after the summary.
                ray.shutdown()


def _record_sweep(plan: Plan, ray_dir: Path, tracking_uri: str) -> SweepRecord:
    """A new sweep's folder and its record (sweep.json), before the first trial starts."""
    composed = plan.composed
    declared = declared_in(composed.study)
    record = SweepRecord(
        study=composed.study.name,
        study_module=declared["module"],
        study_file=declared["file"],
        entry_script=sys.argv[0] if sys.argv and sys.argv[0].endswith(".py") else "",
        experiment=composed.experiment.name,
        experiment_file=str(composed.experiment.path),
        sweep_id=new_sweep_id(),
        profile=composed.profile,
        quick=composed.quick,
        overrides=list(composed.overrides),
        base=composed.base,
        points=[t.point for t in plan.trials],
        tracking_uri=tracking_uri,
        git_commit=git_commit(),
    )
    sweep_dir = ray_dir / f"{safe_name(composed.experiment.name)}-{record.sweep_id}"
    sweep_dir.mkdir(parents=True)
    record.write(sweep_dir)
    return record


def _run_sweep(
    plan: Plan,
    progress: interrupts.Progress,
    output: Any,
    *,
    results_dir: Path,
    tracking_uri: str,
    address: str | None,
    resume_dir: Path | None = None,
    start_over: Sequence[str] = (),
) -> SweepResult:
    composed = plan.composed
    study, experiment = composed.study, composed.experiment
    ray_dir = (results_dir / "ray").resolve()
    points = [t.point for t in plan.trials]
    per_trial = ray_resources(experiment.resources)

    interrupts.install()  # Ctrl-C and SIGTERM from here on: see tune_jobs/core/interrupts.py
    bookkeeping = _bookkeeping()
    import ray

    if not ray.is_initialized():
        if address is None and not os.environ.get("RAY_ADDRESS"):
            from tune_jobs.core import reaper

            reaper.watch()  # the Ray started here ends with this driver, however it ends
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
        record = _record_sweep(plan, ray_dir, tracking_uri)
        sweep_dir = ray_dir / f"{safe_name(experiment.name)}-{record.sweep_id}"
    else:
        sweep_dir = resume_dir
        record = SweepRecord.read(sweep_dir)
    sweep_id = record.sweep_id
    tracking_uri = record.tracking_uri  # a resumed sweep's runs live where it started them
    progress.sweep_id, progress.stage = sweep_id, "sweep"
    from ray import tune

    from tune_jobs.core.console import RAY_LOG, SweepView, facts_for
    from tune_jobs.core.tracking import MlflowTracker, Outbox, parent_tags

    output.log_to(sweep_dir / RAY_LOG)

    trainable = trainable_for(composed, sweep_id=sweep_id, start_over=start_over)
    view = SweepView(facts_for(plan, sweep_id, tracking_uri))

    if start_over:
        # Their runs ended (failed); the resumed sweep runs them again and reopens their runs.
        mirror = Outbox(sweep_dir, lock_s=60.0)
        try:
            mirror.start_over(start_over)
        finally:
            mirror.release()
    if resume_dir is not None and (sweep_dir / "tuner.pkl").exists():
        tuner = tune.Tuner.restore(
            str(sweep_dir),
            trainable=trainable,
            resume_unfinished=True,
            # A trial that failed because none of its checkpoints loads is one Tune calls
            # errored: --start-over must bring it back.
            resume_errored=bool(start_over),
            param_space=_param_space(experiment, points),
        )
    else:
        tracker = MlflowTracker(
            tracking_uri=tracking_uri,
            experiment_name=experiment.name,
            sweep_dir=str(sweep_dir),
            tags=parent_tags(plan, record),
            base=composed.base_flat,
            metrics=study.metrics,
            run_prefix=experiment.name,
            artifact_location=artifact_location(tracking_uri),
            end_note=view.facts.note,
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
                callbacks=[view, tracker, *bookkeeping],
                verbose=1,  # Tune's own tables: to ray.log (the terminal with --verbose)
            ),
        )
    with interrupts.tune_fit():
        grid = tuner.fit()
    mirror = Outbox(sweep_dir)
    finished = sum(1 for t in mirror.state["trials"].values() if t.get("status") in ("FINISHED", "FAILED"))
    errored, diverged = _outcomes(mirror)

    if mirror.interrupted:  # no report: it would compare half-trained trials
        raise interrupts.Interrupted(sweep_id, "sweep", finished, plan.count)
    if experiment.search == "optuna":
        close_orphan_optuna_trials(sweep_dir)

    report_dir, best = None, ""
    pending = mirror.pending()
    if not pending:
        from tune_jobs.core.reporting import build_report

        progress.stage = "report"
        report_dir, best = build_report(study, tracking_uri, mirror.parent_run_id, results_dir)
    from tune_jobs.core.browse import dashboard_command
    from tune_jobs.core.tracking import runs_view

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
        summary=report_dir / "sweep_summary.md" if report_dir else None,
        ray_log=sweep_dir / RAY_LOG,
        browse="" if pending else runs_view(tracking_uri, mirror.state.get("experiment_id"), experiment, points),
        dashboard=dashboard_command(sweep_dir) if experiment.search == "optuna" else "",
    )
