"""Run a planned sweep (or resume one), from Ray's start to the sweep's result.

`run_sweep` only wires the steps together: Ray (ray_session.py), the sweep's folder and its
description (sweep.json, written beside Ray's experiment state before the first trial starts;
`--resume` reads it back, so a resumed sweep runs exactly the config it started with, whatever
has changed in the YAML since), the sweep's one outbox of what must reach MLflow
(tracking/outbox.py), the Tuner (tuner.py) and the result (sweep_result.py).
"""

from __future__ import annotations

import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tune_jobs.core import interrupts, provenance
from tune_jobs.core.commands import resume_command
from tune_jobs.core.errors import ConfigError, one_line
from tune_jobs.core.paths import git_commit, safe_name
from tune_jobs.core.plan import Plan
from tune_jobs.core.ray_session import ray_ended_after, start_ray
from tune_jobs.core.space import ray_resources
from tune_jobs.core.study import declared_in
from tune_jobs.core.sweep_result import SweepResult, sum_up
from tune_jobs.core.tracking import Outbox
from tune_jobs.core.tracking.sweep_file import SWEEP_FILE, SweepRecord
from tune_jobs.core.tuner import bookkeeping, new_tuner, restored_tuner, trainable_for

EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # Tune's (TuneController.CKPT_FILE_TMPL)
__all__ = ["SWEEP_FILE", "SweepResult", "find_sweep", "run_sweep"]


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


def run_sweep(
    plan: Plan,
    *,
    results_dir: Path,
    tracking_uri: str,
    address: str | None,
    resume_dir: Path | None = None,
    extension: dict[str, Any] | None = None,
    start_over: Sequence[str] = (),
    verbose: int = 1,
) -> SweepResult:
    """Run the planned sweep, or resume the one in `resume_dir`.

    verbose 1: the live view (a line per event when stdout is not a terminal), Ray's output to
    ray.log in the sweep's folder; 0: nothing on the terminal; 2: Ray's output on the terminal.
    `start_over` names trials (ids or labels) of the resumed sweep that start from scratch if
    none of their checkpoints loads; failed trials are then resumed too (Tune cannot pick them
    one by one). A Ctrl-C or SIGTERM becomes `Interrupted`, naming the sweep and the stage it
    stopped in, after Tune saved what it could. `extension` (tune_jobs/core/extend.py) adds
    the new trials of the finished sweep in `resume_dir`, `plan` being the extended sweep."""
    from tune_jobs.core.console import SweepOutput

    progress = interrupts.progress = interrupts.Progress()
    with SweepOutput(verbose) as output, ray_ended_after(output):
        try:
            return _run_sweep(
                plan,
                progress,
                output,
                results_dir=results_dir,
                tracking_uri=tracking_uri,
                address=address,
                resume_dir=resume_dir,
                extension=extension or {},
                start_over=start_over,
            )
        except KeyboardInterrupt:
            raise interrupts.Interrupted(progress.sweep_id, progress.stage) from None


def _new_sweep(plan: Plan, ray_dir: Path, tracking_uri: str) -> tuple[Path, SweepRecord]:
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
    provenance.write(sweep_dir)
    return sweep_dir, record


def _run_sweep(
    plan: Plan,
    progress: interrupts.Progress,
    output: Any,
    *,
    results_dir: Path,
    tracking_uri: str,
    address: str | None,
    resume_dir: Path | None = None,
    extension: dict[str, Any],
    start_over: Sequence[str] = (),
) -> SweepResult:
    from tune_jobs.core.console import RAY_LOG
    from tune_jobs.core.extend import run_plan

    interrupts.install()  # Ctrl-C and SIGTERM from here on: see tune_jobs/core/interrupts.py
    tune_settings = bookkeeping()
    start_ray(address, ray_resources(plan.composed.experiment.resources))
    if resume_dir is None:
        sweep_dir, record = _new_sweep(plan, (results_dir / "ray").resolve(), tracking_uri)
    else:
        sweep_dir, record = resume_dir, SweepRecord.read(resume_dir)  # its runs live where it started them
    progress.sweep_id, progress.stage = record.sweep_id, "sweep"
    output.log_to(sweep_dir / RAY_LOG)

    trainable = trainable_for(plan.composed, resume_command=_resume(record, results_dir), start_over=start_over)
    outbox = _open_outbox(sweep_dir, start_over)
    try:
        if extension:  # the sweep's record says what it now runs; its parent run is reopened
            record = replace(
                record,
                overrides=list(plan.composed.overrides),
                points=[t.point for t in plan.trials],
                extension=extension,
            )
            record.write(sweep_dir)
            outbox.extend({"sweep.seeds": str(plan.composed.experiment.seeds)})
        this_run = run_plan(plan, record.extension)  # what this Tune run runs: an extension's new trials
        if resume_dir is not None and not extension and _tune_run_saved(sweep_dir, record):
            tuner = restored_tuner(this_run, sweep_dir, trainable=trainable, start_over=start_over, outbox=outbox)
        else:
            tuner = new_tuner(
                this_run, record, sweep_dir, trainable=trainable, bookkeeping=tune_settings, outbox=outbox
            )
    except BaseException:
        outbox.release()  # no trial ran: the sweep's files are free
        raise
    with interrupts.tune_fit():
        grid = tuner.fit()
    return sum_up(plan, record, outbox, trials=len(grid), results_dir=results_dir, progress=progress)


def _resume(record: SweepRecord, results_dir: Path) -> str:
    """The command that resumes this sweep: its script (the sweep record's), the results folder
    when not the default (a trial none of whose checkpoints loads offers it)."""
    return resume_command(
        record.script, record.sweep_id, None if results_dir == Path("results").resolve() else results_dir
    )


def _tune_run_saved(sweep_dir: Path, record: SweepRecord) -> bool:
    """Whether Tune saved the sweep's newest run: its tuner.pkl exists and, for an extended
    sweep, was written after the record named the extension (a driver killed in between left
    the finished run's, which holds none of the new trials: the extension starts anew)."""
    tuner = sweep_dir / "tuner.pkl"
    if not tuner.exists():
        return False
    return not record.extension or tuner.stat().st_mtime >= (sweep_dir / SWEEP_FILE).stat().st_mtime


def _open_outbox(sweep_dir: Path, start_over: Sequence[str]) -> Outbox:
    """The sweep's one outbox, this process its one writer (the tracker releases it at the
    sweep's end); the trials named by --start-over filed to run again."""
    outbox = Outbox(sweep_dir, lock_s=60.0)  # a replay of this sweep may be finishing
    if start_over:
        # Their runs ended (failed); the resumed sweep runs them again and reopens their runs.
        outbox.start_over(start_over)
    return outbox
