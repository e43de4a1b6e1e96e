"""A sweep's report, built the same way for every study: the study's own, the sweep summary,
the trials' status and the compute line, attached to the sweep's parent run. (Reading a sweep
back from MLflow and saving figures: tune_jobs/core/sweep_data.py.)

Reports are built from what MLflow holds, never from a sweep's in-memory results, so any
sweep's report can be rebuilt at any time: `python tune_jobs/report.py <sweep-id|experiment>`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.common.tables import table_lines
from tune_jobs.core import spread
from tune_jobs.core.outcome import run_ended
from tune_jobs.core.paths import safe_name
from tune_jobs.core.summary import write_sweep_summary
from tune_jobs.core.sweep_data import SweepData, find_parent
from tune_jobs.core.tracking.artifacts import upload_folder


def build_report(study: Any, tracking_uri: str, parent_ref: str, results_dir: Path) -> tuple[Path, str]:
    """Rebuild `study`'s report for one sweep from MLflow and attach it to the parent run: the
    study's own (when it has one) and the summary every sweep gets (tune_jobs/core/summary.py).

    Returns the report folder and a line naming the best trial.
    """
    import matplotlib

    matplotlib.use("Agg")
    from tune_jobs.core.tracking import open_client

    client = open_client(tracking_uri)
    parent = find_parent(client, parent_ref)
    sweep = SweepData(client, parent)
    out_dir = Path(results_dir) / safe_name(study.name) / safe_name(f"{sweep.experiment}-{sweep.sweep_id}")
    # Built aside and swapped in whole: an interrupted build never leaves half a report.
    building = out_dir.with_name(f".{out_dir.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    if study.report is not None:
        study.report(sweep, building)
    write_sweep_summary(sweep, building, study)  # every sweep's, beside the study's own
    stopped = write_trial_status(sweep, building)
    partial = parent.info.status != "FINISHED"
    if partial:
        (building / "PARTIAL.md").write_text(
            f"# Partial report\n\nSweep {sweep.sweep_id} is {parent.info.status.lower()} "
            f"({parent.data.tags.get('sweep.status', 'not finished')}): {len(stopped)} of {len(sweep.trials)} "
            "trials did not finish, so this report compares unfinished trials. Finish the sweep with "
            "--resume, then rebuild the report.\n"
        )
    compute = compute_used(sweep, study)
    if compute is not None:
        add_compute_line(client, parent.info.run_id, building, compute)
    _swap_in(building, out_dir)
    best = sweep.best()
    summary = "no trial reported the sweep metric"
    if best is not None:
        metric, mode = sweep.tags["sweep.metric"], sweep.tags.get("sweep.mode", "min")
        summary = f"best trial {best.name}: {metric} = {best.metrics[metric]:.4g}"
        for key, value in (
            ("sweep.best_run", best.name),
            ("sweep.best_run_id", best.run_id),
            (f"sweep.best_{metric}", f"{best.metrics[metric]:.6g}"),
        ):
            client.set_tag(parent.info.run_id, key, value)
        points = spread.ranked(spread.points(sweep.trials, metric), mode)
        if spread.seeded(points) and sweep.tags.get("sweep.goal") != "measure":
            top = points[0]  # the best point by its mean over seeds, not the luckiest seed
            summary = f"best point {top.label}: {metric} = {top.mean:.4g} ± {top.std:.2g} over {top.n} seeds"
            client.set_tag(parent.info.run_id, "sweep.best_point", top.label)
        if sweep.tags.get("sweep.goal") == "measure":
            # A measurement grid: every trial is a result; the line names none of them best.
            measured = sum(1 for t in sweep.trials if metric in t.metrics)
            summary = f"{measured} trials measured {metric}"
    if compute is not None:
        summary += f"; {compute.line()}"
    if stopped:
        summary += f"; {len(stopped)} trial(s) did not finish: {', '.join(stopped)} (see trial_status.md)"
    if partial:
        summary = f"PARTIAL: the sweep is {parent.info.status.lower()}, not finished (see PARTIAL.md); " + summary
    upload_folder(client, parent.info.run_id, out_dir, "report")  # never a temp file a writer left
    return out_dir, summary


def _swap_in(new: Path, out_dir: Path) -> None:
    """Replace the folder `out_dir` by `new` (the old one is removed only once `new` is in)."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    new.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def write_trial_status(sweep: SweepData, out_dir: Path) -> list[str]:
    """trial_status.md: every trial's outcome, with the reason of those that did not finish.

    Returns 'name (status)' of the trials that diverged, failed or never ended."""
    rows, stopped = [], []
    for t in sweep.trials:
        outcome = run_ended(t.tags, t.status)
        reason = t.tags.get("sweep.error", "")
        rows.append((t.name, outcome, t.status, reason))
        if outcome != "finished":
            stopped.append(f"{t.name} ({outcome})")
    lines = [
        f"# Trials of sweep {sweep.sweep_id}",
        "",
        f"{len(sweep.trials)} trials, {len(sweep.trials) - len(stopped)} finished.",
        "",
        *table_lines(("trial", "outcome", "MLflow status", "reason"), rows),
    ]
    (out_dir / "trial_status.md").write_text("\n".join(lines) + "\n")
    return stopped


