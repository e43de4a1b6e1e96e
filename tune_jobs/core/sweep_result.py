"""The end of a sweep: what the sweep's outbox says happened, the report (when MLflow holds
everything), and the lines printed for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tune_jobs.core import interrupts
from tune_jobs.core.commands import command_line
from tune_jobs.core.console import RAY_LOG
from tune_jobs.core.outcome import DIVERGED, ERROR, run_ended
from tune_jobs.core.plan import Plan
from tune_jobs.core.search import close_orphan_optuna_trials, dashboard_command
from tune_jobs.core.tracking import Outbox, runs_view
from tune_jobs.core.tracking.sweep_file import SweepRecord


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


def _outcomes(outbox: Outbox) -> tuple[int, int, list[str]]:
    """(ended trials, failed trials, 'trial: reason' of each diverged one) from the sweep's own
    record: a trial that ended before a resume is not in Tune's results as it ended."""
    finished, failed, diverged = 0, 0, []
    with outbox.lock:
        for entry in outbox.state.get("trials", {}).values():
            finished += entry.get("status") in ("FINISHED", "FAILED")
            tags = entry.get("end_tags", {})
            ended = run_ended(tags, entry.get("status", ""))
            if ended == ERROR:
                failed += 1
            elif ended == DIVERGED:
                diverged.append(f"{entry['name']}: {tags.get('sweep.error', '')}")
    return finished, failed, diverged


def sum_up(
    plan: Plan,
    record: SweepRecord,
    outbox: Outbox,
    *,
    trials: int,
    results_dir: Path,
    progress: interrupts.Progress,
) -> SweepResult:
    """The sweep's result once Tune is done with its `trials`; `Interrupted` when it was
    stopped (no report: it would compare half-trained trials)."""
    study, experiment = plan.composed.study, plan.composed.experiment
    sweep_dir, sweep_id, tracking_uri = outbox.dir, record.sweep_id, record.tracking_uri
    finished, errored, diverged = _outcomes(outbox)
    with outbox.lock:  # an extended sweep's Tune run holds its new trials only
        trials = max(trials, len(outbox.state.get("trials", {})))
    if outbox.interrupted:
        raise interrupts.Interrupted(sweep_id, "sweep", finished, plan.count)
    if experiment.search == "optuna":
        close_orphan_optuna_trials(sweep_dir)

    report_dir, best = None, ""
    pending = outbox.pending()
    if not pending:
        from tune_jobs.core.reporting import build_report

        progress.stage = "report"
        report_dir, best = build_report(study, tracking_uri, outbox.parent_run_id, results_dir)
    points = [t.point for t in plan.trials]
    return SweepResult(
        sweep_id=sweep_id,
        sweep_dir=sweep_dir,
        parent_run_id=outbox.parent_run_id,
        tracking_uri=tracking_uri,
        trials=trials,
        errored=errored,
        report_dir=report_dir,
        best=best,
        diverged=diverged,
        pending=pending,
        summary=report_dir / "sweep_summary.md" if report_dir else None,
        ray_log=sweep_dir / RAY_LOG,
        browse="" if pending else runs_view(tracking_uri, outbox.state.get("experiment_id"), experiment, points),
        dashboard=dashboard_command(sweep_dir) if experiment.search == "optuna" else "",
    )


def print_result(result: SweepResult) -> int:
    """Print the sweep's result; the command's exit status (1 when a trial failed)."""
    diverged = f", {len(result.diverged)} diverged" if result.diverged else ""
    print(f"\nsweep {result.sweep_id}: {result.trials} trials, {result.errored} failed{diverged}; {result.best}")
    for line in result.diverged:
        print(f"  diverged:    {line}")
    print(f"  ray results: {result.sweep_dir}")
    if result.ray_log:
        print(f"  ray log:     {result.ray_log}")
    if result.report_dir:
        print(f"  report:      {result.report_dir}")
    if result.summary:
        print(f"  summary:     {result.summary}")
    if result.dashboard:
        print(f"  optuna:      {result.dashboard}")
    if result.pending:
        print(
            f"  MLflow:      {result.tracking_uri} did not take everything: it still lacks {result.pending}; nothing is lost:"
            f"\n               {command_line('python', 'tune_jobs/report.py', '--replay', result.sweep_dir)}"
            "   (sends it, then builds the report)"
        )
        return 1 if result.errored else 0
    print(f"  MLflow:      {result.tracking_uri} (parent run {result.parent_run_id})")
    if result.browse:
        print(f"  browse:      {result.browse}")
    elif result.tracking_uri.startswith("sqlite:"):
        print(
            f"  browse:      {command_line('mlflow', 'ui', '--backend-store-uri', result.tracking_uri, '--port', '5000')}"
            "   (then open http://127.0.0.1:5000)"
        )
    elif result.tracking_uri.startswith(("http:", "https:")):
        print(f"  browse:      {result.tracking_uri}  (through an SSH tunnel if the server is on a cluster's head)")
    return 1 if result.errored else 0