@dataclass(frozen=True)
class Compute:
    """What a sweep's trials ran against the full budget of all of them (every trial to its end)."""

    run: int
    budget: int
    unit: str
    trials: int
    unfinished: int = 0  # trials that failed, diverged or were interrupted
    not_run_unfinished: int = 0  # the part of the budget those trials did not run

    def line(self) -> str:
        if not self.budget:
            return f"compute: {self.run} trial-{self.unit} run"
        # Only what the scheduler stopped counts as saved; a failed trial's rest is not a saving.
        saved = (self.budget - self.run - self.not_run_unfinished) / self.budget
        line = (
            f"compute: {self.run} of {self.budget} trial-{self.unit} run ({self.run / self.budget:.0%} of the full "
            f"budget of its {self.trials} trials); early stopping saved {saved:.0%}"
        )
        if self.not_run_unfinished:
            line += (
                f"; {self.not_run_unfinished} trial-{self.unit} not run by the {self.unfinished} trial(s) "
                "that did not finish"
            )
        return line


def compute_used(sweep: SweepData, study: Any) -> Compute | None:
    """The trial-epochs (or steps) the sweep's trials ran, from MLflow, against their budget
    (the study's `budget` of each trial's config); None when the study declares no budget."""
    if study.budget is None or not sweep.trials:
        return None
    metric = sweep.tags.get("sweep.metric", "")
    run = budget = unfinished = not_run_unfinished = 0
    unit = ""
    for t in sweep.trials:
        try:
            full, unit = study.budget(t.params)
        except (KeyError, ValueError, TypeError):
            continue  # its params never reached MLflow (a server that stopped answering): no budget known
        steps = [step for step, _ in sweep.history(t.run_id, metric)]
        done = min(study.units_run(steps), full) if steps else 0
        run += done
        budget += full
        status = run_ended(t.tags, t.status)
        if status != "finished":
            unfinished += 1
            not_run_unfinished += full - done
    return Compute(
        run=run,
        budget=budget,
        unit=unit,
        trials=len(sweep.trials),
        unfinished=unfinished,
        not_run_unfinished=not_run_unfinished,
    )


def add_compute_line(client: Any, parent_run_id: str, out_dir: Path, compute: Compute) -> None:
    """The compute line in the report's summary.md (and as tags of the sweep's parent run)."""
    summary = out_dir / "summary.md"
    text = summary.read_text().rstrip("\n") + "\n\n" if summary.exists() else ""
    summary.write_text(f"{text}## Compute\n\n{compute.line()}.\n")
    client.set_tag(parent_run_id, "sweep.compute_run", str(compute.run))
    client.set_tag(parent_run_id, "sweep.compute_budget", f"{compute.budget} trial-{compute.unit}")
